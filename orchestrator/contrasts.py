"""Paired contrasts between model families at every size and budget: each family against the baseline and each
one-factor change (gptoss.variants.component_pairs) as a per-seed difference, how a difference moves with model size,
the share of the baseline's gap that one component carries measured from both ends, and what repetition does
(train-split loss minus validation loss). Pure functions of result rows; no storage, no Ray.

Seeds are the unit of replication: two trials of one seed see the same batches in the same order, so a difference is
taken within a seed (and a device type), and every interval is a Student-t interval over seeds."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional

from orchestrator.ladder import device_of, paired_step, t95
from orchestrator.laws import family_of, params_of, size_of
from orchestrator.predictions import budget_of


@dataclass(frozen=True)
class Contrast:
    """`changed` minus `reference`, per seed: negative means `changed` has the lower loss."""

    reference: str
    changed: str
    component: Optional[str] = None  # the one component they differ by, where they differ by one

    @property
    def label(self) -> str:
        if self.component is None:
            return f"{self.changed} - {self.reference}"
        end = "added to" if self.reference.startswith("gpt2") else "kept in"
        return f"{self.component} {end} {self.reference if end == 'added to' else self.changed}"


def contrasts_for(families: set[str], baseline: str) -> list[Contrast]:
    """Every family against the baseline, then every one-factor pair whose two families are both present. A family
    one component away from the baseline appears once, as that component's pair (the same differences, named)."""
    from gptoss.variants import component_pairs

    pairs = [Contrast(w, c, comp) for comp, w, c in component_pairs() if w in families and c in families]
    named = {(p.reference, p.changed) for p in pairs}
    against = [Contrast(baseline, f) for f in sorted(families) if f != baseline and baseline in families]
    return [c for c in against if (c.reference, c.changed) not in named] + pairs


def _cells(rows: list[dict]) -> dict[tuple, list[dict]]:
    cells = defaultdict(list)
    for r in rows:
        cells[(family_of(r), size_of(r), budget_of(r))].append(r)
    return cells


def paired_cells(rows: list[dict], c: Contrast) -> dict[tuple[str, float], dict]:
    """(size, budget) -> ladder.paired_step of changed minus reference over the seeds both have there."""
    cells, out = _cells(rows), {}
    for fam, size, budget in sorted(k for k in cells if k[0] == c.reference):
        changed = cells.get((c.changed, size, budget))
        if changed:
            out[(size, budget)] = paired_step(cells[(fam, size, budget)], changed)
    return out


def _val_loss(r: dict) -> float:
    return float(r["final_val_loss"])


def _per_seed(rows: list[dict], c: Contrast, value=_val_loss) -> dict[tuple, dict[tuple, float]]:
    """(size, budget) -> {(seed, device): value(changed) - value(reference)}."""
    cells, out = _cells(rows), {}
    for _, size, budget in (k for k in cells if k[0] == c.reference):
        ref = {(r["seed"], device_of(r)): value(r) for r in cells[(c.reference, size, budget)]}
        got = {(r["seed"], device_of(r)): value(r) for r in cells.get((c.changed, size, budget), [])}
        out[(size, budget)] = {k: got[k] - ref[k] for k in ref if k in got}
    return out


def _t(values: list[float]) -> dict:
    n = len(values)
    mean = statistics.fmean(values) if values else None
    out = dict(mean=mean, n=n, low=None, high=None, resolved=False)
    if n > 1:
        half = t95(n - 1) * statistics.stdev(values) / math.sqrt(n)
        out.update(low=mean - half, high=mean + half, resolved=mean - half > 0 or mean + half < 0)
    return out


def size_trend(rows: list[dict], c: Contrast) -> dict[float, dict]:
    """budget -> how the difference moves per doubling of N: for each seed, the least-squares slope of its differences
    against log2 of the reference family's N over the sizes it has (at least 2), then the mean slope and its t
    interval over seeds. Also the difference at the largest size minus that at the smallest, the same way. Positive
    slope with a negative difference: the gap narrows as the models grow."""
    per_seed = _per_seed(rows, c)
    n_of = defaultdict(list)
    for r in rows:
        if family_of(r) == c.reference:
            n_of[size_of(r)].append(params_of(r))
    out = {}
    for budget in sorted({b for _, b in per_seed}):
        sizes = sorted((s for s, b in per_seed if b == budget), key=lambda s: statistics.fmean(n_of[s]))
        slopes, spans = [], []
        for seed in sorted({k for s in sizes for k in per_seed[(s, budget)]}):
            pts = [(math.log2(statistics.fmean(n_of[s])), per_seed[(s, budget)][seed]) for s in sizes
                   if seed in per_seed[(s, budget)]]  # fmt: skip
            if len(pts) < 2:
                continue
            mx, my = statistics.fmean(p[0] for p in pts), statistics.fmean(p[1] for p in pts)
            sxx = sum((x - mx) ** 2 for x, _ in pts)
            slopes.append(sum((x - mx) * (y - my) for x, y in pts) / sxx)
            if seed in per_seed[(sizes[0], budget)] and seed in per_seed[(sizes[-1], budget)]:
                spans.append(per_seed[(sizes[-1], budget)][seed] - per_seed[(sizes[0], budget)][seed])
        if slopes:
            out[budget] = dict(slope=_t(slopes), span=_t(spans), smallest=sizes[0], largest=sizes[-1])
    return out


def shares(rows: list[dict], part: Contrast, whole: Contrast) -> dict[tuple[str, float], dict]:
    """(size, budget) -> the share of `whole`'s difference that `part`'s is, per seed (part / whole), with its mean
    and t interval over seeds; cells where a seed's whole difference is 0 leave that seed out."""
    p, w = _per_seed(rows, part), _per_seed(rows, whole)
    out = {}
    for key in sorted(set(p) & set(w)):
        ratios = [p[key][s] / w[key][s] for s in p[key] if s in w[key] and w[key][s] != 0]
        if ratios:
            out[key] = _t(ratios)
    return out


def train_val_gap(r: dict) -> Optional[float]:
    """The final model's train-split loss minus its validation loss (None without a train-split evaluation).
    Negative: it fits the windows it trained on better than new text."""
    if r.get("train_eval_loss") in (None, ""):
        return None
    return float(r["train_eval_loss"]) - float(r["final_val_loss"])


def repetition(rows: list[dict]) -> dict[tuple[str, str, float], dict]:
    """(family, size, budget) -> train_val_gap's mean and t interval over seeds."""
    groups = defaultdict(list)
    for r in rows:
        if train_val_gap(r) is not None:
            groups[(family_of(r), size_of(r), budget_of(r))].append(train_val_gap(r))
    return {k: _t(v) for k, v in sorted(groups.items())}


def gap_contrast(rows: list[dict], c: Contrast) -> dict[tuple[str, float], dict]:
    """(size, budget) -> changed's train_val_gap minus reference's, per seed, with its t interval: negative means
    `changed` fits its training windows further beyond new text than `reference` does."""
    per_seed = _per_seed([r for r in rows if train_val_gap(r) is not None], c, train_val_gap)
    return {k: _t(list(v.values())) for k, v in sorted(per_seed.items()) if v}
