"""Joint scaling laws over model size and data: L(N, D) = E + A N^-alpha + B D^-beta fitted per model family
(Chinchilla approach 3) with intervals by bootstrap over seeds, the compute-optimal frontier of each family, the compute
multiplier of one family over a baseline along the frontiers, the effective-data correction for repeated data, the
prediction of a held-out size and its check, and the report's "Size" section and plots.

Pure functions of result rows (dicts with family or arch/variant, seed, params_non_embedding or non_embedding_params,
tokens, budget, final_val_loss, and optionally flops_per_token, epochs or unique_tokens, size, val_tokens); no storage,
no Ray. docs/scaling-laws.md describes the method and the papers it follows."""

from __future__ import annotations

import io
import itertools
import json
import math
import statistics
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

HUBER_DELTA = 1e-3  # on log-loss residuals, as Hoffmann et al. 2022 (approach 3)
N_LAW_PARAMS = 5
MIN_SIZES = 3
MIN_BUDGETS = 3
MIN_POINTS = N_LAW_PARAMS + 3  # distinct (size, budget) cells: five parameters and three degrees of freedom left
BOOTSTRAP_SAMPLES = 200  # Monte Carlo draws when the seeds have more distinct resamples than this
MIN_RESAMPLES_FOR_PERCENTILES = 20  # fewer distinct resamples: the interval is their whole range, labelled so
R_STAR_D = (
    15.4  # Muennighoff et al. 2023's fitted R*_D: repeated epochs at which repeated data's value has decayed by 1/e
)
PREDICTIONS_FORMAT = "nano-gpt-oss/predictions"
PREDICTIONS_VERSION = 1
PLOT_FILES = dict(
    loss_vs_params="size_loss_vs_params.png", frontier="size_frontier.png", multiplier="size_multiplier.png"
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


def distinct_resamples(n_seeds: int) -> int:
    """Distinct multisets of n seeds drawn from n with replacement: C(2n - 1, n) (1, 3, 10, 35, 126 for 1-5 seeds)."""
    return math.comb(2 * n_seeds - 1, n_seeds) if n_seeds > 0 else 0


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
    for draw, weight in _seed_draws(seeds, samples, seed):
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


def _seed_draws(seeds: list, samples: int, seed: int) -> list[tuple[tuple, float]]:
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


def _union(a: Optional[tuple], b: Optional[tuple]) -> Optional[tuple[float, float]]:
    if a is None or b is None:
        return a or b
    return min(a[0], b[0]), max(a[1], b[1])


_LOG_PARAMS = ("A", "B")  # positive scales: their jackknife interval is made on the log, so it stays positive


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
        out[k] = _union(boot, jk)
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
        interval = _union(interval, jk[j])
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


def _budget_of(r: dict) -> float:
    return float(r.get("budget") or r["tokens"])


def predict(
    rows: list[dict],
    holdout: dict,
    *,
    effective_data: bool = False,
    unique_tokens: Optional[float] = None,
    samples: int = BOOTSTRAP_SAMPLES,
    val_tokens_text: Optional[str] = None,
) -> dict:
    """Fit each family on every row except those of the held-out size and predict its loss at that size and budget.

    holdout: {"size": size label (size_of), "budget": tokens, optionally "tokens": the tokens the trial will train
    on (default the budget) and "params_non_embedding": {family: N} for sizes not yet in the rows}. Returns the
    JSON-serialisable predictions (predictions_json writes them)."""
    if "size" not in holdout or "budget" not in holdout:
        raise ValueError("holdout needs a size and a budget, e.g. {'size': 'L4-d256-h4', 'budget': 4194304}")
    size, budget = str(holdout["size"]), float(holdout["budget"])
    tokens = float(holdout.get("tokens") or budget)
    given_n = holdout.get("params_non_embedding") or {}
    by_family = defaultdict(list)
    for r in rows:
        by_family[family_of(r)].append(r)
    mode = "flops" if all(r.get("flops_per_token") for r in rows) else "6nd"
    families = {}
    for fam, rs in sorted(by_family.items()):
        held = [r for r in rs if size_of(r) == size]
        train = [r for r in rs if size_of(r) != size]
        n = given_n.get(fam) or (params_of(held[0]) if held else None)
        entry = dict(
            params_non_embedding=n,
            tokens=tokens,
            predicted_loss=None,
            interval=None,
            interval_method="",
            fit_interval=None,
            seed_std=None,
            seeds=[],
            fit=None,
            fitted_on=None,
            reason=None,
        )
        families[fam] = entry
        if n is None:
            entry["reason"] = (
                f"the non-embedding parameter count of {size} is unknown: give holdout params_non_embedding"
            )
            continue
        fit = fit_family(
            train, fam, effective_data=effective_data, unique_tokens=unique_tokens, compute=mode, samples=samples
        )
        entry["fitted_on"] = dict(points=fit.points, rows=fit.rows, sizes=fit.sizes, budgets=fit.budgets)
        entry["seeds"] = fit.seeds
        if fit.law is None:
            entry["reason"] = fit.reason
            continue
        d = tokens
        if effective_data:
            u = unique_tokens or (float(train[0]["tokens"]) / epochs_of(train[0], unique_tokens))
            d = effective_tokens(tokens, u)
        entry["predicted_loss"] = float(fit.law.loss(n, d))
        good = [r for r in fit.resamples if r.law is not None]
        fit_interval = _union(
            weighted_interval([float(r.law.loss(n, d)) for r in good], [r.weight for r in good]),
            jackknife_interval(
                entry["predicted_loss"], [None if law is None else float(law.loss(n, d)) for law in fit.jackknife]
            ),
        )
        # The measurement will be a mean over seeds, which has its own seed noise besides the law's: widen the
        # fit's interval by the 95% t half-width of a mean of that many seeds.
        m, rel = len(fit.seeds), pooled_seed_std(train)
        std = None if rel is None else rel * entry["predicted_loss"]
        entry["fit_interval"] = list(fit_interval) if fit_interval else None
        entry["seed_std"] = std
        if fit_interval and std is not None:
            from orchestrator.ladder import t95

            half = t95(m - 1) * std / math.sqrt(m)
            entry["interval"] = [fit_interval[0] - half, fit_interval[1] + half]
            entry["interval_method"] = (
                f"the law's interval ({interval_method(m, samples)}), then ±{half:.4f} nats for the noise of the "
                f"measurement, a mean of {m} seeds: the 95% t half-width with the seed std {std:.4f} nats "
                f"({100 * rel:.2f}% of the loss, pooled over the fitted points)"
            )
        else:
            entry["interval_method"] = interval_method(m, samples)
        entry["fit"] = fit.law.as_dict()
        entry["extrapolated_in_size"] = bool(n > max(fit.sizes) or n < min(fit.sizes))
    return dict(
        format=PREDICTIONS_FORMAT,
        version=PREDICTIONS_VERSION,
        holdout=dict(size=size, budget=budget, tokens=tokens),
        loss=val_tokens_text or loss_tokens_text(rows),
        effective_data=effective_data,
        families=families,
    )


def pooled_seed_std(rows: list[dict]) -> Optional[float]:
    """The relative std of final loss between seeds of one (family, size, budget) point (std of log loss), pooled
    over the points with several seeds; None when no point has two. Relative, because the spread in nats grows with
    the loss: small models' points would otherwise set the noise of a large one."""
    cells = defaultdict(list)
    for r in rows:
        cells[(family_of(r), params_of(r), _budget_of(r))].append(math.log(float(r["final_val_loss"])))
    ss = dof = 0.0
    for losses in cells.values():
        if len(losses) > 1:
            mean = statistics.fmean(losses)
            ss += sum((x - mean) ** 2 for x in losses)
            dof += len(losses) - 1
    return math.sqrt(ss / dof) if dof else None


def predictions_json(predictions: dict) -> str:
    """predictions.json's text (the caller writes it atomically, before the held-out trials run)."""
    return json.dumps(predictions, indent=1, sort_keys=True, allow_nan=False) + "\n"


def load_predictions(text: str, where: str = "predictions.json") -> dict:
    """Parse and check predictions.json; a ValueError naming the file and what is wrong otherwise."""
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError(f"{where} is not valid JSON: rewrite it with report --predict") from None
    if not isinstance(data, dict) or data.get("format") != PREDICTIONS_FORMAT:
        raise ValueError(f"{where} is not a predictions file (format is not {PREDICTIONS_FORMAT!r})")
    if data.get("version") != PREDICTIONS_VERSION:
        raise ValueError(f"{where} has version {data.get('version')}; this tool reads version {PREDICTIONS_VERSION}")
    if not isinstance(data.get("holdout"), dict) or not isinstance(data.get("families"), dict):
        raise ValueError(f"{where} lacks its holdout or families: rewrite it with report --predict")
    return data


def prediction_check(predictions: dict, rows: list[dict]) -> list[dict]:
    """Per family: the predicted loss and interval against the measured mean over seeds at the held-out size and
    budget, the error (measured - predicted, nats), and whether the measurement falls inside the interval."""
    size, budget = predictions["holdout"]["size"], float(predictions["holdout"]["budget"])
    out = []
    for fam, p in sorted(predictions["families"].items()):
        measured = [
            float(r["final_val_loss"])
            for r in rows
            if family_of(r) == fam and size_of(r) == size and _budget_of(r) == budget
        ]
        mean = statistics.fmean(measured) if measured else None
        pred, interval = p.get("predicted_loss"), p.get("interval")
        out.append(
            dict(
                family=fam,
                predicted=pred,
                interval=interval,
                interval_method=p.get("interval_method", ""),
                measured=mean,
                measured_std=statistics.stdev(measured) if len(measured) > 1 else None,
                seeds=len(measured),
                error_nats=(mean - pred) if (mean is not None and pred is not None) else None,
                inside=(interval[0] <= mean <= interval[1]) if (mean is not None and interval) else None,
                reason=p.get("reason") or ("not measured yet" if mean is None else None),
            )
        )
    return out


# ----------------------------------------------------------------------------------------------
# The report's Size section.


def _fmt(v: Optional[float], digits: int = 4) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _fmt_g(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if math.isinf(v):
        return "inf"
    return f"{v:.3g}"


def _fmt_interval(iv, fmt=_fmt_g) -> str:
    return f" [{fmt(iv[0])}, {fmt(iv[1])}]" if iv else ""


def _count(n: float) -> str:
    from orchestrator.scaling import fmt_tokens

    return fmt_tokens(n)


def _sizes_in_order(rows: list[dict]) -> list[str]:
    by_size = defaultdict(list)
    for r in rows:
        by_size[size_of(r)].append(params_of(r))
    return sorted(by_size, key=lambda s: statistics.fmean(by_size[s]))


def loss_table(rows: list[dict], unique_tokens: Optional[float] = None) -> list[str]:
    """Per budget, one row per family: the mean loss ± std over seeds at every size (N and seeds in each cell), and
    the epochs the budget is where they are known."""
    sizes = _sizes_in_order(rows)
    cells = defaultdict(list)
    for r in rows:
        cells[(_budget_of(r), family_of(r), size_of(r))].append(r)
    lines = [
        "| budget (tokens) | epochs | family | " + " | ".join(sizes) + " |",
        "|---:|---:|---|" + "---:|" * len(sizes),
    ]
    for budget in sorted({k[0] for k in cells}):
        for fam in sorted({k[1] for k in cells if k[0] == budget}):
            parts, epochs = [], set()
            for s in sizes:
                rs = cells.get((budget, fam, s), [])
                if not rs:
                    parts.append("")
                    continue
                losses = [float(r["final_val_loss"]) for r in rs]
                std = f" ± {statistics.stdev(losses):.4f}" if len(losses) > 1 else ""
                parts.append(f"{statistics.fmean(losses):.4f}{std} ({_count(params_of(rs[0]))}, {len(losses)})")
                epochs |= {round(e, 2) for e in (epochs_of(r, unique_tokens) for r in rs) if e is not None}
            ep = ", ".join(f"{e:g}" for e in sorted(epochs)) or "-"
            lines.append(f"| {_count(budget)} | {ep} | {fam} | " + " | ".join(parts) + " |")
    return lines


def fit_table(fits: dict[str, LawFit]) -> list[str]:
    lines = [
        "| family | sizes × budgets (points, rows, seeds) | E (nats) | A | alpha | B | beta | "
        "N_opt ∝ C^a, a | rms log residual | interval |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    methods: list[str] = []
    for fam, f in fits.items():
        shape = f"{len(f.sizes)} × {len(f.budgets)} ({f.points}, {f.rows}, {len(f.seeds)})"
        if f.law is not None and f.interval_method not in methods:
            methods.append(f.interval_method)
        if f.law is None:
            lines.append(f"| {fam} | {shape} | no fit: {f.reason} | | | | | | | |")
            continue
        law, iv = f.law, f.intervals

        def cell(k, fmt):
            return f"{fmt(getattr(law, k))}{_fmt_interval(iv.get(k), fmt)}"

        a = law.beta / (law.alpha + law.beta) if law.alpha + law.beta > 0 else math.nan
        lines.append(
            f"| {fam} | {shape} | {cell('E', lambda v: _fmt(v))} | {cell('A', _fmt_g)} | "
            f"{cell('alpha', lambda v: _fmt(v, 3))} | {cell('B', _fmt_g)} | {cell('beta', lambda v: _fmt(v, 3))} | "
            f"{_fmt(a, 3)} | {f.rmse_log:.2g} | ({methods.index(f.interval_method) + 1}) |"
        )
    return lines + ["", *(f"({i + 1}) Intervals: {m}." for i, m in enumerate(methods))]


def frontier_table(fits: dict[str, LawFit], baseline: str) -> list[str]:
    fitted = {k: f for k, f in fits.items() if f.law is not None}
    flops = compute_points(fitted)
    base = fitted.get(baseline)
    lines = [
        f"| training FLOPs | family | N_opt | D_opt | L_opt (nats) | compute multiplier over {baseline} | note |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for fam, f in fitted.items():
        fr = frontier(f.law, f.compute, flops)
        mult = multipliers_along(f, base, flops) if base is not None and fam != baseline else None
        for j, c in enumerate(flops):
            note = []
            if not (f.compute_range[0] <= c <= f.compute_range[1]):
                note.append("extrapolated (compute)")
            if not (min(f.sizes) <= fr["n_opt"][j] <= max(f.sizes)):
                note.append("N_opt outside measured sizes")
            m = "baseline" if fam == baseline else "-"
            if mult:
                row = mult[j]
                m = f"{_fmt_g(row.multiplier)}x{_fmt_interval(row.interval)}"
                if row.extrapolated and "extrapolated (compute)" not in note:
                    note.append(f"extrapolated ({baseline}'s compute)")
            lines.append(
                f"| {c:.3g} | {fam} | {_count(fr['n_opt'][j])} | {_count(fr['d_opt'][j])} | "
                f"{fr['loss'][j]:.4f} | {m} | {'; '.join(note)} |"
            )
    if base is not None:
        for fam, f in fitted.items():
            if fam != baseline:
                how = "the same draw of seeds for both" if f.seeds == base.seeds else "independent draws for each"
                lines += [
                    "",
                    f"{fam}'s multiplier interval: the seed resamples of both fits ({how}); "
                    f"{interval_method(len(f.seeds))}.",
                ]
    return lines


def check_table(checks: list[dict], predictions: dict) -> list[str]:
    h = predictions["holdout"]
    lines = [
        f"Held out: size {h['size']} at {_count(h['budget'])} tokens, fitted on every other size "
        f"({predictions.get('loss', 'validation loss as recorded')}).",
        "",
        "| family | predicted (nats) | interval | measured (nats) | seeds | error = measured − predicted (nats) | "
        "inside the interval |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    methods: list[str] = []
    for c in checks:
        iv = "-"
        if c["interval"]:
            if c["interval_method"] not in methods:
                methods.append(c["interval_method"])
            iv = f"[{c['interval'][0]:.4f}, {c['interval'][1]:.4f}] ({methods.index(c['interval_method']) + 1})"
        std = f" ± {c['measured_std']:.4f}" if c["measured_std"] is not None else ""
        inside = "-" if c["inside"] is None else ("yes" if c["inside"] else "**no**")
        err = f"{c['error_nats']:+.4f}" if c["error_nats"] is not None else (c["reason"] or "-")
        lines.append(
            f"| {c['family']} | {_fmt(c['predicted'])} | {iv} | {_fmt(c['measured'])}{std} | {c['seeds']} | "
            f"{err} | {inside} |"
        )
    return lines + ["", *(f"({i + 1}) Interval: {m}." for i, m in enumerate(methods))]


def size_section(
    rows: list[dict],
    baseline: str,
    predictions: Optional[dict] = None,
    *,
    effective_data: bool = False,
    unique_tokens: Optional[float] = None,
    compute: str = "auto",
    fits: Optional[dict[str, LawFit]] = None,
) -> list[str]:
    """Markdown lines of the report's "## Size" section: loss against N per budget, the joint fits with intervals,
    frontiers and the compute multiplier over `baseline` against compute, and the prediction check. The plots it
    links are PLOT_FILES (size_plots makes them)."""
    fits = (
        fits
        if fits is not None
        else fit_families(rows, effective_data=effective_data, unique_tokens=unique_tokens, compute=compute)
    )
    what = loss_tokens_text(rows)
    n_seeds = sorted({len(f.seeds) for f in fits.values()})
    lines = [
        "## Size",
        "",
        f"Losses are the {what}; N is non-embedding parameters, D training tokens"
        + (", corrected for repetition to effective tokens D' (Muennighoff et al. 2023)" if effective_data else "")
        + ".",
        "",
        f"![loss vs params]({PLOT_FILES['loss_vs_params']})",
        "",
        "### Loss against N, per budget",
        "",
        "Each cell: mean ± std over seeds (N, seeds). Epochs: training tokens over the unique tokens, where known.",
        "",
        *loss_table(rows, unique_tokens),
        "",
        "### Joint fits L(N, D) = E + A N^-alpha + B D^-beta",
        "",
        "Chinchilla approach 3 (Hoffmann et al. 2022, as re-done by Besiroglu et al. 2024): Huber loss (delta "
        f"{HUBER_DELTA:g}) on log loss, L-BFGS-B from the best of a wide start grid. Intervals resample whole seeds "
        f"(seeds per family: {', '.join(map(str, n_seeds))}); they show seed noise only, not the error of the law's "
        "form. a = beta / (alpha + beta) is the exponent of N_opt in compute.",
        "",
        *fit_table(fits),
    ]
    unfitted = [f for f in fits.values() if f.law is None]
    if unfitted:
        lines += ["", *(f"- {f.family}: no fit ({f.reason}), so no frontier and no multiplier." for f in unfitted)]
    fitted = [f for f in fits.values() if f.law is not None]
    if fitted:
        compute_text = fitted[0].compute.describe()
        lines += [
            "",
            f"### Compute-optimal frontiers and the compute multiplier over {baseline}",
            "",
            f"Along each family's frontier ({compute_text}): the N and D that minimise its fitted law at a compute C, "
            f"and the multiplier k with L_opt_{baseline}(k C) = L_opt_family(C): {baseline} needs k times the "
            "compute for the same loss (k > 1: the family is ahead). Rows beyond the measured compute are "
            "extrapolations of the law.",
            "",
            f"![frontiers]({PLOT_FILES['frontier']})",
            "",
        ]
        if baseline not in fits:
            lines += [f"No family named {baseline}: families are {', '.join(fits)}.", ""]
        elif fits[baseline].law is None:
            lines += [f"{baseline} has no fit, so no multiplier.", ""]
        else:
            lines += [f"![multiplier]({PLOT_FILES['multiplier']})", ""]
        lines += frontier_table(fits, baseline)
    if predictions is not None:
        lines += ["", "### Prediction check", "", *check_table(prediction_check(predictions, rows), predictions)]
    return lines


# ----------------------------------------------------------------------------------------------
# Plots.


def _figure_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss_vs_params(rows: list[dict], fits: dict[str, LawFit], references: Optional[list] = None) -> bytes:
    """Final val loss against N: one line per family per budget (colour = family, marker = budget), the fitted law
    at each budget dotted, the n-gram references as horizontal lines."""
    from orchestrator.scaling import draw_references

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^v<>p*h"
    budgets = sorted({_budget_of(r) for r in rows})
    for i, fam in enumerate(sorted({family_of(r) for r in rows})):
        color = colors[i % len(colors)]
        for j, b in enumerate(budgets):
            by_n = defaultdict(list)
            for r in rows:
                if family_of(r) == fam and _budget_of(r) == b:
                    by_n[params_of(r)].append(float(r["final_val_loss"]))
            if not by_n:
                continue
            ns = sorted(by_n)
            ax.plot(
                ns,
                [statistics.fmean(by_n[n]) for n in ns],
                marker=markers[j % len(markers)],
                color=color,
                label=f"{fam} @ {_count(b)} tokens",
            )
            f = fits.get(fam)
            if f is not None and f.law is not None and not f.effective_data:
                grid = np.geomspace(min(ns) / 2, max(ns) * 2, 50)
                ax.plot(grid, f.law.loss(grid, b), linestyle=":", color=color, linewidth=1)
    draw_references(ax, references or [])
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("final validation loss (nats/token)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, ncol=2)
    ax.set_title("Loss against size, per budget (dotted: the joint fit)")
    fig.tight_layout()
    return _figure_bytes(fig)


def plot_frontiers(rows: list[dict], fits: dict[str, LawFit], references: Optional[list] = None) -> bytes:
    """Loss against training FLOPs: every measured point, and each fitted family's compute-optimal frontier (solid
    in its measured compute range, dashed beyond)."""
    from orchestrator.scaling import draw_references

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (fam, f) in enumerate(sorted(fits.items())):
        color = colors[i % len(colors)]
        model = f.compute or compute_model([r for r in rows if family_of(r) == fam])
        pts = [
            (model.flops(params_of(r), float(r["tokens"])), float(r["final_val_loss"]))
            for r in rows
            if family_of(r) == fam
        ]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=color, s=12, alpha=0.6, label=f"{fam} runs")
        if f.law is None:
            continue
        lo, hi = f.compute_range
        inside = np.geomspace(lo, hi, 40)
        beyond = np.geomspace(hi, hi * 100, 20)
        ax.plot(inside, frontier(f.law, f.compute, inside)["loss"], color=color, label=f"{fam} frontier")
        ax.plot(beyond, frontier(f.law, f.compute, beyond)["loss"], color=color, linestyle="--")
    draw_references(ax, references or [])
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("final validation loss (nats/token)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title("Loss against compute, with each family's compute-optimal frontier (dashed: extrapolated)")
    fig.tight_layout()
    return _figure_bytes(fig)


def plot_multipliers(fits: dict[str, LawFit], baseline: str) -> bytes:
    """The compute multiplier of every fitted family over `baseline` against compute, with its seed-resample band;
    beyond the measured compute shaded."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    base = fits.get(baseline)
    fitted = {k: f for k, f in fits.items() if f.law is not None}
    if base is not None and base.law is not None and fitted:
        pts = compute_points(fitted, extra_decades=2, per_range=2)
        grid = np.geomspace(pts.min(), pts.max(), 40)
        for i, (fam, f) in enumerate(sorted(fitted.items())):
            if fam == baseline:
                continue
            rows = multipliers_along(f, base, grid)
            color = colors[i % len(colors)]
            ax.plot(grid, [r.multiplier for r in rows], color=color, label=f"{fam} over {baseline}")
            lo = [r.interval[0] if r.interval else np.nan for r in rows]
            hi = [r.interval[1] if r.interval else np.nan for r in rows]
            ax.fill_between(grid, lo, hi, color=color, alpha=0.2)
        measured_hi = max(f.compute_range[1] for f in fitted.values())
        ax.axvspan(measured_hi, grid.max(), color="gray", alpha=0.1, label="beyond measured compute")
        ax.legend(fontsize=7)
    ax.axhline(1.0, color="gray", linewidth=0.9)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel(f"compute multiplier over {baseline}")
    ax.grid(alpha=0.3, which="both")
    ax.set_title("Compute multiplier along the frontiers")
    fig.tight_layout()
    return _figure_bytes(fig)


def size_plots(
    rows: list[dict], baseline: str, references: Optional[list] = None, fits: Optional[dict[str, LawFit]] = None, **kw
) -> dict[str, bytes]:
    """The Size section's PNGs by file name (PLOT_FILES)."""
    fits = fits if fits is not None else fit_families(rows, **kw)
    return {
        PLOT_FILES["loss_vs_params"]: plot_loss_vs_params(rows, fits, references),
        PLOT_FILES["frontier"]: plot_frontiers(rows, fits, references),
        PLOT_FILES["multiplier"]: plot_multipliers(fits, baseline),
    }
