"""Joint scaling laws over model size and data: L(N, D) = E + A N^-alpha + B D^-beta fitted per model family
(Chinchilla approach 3) with intervals by bootstrap over seeds, the compute-optimal frontier of each family, the compute
multiplier of one family over a baseline along the frontiers, the effective-data correction for repeated data, the
prediction of a held-out size and its check (orchestrator/frontiers.py, predictions.py), and the report's "Size"
section and plots (size_report.py).

Pure functions of result rows (dicts with family or arch/variant, seed, params_non_embedding or non_embedding_params,
tokens, budget, final_val_loss, and optionally flops_per_token, epochs or unique_tokens, size, val_tokens); no storage,
no Ray. docs/scaling-laws.md describes the method and the papers it follows."""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from orchestrator.law_intervals import (
    BOOTSTRAP_SAMPLES,
    interval_method,
    jackknife_interval,
    seed_draws,
    union_interval,
    weighted_interval,
)

HUBER_DELTA = 1e-3  # on log-loss residuals, as Hoffmann et al. 2022 (approach 3)
N_LAW_PARAMS = 5
MIN_SIZES = 3
MIN_BUDGETS = 3
MIN_POINTS = N_LAW_PARAMS + 3  # distinct (size, budget) cells: five parameters and three degrees of freedom left
R_STAR_D = (
    15.4  # Muennighoff et al. 2023's fitted R*_D: repeated epochs at which repeated data's value has decayed by 1/e
)

# The start grid in the fit's scaled units (N and D over their geometric means, so a and b are the log excess losses
# at the centre of the measured range): wide, as Hoffmann et al.'s, because the surface has flat valleys.
_GRID = dict(
    a=(-5.0, -3.0, -1.5, 0.0, 1.0),
    b=(-5.0, -3.0, -1.5, 0.0, 1.0),
    e=(-1.0, -0.5, 0.0, 0.5, 1.0, 1.5),
    alpha=(0.05, 0.25, 0.5, 1.0, 1.5, 2.0),
    beta=(0.05, 0.25, 0.5, 1.0, 1.5, 2.0),
)
_STARTS = 6  # L-BFGS runs from the best grid points (every grid point is scored, the best few are optimised)
_BOUNDS = [(-30.0, 30.0), (-30.0, 30.0), (-10.0, 5.0), (0.0, 5.0), (0.0, 5.0)]


# ----------------------------------------------------------------------------------------------
# Row fields.


def family_of(r: dict) -> str:
    """A row's model family: its `family` field, else its named variant, else its arch. Sizes of one family are
    fitted together."""
    return str(r.get("family") or r.get("variant") or r["arch"])


def params_of(r: dict) -> float:
    """Non-embedding parameters N (the count the law is in, as Kaplan et al. and Hoffmann et al.)."""
    n = r.get("params_non_embedding", r.get("non_embedding_params"))
    if n is None:
        raise ValueError(f"row {r.get('trial', '?')} has no params_non_embedding: the size analysis needs it")
    return float(n)


def size_of(r: dict) -> str:
    """A row's size label: its `size` field, else its shape as L{layers}-d{width}-h{heads}."""
    if r.get("size"):
        return str(r["size"])
    if r.get("d_model") is not None:
        return f"L{r.get('n_layers')}-d{r.get('d_model')}-h{r.get('n_heads')}"
    return f"N{params_of(r):.0f}"


def epochs_of(r: dict, unique_tokens: Optional[float] = None) -> Optional[float]:
    """Passes over the unique training tokens: the row's `epochs`, else tokens / (its `unique_tokens` or the given
    training split size); None when neither is known."""
    if r.get("epochs") is not None:
        return float(r["epochs"])
    u = r.get("unique_tokens") or unique_tokens
    return float(r["tokens"]) / float(u) if u else None


def effective_tokens(tokens: float, unique_tokens: float, r_star: float = R_STAR_D) -> float:
    """Muennighoff et al. 2023 (eq. 5): D' = U + U R* (1 - exp(-R / R*)), R = D / U - 1 the repeated epochs. Fresh
    data (D <= U) is worth its count; each further epoch is worth less, and D' never exceeds U (1 + R*)."""
    repeats = tokens / unique_tokens - 1.0
    if repeats <= 0:
        return float(tokens)
    return float(unique_tokens + unique_tokens * r_star * (1.0 - math.exp(-repeats / r_star)))


def loss_tokens_text(rows: list[dict]) -> str:
    """What the losses are over: the rows' `val_tokens` when they carry it."""
    counts = sorted({int(r["val_tokens"]) for r in rows if r.get("val_tokens")})
    if not counts:
        return "final validation loss (nats/token) as recorded"
    what = f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,} to {counts[-1]:,}"
    return f"final validation loss (nats/token) over {what} validation tokens"


# ----------------------------------------------------------------------------------------------
# The law and its fit.


@dataclass
class Law:
    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, n, d):
        return self.E + self.A * np.power(n, -self.alpha) + self.B * np.power(d, -self.beta)

    def as_dict(self) -> dict:
        return dict(E=self.E, A=self.A, B=self.B, alpha=self.alpha, beta=self.beta)


@dataclass
class ComputeModel:
    """Training FLOPs of a family as FLOPs/token(N) * D: "6nd" (6 N D) or "flops" (the rows' own FLOPs/token,
    interpolated in log-log between the measured sizes and extended along the end segments)."""

    mode: str
    log_n: tuple = ()
    log_fpt: tuple = ()

    def log_flops_per_token(self, log_n):
        log_n = np.asarray(log_n, dtype=float)
        if self.mode == "6nd":
            return math.log(6.0) + log_n
        x, y = np.asarray(self.log_n), np.asarray(self.log_fpt)
        if len(x) == 1:
            return y[0] + (log_n - x[0])
        out = np.interp(log_n, x, y)
        lo_slope, hi_slope = (y[1] - y[0]) / (x[1] - x[0]), (y[-1] - y[-2]) / (x[-1] - x[-2])
        out = np.where(log_n < x[0], y[0] + lo_slope * (log_n - x[0]), out)
        return np.where(log_n > x[-1], y[-1] + hi_slope * (log_n - x[-1]), out)

    def flops(self, n, d) -> float:
        return float(np.exp(self.log_flops_per_token(math.log(n))) * d)

    def describe(self) -> str:
        if self.mode == "6nd":
            return "C = 6 N D"
        return "C = FLOPs/token(N) * D, FLOPs/token from the rows, log-log interpolated between sizes"


@dataclass
class Resample:
    seeds: tuple  # the drawn multiset of seeds
    weight: float  # its probability under resampling seeds with replacement
    law: Optional[Law]


@dataclass
class LawFit:
    """One family's fit, or why there is none (law is None and reason says why)."""

    family: str
    law: Optional[Law]
    reason: str = ""
    points: int = 0  # distinct (size, budget) cells
    rows: int = 0
    sizes: list = field(default_factory=list)  # distinct N
    budgets: list = field(default_factory=list)
    seeds: list = field(default_factory=list)
    rmse_log: float = math.nan  # rms residual of log loss
    intervals: dict = field(default_factory=dict)  # parameter -> (low, high)
    interval_method: str = ""
    resamples: list = field(default_factory=list)
    jackknife: list = field(default_factory=list)  # the law refitted without each seed in turn (seeds order)
    compute: Optional[ComputeModel] = None
    compute_range: tuple = (math.nan, math.nan)  # measured training FLOPs, min and max
    effective_data: bool = False
    _theta: Optional[np.ndarray] = None  # the optimum in scaled units, where bootstrap refits start
    _centre: tuple = (0.0, 0.0)


def _huber_objective(theta, x_n, x_d, y, w, delta):
    a, b, e, alpha, beta = theta
    t = np.stack([a - alpha * x_n, b - beta * x_d, np.full_like(x_n, e)])
    top = t.max(axis=0)
    s = np.exp(t - top)
    total = s.sum(axis=0)
    r = top + np.log(total) - y
    quad = np.abs(r) <= delta
    h = np.where(quad, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
    dh = w * np.where(quad, r, delta * np.sign(r))
    p = s / total
    # Scaled by 1/delta^2 so the objective is O(1) near the optimum: on the raw scale L-BFGS's tolerances stop it
    # before convergence, the failure Besiroglu et al. 2024 found in the original fit.
    scale = 1.0 / delta**2
    grad = np.array([dh @ p[0], dh @ p[1], dh @ p[2], -(dh * p[0]) @ x_n, -(dh * p[1]) @ x_d])
    return scale * float(w @ h), scale * grad


def _grid_scores(x_n, x_d, y, w, delta) -> np.ndarray:
    grid = np.array(list(itertools.product(*_GRID.values())), dtype=float)
    a, b, e, alpha, beta = (grid[:, i : i + 1] for i in range(5))
    pred = np.logaddexp(np.logaddexp(a - alpha * x_n, b - beta * x_d), e)
    r = np.abs(pred - y)
    h = np.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta))
    order = np.argsort(h @ w)
    return grid[order]


_BLAS_THREADS = (  # (get, set) function names of the OpenBLAS builds numpy and scipy ship
    ("openblas_get_num_threads", "openblas_set_num_threads"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
)


@contextmanager
def _one_blas_thread():
    """Run with every loaded OpenBLAS on one thread: L-BFGS-B's linear algebra is on 5x5 matrices, and a threaded
    BLAS makes each call wait for its threads (six fits took 7.8 s on a loaded 2-core box, 0.11 s on one thread).
    Does nothing where the libraries cannot be found (not Linux, another BLAS)."""
    import ctypes

    restore = []
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line and ".so" in line}
    except OSError:
        paths = set()
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get, set_ in _BLAS_THREADS:
            if hasattr(lib, get) and hasattr(lib, set_):
                restore.append((getattr(lib, set_), getattr(lib, get)()))
                getattr(lib, set_)(1)
    try:
        yield
    finally:
        for set_, n in restore:
            set_(n)


def _minimise(starts, x_n, x_d, y, w, delta) -> Optional[np.ndarray]:
    from scipy.optimize import minimize

    with _one_blas_thread():
        return _minimise_from(minimize, starts, x_n, x_d, y, w, delta)


def _minimise_from(minimize, starts, x_n, x_d, y, w, delta) -> Optional[np.ndarray]:
    best = None
    for start in starts:
        res = minimize(
            _huber_objective,
            start,
            args=(x_n, x_d, y, w, delta),
            jac=True,
            method="L-BFGS-B",
            bounds=_BOUNDS,
            options=dict(maxiter=5000, ftol=1e-14, gtol=1e-9),
        )
        if np.all(np.isfinite(res.x)) and (best is None or res.fun < best[1]):
            best = (res.x, res.fun)
    return None if best is None else best[0]


def _law_from_theta(theta, centre) -> Law:
    a, b, e, alpha, beta = (float(v) for v in theta)
    log_n0, log_d0 = centre
    # Back from scaled units: A (N / N0)^-alpha = (A N0^alpha) N^-alpha.
    return Law(E=math.exp(e), A=math.exp(a + alpha * log_n0), B=math.exp(b + beta * log_d0), alpha=alpha, beta=beta)


def _points(rows, effective_data, unique_tokens, r_star):
    n = np.array([params_of(r) for r in rows])
    d = np.array([float(r["tokens"]) for r in rows])
    if effective_data:
        eff = []
        for r in rows:
            ep = epochs_of(r, unique_tokens)
            if ep is None:
                raise ValueError(
                    "effective_data needs each row's epochs or unique_tokens: give the rows `epochs`, or pass "
                    "unique_tokens (the training split's size in tokens)"
                )
            eff.append(effective_tokens(float(r["tokens"]), float(r["tokens"]) / ep, r_star))
        d = np.array(eff)
    y = np.log(np.array([float(r["final_val_loss"]) for r in rows]))
    return n, d, y


def compute_model(rows: list[dict], mode: str = "auto") -> ComputeModel:
    """The FLOPs model of one family's rows: "flops" from their flops_per_token (mean per distinct N), "6nd", or
    "auto" (flops when every row has flops_per_token)."""
    if mode not in ("auto", "flops", "6nd"):
        raise ValueError(f"compute must be auto, flops or 6nd, not {mode!r}")
    have = all(r.get("flops_per_token") for r in rows)
    if mode == "6nd" or (mode == "auto" and not have):
        return ComputeModel("6nd")
    if not have:
        raise ValueError("compute='flops' needs flops_per_token on every row; use compute='6nd'")
    by_n = defaultdict(list)
    for r in rows:
        by_n[params_of(r)].append(float(r["flops_per_token"]))
    ns = sorted(by_n)
    return ComputeModel("flops", tuple(math.log(n) for n in ns), tuple(math.log(statistics.fmean(by_n[n])) for n in ns))


def fit_family(
    rows: list[dict],
    family: str = "",
    *,
    effective_data: bool = False,
    unique_tokens: Optional[float] = None,
    r_star: float = R_STAR_D,
    compute: str = "auto",
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    delta: float = HUBER_DELTA,
) -> LawFit:
    """Approach 3 on one family's rows: minimise the Huber loss of log L - LSE(a - alpha log N, b - beta log D, e)
    with L-BFGS-B from the best points of a wide start grid, then refit on every resample of whole seeds (exactly,
    each distinct multiset with its probability, when there are at most `samples`; else `samples` random draws)."""
    family = family or (family_of(rows[0]) if rows else "")
    sizes = sorted({params_of(r) for r in rows})
    budgets = sorted({r.get("budget") or r["tokens"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    cells = {(params_of(r), r.get("budget") or r["tokens"]) for r in rows}
    out = LawFit(
        family,
        None,
        points=len(cells),
        rows=len(rows),
        sizes=sizes,
        budgets=budgets,
        seeds=seeds,
        effective_data=effective_data,
    )
    if len(sizes) < MIN_SIZES:
        out.reason = f"{len(sizes)} size(s); a joint fit needs at least {MIN_SIZES}"
    elif len(budgets) < MIN_BUDGETS:
        out.reason = f"{len(budgets)} budget(s); a joint fit needs at least {MIN_BUDGETS}"
    elif len(cells) < MIN_POINTS:
        out.reason = f"{len(cells)} (size, budget) points; 5 parameters need at least {MIN_POINTS}"
    if out.reason:
        return out
    n, d, y = _points(rows, effective_data, unique_tokens, r_star)
    centre = (float(np.mean(np.log(n))), float(np.mean(np.log(d))))
    x_n, x_d = np.log(n) - centre[0], np.log(d) - centre[1]
    theta = _minimise(_grid_scores(x_n, x_d, y, np.ones_like(y), delta)[:_STARTS], x_n, x_d, y, np.ones_like(y), delta)
    if theta is None:
        out.reason = "the optimiser found no finite optimum"
        return out
    out.law, out._theta, out._centre = _law_from_theta(theta, centre), theta, centre
    out.rmse_log = float(np.sqrt(np.mean((np.log(out.law.loss(n, d)) - y) ** 2)))
    out.compute = compute_model(rows, compute)
    flops = [out.compute.flops(params_of(r), float(r["tokens"])) for r in rows]
    out.compute_range = (min(flops), max(flops))
    row_seed = np.array([r["seed"] for r in rows])
    refits: dict[tuple, Optional[Law]] = {}  # random draws repeat multisets: fit each once
    for draw, weight in seed_draws(seeds, samples, seed):
        if draw in refits:
            out.resamples.append(Resample(draw, weight, refits[draw]))
            continue
        counts = Counter(draw)
        w = np.array([float(counts.get(s, 0)) for s in row_seed])
        # From the full data's optimum: a resample moves it little, and the start grid was searched once already.
        refit = _minimise([theta], x_n, x_d, y, w, delta) if w.sum() else None
        refits[draw] = None if refit is None else _law_from_theta(refit, centre)
        out.resamples.append(Resample(draw, weight, refits[draw]))
    if len(seeds) > 1:
        for left_out in seeds:
            w = (row_seed != left_out).astype(float)
            refit = _minimise([theta], x_n, x_d, y, w, delta)
            out.jackknife.append(None if refit is None else _law_from_theta(refit, centre))
    out.intervals, out.interval_method = _parameter_intervals(out)
    return out


_LOG_PARAMS = ("A", "B")  # positive scales: their jackknife interval is made on the log, so it stays positive


def _parameter_intervals(fit: LawFit) -> tuple[dict, str]:
    method = interval_method(len(fit.seeds))
    good = [r for r in fit.resamples if r.law is not None]
    if not good:
        return {}, method
    weights = [r.weight for r in good]
    out = {}
    for k in ("E", "A", "B", "alpha", "beta"):
        boot = weighted_interval([getattr(r.law, k) for r in good], weights)
        values = [None if law is None else getattr(law, k) for law in fit.jackknife]
        if k in _LOG_PARAMS:
            jk = jackknife_interval(math.log(getattr(fit.law, k)), [v and math.log(v) for v in values])
            jk = jk and (math.exp(jk[0]), math.exp(jk[1]))
        else:
            jk = jackknife_interval(getattr(fit.law, k), values)
        out[k] = union_interval(boot, jk)
    return out, method


def fit_families(rows: list[dict], **kw) -> dict[str, LawFit]:
    """fit_family for every family of the rows, by family name."""
    by_family = defaultdict(list)
    for r in rows:
        by_family[family_of(r)].append(r)
    if kw.get("compute", "auto") == "auto":  # one FLOPs convention for all, or multipliers would mix them
        kw["compute"] = "flops" if all(r.get("flops_per_token") for r in rows) else "6nd"
    return {f: fit_family(rs, f, **kw) for f, rs in sorted(by_family.items())}


# ----------------------------------------------------------------------------------------------
# Compute-optimal frontiers and multipliers.
