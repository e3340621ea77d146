"""Loss against budget: per-model curves through the token budgets, power-law fits L(D) = E + B * D^-beta, and the
effective data / compute multipliers of each model against a baseline model, with 95% Student-t intervals over the
per-seed multipliers, and the spread of an extrapolated multiplier across extrapolation rules.

Pure functions of result rows (dicts with model, arch, n_layers, seed, budget, tokens, train_flops, final_val_loss,
val_bpb); no storage, no Ray. orchestrator/report.py turns their output into tables and plots."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

MIN_BUDGETS_TO_FIT = 4  # a 3-parameter law through fewer points is not a fit
TREND_TOLERANCE = 0.05  # a multiplier moving by less than 5% from the smallest to the largest budget is "flat"


@dataclass
class ModelCurve:
    """One model through its budgets: per budget the mean tokens, FLOPs and loss, and each seed's loss."""

    model: str
    arch: str
    n_layers: Optional[int]
    budgets: list[int]
    tokens: np.ndarray
    flops: np.ndarray  # training FLOPs (forward + backward), nan where unknown
    loss: np.ndarray  # mean over seeds
    bpb: np.ndarray
    seed_loss: dict[int, np.ndarray] = field(default_factory=dict)  # seed -> loss per budget (nan where missing)
    variant: str = ""  # the named gptoss variant (gptoss/variants.py), if the model is one
    shape: tuple = ()  # (n_layers, d_model, n_heads) where the rows carry them: a baseline is matched on it

    @property
    def flops_per_token(self) -> float:
        return float(np.nanmean(self.flops / self.tokens))

    @property
    def seeds(self) -> list[int]:
        return sorted(self.seed_loss)


def model_curves(rows: list[dict]) -> dict[str, ModelCurve]:
    """Group rows by their `model` label and budget; budgets in increasing order."""
    by_model: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_model[r["model"]][r["budget"]].append(r)
    curves = {}
    for model, by_budget in by_model.items():
        budgets = sorted(by_budget)
        first = by_budget[budgets[0]][0]
        seeds = sorted({r["seed"] for b in budgets for r in by_budget[b]})
        seed_loss = {
            s: np.array([_mean([r["final_val_loss"] for r in by_budget[b] if r["seed"] == s]) for b in budgets])
            for s in seeds
        }
        curves[model] = ModelCurve(
            model=model,
            arch=first["arch"],
            n_layers=first.get("n_layers"),
            budgets=budgets,
            tokens=np.array([_mean([r["tokens"] for r in by_budget[b]]) for b in budgets]),
            flops=np.array([_mean([r.get("train_flops") or math.nan for r in by_budget[b]]) for b in budgets]),
            loss=np.array([_mean([r["final_val_loss"] for r in by_budget[b]]) for b in budgets]),
            bpb=np.array([_mean([r["val_bpb"] for r in by_budget[b]]) for b in budgets]),
            seed_loss=seed_loss,
            variant=first.get("variant") or "",
            shape=tuple(first.get(k) for k in ("n_layers", "d_model", "n_heads")),
        )
    return curves


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


# ----------------------------------------------------------------------------------------------
# Fits.


def power_law(d, e: float, b: float, beta: float):
    return e + b * np.power(d, -beta)


def fit_power_law(tokens, loss, start: Optional[dict] = None) -> Optional[dict]:
    """L(D) = E + B * D^-beta by least squares (scipy curve_fit, with B fitted as log B and D in units of its
    smallest value for conditioning); None with fewer than MIN_BUDGETS_TO_FIT points or when the fit fails.
    `start`: a fit of a nearby curve to start from (one start instead of several: bootstrap refits)."""
    from scipy.optimize import curve_fit

    d, y = np.asarray(tokens, dtype=float), np.asarray(loss, dtype=float)
    if len(d) < MIN_BUDGETS_TO_FIT or not np.all(np.isfinite(y)):
        return None
    scale = d.min()
    x = d / scale

    def model(x, e, log_b, beta):
        return e + np.exp(log_b) * np.power(x, -beta)

    best = None
    e0 = y.min() * 0.9
    starts = [(e0, math.log(max(y.max() - e0, 1e-6)), beta0) for beta0 in (0.1, 0.3, 0.7, 1.5)]
    if start is not None:  # the same law, in the scaled units used here
        starts = [
            (min(start["E"], y.min() * 0.999), math.log(start["B"]) - start["beta"] * math.log(scale), start["beta"])
        ]
    for p0 in starts:  # several starts: the loss surface in beta is flat far from the optimum
        try:
            params, _ = curve_fit(model, x, y, p0=p0, bounds=([0.0, -30.0, 1e-4], [y.min(), 30.0, 5.0]), maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        rmse = float(np.sqrt(np.mean((model(x, *params) - y) ** 2)))
        if best is None or rmse < best[1]:
            best = (params, rmse)
    if best is None:
        return None
    (e, log_b, beta), rmse = best
    # Back to D in tokens: B * (D / scale)^-beta = (B * scale^beta) * D^-beta.
    return dict(E=float(e), B=float(math.exp(log_b) * scale**beta), beta=float(beta), rmse=rmse, points=len(d))


def tokens_for_loss_fit(fit: dict, loss: float) -> float:
    """Inverse of the fitted law; inf when the loss is at or below the fitted irreducible loss E."""
    if loss <= fit["E"]:
        return math.inf
    return (fit["B"] / (loss - fit["E"])) ** (1 / fit["beta"])


# ----------------------------------------------------------------------------------------------
# Multipliers.


def tokens_to_reach(tokens, loss, target: float, fit: Optional[dict] = None) -> tuple[float, bool]:
    """Tokens the curve (tokens, loss: increasing tokens) needs to reach `target` loss, and whether that is an
    extrapolation. Inside the curve's range: linear interpolation of log loss against log tokens between the
    budgets around the target. Outside it: the power-law fit when there is one, else the nearest segment extended.
    A curve whose loss rises with tokens somewhere is read through its running minimum."""
    d = np.log(np.asarray(tokens, dtype=float))
    y = np.log(np.minimum.accumulate(np.asarray(loss, dtype=float)))
    t = math.log(target)
    if len(d) == 1:
        return (math.exp(d[0]), False) if math.isclose(t, y[0], abs_tol=1e-12) else (math.nan, True)
    reached = np.nonzero(y <= t + 1e-12)[0]
    if len(reached) and reached[0] > 0:
        i = int(reached[0])
        frac = (y[i - 1] - t) / (y[i - 1] - y[i])
        return math.exp(d[i - 1] + frac * (d[i] - d[i - 1])), False
    if len(reached) and math.isclose(t, y[0], abs_tol=1e-12):
        return math.exp(d[0]), False
    if fit is not None:
        return tokens_for_loss_fit(fit, target), True
    # Extend the first segment (target above the curve) or the last one (below it).
    i0, i1 = (0, 1) if t > y[0] else (len(d) - 2, len(d) - 1)
    if y[i1] == y[i0]:
        return math.inf if t < y[i1] else math.exp(d[i0]), True
    return math.exp(d[i0] + (t - y[i0]) * (d[i1] - d[i0]) / (y[i1] - y[i0])), True


EXTRAPOLATION_RULES = ("power law", "last segment", "last three")


def extrapolations(tokens, loss, target: float, fit: Optional[dict] = None) -> dict[str, float]:
    """Tokens the curve needs to reach `target` outside its measured range, by each rule that applies: "power law"
    (the fit over every budget, when there is one), "last segment" (the log-log line through the two budgets at that
    end of the curve) and "last three" (the least-squares log-log line through the three budgets at that end). Inside
    the range: {} (nothing is extrapolated). The rules disagree by as much as the curve bends past its last budget,
    which no seed spread measures."""
    d = np.log(np.asarray(tokens, dtype=float))
    y = np.log(np.minimum.accumulate(np.asarray(loss, dtype=float)))
    t = math.log(target)
    if len(d) < 2 or y[-1] - 1e-12 <= t <= y[0] + 1e-12:
        return {}
    out = {}
    if fit is not None:
        out["power law"] = tokens_for_loss_fit(fit, target)
    for rule, k in (("last segment", 2), ("last three", 3)):
        if len(d) < k:
            continue
        xs, ys = (d[:k], y[:k]) if t > y[0] else (d[-k:], y[-k:])
        slope, intercept = np.polyfit(xs, ys, 1)
        out[rule] = math.exp((t - intercept) / slope) if slope < 0 else math.inf
    return out


def t_interval(values: list[float]) -> Optional[tuple[float, float]]:
    """95% Student-t interval of the mean of `values` (mean +- t(n-1) * std / sqrt(n)); None below 2 values."""
    from orchestrator.ladder import t95

    v = [x for x in values if math.isfinite(x)]
    if len(v) < 2:
        return None
    half = t95(len(v) - 1) * statistics.stdev(v) / math.sqrt(len(v))
    mean = statistics.fmean(v)
    return mean - half, mean + half


@dataclass
class Multiplier:
    budget: int
    loss: float
    baseline_tokens: float  # tokens the baseline needs for this loss
    data: float  # baseline_tokens / this model's tokens
    compute: float  # the same in training FLOPs
    extrapolated: bool
    data_interval: Optional[tuple[float, float]] = None  # see interval_method
    compute_interval: Optional[tuple[float, float]] = None
    seeds: int = 0  # per-seed multipliers the interval is over
    interval_method: str = ""  # how the interval was made, for the report
    by_rule: dict = field(default_factory=dict)  # extrapolated: the data multiplier by each extrapolation rule
    measured_range: tuple = (math.nan, math.nan)  # the baseline's smallest and largest measured budgets (tokens)


def multipliers(model: ModelCurve, baseline: ModelCurve, baseline_fit: Optional[dict] = None) -> list[Multiplier]:
    """At each budget of `model`: how many tokens (and FLOPs) `baseline` needs to reach the model's mean loss there,
    over what the model spent.

    The interval: each seed gives its own multiplier (that seed's loss read on the baseline's curve of the same seed
    when both curves have the same seeds: paired, since a seed's runs share data order and init; else on the
    baseline's mean curve, which leaves the baseline's own seed spread out, and says so). The 95% interval is a
    Student-t interval over the log of those per-seed multipliers, exponentiated: honest at 2-5 seeds, where a
    bootstrap over seeds has few distinct resamples and no small-sample correction. An extrapolated multiplier also
    carries its value under every extrapolation rule (EXTRAPOLATION_RULES)."""
    fpt_ratio = baseline.flops_per_token / model.flops_per_token  # nan when FLOPs are unknown
    points = [tokens_to_reach(baseline.tokens, baseline.loss, loss, baseline_fit) for loss in model.loss]
    paired = model.seeds == baseline.seeds
    per_seed = []  # per seed, the data multiplier at every budget
    if len(model.seeds) >= 2:
        for s in model.seeds:
            b_loss = baseline.seed_loss[s] if paired else baseline.loss
            fit = baseline_fit
            if baseline_fit and paired:  # where the point estimate reads the fit, each seed reads its own curve's
                fit = fit_power_law(baseline.tokens, b_loss, start=baseline_fit) or baseline_fit
            per_seed.append(
                [
                    tokens_to_reach(baseline.tokens, b_loss, loss, fit)[0] / d
                    for loss, d in zip(model.seed_loss[s], model.tokens)
                ]
            )
    n = len(per_seed)
    method = (
        f"95% t-interval over {n} per-seed multipliers ("
        + ("paired with the baseline's seeds" if paired else "against the baseline's mean curve")
        + ")"
        if n >= 2
        else ""
    )
    out = []
    for j, budget in enumerate(model.budgets):
        needed, extrapolated = points[j]
        data = needed / model.tokens[j]
        logs = [math.log(r[j]) for r in per_seed if r[j] > 0 and math.isfinite(r[j])]
        interval = t_interval(logs)
        interval = (math.exp(interval[0]), math.exp(interval[1])) if interval else None
        rules = extrapolations(baseline.tokens, baseline.loss, float(model.loss[j]), baseline_fit)
        out.append(
            Multiplier(
                budget,
                float(model.loss[j]),
                needed,
                data,
                data * fpt_ratio,
                extrapolated,
                interval,
                (interval[0] * fpt_ratio, interval[1] * fpt_ratio) if interval else None,
                seeds=len(logs) if interval else 0,
                interval_method=method if interval else "",
                by_rule={k: v / model.tokens[j] for k, v in rules.items()},
                measured_range=(float(baseline.tokens[0]), float(baseline.tokens[-1])),
            )
        )
    return out


def trend(values: list[float]) -> str:
    """'falling', 'rising' or 'flat': the multiplier at the largest budget against the smallest."""
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return "one budget"
    ratio = finite[-1] / finite[0]
    if ratio < 1 - TREND_TOLERANCE:
        return "falling"
    if ratio > 1 + TREND_TOLERANCE:
        return "rising"
    return "flat"


def pick_baseline(curves: dict[str, ModelCurve], model: ModelCurve, baseline: str) -> Optional[ModelCurve]:
    """The baseline curve for `model`: the model labelled `baseline`, or else the models of variant `baseline` (a
    variant sweep: gpt2 is the ladder's GPT-2 endpoint), or else of arch `baseline`, and among several of those the
    one of the same shape (layers, width, heads: a size sweep), else the one of the same depth."""
    if baseline in curves:
        return curves[baseline]
    candidates = [c for c in curves.values() if c.variant == baseline] or [
        c for c in curves.values() if c.arch == baseline and not c.variant
    ]
    if len(candidates) == 1:
        return candidates[0]
    same_shape = [c for c in candidates if c.shape and None not in c.shape and c.shape == model.shape]
    if len(same_shape) == 1:
        return same_shape[0]
    same_depth = [c for c in candidates if c.n_layers == model.n_layers]
    return same_depth[0] if len(same_depth) == 1 else None
