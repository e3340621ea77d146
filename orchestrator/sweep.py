"""Ray Tune sweeps: expand the grid (arch x depth x experts x ...), run each point as a Ray Train run, resume, report."""
from __future__ import annotations

import itertools
import json
import math
import os
import time
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from ray import tune

from orchestrator.config import TrainConfig
from orchestrator.report import TRIALS_DIR
from orchestrator.runtime import ClusterError

# Grid axes: train-level fields, and model fields that apply to one architecture only.
TRAIN_AXES = ("arch", "seed", "lr")
GPTOSS_ONLY = {"num_experts", "experts_per_token", "n_kv_heads", "head_dim", "sliding_window", "aux_loss_coef"}
GPT2_ONLY = {"dropout", "tie_embeddings"}
_SHORT = {"n_layers": "L", "d_model": "d", "n_heads": "h", "n_kv_heads": "kv", "num_experts": "E",
          "experts_per_token": "k", "intermediate_size": "i", "sliding_window": "w", "head_dim": "hd",
          "aux_loss_coef": "aux", "dropout": "do", "tie_embeddings": "tie", "seed": "s", "lr": "lr"}
_AXIS_ORDER = list(_SHORT)  # trial names list the axes in this order: L6-E4-k1-s0
SWEEP_FILE = "sweep.json"
# A trial only launches a trainer; its workers hold the real CPUs. A whole CPU per trial would starve them, and Tune
# refuses a zero reservation, so a trial holds this sliver and its trainer's workers reserve that much less.
TRIAL_CPU = 0.01


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
    budgets: list[int] = field(default_factory=list)  # token budgets: one wsd run per point, cooldowns branched off
    baseline: str = "gpt2"  # the report's multipliers are measured against this arch or model

    def __post_init__(self):
        from gptoss import ARCHS

        allowed = set(TRAIN_AXES) | set(_SHORT)
        for axis, values in self.grid.items():
            if axis not in allowed:
                raise ValueError(f"unknown sweep axis {axis!r}; allowed: {', '.join(sorted(allowed))}")
            if not isinstance(values, list) or not values:
                raise ValueError(f"sweep axis {axis!r} is empty; give at least one value")
        for arch in self.grid.get("arch", [self.base.arch]):
            if arch not in ARCHS:
                raise ValueError(f"unknown arch {arch!r} in the sweep; allowed: {', '.join(ARCHS)}")
        for arch, lr in self.lr_by_arch.items():
            if arch not in ARCHS or not isinstance(lr, (int, float)) or not 0 < lr < 1:
                raise ValueError(f"lr_by_arch entry {arch}={lr!r} must name one of {', '.join(ARCHS)} with an lr in (0, 1)")
        if self.workers_per_trial < 1:
            raise ValueError(f"--workers-per-trial must be >= 1, got {self.workers_per_trial}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError(f"--max-concurrent must be >= 1, got {self.max_concurrent}")
        TrainConfig(**{**self.base.to_dict(), "name": self.name})  # the sweep name must be a valid run name
        if self.budgets:
            if not isinstance(self.budgets, list) or any(not isinstance(b, int) or isinstance(b, bool) or b < 1
                                                         for b in self.budgets):
                raise ValueError(f"budgets must be a list of positive token counts, got {self.budgets!r}")
            if len(set(self.budgets)) != len(self.budgets):
                raise ValueError(f"budgets {self.budgets} repeat a value")
            if self.base.schedule != "wsd":
                raise ValueError("budgets need --schedule wsd: the smaller budgets branch off the stable phase of one run")
            if self.base.max_steps is not None or self.base.max_tokens is not None:
                raise ValueError("give budgets or one budget (budget_tokens / --max-steps), not both")
            if self.asha:
                raise ValueError("--asha stops trials early, which would cut the long runs the budgets branch from; "
                                 "drop --asha or budgets")

    def to_dict(self) -> dict:
        return dict(base=self.base.to_dict(), grid=self.grid, name=self.name, workers_per_trial=self.workers_per_trial,
                    max_concurrent=self.max_concurrent, asha=self.asha, lr_by_arch=self.lr_by_arch,
                    budgets=self.budgets, baseline=self.baseline)


@dataclass(frozen=True)
class TrialPoint:
    name: str
    arch: str
    params: tuple  # sorted (field, value) pairs of this point

    def train_config(self, base: TrainConfig, storage: str, workers: int, group: str,
                     lr_by_arch: Optional[dict] = None) -> TrainConfig:
        values = dict(self.params)
        if "lr" not in values and lr_by_arch and self.arch in lr_by_arch:
            values["lr"] = lr_by_arch[self.arch]
        overrides = dict(base.model_overrides)
        overrides.update({k: v for k, v in values.items() if k not in TRAIN_AXES})
        for key in (GPT2_ONLY if self.arch == "gptoss" else GPTOSS_ONLY):
            overrides.pop(key, None)
        data = base.to_dict()
        data.update(arch=self.arch, model_overrides=overrides, name=self.name, storage=storage, workers=workers,
                    wandb_group=group, resume=True)
        for key in ("seed", "lr"):
            if key in values:
                data[key] = values[key]
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
        params = tuple(sorted(((k, v) for k, v in values.items() if k not in drop), key=lambda kv: _AXIS_ORDER.index(kv[0])))
        if (arch, params) in seen:
            continue
        seen.add((arch, params))
        points.append(TrialPoint(_point_name(arch, params), arch, params))
    return points


def _point_name(arch: str, params: tuple) -> str:
    parts = [arch] + [f"{_SHORT.get(k, k)}{_fmt(v)}" for k, v in params]
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
    """Optimizer steps of each budget (ceil of budget / global batch); two budgets of the same step count are refused."""
    steps = {b: TrainConfig.from_dict({**base.to_dict(), "max_tokens": b, "max_steps": None}).total_steps(workers)
             for b in sorted(budgets)}
    if len(set(steps.values())) != len(steps):
        raise ValueError(f"budgets {sorted(budgets)} give the same step count for two budgets "
                         f"(global batch {base.tokens_per_step(workers):,} tokens); space them further apart")
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
            tcfg = p.train_config(base, storage_uri, workers, cfg.name, cfg.lr_by_arch)
            specs.append(TrialSpec(p.name, tcfg, tcfg.total_steps(workers)))
        return specs, []
    steps = budget_steps(base, cfg.budgets, workers)
    largest = max(steps)
    warmup = base.resolved_warmup(steps[largest])
    starts = {b: base.cooldown_start(n) for b, n in steps.items() if b != largest}
    too_early = [b for b, s in starts.items() if s < max(1, warmup)]
    if too_early:
        raise ValueError(f"budget(s) {too_early} cool down from a step inside the {warmup}-step warmup of the largest "
                         f"budget; drop them, lower --warmup-steps or --cooldown-frac")
    long_specs, branch_specs = [], []
    for p in points:
        common = dict(warmup_steps=warmup, max_steps=None)
        long_name = f"{p.name}-D{largest}"
        long_cfg = p.train_config(base, storage_uri, workers, cfg.name, cfg.lr_by_arch)
        long_cfg = TrainConfig.from_dict({**long_cfg.to_dict(), **common, "name": long_name, "max_tokens": largest,
                                          "branch_points": sorted(set(starts.values()))})
        long_specs.append(TrialSpec(long_name, long_cfg, steps[largest], largest))
        for budget, start in sorted(starts.items()):
            branch = TrainConfig.from_dict({**long_cfg.to_dict(), "name": f"{p.name}-D{budget}", "max_tokens": budget,
                                            "branch_points": [], "start_step": start,
                                            "init_from": branch_point_path(f"{storage_uri}/{long_name}", start)})
            branch_specs.append(TrialSpec(branch.name, branch, steps[budget], budget, long_name))
    return long_specs, branch_specs


def validate_points(cfg: SweepConfig, points: list[TrialPoint], vocab_size: int) -> None:
    """Build every point's model config before anything runs; name every point that is invalid."""
    from gptoss import build_config

    bad = []
    for point in points:
        tcfg = point.train_config(cfg.base, "unused", cfg.workers_per_trial, cfg.name, cfg.lr_by_arch)
        try:
            model_cfg = build_config(point.arch, tcfg.preset, **{**tcfg.model_overrides, "vocab_size": vocab_size})
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
    from orchestrator.train_loop import branch_point_path
    from orchestrator.trainer import SUMMARY_FILE, run_training

    cfg = TrainConfig.from_dict(params["train"])
    storage = open_storage(cfg.storage)
    summary_path = storage.path(cfg.run_name, SUMMARY_FILE)
    # A branch's kept state in the long run is needed until the branch has finished, then removed.
    kept = branch_point_path(storage.path(params["branch_of"]), cfg.start_step) if params.get("branch_of") else None
    if storage.exists(summary_path):
        summary = json.loads(storage.read_text(summary_path))
        if summary.get("steps") == params["total_steps"]:
            # Finished in an earlier, interrupted sweep: report its result and do not train again.
            if kept:
                remove_kept_state(storage, params["branch_of"], cfg.start_step)
            tune.report({"step": summary["steps"], "tokens": summary["tokens"], "val_loss": summary["final_val_loss"],
                         "best_val_loss": summary["best_val_loss"], "reused": 1})
            return
    if kept and not storage.exists(kept) and not storage.list_dirs(storage.path(cfg.run_name)):
        raise RuntimeError(f"{cfg.run_name}: the long run {params['branch_of']} has no kept state at step "
                           f"{cfg.start_step} to branch from (it did not get that far)")
    run_training(cfg, show_progress=False, callbacks=[TuneReportCallback()], cpu_held_by_caller=TRIAL_CPU)
    if kept:
        remove_kept_state(storage, params["branch_of"], cfg.start_step)


def _finished(spec: TrialSpec) -> bool:
    """A trial whose run has a summary at its full step count; a finished branch no longer needs its kept state."""
    from orchestrator.storage import open_storage
    from orchestrator.trainer import SUMMARY_FILE

    storage = open_storage(spec.train.storage)
    path = storage.path(spec.name, SUMMARY_FILE)
    if not storage.exists(path):
        return False
    done = json.loads(storage.read_text(path)).get("steps") == spec.total_steps
    if done and spec.branch_of:
        remove_kept_state(storage, spec.branch_of, spec.train.start_step)
    return done


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
    from orchestrator.cluster import is_uri, local_path

    def absolute(path: Optional[str]) -> Optional[str]:
        return path if path is None or is_uri(path) else local_path(path)

    return TrainConfig.from_dict({**base.to_dict(), "threads_per_worker": threads, "data": absolute(base.data),
                                  "tokenizer_dir": absolute(base.tokenizer_dir)})


def plan_sweep(cfg: SweepConfig) -> tuple[list[TrialPoint], dict]:
    """Grid points, validated against the data, before Ray starts."""
    from data_pipeline import load_manifest

    from orchestrator.trainer import plan_run

    points = expand_grid(cfg)
    manifest = load_manifest(os.path.abspath(cfg.base.data))
    validate_points(cfg, points, int(manifest["vocab_size"]))
    phase1, phase2 = plan_trials(cfg, points, cfg.base, "unused")  # budget arithmetic, before anything runs
    for spec in phase1 + phase2:
        spec.train.check_schedule(spec.total_steps)
    first = TrainConfig.from_dict({**phase1[0].train.to_dict(), "storage": cfg.base.storage})
    plan_run(first, workers=cfg.workers_per_trial)  # data, batch and tokenizer checks, once
    return points, manifest


def run_sweep(cfg: SweepConfig, show_progress: bool = True) -> dict:
    """Run (or resume) the sweep and write its report; returns the report's summary."""
    from orchestrator.cluster import check_shared_storage
    from orchestrator.report import write_report
    from orchestrator.runtime import init_ray
    from orchestrator.storage import open_storage

    points, _ = plan_sweep(cfg)
    info = init_ray(cfg.base.address, cfg.base.verbose)
    use_gpu = (info.gpus >= 1 and not cfg.base.cpu) or cfg.base.gpu
    if cfg.base.gpu and info.gpus < 1:
        raise ClusterError(f"--gpu was given but the cluster at {info.address} has no GPUs")
    capacity = info.gpus if use_gpu else info.cpus
    if cfg.workers_per_trial > capacity:
        kind = "GPUs" if use_gpu else "CPUs"
        raise ClusterError(f"--workers-per-trial {cfg.workers_per_trial} exceeds the cluster's {capacity:g} {kind}; "
                           f"use --workers-per-trial <= {int(capacity)}")
    concurrent = cfg.max_concurrent or max(1, int(capacity // cfg.workers_per_trial))
    threads = cfg.base.threads_per_worker or max(1, int(info.cpus // (concurrent * cfg.workers_per_trial)))
    concurrent = min(concurrent, len(points))

    storage = open_storage(cfg.base.storage)
    check_shared_storage(storage.uri, info, warn=SweepConsole.say_always)
    sweep_uri = storage.uri_of(cfg.name)
    trials_uri = f"{sweep_uri}/{TRIALS_DIR}"
    base = trial_base(cfg.base, None if use_gpu else threads)
    phase1, phase2 = plan_trials(cfg, points, base, trials_uri)
    storage.write_text(storage.path(cfg.name, SWEEP_FILE), json.dumps(
        dict(cfg.to_dict(), points=[p.name for p in points], trials=[t.name for t in phase1 + phase2],
             concurrent=concurrent, threads_per_worker=threads), indent=1))
    if show_progress:
        what = (f"{len(points)} trials of {phase1[0].total_steps} steps" if not phase2 else
                f"{len(phase1)} long runs to {max(cfg.budgets):,} tokens, then {len(phase2)} cooldown branches")
        SweepConsole.say_always(f"sweep {cfg.name}: {what}, {concurrent} at a time, {cfg.workers_per_trial} worker(s) "
                                f"per trial{'' if use_gpu else f' x {threads} thread(s)'} -> {sweep_uri}")
    started = time.time()
    errors = _run_phase(cfg, phase1, "tune", concurrent, sweep_uri, base, show_progress)
    if phase2:
        errors += _run_phase(cfg, phase2, "tune-branches", concurrent, sweep_uri, base, show_progress)
    report = write_report(sweep_uri, cfg.baseline)
    report["wall_s"] = time.time() - started
    report["errors"] = len(errors)
    if show_progress:
        SweepConsole.say_always(f"sweep {cfg.name} done in {report['wall_s']:.0f}s: {report['trials']} trials reported, "
                                f"{len(errors)} failed; report: {report['report']}")
    if errors:
        first = " ".join(str(errors[0].error).split())[:300]
        raise ClusterError(f"{len(errors)} trial(s) failed (the report covers the rest); first error: {first}")
    return report


def _run_phase(cfg: SweepConfig, specs: list[TrialSpec], experiment: str, concurrent: int, sweep_uri: str,
               base: TrainConfig, show_progress: bool) -> list:
    """One Tune experiment over the specs not finished yet (by an earlier run of this sweep); returns the failures."""
    specs = [s for s in specs if not _finished(s)]
    if not specs:
        return []
    total_steps = max(s.total_steps for s in specs)
    scheduler = None
    if cfg.asha:
        from ray.tune.schedulers import ASHAScheduler

        evals = max(1, total_steps // base.eval_every)
        scheduler = ASHAScheduler(time_attr="step", max_t=total_steps, grace_period=max(1, evals // 4) * base.eval_every,
                                  reduction_factor=2)
    console = SweepConsole(show_progress, len(specs))
    trainable = tune.with_resources(lambda params: _trial(params["trial"]), {"CPU": TRIAL_CPU})
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search([s.param() for s in specs])},
        tune_config=tune.TuneConfig(max_concurrent_trials=min(concurrent, len(specs)), scheduler=scheduler,
                                    metric="val_loss", mode="min",
                                    trial_name_creator=lambda t: t.config["trial"]["name"],
                                    trial_dirname_creator=lambda t: t.config["trial"]["name"]),
        run_config=tune.RunConfig(name=experiment, storage_path=sweep_uri, verbose=0, callbacks=[console],
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )
    return [r for r in tuner.fit() if r.error is not None]


class SweepConsole(tune.Callback):
    """One line per trial as it starts and ends, and a live table of every trial's latest evaluation."""

    def __init__(self, enabled: bool, total: int, table_every_s: float = 30.0):
        self.enabled, self.total, self.table_every_s = enabled, total, table_every_s
        self.rows: dict[str, dict] = {}
        self.last_table = time.time()
        self.done = 0

    def say(self, text: str) -> None:
        if self.enabled:
            self.say_always(text)

    @staticmethod
    def say_always(text: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(text)

    def _row(self, trial) -> dict:
        t = trial.config["trial"]["train"]
        mo = t["model_overrides"]
        return self.rows.setdefault(trial.trial_id, dict(trial=trial.config["trial"]["name"], arch=t["arch"],
                                                         depth=mo.get("n_layers", "-"), experts=mo.get("num_experts", "-"),
                                                         step="-", val_loss=math.nan))

    def on_trial_start(self, iteration, trials, trial, **info):
        row = self._row(trial)
        self.say(f"[start] {row['trial']}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = self._row(trial)
        row["step"] = result.get("step", row["step"])
        row["val_loss"] = result.get("val_loss", row["val_loss"])
        if time.time() - self.last_table > self.table_every_s:
            self.last_table = time.time()
            self.say(self.table())

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        row = self._row(trial)
        self.say(f"[done {self.done}/{self.total}] {row['trial']}  step {row['step']}  val loss {row['val_loss']:.4f}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        self.say(f"[failed {self.done}/{self.total}] {self._row(trial)['trial']}")

    def table(self) -> str:
        head = f"{'trial':<40} {'arch':<7} {'depth':>5} {'experts':>7} {'step':>6} {'val loss':>9}"
        lines = [head, "-" * len(head)]
        for r in self.rows.values():
            loss = f"{r['val_loss']:.4f}" if not math.isnan(r["val_loss"]) else "-"
            lines.append(f"{r['trial']:<40} {r['arch']:<7} {r['depth']!s:>5} {r['experts']!s:>7} {r['step']!s:>6} {loss:>9}")
        return "\n".join(lines)


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


def build_sweep_config(config_path: Optional[str], grid_flags: dict, sweep_flags: dict, train_flags: dict) -> SweepConfig:
    """Merge a sweep YAML with command-line flags (flags win; None means not given) into a SweepConfig.

    Without a YAML, axes not given default to the seed's grid. `budget_tokens` (YAML) / --budget-tokens is the
    per-trial token budget; giving a budget or --max-steps on the command line replaces the other from the YAML.
    `budgets` (YAML list) / --budgets trains every point at several budgets (wsd branches) instead of one.
    """
    settings = load_sweep_yaml(config_path) if config_path else {}
    grid = dict(settings.pop("grid", {}) or {})
    grid.update({k: v for k, v in grid_flags.items() if v is not None})
    if not config_path:
        for axis, default in DEFAULT_GRID.items():
            grid.setdefault(axis, default)
    sweep_keys = {f.name for f in fields(SweepConfig)} - {"base", "grid"}
    sweep_settings = {k: settings.pop(k) for k in list(settings) if k in sweep_keys}
    if "budget_tokens" in settings:
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
        raise ValueError(f"unknown setting(s) {sorted(unknown)} in {config_path}; use train flag names "
                         f"(e.g. seq_len, budget_tokens) and a grid: section")
    settings.setdefault("data", "data/tinystories")
    return SweepConfig(base=TrainConfig(**settings), grid=grid, **sweep_settings)
