"""The compute-optimal frontier of a fitted law L(N, D) and the compute multiplier of one family over a baseline
along the frontiers, with intervals from the fits' seed resamples. Pure functions of fits; no storage, no Ray."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from orchestrator.laws import BOOTSTRAP_SAMPLES, ComputeModel, Law, LawFit, union_interval, weighted_interval


def frontier(law: Law, compute: ComputeModel, flops) -> dict:
    """N_opt, D_opt and L_opt at each training-FLOPs value: L(N, C / FLOPs/token(N)) minimised over N (a grid in
    log N, step 0.05, refined by a parabola through the best three points)."""
    log_c = np.log(np.atleast_1d(np.asarray(flops, dtype=float)))
    grid = np.linspace(0.0, 50.0, 1001)  # log N from 1 to 5e21 parameters
    log_fpt = compute.log_flops_per_token(grid)

    def loss(log_n, lc):
        log_d = lc - compute.log_flops_per_token(log_n)
        return law.E + law.A * np.exp(-law.alpha * log_n) + law.B * np.exp(-law.beta * log_d)

    l_grid = (
        law.E
        + law.A * np.exp(-law.alpha * grid)[:, None]
        + law.B * np.exp(-law.beta * (log_c[None, :] - log_fpt[:, None]))
    )
    i = np.clip(np.argmin(l_grid, axis=0), 1, len(grid) - 2)
    cols = np.arange(len(log_c))
    y0, y1, y2 = l_grid[i - 1, cols], l_grid[i, cols], l_grid[i + 1, cols]
    denom = y0 - 2 * y1 + y2
    step = grid[1] - grid[0]
    shift = np.where(denom > 0, 0.5 * (y0 - y2) / np.where(denom > 0, denom, 1.0), 0.0)
    log_n = grid[i] + np.clip(shift, -1, 1) * step
    log_d = log_c - compute.log_flops_per_token(log_n)
    return dict(flops=np.exp(log_c), n_opt=np.exp(log_n), d_opt=np.exp(log_d), loss=loss(log_n, log_c))


def compute_multiplier(x: Law, x_compute: ComputeModel, base: Law, base_compute: ComputeModel, flops) -> np.ndarray:
    """k(C) with L_opt_base(k C) = L_opt_x(C): how much more training compute the baseline needs, on its frontier,
    for the loss x reaches with C on its own. inf where x's loss is at or below the baseline's E (never reached)."""
    log_c = np.log(np.atleast_1d(np.asarray(flops, dtype=float)))
    target = frontier(x, x_compute, np.exp(log_c))["loss"]
    grid = np.linspace(log_c.min() - 30.0, log_c.max() + 60.0, 721)
    base_loss = frontier(base, base_compute, np.exp(grid))["loss"]
    # log(L - E) against log C is a straight line under 6ND (and nearly one otherwise): interpolate in it.
    excess = np.log(np.maximum(base_loss - base.E, 1e-300))
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.log(target - base.E)
    k = np.full(len(log_c), math.inf)
    ok = np.isfinite(want)
    inside = ok & (want <= excess[0]) & (want >= excess[-1])
    k[inside] = np.exp(np.interp(want[inside], excess[::-1], grid[::-1]) - log_c[inside])
    k[ok & (want > excess[0])] = math.nan  # reached below the grid's compute: not measurable here
    k[ok & (want < excess[-1])] = math.inf
    return k


@dataclass
class MultiplierRow:
    flops: float
    multiplier: float
    interval: Optional[tuple[float, float]]
    extrapolated: bool  # C outside x's measured compute, or k C outside the baseline's


def multipliers_along(x: LawFit, base: LawFit, flops) -> list[MultiplierRow]:
    """The multiplier of x over base at each compute, its interval from the seed resamples (paired: the same draw of
    seeds for both families when they have the same seeds; else every pair of draws, weights multiplied)."""
    flops = np.atleast_1d(np.asarray(flops, dtype=float))
    k = compute_multiplier(x.law, x.compute, base.law, base.compute, flops)
    draws = []
    if x.seeds == base.seeds:
        by_seeds = {r.seeds: r for r in base.resamples}
        draws = [(rx, by_seeds[rx.seeds], rx.weight) for rx in x.resamples if rx.seeds in by_seeds]
    else:  # independent draws: every pair, or a random sample of pairs where that would be too many
        draws = [(rx, rb, rx.weight * rb.weight) for rx in x.resamples for rb in base.resamples]
        if len(draws) > BOOTSTRAP_SAMPLES:
            rng = np.random.default_rng(0)
            p = np.array([d[2] for d in draws])
            picks = rng.choice(len(draws), size=BOOTSTRAP_SAMPLES, p=p / p.sum())
            draws = [(draws[i][0], draws[i][1], 1.0) for i in picks]
    values, weights = [], []
    for rx, rb, w in draws:
        if rx.law is None or rb.law is None:
            continue
        values.append(compute_multiplier(rx.law, x.compute, rb.law, base.compute, flops))
        weights.append(w)
    jk = _multiplier_jackknife(x, base, flops, k)
    out = []
    for j, c in enumerate(flops):
        interval = weighted_interval([v[j] for v in values], weights) if values else None
        interval = union_interval(interval, jk[j])
        lo_x, hi_x = x.compute_range
        lo_b, hi_b = base.compute_range
        outside = not (lo_x <= c <= hi_x) or not (math.isfinite(k[j]) and lo_b <= k[j] * c <= hi_b)
        out.append(MultiplierRow(float(c), float(k[j]), interval, outside))
    return out


def _multiplier_jackknife(x: LawFit, base: LawFit, flops, k) -> list[Optional[tuple[float, float]]]:
    """The jackknife t-interval of log k at each compute: paired (the same seed left out of both) when the families
    share seeds, else each family's leave-one-out spread with the other held at its full fit, the variances added."""
    from orchestrator.ladder import t95

    log_k = np.log(k)

    def loo(laws_x, laws_b):
        return [
            None if lx is None or lb is None else np.log(compute_multiplier(lx, x.compute, lb, base.compute, flops))
            for lx, lb in zip(laws_x, laws_b)
        ]

    if not x.jackknife or not base.jackknife:
        return [None] * len(flops)
    if x.seeds == base.seeds:
        parts = [loo(x.jackknife, base.jackknife)]
    else:
        parts = [loo(x.jackknife, [base.law] * len(x.jackknife)), loo([x.law] * len(base.jackknife), base.jackknife)]
    if any(v is None for p in parts for v in p):
        return [None] * len(flops)
    df = min(len(p) for p in parts) - 1
    var = np.zeros(len(flops))
    for p in parts:
        v, n = np.array(p), len(p)
        var += (n - 1) / n * ((v - v.mean(axis=0)) ** 2).sum(axis=0)
    half = t95(df) * np.sqrt(var)
    return [
        (float(np.exp(lk - h)), float(np.exp(lk + h))) if np.isfinite(lk) and np.isfinite(h) else None
        for lk, h in zip(log_k, half)
    ]


def compute_points(fits: dict[str, LawFit], extra_decades: int = 2, per_range: int = 4) -> np.ndarray:
    """Compute values for the frontier tables: log-spaced through the measured range of every fitted family, then
    `extra_decades` decades beyond it (extrapolated)."""
    ranges = [f.compute_range for f in fits.values() if f.law is not None]
    if not ranges:
        return np.array([])
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    inside = np.geomspace(lo, hi, per_range)
    return np.concatenate([inside, hi * 10.0 ** np.arange(1, extra_decades + 1)])


# ----------------------------------------------------------------------------------------------
# Prediction of a held-out size, and its check.
