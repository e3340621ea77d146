"""What a planned sweep costs before it runs: per family and size, its trials, the tokens they train (a long run to
the largest budget, a branch only its cooldown), the tokens its evaluations score, the FLOPs, and the time at the
tokens/s the sweep's own finished trials measured (or at a given FLOP rate where none has finished yet)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional

from orchestrator.spec import RunSpec

# An evaluated token costs a forward pass only: a third of a trained one (forward and backward's two matmuls).
EVAL_COST = 1 / 3


@dataclass
class TrialCost:
    name: str
    family: str
    size: str
    steps: int  # steps this trial trains (a branch: its cooldown only)
    train_tokens: int
    eval_tokens: int
    flops_per_token: float
    finished: bool = False
    tokens_per_s: Optional[float] = None  # measured by this trial, where it finished

    @property
    def flops(self) -> float:
        return self.flops_per_token * (self.train_tokens + EVAL_COST * self.eval_tokens)


def _evals(spec: RunSpec, start: int, total: int) -> int:
    every = spec.train.eval_every
    n = total // every - start // every if every else 0
    return n + (1 if not every or total % every else 0)  # the last step always evaluates


def trial_cost(spec: RunSpec, plan, family: str, size: str, val_tokens: int, train_sample: int) -> TrialCost:
    """One trial's cost from its run plan (trainer.plan_run): every eval scores the whole validation split
    (eval_windows 0) or eval_windows windows, and the last also the training sample."""
    cfg = spec.train
    total = plan.total_steps
    start = spec.branch.step if spec.branch else 0
    per_eval = val_tokens if not cfg.eval_windows else min(val_tokens, cfg.eval_windows * cfg.seq_len)
    evals = _evals(spec, start, total)
    eval_tokens = (evals - 1) * per_eval + val_tokens + train_sample
    return TrialCost(
        name=spec.name,
        family=family,
        size=size,
        steps=total - start,
        train_tokens=(total - start) * cfg.tokens_per_step(plan.workers),
        eval_tokens=eval_tokens,
        flops_per_token=plan.flops_per_token,
    )


def rates_by_group(costs: list[TrialCost]) -> dict[tuple[str, str], float]:
    """(family, size) -> the mean tokens/s its finished trials measured."""
    seen = defaultdict(list)
    for c in costs:
        if c.finished and c.tokens_per_s:
            seen[(c.family, c.size)].append(c.tokens_per_s)
    return {k: sum(v) / len(v) for k, v in seen.items()}


def cost_rows(costs: list[TrialCost], flop_rate: Optional[float] = None) -> list[dict]:
    """Per (family, size): trials (finished of all), tokens, FLOPs, and the hours the unfinished ones need at one
    trial at a time: at the measured tokens/s of the group's finished trials, else at flop_rate FLOP/s, else at the
    mean FLOP/s the measured groups reached, else None."""
    rates = rates_by_group(costs)
    groups = defaultdict(list)
    for c in costs:
        groups[(c.family, c.size)].append(c)
    if not flop_rate and rates:  # groups not measured yet: at the mean FLOP rate of those that were
        measured = [rates[k] * groups[k][0].flops_per_token for k in rates]
        flop_rate, flop_source = sum(measured) / len(measured), "measured FLOP/s"
    else:
        flop_source = "flop rate"
    rows = []
    for (family, size), cs in groups.items():
        left = [c for c in cs if not c.finished]
        rate = rates.get((family, size))
        if rate:
            hours, source = sum(c.train_tokens + EVAL_COST * c.eval_tokens for c in left) / rate / 3600, "measured"
        elif flop_rate:
            hours, source = sum(c.flops for c in left) / flop_rate / 3600, flop_source
        else:
            hours, source = None, "-"
        rows.append(
            dict(
                family=family,
                size=size,
                trials=len(cs),
                finished=len(cs) - len(left),
                flops_per_token=cs[0].flops_per_token,
                train_tokens=sum(c.train_tokens for c in cs),
                eval_tokens=sum(c.eval_tokens for c in cs),
                flops=sum(c.flops for c in cs),
                tokens_per_s=rate,
                hours_left=hours,
                source=source,
            )
        )
    return rows


def cost_lines(rows: list[dict], concurrent: int) -> list[str]:
    """The table `sweep --cost` prints, and the totals: trial-hours left, and wall hours at `concurrent` at once."""
    from orchestrator.formatting import fmt_tokens

    lines = [
        "| family | size | trials (done) | FLOPs/token | trained tokens | evaluated tokens | FLOPs | tokens/s | "
        "trial-hours left |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        tps = f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else "-"
        hours = f"{r['hours_left']:.2f} ({r['source']})" if r["hours_left"] is not None else "-"
        lines.append(
            f"| {r['family']} | {r['size']} | {r['trials']} ({r['finished']}) | {fmt_tokens(r['flops_per_token'])} | "
            f"{fmt_tokens(r['train_tokens'])} | {fmt_tokens(r['eval_tokens'])} | {r['flops']:.3g} | {tps} | {hours} |"
        )
    known = [r["hours_left"] for r in rows if r["hours_left"] is not None]
    total = sum(known)
    flops = sum(r["flops"] for r in rows)
    lines.append("")
    lines.append(
        f"{sum(r['trials'] for r in rows)} trials, {flops:.3g} FLOPs in all; "
        + (
            f"{total:.1f} trial-hours left, about {total / max(1, concurrent):.1f} h of wall time at {concurrent} "
            "at once"
            + ("" if len(known) == len(rows) else f" (not counting {len(rows) - len(known)} groups with no rate)")
            if known
            else "no rate known yet: give --cost-flop-rate, or let one trial of each family and size finish"
        )
        + "."
    )
    if any(math.isfinite(r["flops"]) for r in rows):
        lines.append(
            "Trial-hours assume the trials run as they did when measured (the same threads and neighbours); an "
            "evaluated token counts as a third of a trained one."
        )
    return lines
