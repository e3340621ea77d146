"""A run's summary: what summary.json holds (the whole run and this invocation apart, steady-state throughput) and
the lines the console prints from it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from orchestrator.console import say
from orchestrator.run_dir import RunDir

if TYPE_CHECKING:
    from orchestrator.trainer import RunPlan


def throughput(records: list[dict]) -> dict:
    """Training-step time and steady-state tokens/s over step records: each record covers one logging window (its
    tokens and seconds, evaluations excluded); the first window of every worker-group start carries the start-up
    and is left out of the steady state (unless it is all there is)."""
    windows = [r for r in records if r.get("window_s")]
    if not windows:  # records from before windows were logged: the mean of the windows' rates
        rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
        return dict(train_s=None, tokens_per_s=sum(rates) / len(rates) if rates else None, steady_windows=0)
    steady = [r for r in windows if not r.get("first_window")] or windows
    return dict(
        train_s=sum(r["window_s"] for r in windows),
        tokens_per_s=sum(r["window_tokens"] for r in steady) / sum(r["window_s"] for r in steady),
        steady_windows=len(steady) if steady is not windows or not windows[0].get("first_window") else 0,
    )


def summarize(
    plan: "RunPlan",
    run: RunDir,
    wall_s: float,
    invocation: Optional[dict] = None,
    invocations: Optional[list[dict]] = None,
) -> dict:
    """The run's summary: the whole run (all invocations) and this invocation apart; tokens/s is the steady state of
    the training steps alone (no start-up, no first window, no evaluations), never tokens over wall time."""
    evals = [r for r in run.records if r.get("kind") == "eval"]
    best_ckpt, latest = run.best_checkpoint(), run.latest_checkpoint()
    invocation = dict(invocation or {})
    tokens_per_step = plan.cfg.tokens_per_step(plan.workers)
    start, end = invocation.get("start_step", 0), invocation.get("end_step", evals[-1]["step"] if evals else 0)
    this = dict(
        start_step=start, end_step=end, steps=end - start, tokens=(end - start) * tokens_per_step, wall_s=wall_s
    )
    this["tokens_per_s_wall"] = this["tokens"] / wall_s if wall_s > 0 else None
    rate = throughput(run.records)
    mine = throughput([r for r in run.records if r.get("step", 0) > start])
    history = invocations or [dict(wall_s=wall_s)]
    return dict(
        run=plan.cfg.run_name,
        run_dir=run.uri,
        arch=plan.cfg.arch,
        preset=plan.cfg.preset,
        steps=evals[-1]["step"] if evals else 0,
        tokens=evals[-1]["tokens"] if evals else 0,
        final_val_loss=evals[-1]["val_loss"] if evals else None,
        final_val_bpb=evals[-1]["val_bpb"] if evals else None,
        # over the windows every eval scored (the final eval's whole-split loss is not comparable with the others')
        best_val_loss=min((e.get("shared_val_loss", e["val_loss"]) for e in evals), default=None),
        **_final_scope(evals[-1] if evals else {}),
        tokens_per_s=rate["tokens_per_s"],  # steady state, training steps only, whole run
        train_s=rate["train_s"],  # seconds in training steps, whole run (evals and start-up excluded)
        wall_s=wall_s,  # this invocation, start to end
        run_wall_s=sum(i.get("wall_s", 0.0) for i in history),  # every invocation of this run
        invocations=len(history),
        invocation=dict(this, tokens_per_s=mine["tokens_per_s"], train_s=mine["train_s"]),
        params=plan.params,
        workers=plan.workers,
        best_checkpoint=run.uri_of(best_ckpt),
        latest_checkpoint=run.uri_of(latest),
    )


def _final_scope(last_eval: dict) -> dict:
    """Which tokens the final validation loss is over (the last eval's record; absent in runs from before)."""
    keys = dict(val_tokens="final_val_tokens", val_windows="final_val_windows", val_fraction="final_val_fraction",
                val_scope="final_val_scope", train_loss="final_train_loss", train_eval_loss="final_train_eval_loss",
                train_eval_tokens="final_train_eval_tokens")  # fmt: skip
    return {name: last_eval[key] for key, name in keys.items() if key in last_eval}


def scope_words(summary: dict) -> str:
    """' on the whole split (122,763 tokens)' / ' on first 128 windows (32,640 tokens, 27% of the split)'; '' when
    the run predates the record."""
    if "final_val_scope" not in summary:
        return ""
    tokens = summary.get("final_val_tokens")
    share = summary.get("final_val_fraction")
    if summary["final_val_scope"] == "whole split":
        return f" on the whole split ({tokens:,} tokens)" if tokens else " on the whole split"
    extra = f", {share:.0%} of the split" if share is not None else ""
    return (
        f" on {summary['final_val_scope']} ({tokens:,} tokens{extra})"
        if tokens
        else f" on {summary['final_val_scope']}"
    )


def summary_lines(summary: dict) -> list[str]:
    p = summary["params"]
    inv = summary.get("invocation") or {}
    whole = f"run {summary['run']}: {summary['steps']} steps, {summary['tokens']:,} tokens" + (
        f" over {summary['invocations']} invocations, {summary['run_wall_s']:.0f}s wall in all"
        if summary.get("invocations", 1) > 1
        else ""
    )
    if summary.get("train_s"):
        whole += f", {summary['train_s']:.0f}s of it in training steps"
    lines = ["", whole]
    if inv:
        if inv["steps"] == 0:
            lines.append(
                f"  this invocation: no steps left to train (already at step {inv['end_step']}), "
                f"{inv['wall_s']:.0f}s wall"
            )
        else:
            lines.append(
                f"  this invocation: steps {inv['start_step']}-{inv['end_step']}, {inv['tokens']:,} tokens in "
                f"{inv['wall_s']:.0f}s wall (start-up, evaluations and checkpoints included)"
            )
    if summary.get("tokens_per_s"):
        lines.append(
            f"  throughput {summary['tokens_per_s']:,.0f} tokens/s in steady-state training steps "
            f"(start-up, first window and evaluations excluded)"
        )
    if summary.get("final_val_loss") is not None:
        lines.append(
            f"  val loss final {summary['final_val_loss']:.4f}{scope_words(summary)}  "
            f"best {summary['best_val_loss']:.4f}  bits/byte {summary['final_val_bpb']:.4f}"
        )
        if summary.get("final_train_eval_loss") is not None:
            gap = summary["final_train_eval_loss"] - summary["final_val_loss"]
            lines.append(
                f"  train split loss {summary['final_train_eval_loss']:.4f} on "
                f"{summary.get('final_train_eval_tokens', 0):,} tokens spread over it: train - val {gap:+.4f}"
            )
    else:
        lines.append("  no evaluation ran")
    lines += [
        f"  params {p['total'] / 1e6:.2f}M total, {p['active'] / 1e6:.2f}M active, "
        f"{p['embedding'] / 1e6:.2f}M embedding",
        f"  checkpoint {summary['best_checkpoint']}",
    ]
    if summary.get("sample"):
        lines += ["", "sample:", summary["sample"]]
    return lines


def print_summary(summary: dict) -> None:
    say("\n".join(summary_lines(summary)))
