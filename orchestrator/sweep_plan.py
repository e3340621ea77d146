"""A sweep's plan: the grid (arch x variant x depth x ... x seed) and its validation, trial names, and the run specs
of its points, each trained once or at several token budgets (one long wsd run per point, the smaller budgets'
cooldowns branched off it). Pure planning: no storage, no Ray."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any, Optional

from orchestrator.config import TrainConfig, fields_not_of, model_fields, model_overrides_allowed
from orchestrator.setting_types import TYPE_WORDS, field_type, is_type, yaml_number_hint
from orchestrator.spec import BranchStart, RunSpec

# Grid axes: train-level fields, and every model-config field (gptoss/model_*.py) a run may override.
TRAIN_AXES = ("arch", "seed", "lr", "variant")
_TRAIN_AXIS_TYPES = {"arch": str, "seed": int, "lr": float, "variant": str}
# Trial names abbreviate the axes they vary (L6-E4-k1-s0) in this order; an axis not listed keeps its field name.
# Names are how sweeps resume, so an abbreviation never changes.
_SHORT = {
    "n_layers": "L",
    "d_model": "d",
    "n_heads": "h",
    "n_kv_heads": "kv",
    "num_experts": "E",
    "experts_per_token": "k",
    "intermediate_size": "i",
    "sliding_window": "w",
    "head_dim": "hd",
    "aux_loss_coef": "aux",
    "dropout": "do",
    "tie_embeddings": "tie",
    "positions": "pos",
    "norm": "norm",
    "mlp": "mlp",
    "sinks": "sinks",
    "seed": "s",
    "lr": "lr",
}
_AXIS_ORDER = ["variant"] + list(_SHORT)
# A variant's trial is named v-<token>-...: "v-" keeps the variant gpt2 apart from the arch gpt2 (gpt2-s0), and the
# token makes '+rope' a legal name ('p-rope', gptoss.variants.variant_token).
VARIANT_PREFIX = "v-"


def grid_axes() -> tuple[str, ...]:
    return TRAIN_AXES + model_overrides_allowed()


def axis_type(axis: str) -> Optional[type]:
    """The value type of a grid axis, from TrainConfig's or the model configs' field annotations."""
    if axis in _TRAIN_AXIS_TYPES:
        return _TRAIN_AXIS_TYPES[axis]
    kinds = {field_type(f[axis])[0] for f in model_fields().values() if axis in f}
    return kinds.pop() if len(kinds) == 1 else None


def dropped_for(arch: str) -> set[str]:
    """Axes that do not apply to `arch`: other architectures' model fields, and the variant outside gptoss."""
    return fields_not_of(arch) | ({"variant"} if arch != "gptoss" else set())


def _axis_rank(axis: str) -> tuple:
    return (_AXIS_ORDER.index(axis), "") if axis in _AXIS_ORDER else (len(_AXIS_ORDER), axis)


@dataclass
class SweepConfig:
    """A grid of training runs; `base` holds every train flag, `grid` the axes (field -> values)."""

    base: TrainConfig
    grid: dict[str, list] = field(default_factory=dict)
    name: str = "sweep"
    workers_per_trial: int = 1
    max_concurrent: Optional[int] = None  # None: as many as the cluster's resources allow
    asha: bool = False
    lr_by_arch: dict[str, float] = field(default_factory=dict)  # each arch's own lr, where the grid has no lr axis
    lr_by_variant: dict[str, float] = field(default_factory=dict)  # each variant's own lr (before lr_by_arch)
    budgets: list[int] = field(default_factory=list)  # token budgets: one wsd run per point, cooldowns branched off
    baseline: str = "gpt2"  # the report's multipliers are measured against this arch or model
    lr_from: Optional[str] = None  # a finished lr sweep: each variant (or arch) trains at its best lr there
    sizes: list = field(default_factory=list)  # model shapes, each applied whole (orchestrator/sizes.py)
    holdout: Optional[dict] = None  # {size, budget}: trained last, after predictions.json is written

    def __post_init__(self):
        from gptoss import ARCHS
        from gptoss.variants import canonical_variant, expand_variants

        allowed = set(grid_axes())
        for axis, values in self.grid.items():
            if axis not in allowed:
                raise ValueError(f"unknown sweep axis {axis!r}; allowed: {', '.join(sorted(allowed))}")
            if not isinstance(values, list):
                raise ValueError(f"sweep axis {axis!r} must be a list of values such as [{values!r}], got {values!r}")
            if not values:
                raise ValueError(f"sweep axis {axis!r} is empty; give at least one value")
            kind = axis_type(axis)
            bad = [v for v in values if kind is not None and not is_type(v, kind)]
            if bad:
                raise ValueError(
                    f"sweep axis {axis!r} takes {TYPE_WORDS[kind]} values, got {bad[0]!r}"
                    + yaml_number_hint(bad[0], kind)
                )
        archs = self.grid.get("arch", [self.base.arch])
        for arch in archs:
            if arch not in ARCHS:
                raise ValueError(f"unknown arch {arch!r} in the sweep; allowed: {', '.join(ARCHS)}")
        if "variant" in self.grid:
            self.grid["variant"] = expand_variants([str(v) for v in self.grid["variant"]])  # groups, aliases
            if "gptoss" not in archs:
                raise ValueError(
                    "the sweep's variants are gptoss variants but its archs are "
                    f"{', '.join(archs)}; add gptoss to the archs"
                )
        for arch, lr in self.lr_by_arch.items():
            if arch not in ARCHS or not isinstance(lr, (int, float)) or not 0 < lr < 1:
                raise ValueError(
                    f"lr_by_arch entry {arch}={lr!r} must name one of {', '.join(ARCHS)} with an lr in (0, 1)"
                )
        by_variant = {}
        for variant, lr in self.lr_by_variant.items():
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < 1:
                raise ValueError(f"lr_by_variant entry {variant}={lr!r} needs an lr in (0, 1)")
            by_variant[canonical_variant(str(variant))] = lr
        self.lr_by_variant = by_variant
        if self.lr_from and "lr" in self.grid:
            raise ValueError("give an lr axis or lr_from (each model's best lr of an earlier sweep), not both")
        if self.workers_per_trial < 1:
            raise ValueError(f"--workers-per-trial must be >= 1, got {self.workers_per_trial}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError(f"--max-concurrent must be >= 1, got {self.max_concurrent}")
        TrainConfig(**{**self.base.to_dict(), "name": self.name})  # the sweep name must be a valid run name
        if self.budgets:
            if not isinstance(self.budgets, list) or any(
                not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in self.budgets
            ):
                raise ValueError(f"budgets must be a list of positive token counts, got {self.budgets!r}")
            if len(set(self.budgets)) != len(self.budgets):
                raise ValueError(f"budgets {self.budgets} repeat a value")
            if self.base.schedule != "wsd":
                raise ValueError(
                    "budgets need --schedule wsd: the smaller budgets branch off the stable phase of one run"
                )
            if self.base.max_steps is not None or self.base.max_tokens is not None:
                raise ValueError("give budgets or one budget (budget_tokens / --max-steps), not both")
            if self.asha:
                raise ValueError(
                    "--asha stops trials early, which would cut the long runs the budgets branch from; "
                    "drop --asha or budgets"
                )
        self._check_sizes()

    def _check_sizes(self) -> None:
        from orchestrator.sizes import check_sizes, resolve_holdout

        if self.sizes:
            allowed = set(model_overrides_allowed())
            self.sizes = check_sizes(self.sizes, self.grid, allowed, {f: axis_type(f) for f in allowed})
        if self.holdout is not None:
            self.holdout = resolve_holdout(self.holdout, self.sizes, self.budgets, self.base.max_tokens)

    def to_dict(self) -> dict:
        return dict(
            base=self.base.to_dict(),
            grid=self.grid,
            name=self.name,
            workers_per_trial=self.workers_per_trial,
            max_concurrent=self.max_concurrent,
            asha=self.asha,
            lr_by_arch=self.lr_by_arch,
            lr_by_variant=self.lr_by_variant,
            budgets=self.budgets,
            baseline=self.baseline,
            lr_from=self.lr_from,
            sizes=self.sizes,
            holdout=self.holdout,
        )


@dataclass(frozen=True)
class TrialPoint:
    name: str
    arch: str
    params: tuple  # sorted (field, value) pairs of this point
    size: Optional[str] = None  # the label of its shape, in a sweep with sizes

    def train_config(
        self,
        base: TrainConfig,
        storage: str,
        workers: int,
        *,
        lr_by_arch: Optional[dict] = None,
        lr_by_variant: Optional[dict] = None,
    ) -> TrainConfig:
        values = dict(self.params)
        variant = values.get("variant", base.variant if self.arch == "gptoss" else None)
        if "lr" not in values and lr_by_variant and variant in lr_by_variant:
            values["lr"] = lr_by_variant[variant]
        elif "lr" not in values and lr_by_arch and self.arch in lr_by_arch:
            values["lr"] = lr_by_arch[self.arch]
        overrides = dict(base.model_overrides)
        overrides.update({k: v for k, v in values.items() if k not in TRAIN_AXES})
        for key in dropped_for(self.arch):
            overrides.pop(key, None)
        if (
            self.size is not None
            and self.arch == "gptoss"
            and "d_model" in values
            and "intermediate_size" not in values
        ):
            # The preset's MLP width is its own width's sizing rule; a shape of another width takes the rule at its
            # own width (mlp_intermediate_size), as every dense variant already does, unless someone set it.
            overrides.setdefault("intermediate_size", None)
        data = base.to_dict()
        data.update(
            arch=self.arch,
            model_overrides=overrides,
            name=self.name,
            storage=storage,
            workers=workers,
        )
        for key in ("seed", "lr", "variant"):
            if key in values:
                data[key] = values[key]
        if self.arch != "gptoss":
            data["variant"] = None
        return TrainConfig.from_dict(data)


def expand_grid(cfg: SweepConfig) -> list[TrialPoint]:
    """Every distinct point; axes that do not apply to an architecture are dropped, so gpt2 runs once per depth. Each
    size (a shape of model fields) is one more axis whose fields apply together; its fields join the point's values,
    so they are named like grid axes (a sweep without sizes names its trials as before)."""
    from orchestrator.sizes import fields_of, shape_label

    grid = dict(cfg.grid)
    grid.setdefault("arch", [cfg.base.arch])
    axes = sorted(grid, key=lambda a: (a != "arch", a))
    shapes = cfg.sizes or [None]
    points, seen = [], set()
    for combo in itertools.product(*(grid[a] for a in axes)):
        for shape in shapes:
            values = dict(zip(axes, combo), **(fields_of(shape) if shape else {}))
            arch = values.pop("arch")
            drop = dropped_for(arch)
            params = tuple(
                sorted(((k, v) for k, v in values.items() if k not in drop), key=lambda kv: _axis_rank(kv[0]))
            )
            if (arch, params) in seen:
                continue
            seen.add((arch, params))
            size = shape_label(shape) if shape else None
            points.append(TrialPoint(_point_name(arch, params), arch, params, size))
    return points


def _point_name(arch: str, params: tuple) -> str:
    from gptoss.variants import variant_token

    values = dict(params)
    head = VARIANT_PREFIX + variant_token(values["variant"]) if "variant" in values else arch
    parts = [head] + [f"{_SHORT.get(k, k)}{_fmt(v)}" for k, v in params if k != "variant"]
    return "-".join(parts)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def budget_steps(base: TrainConfig, budgets: list[int], workers: int) -> dict[int, int]:
    """Optimizer steps of each budget (ceil of budget / global batch); two budgets of the same step count are
    refused."""
    steps = {
        b: TrainConfig.from_dict({**base.to_dict(), "max_tokens": b, "max_steps": None}).total_steps(workers)
        for b in sorted(budgets)
    }
    if len(set(steps.values())) != len(steps):
        raise ValueError(
            f"budgets {sorted(budgets)} give the same step count for two budgets "
            f"(global batch {base.tokens_per_step(workers):,} tokens); space them further apart"
        )
    return steps


def plan_trials(cfg: SweepConfig, points: list[TrialPoint], base: TrainConfig, storage_uri: str) -> tuple[list, list]:
    """(phase 1, phase 2) run specs. Without budgets: every point once, no phase 2. With budgets: per point one wsd
    run to the largest budget that keeps its state at each smaller budget's cooldown start, and per smaller budget a
    branch that starts from that state and cools down over its own last cooldown_frac of steps. The warmup is the
    same for every budget (that of the largest, unless warmup_steps is given), so the stable phases coincide."""
    workers = cfg.workers_per_trial

    def config(point: TrialPoint) -> TrainConfig:
        return point.train_config(
            base, storage_uri, workers, lr_by_arch=cfg.lr_by_arch, lr_by_variant=cfg.lr_by_variant
        )

    if not cfg.budgets:
        return [RunSpec(t, t.total_steps(workers), group=cfg.name) for t in map(config, points)], []
    steps = budget_steps(base, cfg.budgets, workers)
    largest = max(steps)
    warmup = base.resolved_warmup(steps[largest])
    starts = {b: base.cooldown_start(n) for b, n in steps.items() if b != largest}
    too_early = [b for b, s in starts.items() if s < max(1, warmup)]
    if too_early:
        raise ValueError(
            f"budget(s) {too_early} cool down from a step inside the {warmup}-step warmup of the largest "
            f"budget; drop them, lower --warmup-steps or --cooldown-frac"
        )
    long_specs, branch_specs = [], []
    for p in points:
        long_name = f"{p.name}-D{largest}"
        long_cfg = dataclasses.replace(
            config(p), warmup_steps=warmup, max_steps=None, name=long_name, max_tokens=largest
        )
        keep = tuple(sorted(set(starts.values())))
        long_specs.append(RunSpec(long_cfg, steps[largest], keep_states_at=keep, group=cfg.name, budget=largest))
        for budget, start in sorted(starts.items()):
            branch = dataclasses.replace(long_cfg, name=f"{p.name}-D{budget}", max_tokens=budget)
            branch_specs.append(
                RunSpec(branch, steps[budget], branch=BranchStart(long_name, start), group=cfg.name, budget=budget)
            )
    return long_specs, branch_specs


def validate_points(cfg: SweepConfig, points: list[TrialPoint], vocab_size: int) -> None:
    """Build every point's model config before anything runs; name every point that is invalid."""
    from gptoss import build_config

    bad = []
    for point in points:
        tcfg = point.train_config(
            cfg.base, "unused", cfg.workers_per_trial, lr_by_arch=cfg.lr_by_arch, lr_by_variant=cfg.lr_by_variant
        )
        try:
            model_cfg = build_config(
                point.arch, tcfg.preset, **{**tcfg.resolved_model_overrides(), "vocab_size": vocab_size}
            )
            if tcfg.seq_len > model_cfg.max_seq_len:
                raise ValueError(f"--seq-len {tcfg.seq_len} exceeds max_seq_len {model_cfg.max_seq_len}")
        except ValueError as exc:
            bad.append(f"{point.name}: {' '.join(str(exc).split())}")
    if bad:
        raise ValueError(f"{len(bad)} of {len(points)} grid points make invalid models: " + "; ".join(bad))
