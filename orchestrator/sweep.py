"""Ray Tune sweeps: expand the grid (arch x depth x experts x ...), run each point as a Ray Train run, resume,
report."""

from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from orchestrator.config import TrainConfig
from orchestrator.failures import failure_reason
from orchestrator.report import TRIALS_DIR
from orchestrator.trainer import say
from raysetup import ClusterError

# Grid axes: train-level fields, and model fields that apply to one architecture only.
TRAIN_AXES = ("arch", "seed", "lr", "variant")
GPTOSS_ONLY = {
    "num_experts",
    "experts_per_token",
    "n_kv_heads",
    "head_dim",
    "sliding_window",
    "aux_loss_coef",
    "variant",
    "positions",
    "norm",
    "mlp",
    "sinks",
}
GPT2_ONLY = {"dropout"}
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
_AXIS_ORDER = ["variant"] + list(_SHORT)  # trial names list the axes in this order: L6-E4-k1-s0
# A variant's trial is named v-<token>-...: "v-" keeps the variant gpt2 apart from the arch gpt2 (gpt2-s0), and the
# token makes '+rope' a legal name ('p-rope', gptoss.variants.variant_token).
VARIANT_PREFIX = "v-"
SWEEP_FILE = "sweep.json"
# A trial only launches a trainer; its workers hold the real CPUs. A whole CPU per trial would starve them, and Tune
# refuses a zero reservation, so a trial holds this sliver and its trainer's workers reserve that much less.
TRIAL_CPU = 0.01


# Value types of the grid axes (an axis not listed here is checked by the config it lands in).
_AXIS_TYPES = {
    "arch": str,
    "seed": int,
    "lr": float,
    "n_layers": int,
    "d_model": int,
    "n_heads": int,
    "n_kv_heads": int,
    "num_experts": int,
    "experts_per_token": int,
    "intermediate_size": int,
    "sliding_window": int,
    "head_dim": int,
    "aux_loss_coef": float,
    "dropout": float,
    "tie_embeddings": bool,
}
_TYPE_WORDS = {int: "integer", float: "number", bool: "true/false", str: "text", dict: "mapping", list: "list"}


def _is_type(value: Any, kind: type) -> bool:
    """YAML's types against a field's: bool is not a number, an integer is a valid float."""
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _field_type(annotation: str) -> tuple[Optional[type], bool]:
    """(type, optional) of a dataclass field annotation written as a string (`Optional[int]`, `dict[str, Any]`)."""
    text = str(annotation).replace(" ", "")
    optional = text.startswith("Optional[") or text.endswith("|None")
    text = (
        text.removeprefix("Optional[").removesuffix("]") if text.startswith("Optional[") else text.removesuffix("|None")
    )
    base = text.split("[", 1)[0]
    return {"int": int, "float": float, "bool": bool, "str": str, "dict": dict, "list": list}.get(base), optional


def check_setting_types(settings: dict, cls, where: str) -> None:
    """Every setting has its dataclass field's type; else one line naming the field, the expected type and the value."""
    annotations = {f.name: f.type for f in fields(cls)}
    for key, value in settings.items():
        if key not in annotations:
            continue
        kind, optional = _field_type(annotations[key])
        if kind is None or (value is None and optional) or _is_type(value, kind):
            continue
        wanted = _TYPE_WORDS[kind] + (" or null" if optional else "")
        raise ValueError(
            f"{where}: {key} must be {'an' if wanted[0] in 'aeiou' else 'a'} {wanted}, got {value!r}"
            + _yaml_number_hint(value, kind)
        )


def _yaml_number_hint(value: Any, kind: type) -> str:
    """YAML 1.1 reads 1e-3 (no dot) as text: say so where a number was meant."""
    if kind in (int, float) and isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return f" (YAML reads {value} as text; write it with a dot, e.g. {float(value)!r})"
    return ""


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

    def __post_init__(self):
        from gptoss import ARCHS
        from gptoss.variants import canonical_variant, expand_variants

        allowed = set(TRAIN_AXES) | set(_SHORT)
        for axis, values in self.grid.items():
            if axis not in allowed:
                raise ValueError(f"unknown sweep axis {axis!r}; allowed: {', '.join(sorted(allowed))}")
            if not isinstance(values, list):
                raise ValueError(f"sweep axis {axis!r} must be a list of values such as [{values!r}], got {values!r}")
            if not values:
                raise ValueError(f"sweep axis {axis!r} is empty; give at least one value")
            kind = _AXIS_TYPES.get(axis)
            bad = [v for v in values if kind is not None and not _is_type(v, kind)]
            if bad:
                raise ValueError(
                    f"sweep axis {axis!r} takes {_TYPE_WORDS[kind]} values, got {bad[0]!r}"
                    + _yaml_number_hint(bad[0], kind)
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
        )


@dataclass(frozen=True)
class TrialPoint:
    name: str
    arch: str
    params: tuple  # sorted (field, value) pairs of this point

    def train_config(
        self,
        base: TrainConfig,
        storage: str,
        workers: int,
        group: str,
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
        for key in GPT2_ONLY if self.arch == "gptoss" else GPTOSS_ONLY:
            overrides.pop(key, None)
        data = base.to_dict()
        data.update(
            arch=self.arch,
            model_overrides=overrides,
            name=self.name,
            storage=storage,
            workers=workers,
            wandb_group=group,
        )
        for key in ("seed", "lr", "variant"):
            if key in values:
                data[key] = values[key]
        if self.arch != "gptoss":
            data["variant"] = None
        return TrainConfig.from_dict(data)


def expand_grid(cfg: SweepConfig) -> list[TrialPoint]:
    """Every distinct point; axes that do not apply to an architecture are dropped, so gpt2 runs once per depth."""
    grid = dict(cfg.grid)
    grid.setdefault("arch", [cfg.base.arch])
    axes = sorted(grid, key=lambda a: (a != "arch", a))
    points, seen = [], set()
    for combo in itertools.product(*(grid[a] for a in axes)):
        values = dict(zip(axes, combo))
        arch = values.pop("arch")
        drop = GPT2_ONLY if arch == "gptoss" else GPTOSS_ONLY
        params = tuple(
            sorted(((k, v) for k, v in values.items() if k not in drop), key=lambda kv: _AXIS_ORDER.index(kv[0]))
        )
        if (arch, params) in seen:
            continue
        seen.add((arch, params))
        points.append(TrialPoint(_point_name(arch, params), arch, params))
    return points


def _point_name(arch: str, params: tuple) -> str:
    from gptoss.variants import variant_token

    values = dict(params)
    head = VARIANT_PREFIX + variant_token(values["variant"]) if "variant" in values else arch
    parts = [head] + [f"{_SHORT.get(k, k)}{_fmt(v)}" for k, v in params if k != "variant"]
    return "-".join(parts)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class TrialSpec:
    """One trial to run: its run name, train config, step count, and for a budget branch the long run it leaves."""

    name: str
    train: TrainConfig
    total_steps: int
    budget: Optional[int] = None
    branch_of: Optional[str] = None  # the long run's name

    def param(self) -> dict:
        return dict(name=self.name, train=self.train.to_dict(), total_steps=self.total_steps, branch_of=self.branch_of)


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
    """(phase 1, phase 2) trial specs. Without budgets: every point once, no phase 2. With budgets: per point one
    wsd run to the largest budget that keeps its state at each smaller budget's cooldown start, and per smaller budget
    a branch run that starts from that state and cools down over its own last cooldown_frac of steps. The warmup is
    the same for every budget (that of the largest, unless --warmup-steps is given), so the stable phases coincide."""
    from orchestrator.train_loop import branch_point_path

    workers = cfg.workers_per_trial
    if not cfg.budgets:
        specs = []
        for p in points:
            tcfg = p.train_config(base, storage_uri, workers, cfg.name, cfg.lr_by_arch, cfg.lr_by_variant)
            specs.append(TrialSpec(p.name, tcfg, tcfg.total_steps(workers)))
        return specs, []
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
        common = dict(warmup_steps=warmup, max_steps=None)
        long_name = f"{p.name}-D{largest}"
        long_cfg = p.train_config(base, storage_uri, workers, cfg.name, cfg.lr_by_arch, cfg.lr_by_variant)
        long_cfg = TrainConfig.from_dict(
            {
                **long_cfg.to_dict(),
                **common,
                "name": long_name,
                "max_tokens": largest,
                "branch_points": sorted(set(starts.values())),
            }
        )
        long_specs.append(TrialSpec(long_name, long_cfg, steps[largest], largest))
        for budget, start in sorted(starts.items()):
            branch = TrainConfig.from_dict(
                {
                    **long_cfg.to_dict(),
                    "name": f"{p.name}-D{budget}",
                    "max_tokens": budget,
                    "branch_points": [],
                    "start_step": start,
                    "init_from": branch_point_path(f"{storage_uri}/{long_name}", start),
                }
            )
            branch_specs.append(TrialSpec(branch.name, branch, steps[budget], budget, long_name))
    return long_specs, branch_specs


def validate_points(cfg: SweepConfig, points: list[TrialPoint], vocab_size: int) -> None:
    """Build every point's model config before anything runs; name every point that is invalid."""
    from gptoss import build_config

    bad = []
    for point in points:
        tcfg = point.train_config(
            cfg.base, "unused", cfg.workers_per_trial, cfg.name, cfg.lr_by_arch, cfg.lr_by_variant
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


# ----------------------------------------------------------------------------------------------
# The trial: one Ray Train run launched from a Tune trial, which itself reserves (almost) no CPU.


def _trial(params: dict) -> None:
    from ray.tune.integration.ray_train import TuneReportCallback

    from orchestrator.storage import open_storage
    from orchestrator.trainer import SUMMARY_FILE, run_training

    cfg = TrainConfig.from_dict(params["train"])
    storage = open_storage(cfg.storage)
    summary_path = storage.path(cfg.run_name, SUMMARY_FILE)
    kept = _kept_state(params, cfg, storage)
    summary = _finished_summary(storage, summary_path, params["total_steps"]) if cfg.resume else None
    if summary is not None:
        # Finished in an earlier, interrupted sweep: report its result and do not train again.
        if kept:
            remove_kept_state(storage, params["branch_of"], cfg.start_step)
        _report_summary(summary)
        return
    _require_branch_start(kept, params, cfg, storage)
    summary = run_training(cfg, show_progress=False, callbacks=[TuneReportCallback()], cpu_held_by_caller=TRIAL_CPU)
    if summary["invocation"]["steps"] == 0:
        # Trained to its last step by an earlier sweep that failed afterwards: no trainer ran, so nothing reported to
        # Tune; without a result carrying val_loss Tune would refuse the trial (strict metric checking).
        _report_summary(summary)
    if kept:
        remove_kept_state(storage, params["branch_of"], cfg.start_step)


def _kept_state(params: dict, cfg: TrainConfig, storage) -> Optional[str]:
    """A cooldown branch's starting state, kept in its long run's folder (None for any other trial): needed until the
    branch has finished, then removed."""
    from orchestrator.train_loop import branch_point_path

    return branch_point_path(storage.path(params["branch_of"]), cfg.start_step) if params.get("branch_of") else None


def _require_branch_start(kept: Optional[str], params: dict, cfg: TrainConfig, storage) -> None:
    """Refuse a branch whose kept state is missing when it has no checkpoints of its own to resume from either."""
    if kept and not storage.exists(kept) and not storage.list_dirs(storage.path(cfg.run_name)):
        raise ValueError(
            f"{cfg.run_name}: the long run {params['branch_of']} has no kept state at step "
            f"{cfg.start_step} to branch from (it did not get that far)"
        )


def _report_summary(summary: dict) -> None:
    from ray import tune

    tune.report(
        {
            "step": summary["steps"],
            "tokens": summary["tokens"],
            "val_loss": summary["final_val_loss"],
            "best_val_loss": summary["best_val_loss"],
            "reused": 1,
        }
    )


def _finished_summary(storage, summary_path: str, total_steps: int) -> Optional[dict]:
    """A run's summary if it finished all its steps with an evaluation; None otherwise (a damaged summary too: the
    trial trains again, resuming from its checkpoints)."""
    if not storage.exists(summary_path):
        return None
    try:
        summary = json.loads(storage.read_text(summary_path))
    except ValueError:
        return None
    done = summary.get("steps") == total_steps and summary.get("final_val_loss") is not None
    return summary if done else None


def _finished(spec: TrialSpec) -> bool:
    """A trial whose run has a summary at its full step count; a finished branch no longer needs its kept state."""
    from orchestrator.storage import open_storage
    from orchestrator.trainer import SUMMARY_FILE

    if not spec.train.resume:
        return False
    storage = open_storage(spec.train.storage)
    done = _finished_summary(storage, storage.path(spec.name, SUMMARY_FILE), spec.total_steps) is not None
    if done and spec.branch_of:
        remove_kept_state(storage, spec.branch_of, spec.train.start_step)
    return done


def rebuild_lost_branches(long_specs: list[TrialSpec], branch_specs: list[TrialSpec]) -> list[TrialSpec]:
    """Branches whose long run has finished but no longer keeps their state (results copied without it, e.g. from
    another machine, or the state deleted), and that have no checkpoint of their own, train from step 0 instead: the
    same seed, data order, warmup and stable lr reach the same state at the cooldown start, so the branch costs its
    own budget and the long run's results stay as they are."""
    from orchestrator.storage import open_storage
    from orchestrator.train_loop import branch_point_path

    finished_long = {s.name for s in long_specs if _finished(s)}
    out = []
    for branch in branch_specs:
        storage = open_storage(branch.train.storage)
        kept = branch_point_path(storage.path(branch.branch_of), branch.train.start_step)
        if (
            branch.branch_of in finished_long
            and not _finished(branch)
            and not storage.exists(kept)
            and not storage.list_dirs(storage.path(branch.name))
        ):
            train = TrainConfig.from_dict({**branch.train.to_dict(), "init_from": None, "start_step": None})
            branch = TrialSpec(branch.name, train, branch.total_steps, branch.budget, branch_of=None)
        out.append(branch)
    return out


def remove_kept_state(storage, long_run: str, step: int) -> None:
    """Delete a long run's kept state at `step` (its branch has finished), and the branch_points folder once empty."""
    from orchestrator.train_loop import BRANCH_DIR, branch_point_path

    storage.delete_dir(branch_point_path(storage.path(long_run), step))
    parent = storage.path(long_run, BRANCH_DIR)
    if storage.is_dir(parent) and not storage.list_dirs(parent):
        storage.delete_dir(parent)


def trial_base(base: TrainConfig, threads: Optional[int]) -> TrainConfig:
    """The settings every trial starts from. Local paths become absolute: a Tune trial runs in its own working
    directory, where `data/tinystories` would name nothing."""
    from raysetup import is_uri, local_path

    def absolute(path: Optional[str]) -> Optional[str]:
        return path if path is None or is_uri(path) else local_path(path)

    # verify_data: plan_sweep checked every shard once before the sweep; N trials need not each read it all again.
    return TrainConfig.from_dict(
        {
            **base.to_dict(),
            "threads_per_worker": threads,
            "data": absolute(base.data),
            "tokenizer_dir": absolute(base.tokenizer_dir),
            "verify_data": False,
        }
    )


def best_lrs(sweep_dir: str) -> dict[str, dict]:
    """Each model's best lr in a finished sweep (a local directory or a storage URI): model (variant, else arch) ->
    {lr, val_loss (mean over seeds), grid (the lrs tried), edge (the best is the smallest or largest tried)}. Only
    trials that ran all their steps count."""
    from orchestrator.storage import open_storage
    from orchestrator.trainer import CONFIG_FILE, SUMMARY_FILE

    storage = open_storage(sweep_dir)
    trials = storage.path(TRIALS_DIR)
    if not storage.is_dir(trials):
        raise ValueError(
            f"lr_from {sweep_dir}: no {TRIALS_DIR}/ folder there; name a sweep directory "
            f"(<storage>/<sweep name>) whose lr sweep has finished"
        )
    losses: dict[str, dict[float, list[float]]] = {}
    for trial in sorted(storage.list_dirs(trials)):
        if ".old-" in trial.rsplit("/", 1)[-1]:
            continue  # a run moved aside when it was started over
        try:
            saved = json.loads(storage.read_text(f"{trial}/{CONFIG_FILE}"))
            summary = json.loads(storage.read_text(f"{trial}/{SUMMARY_FILE}"))
        except (OSError, ValueError):
            continue  # unfinished or damaged: not a measurement
        if summary.get("final_val_loss") is None or summary.get("steps") != saved.get("total_steps"):
            continue
        model = saved["config"].get("variant") or saved["config"]["arch"]
        losses.setdefault(model, {}).setdefault(float(saved["lr"]), []).append(float(summary["final_val_loss"]))
    if not losses:
        raise ValueError(f"lr_from {sweep_dir}: no finished trial there yet; run (or resume) that sweep first")
    out = {}
    for model, by_lr in losses.items():
        means = {lr: sum(v) / len(v) for lr, v in by_lr.items()}
        best = min(means, key=means.get)
        out[model] = dict(
            lr=best, val_loss=means[best], grid=sorted(means), edge=len(means) > 1 and best in (min(means), max(means))
        )
    return out


def apply_lr_from(cfg: SweepConfig, points: list[TrialPoint]) -> dict[str, dict]:
    """Fill lr_by_variant / lr_by_arch from cfg.lr_from's best lrs (explicit entries win); every point's model must
    be there. Warns where a chosen lr is at the edge of its grid. Returns the choices taken from lr_from."""
    found = best_lrs(cfg.lr_from)
    models = sorted({dict(p.params).get("variant") or p.arch for p in points})
    missing = [m for m in models if m not in found and m not in cfg.lr_by_variant and m not in cfg.lr_by_arch]
    if missing:
        raise ValueError(
            f"lr_from {cfg.lr_from} has no finished trial of {', '.join(missing)}; it has {', '.join(sorted(found))}"
        )
    for p in points:
        variant = dict(p.params).get("variant")
        model = variant or p.arch
        if model in found:
            (cfg.lr_by_variant if variant else cfg.lr_by_arch).setdefault(model, found[model]["lr"])
    chosen = {
        m: found[m]
        for m in models
        if m in found and (cfg.lr_by_variant.get(m) or cfg.lr_by_arch.get(m)) == found[m]["lr"]
    }
    edge = [f"{m} ({c['lr']:g})" for m, c in chosen.items() if c["edge"]]
    if edge:
        say(
            f"warning: lr_from {cfg.lr_from}: the best lr of {', '.join(edge)} is at the edge of its grid, so a better "
            f"one may lie beyond it; extend that sweep's lr grid to be sure"
        )
    return chosen


def plan_sweep(cfg: SweepConfig) -> tuple[list[TrialPoint], dict]:
    """Grid points, validated against the data, before Ray starts."""
    from data_pipeline import load_manifest
    from orchestrator.trainer import plan_run

    points = expand_grid(cfg)
    if cfg.lr_from:
        apply_lr_from(cfg, points)
    manifest = load_manifest(os.path.abspath(cfg.base.data))
    validate_points(cfg, points, int(manifest["vocab_size"]))
    phase1, phase2 = plan_trials(cfg, points, cfg.base, "unused")  # budget arithmetic, before anything runs
    for spec in phase1 + phase2:
        spec.train.check_schedule(spec.total_steps)
    first = TrainConfig.from_dict({**phase1[0].train.to_dict(), "storage": cfg.base.storage})
    plan_run(first, workers=cfg.workers_per_trial)  # data (checksums), batch and tokenizer checks, once
    return points, manifest


def run_sweep(cfg: SweepConfig, show_progress: bool = True, local: bool = False) -> dict:
    """Run (or resume) the sweep and write its report; returns the report's summary. local=True runs the trials as
    processes on this machine without Ray (same plan, same files; e.g. a GPU machine that has torch but not Ray)."""
    from orchestrator.report import write_report
    from orchestrator.storage import open_storage
    from raysetup import check_shared_storage, init_ray

    points, _ = plan_sweep(cfg)
    if local:
        info = None
        use_gpu, gpus, cpus = _local_resources(cfg)
    else:
        info = init_ray(cfg.base.address, cfg.base.verbose)
        use_gpu = (info.gpus >= 1 and not cfg.base.cpu) or cfg.base.gpu
        if cfg.base.gpu and info.gpus < 1:
            raise ClusterError(f"--gpu was given but the cluster at {info.address} has no GPUs")
        gpus, cpus = info.gpus, info.cpus
    capacity = gpus if use_gpu else cpus
    if cfg.workers_per_trial > capacity:
        kind = "GPUs" if use_gpu else "CPUs"
        raise ClusterError(
            f"--workers-per-trial {cfg.workers_per_trial} exceeds the cluster's {capacity:g} {kind}; "
            f"use --workers-per-trial <= {int(capacity)}"
        )
    concurrent = cfg.max_concurrent or max(1, int(capacity // cfg.workers_per_trial))
    threads = cfg.base.threads_per_worker or max(1, int(cpus // (concurrent * cfg.workers_per_trial)))
    concurrent = min(concurrent, len(points))

    storage = open_storage(cfg.base.storage)
    if not local:
        check_shared_storage(storage.uri, info, warn=say)
    sweep_uri = storage.uri_of(cfg.name)
    trials_uri = f"{sweep_uri}/{TRIALS_DIR}"
    base = trial_base(cfg.base, None if use_gpu else threads)
    phase1, phase2 = plan_trials(cfg, points, base, trials_uri)
    phase2 = rebuild_lost_branches(phase1, phase2)
    specs = phase1 + phase2
    storage.write_text(
        storage.path(cfg.name, SWEEP_FILE),
        json.dumps(
            dict(
                cfg.to_dict(),
                points=[p.name for p in points],
                trials=[t.name for t in specs],
                concurrent=concurrent,
                threads_per_worker=threads,
            ),
            indent=1,
        ),
    )
    if show_progress:
        what = (
            f"{len(points)} trials of {phase1[0].total_steps} steps"
            if not phase2
            else f"{len(phase1)} long runs to {max(cfg.budgets):,} tokens, then {len(phase2)} cooldown branches"
        )
        say(
            f"sweep {cfg.name}: {what}, {concurrent} at a time, {cfg.workers_per_trial} worker(s) "
            f"per trial{'' if use_gpu else f' x {threads} thread(s)'} -> {sweep_uri}"
        )
    if not cfg.base.verbose:
        # Tune's own "Trials did not complete: [...]" error line: the sweep names each failure and its reason itself.
        import logging

        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    # Ctrl-C: Tune's own handler would stop the trials "gracefully" and return as if the sweep had ended (exit 0, half
    # the trials); let the interrupt reach us instead (each trial's checkpoints are its resume state).
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    started = time.time()
    try:
        run_phase = _run_phase_here if local else _run_phase
        errors = run_phase(cfg, phase1, "tune", concurrent, sweep_uri, base, show_progress)
        failed_long = {name for name, _ in errors}
        branches = [s for s in phase2 if s.branch_of not in failed_long]  # a failed long run has nothing to branch
        if branches:
            errors += run_phase(cfg, branches, "tune-branches", concurrent, sweep_uri, base, show_progress)
    except KeyboardInterrupt:
        raise SweepInterrupted(_interruption(cfg.name, specs, sweep_uri)) from None
    wall_s = time.time() - started
    try:
        report = write_report(sweep_uri, cfg.baseline)
    except ValueError:
        if not errors:
            raise
        # No trial finished: there is nothing to report on, and the report's advice (run the sweep) would be this
        # command.
        raise ClusterError(
            f"all {len(errors)} trial(s) of sweep {cfg.name} failed; {errors[0][0]}: {errors[0][1]}"
            + _rerun_hint(cfg.name)
        ) from None
    report["wall_s"] = wall_s
    report["errors"] = len(errors)
    if show_progress:
        say(
            f"sweep {cfg.name} done in {wall_s:.0f}s: {report['trials']} trials reported, "
            f"{len(errors)} failed; report: {report['report']}"
        )
    if errors:
        raise ClusterError(
            f"{len(errors)} of {len(specs)} trial(s) failed (the report covers the rest); "
            f"{errors[0][0]}: {errors[0][1]}" + _rerun_hint(cfg.name)
        )
    return report


def _run_phase(
    cfg: SweepConfig,
    specs: list[TrialSpec],
    experiment: str,
    concurrent: int,
    sweep_uri: str,
    base: TrainConfig,
    show_progress: bool,
) -> list[tuple[str, str]]:
    """One Tune experiment over the specs not finished yet (by an earlier run of this sweep); returns the failures as
    (trial name, one-line reason)."""
    from ray import tune

    from orchestrator.tune_console import SweepConsole

    specs = [s for s in specs if not _finished(s)]
    if not specs:
        return []
    total_steps = max(s.total_steps for s in specs)
    scheduler = None
    if cfg.asha:
        from ray.tune.schedulers import ASHAScheduler

        evals = max(1, total_steps // base.eval_every)
        scheduler = ASHAScheduler(
            time_attr="step", max_t=total_steps, grace_period=max(1, evals // 4) * base.eval_every, reduction_factor=2
        )
    console = SweepConsole(show_progress, len(specs))
    trainable = tune.with_resources(lambda params: _trial(params["trial"]), {"CPU": TRIAL_CPU})
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search([s.param() for s in specs])},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=min(concurrent, len(specs)),
            scheduler=scheduler,
            metric="val_loss",
            mode="min",
            trial_name_creator=lambda t: t.config["trial"]["name"],
            trial_dirname_creator=lambda t: t.config["trial"]["name"],
        ),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=sweep_uri,
            verbose=0,
            callbacks=[console],
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    return [
        (r.path.rstrip("/").rsplit("/", 1)[-1] if r.path else "?", failure_reason(r.error))
        for r in tuner.fit()
        if r.error is not None
    ]


# ----------------------------------------------------------------------------------------------
# Without Ray: the same trials as processes on this machine (sweep --local).


def _local_resources(cfg: SweepConfig) -> tuple[bool, int, int]:
    """(use_gpu, GPUs, CPUs) of this machine for a sweep without Ray; trials share its GPU(s) as plain processes."""
    import torch

    if cfg.workers_per_trial != 1:
        raise ValueError("a sweep without Ray (--local) runs one worker per trial; drop --workers-per-trial")
    gpus = torch.cuda.device_count()
    if cfg.base.gpu and gpus < 1:
        raise ClusterError("--gpu was given but this machine has no GPU that torch can use")
    return gpus >= 1 and not cfg.base.cpu, gpus, os.cpu_count() or 1


def _trial_here(params: dict, gpu_index: Optional[int]) -> dict:
    """One trial in a child process: what _trial does under Tune, with the run in the process itself."""
    if gpu_index is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_index)  # before torch touches CUDA in this process
    from orchestrator.storage import open_storage
    from orchestrator.trainer import run_training

    cfg = TrainConfig.from_dict(params["train"])
    storage = open_storage(cfg.storage)
    kept = _kept_state(params, cfg, storage)
    _require_branch_start(kept, params, cfg, storage)
    summary = run_training(cfg, show_progress=False, local=True)
    if kept:
        remove_kept_state(storage, params["branch_of"], cfg.start_step)
    return summary


def _run_phase_here(
    cfg: SweepConfig,
    specs: list[TrialSpec],
    experiment: str,
    concurrent: int,
    sweep_uri: str,
    base: TrainConfig,
    show_progress: bool,
) -> list[tuple[str, str]]:
    """The unfinished specs, `concurrent` child processes at a time (spawned: CUDA cannot be forked), GPUs dealt
    round-robin; returns the failures as (trial name, one-line reason)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from tqdm.auto import tqdm

    specs = [s for s in specs if not _finished(s)]
    if not specs:
        return []
    use_gpu, gpus, _ = _local_resources(cfg)
    gpus = max(1, gpus)
    errors: list[tuple[str, str]] = []
    bar = tqdm(
        total=len(specs),
        desc=f"{cfg.name} ({'branches' if experiment.endswith('branches') else 'trials'})",
        unit="trial",
        disable=not show_progress,
        leave=False,
    )
    pool = ProcessPoolExecutor(max_workers=min(concurrent, len(specs)), mp_context=multiprocessing.get_context("spawn"))
    try:
        pending = {}
        for i, spec in enumerate(specs):
            future = pool.submit(_trial_here, spec.param(), i % gpus if use_gpu else None)
            pending[future] = spec
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                spec = pending.pop(future)
                bar.update(1)
                try:
                    summary = future.result()
                except KeyboardInterrupt:
                    raise
                except Exception as exc:
                    reason = " ".join(str(exc).split()) or type(exc).__name__
                    errors.append((spec.name, reason))
                    say(f"[failed {bar.n}/{len(specs)}] {spec.name}: {reason}")
                else:
                    if show_progress:
                        say(
                            f"[done {bar.n}/{len(specs)}] {spec.name}  step {summary['steps']}  "
                            f"val loss {summary['final_val_loss']:.4f}"
                        )
    except KeyboardInterrupt:
        for proc in list(getattr(pool, "_processes", {}).values()):  # the children get the Ctrl-C too; make sure
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)
    return errors


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: what was kept and how to continue, in one line (the CLI prints it and exits 130)."""


def _rerun_hint(name: str) -> str:
    return (
        f"; fix the cause and run the same command again (same --name {name}): "
        "finished trials are kept, failed ones resume"
    )


def interruption_line(name: str, points: list, finished: list[str], sweep_uri: str) -> str:
    """What an interrupted sweep tells the user, in one line: which trials finished and that a rerun resumes."""
    done = [p.name for p in points if p.name in set(finished)]
    return (
        f"sweep {name} interrupted: {len(done)} of {len(points)} trials finished"
        + (f" ({', '.join(done)})" if done else "")
        + f"; the others keep their latest checkpoints in {sweep_uri}; rerun the same command (same --name {name}) "
        f"to resume"
    )


def _interruption(name: str, points: list, sweep_uri: str) -> str:
    from orchestrator.report import write_report

    try:
        finished = [r["trial"] for r in write_report(sweep_uri)["rows"]]  # the report marks itself unfinished
    except ValueError:
        finished = []  # no trial finished: no report to write
    return interruption_line(name, points, finished, sweep_uri)


def load_sweep_yaml(path: str) -> dict:
    """A sweep file: train flags at the top level (names as in TrainConfig) and a `grid:` of axis -> list."""
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"sweep config {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"sweep config {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ValueError(f"sweep config {path} must be a mapping of settings with a `grid:` section")
    return data


DEFAULT_GRID = {"arch": ["gptoss", "gpt2"], "n_layers": [6, 8, 12], "num_experts": [4, 8, 16]}  # the seed's grid


def build_sweep_config(
    config_path: Optional[str], grid_flags: dict, sweep_flags: dict, train_flags: dict
) -> SweepConfig:
    """Merge a sweep YAML with command-line flags (flags win; None means not given) into a SweepConfig.

    Without a YAML, axes not given default to the seed's grid (unless variants are given: then the grid is the
    variants times the axes given). `variants:` (YAML) / --variants is the variant axis (grid's `variant`).
    `budget_tokens` (YAML) / --budget-tokens is the per-trial token budget; giving a budget or --max-steps on the
    command line replaces the other from the YAML.
    `budgets` (YAML list) / --budgets trains every point at several budgets (wsd branches) instead of one.
    """
    settings = load_sweep_yaml(config_path) if config_path else {}
    grid = settings.pop("grid", {}) or {}
    if not isinstance(grid, dict):
        raise ValueError(f"sweep config {config_path}: grid must be a mapping of axis -> list of values, got {grid!r}")
    grid = dict(grid)
    if "variants" in settings:
        variants = settings.pop("variants")
        if not isinstance(variants, list):
            raise ValueError(f"variants in {config_path} must be a list of variant names, got {variants!r}")
        grid["variant"] = variants
    grid.update({k: v for k, v in grid_flags.items() if v is not None})
    if not config_path and "variant" not in grid:
        for axis, default in DEFAULT_GRID.items():
            grid.setdefault(axis, default)
    sweep_keys = {f.name for f in fields(SweepConfig)} - {"base", "grid"}
    sweep_settings = {k: settings.pop(k) for k in list(settings) if k in sweep_keys}
    if "budget_tokens" in settings:
        if not _is_type(settings["budget_tokens"], int):
            raise ValueError(
                f"sweep config {config_path}: budget_tokens must be an integer, got {settings['budget_tokens']!r}"
            )
        settings["max_tokens"] = settings.pop("budget_tokens")
    # One budget or a list of them: what the command line gives replaces what the file gives.
    if sweep_flags.get("budgets") is not None:
        settings.pop("max_tokens", None)
        settings.pop("max_steps", None)
    elif train_flags.get("max_tokens") is not None or train_flags.get("max_steps") is not None:
        sweep_settings.pop("budgets", None)
    sweep_settings.update({k: v for k, v in sweep_flags.items() if v is not None})
    if train_flags.get("max_tokens") is not None:
        settings.pop("max_steps", None)
    elif train_flags.get("max_steps") is not None:
        settings.pop("max_tokens", None)
    settings.update({k: v for k, v in train_flags.items() if v is not None})
    unknown = set(settings) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(
            f"unknown setting(s) {sorted(unknown)} in {config_path}; use train flag names "
            f"(e.g. seq_len, budget_tokens) and a grid: section"
        )
    settings.setdefault("data", "data/tinystories")
    where = f"sweep config {config_path}" if config_path else "sweep"
    check_setting_types(settings, TrainConfig, where)
    check_setting_types(sweep_settings, SweepConfig, where)
    return SweepConfig(base=TrainConfig(**settings), grid=grid, **sweep_settings)
