"""Intervals by resampling whole seeds: the distinct resamples of n seeds and their probabilities, the weighted
percentile (or whole-range) interval over them, the delete-one-seed jackknife's t-interval that widens it, and the
words the report uses for how an interval was made. Pure functions of numbers; no rows, no storage."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Optional

import numpy as np

BOOTSTRAP_SAMPLES = 200  # Monte Carlo draws when the seeds have more distinct resamples than this
MIN_RESAMPLES_FOR_PERCENTILES = 20  # fewer distinct resamples: the interval is their whole range, labelled so


def distinct_resamples(n_seeds: int) -> int:
    """Distinct multisets of n seeds drawn from n with replacement: C(2n - 1, n) (1, 3, 10, 35, 126 for 1-5 seeds)."""
    return math.comb(2 * n_seeds - 1, n_seeds) if n_seeds > 0 else 0


def seed_draws(seeds: list, samples: int, seed: int) -> list[tuple[tuple, float]]:
    """(multiset of seeds, probability) for resampling len(seeds) seeds with replacement: every distinct multiset
    when there are at most `samples` of them, else `samples` random draws of weight 1/samples each."""
    k = len(seeds)
    if k < 2:
        return []
    if distinct_resamples(k) <= samples:
        out = []
        for draw in itertools.combinations_with_replacement(seeds, k):
            ways = math.factorial(k)
            for c in Counter(draw).values():
                ways //= math.factorial(c)
            out.append((draw, ways / k**k))
        return out
    rng = np.random.default_rng(seed)
    return [(tuple(sorted(rng.choice(seeds, size=k))), 1.0 / samples) for _ in range(samples)]


JACKKNIFE_TEXT = (
    "widened, where it is narrower, to the leave-one-seed-out jackknife's 95% t-interval (resampling few seeds "
    "understates the spread)"
)


def interval_method(n_seeds: int, samples: int = BOOTSTRAP_SAMPLES) -> str:
    """How an interval from resampling n seeds is made, in words for the report."""
    if n_seeds < 2:
        return f"{n_seeds} seed: no interval"
    k = distinct_resamples(n_seeds)
    if k < MIN_RESAMPLES_FOR_PERCENTILES:
        boot = f"range over all {k} distinct resamples of {n_seeds} seeds (too few for bootstrap percentiles)"
    elif k <= samples:
        boot = f"95% bootstrap over {n_seeds} seeds, exact over all {k} distinct resamples"
    else:
        boot = f"95% bootstrap over {n_seeds} seeds, {samples} random resamples of {k} distinct"
    return f"{boot}, {JACKKNIFE_TEXT}; seed noise only"


def jackknife_interval(estimate: float, left_out: list, df: Optional[int] = None) -> Optional[tuple[float, float]]:
    """estimate ± t95(n - 1) * se, se the delete-one jackknife's: sqrt((n - 1) / n * sum (v_i - mean)^2) over the n
    leave-one-seed-out values. None when a value is missing or not finite."""
    from orchestrator.ladder import t95

    v = np.asarray([math.nan if x is None else x for x in left_out], dtype=float)
    if len(v) < 2 or not np.all(np.isfinite(v)) or not math.isfinite(estimate):
        return None
    n = len(v)
    half = t95(df or n - 1) * math.sqrt((n - 1) / n * float(((v - v.mean()) ** 2).sum()))
    return estimate - half, estimate + half


def union_interval(a: Optional[tuple], b: Optional[tuple]) -> Optional[tuple[float, float]]:
    if a is None or b is None:
        return a or b
    return min(a[0], b[0]), max(a[1], b[1])


def weighted_interval(values, weights) -> Optional[tuple[float, float]]:
    """The 2.5% and 97.5% points of a weighted sample, or its whole range when it has fewer than
    MIN_RESAMPLES_FOR_PERCENTILES distinct draws; None when empty. Non-finite values count (an unreachable loss is an
    infinite multiplier) and sort to the ends."""
    v, w = np.asarray(values, dtype=float), np.asarray(weights, dtype=float)
    keep = ~np.isnan(v)
    v, w = v[keep], w[keep]
    if not len(v):
        return None
    if len(v) < MIN_RESAMPLES_FOR_PERCENTILES:
        return float(v.min()), float(v.max())
    order = np.argsort(v)
    v, cum = v[order], np.cumsum(w[order]) / w.sum()
    return float(v[np.searchsorted(cum, 0.025)]), float(v[min(np.searchsorted(cum, 0.975), len(v) - 1)])
