"""Running a sweep: plan it once into RunSpecs (orchestrator/sweep_plan.py) and check them against the data before
anything runs, then run phase 1 (every point, or the long runs) and phase 2 (the budget branches) through an executor
(Ray Tune, or local processes), resume what an earlier run of the sweep left, and write the report."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Optional

from orchestrator.config import TrainConfig
from orchestrator.console import say
from orchestrator.executors import Executor, LocalExecutor, Phase, RayExecutor
from orchestrator.report import TRIALS_DIR
from orchestrator.run_dir import RunDir, one_writer
from orchestrator.spec import RunSpec
from orchestrator.storage import open_storage
from orchestrator.sweep_plan import SweepConfig, TrialPoint, expand_grid, plan_trials, validate_points
from raysetup import ClusterError

SWEEP_FILE = "sweep.json"


@dataclass
class SweepPlan:
    """A sweep planned once, before anything runs: its points, and the run specs of both phases."""

    points: list[TrialPoint]
    phase1: list[RunSpec]
    phase2: list[RunSpec] = field(default_factory=list)
    sweep_uri: str = ""

    @property
    def specs(self) -> list[RunSpec]:
        return self.phase1 + self.phase2


def trial_base(base: TrainConfig) -> TrainConfig:
    """The settings every trial starts from. Local paths become absolute: a Tune trial runs in its own working
    directory, where `data/tinystories` would name nothing."""
    from raysetup import is_uri, local_path

    def absolute(path: Optional[str]) -> Optional[str]:
        return path if path is None or is_uri(path) else local_path(path)

    # verify_data: plan_sweep checks every shard once before the sweep; N trials need not each read it all again.
    return dataclasses.replace(
        base, data=absolute(base.data), tokenizer_dir=absolute(base.tokenizer_dir), verify_data=False
    )


def plan_sweep(cfg: SweepConfig) -> SweepPlan:
    """Grid points and every trial's spec, validated against the data, before Ray starts."""
    from data_pipeline import load_manifest
    from orchestrator.lr_selection import apply_lr_from
    from orchestrator.trainer import plan_run

    points = expand_grid(cfg)
    if cfg.lr_from:
        apply_lr_from(cfg, points)
    manifest = load_manifest(os.path.abspath(cfg.base.data))
    validate_points(cfg, points, int(manifest["vocab_size"]))
    sweep_uri = open_storage(cfg.base.storage, writable=False).uri_of(cfg.name)  # creates nothing yet
    phase1, phase2 = plan_trials(cfg, points, trial_base(cfg.base), f"{sweep_uri}/{TRIALS_DIR}")
    for spec in phase1 + phase2:
        spec.check(spec.total_steps)
    plan_run(phase1[0], workers=cfg.workers_per_trial, verify_data=cfg.base.verify_data)  # data, batch, tokenizer
    return SweepPlan(points, phase1, rebuild_lost_branches(phase1, phase2), sweep_uri)


def _trial_dir(spec: RunSpec) -> RunDir:
    return RunDir(open_storage(spec.train.storage, writable=False), spec.name)  # reads only: creates nothing


def is_finished(spec: RunSpec) -> bool:
    """A trial whose run has a summary at its full step count (reused by a rerun of the sweep)."""
    return spec.train.resume and _trial_dir(spec).finished_summary(spec.total_steps) is not None


def unfinished(specs: list[RunSpec]) -> list[RunSpec]:
    """The specs still to run. A finished branch no longer needs its kept state: it is released here."""
    from orchestrator.executors import release_branch_state

    todo = []
    for spec in specs:
        if is_finished(spec):
            release_branch_state(spec, _trial_dir(spec).storage)
        else:
            todo.append(spec)
    return todo


def rebuild_lost_branches(long_specs: list[RunSpec], branch_specs: list[RunSpec]) -> list[RunSpec]:
    """Branches whose long run has finished but no longer keeps their state (results copied without it, e.g. from
    another machine, or the state deleted), and that have no checkpoint of their own, train from step 0 instead: the
    same seed, data order, warmup and stable lr reach the same state at the cooldown start, so the branch costs its
    own budget and the long run's results stay as they are."""
    finished_long = {s.name for s in long_specs if is_finished(s)}
    out = []
    for branch in branch_specs:
        run = _trial_dir(branch)
        source = RunDir(run.storage, branch.branch.run)
        lost = branch.branch.run in finished_long and not source.has_branch_state(branch.branch.step)
        if lost and not is_finished(branch) and not run.checkpoints():
            branch = branch.replace(branch=None)
        out.append(branch)
    return out


def _placement(cfg: SweepConfig, executor: Executor, plan: SweepPlan) -> tuple[bool, int, int]:
    """(use_gpu, trials at once, threads per CPU worker) on the executor's resources."""
    if isinstance(executor, LocalExecutor) and cfg.workers_per_trial != 1:
        raise ValueError("a sweep without Ray (--local) runs one worker per trial; drop --workers-per-trial")
    use_gpu, gpus, cpus = executor.capacity(cfg.base, open_storage(cfg.base.storage))
    capacity = gpus if use_gpu else cpus
    if cfg.workers_per_trial > capacity:
        kind = "GPUs" if use_gpu else "CPUs"
        raise ClusterError(
            f"--workers-per-trial {cfg.workers_per_trial} exceeds the cluster's {capacity:g} {kind}; "
            f"use --workers-per-trial <= {int(capacity)}"
        )
    concurrent = cfg.max_concurrent or max(1, int(capacity // cfg.workers_per_trial))
    threads = cfg.base.threads_per_worker or max(1, int(cpus // (concurrent * cfg.workers_per_trial)))
    return use_gpu, min(concurrent, len(plan.points)), threads


def _with_threads(specs: list[RunSpec], threads: Optional[int]) -> list[RunSpec]:
    return [s.replace(train=dataclasses.replace(s.train, threads_per_worker=threads)) for s in specs]


def run_sweep(cfg: SweepConfig, show_progress: bool = True, local: bool = False) -> dict:
    """Run (or resume) the sweep and write its report; returns the report's summary. local=True runs the trials as
    processes on this machine without Ray (same plan, same files; e.g. a GPU machine that has torch but not Ray)."""
    plan = plan_sweep(cfg)
    with one_writer(open_storage(cfg.base.storage), cfg.name, kind="sweep", doing="run"):
        return _run_sweep_locked(cfg, plan, LocalExecutor() if local else RayExecutor(), show_progress)


def _run_sweep_locked(cfg: SweepConfig, plan: SweepPlan, executor: Executor, show_progress: bool) -> dict:
    use_gpu, concurrent, threads = _placement(cfg, executor, plan)
    plan.phase1, plan.phase2 = (_with_threads(p, None if use_gpu else threads) for p in (plan.phase1, plan.phase2))
    storage = open_storage(cfg.base.storage)
    record = dict(cfg.to_dict(), points=[p.name for p in plan.points], trials=[t.name for t in plan.specs])
    record.update(concurrent=concurrent, threads_per_worker=threads)
    storage.write_text(storage.path(cfg.name, SWEEP_FILE), json.dumps(record, indent=1))
    if show_progress:
        what = (
            f"{len(plan.points)} trials of {plan.phase1[0].total_steps} steps"
            if not plan.phase2
            else f"{len(plan.phase1)} long runs to {max(cfg.budgets):,} tokens, "
            f"then {len(plan.phase2)} cooldown branches"
        ) + (f"; size {cfg.holdout['size']} held out until predictions.json is written" if cfg.holdout else "")
        say(
            f"sweep {cfg.name}: {what}, {concurrent} at a time, {cfg.workers_per_trial} worker(s) "
            f"per trial{'' if use_gpu else f' x {threads} thread(s)'} -> {plan.sweep_uri}"
        )
    started = time.time()
    errors = _run_phases(cfg, plan, executor, concurrent, show_progress)
    return _report(cfg, plan, errors, time.time() - started, show_progress)


def _run_phases(cfg: SweepConfig, plan: SweepPlan, executor: Executor, concurrent: int, show_progress: bool):
    """Phase 1 (every point, or the long runs), then phase 2 (the branches of the long runs that did not fail). With
    a holdout, both phases run for every other size first; then predictions.json is written from their results, and
    only then do phases 1 and 2 run for the held-out size (phase 3)."""
    from raysetup import quiet_tune

    quiet_tune(cfg.base.verbose)
    stages = [(plan.phase1, plan.phase2)]
    if cfg.holdout:
        from orchestrator.holdout import held_out_points, is_held_out

        held = {p.name for p in held_out_points(cfg, cfg.holdout["size"])}

        def part(specs: list[RunSpec], held_out: bool) -> list[RunSpec]:
            return [s for s in specs if is_held_out(s.name, held) == held_out]

        stages = [
            (part(plan.phase1, False), part(plan.phase2, False)),
            (part(plan.phase1, True), part(plan.phase2, True)),
        ]
    errors: list = []
    try:
        for i, (long_runs, branches) in enumerate(stages):
            if i:
                _predict_before_holdout(cfg, plan, show_progress)
            todo = unfinished(long_runs)
            errs = (
                executor.run_trials(Phase(todo, concurrent, "tune", plan.sweep_uri, show_progress, cfg.asha))
                if todo
                else []
            )
            failed_long = {name for name, _ in errs}
            todo = [s for s in unfinished(branches) if s.branch is None or s.branch.run not in failed_long]
            if todo:
                errs += executor.run_trials(Phase(todo, concurrent, "tune-branches", plan.sweep_uri, show_progress))
            errors += errs
    except KeyboardInterrupt:
        raise SweepInterrupted(_interruption(cfg.name, plan.specs, plan.sweep_uri)) from None
    return errors


def _predict_before_holdout(cfg: SweepConfig, plan: SweepPlan, show_progress: bool) -> None:
    """predictions.json from every size but the held-out one, before any held-out trial runs; a rerun of a sweep whose
    held-out trials have started keeps the file it has (it records what was predicted first)."""
    from orchestrator.holdout import write_predictions

    try:
        write_predictions(plan.sweep_uri, cfg.holdout, say if show_progress else None)
    except ValueError as exc:
        if show_progress:
            say(f"sweep {cfg.name}: no new predictions ({exc})")


def _report(cfg: SweepConfig, plan: SweepPlan, errors: list, wall_s: float, show_progress: bool) -> dict:
    from orchestrator.report import write_report

    try:
        report = write_report(plan.sweep_uri, cfg.baseline)
    except ValueError:
        if not errors:
            raise
        # No trial finished: nothing to report on, and the report's advice (run the sweep) would be this command.
        raise ClusterError(
            f"all {len(errors)} trial(s) of sweep {cfg.name} failed; {errors[0][0]}: {errors[0][1]}"
            + _rerun_hint(cfg.name)
        ) from None
    report.update(wall_s=wall_s, errors=len(errors))
    if show_progress:
        say(
            f"sweep {cfg.name} done in {wall_s:.0f}s: {report['trials']} trials reported, "
            f"{len(errors)} failed; report: {report['report']}"
        )
    if errors:
        raise ClusterError(
            f"{len(errors)} of {len(plan.specs)} trial(s) failed (the report covers the rest); "
            f"{errors[0][0]}: {errors[0][1]}" + _rerun_hint(cfg.name)
        )
    return report


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: what was kept and how to continue, in one line (the CLI prints it and exits 130)."""


def _rerun_hint(name: str) -> str:
    return (
        f"; fix the cause and run the same command again (same --name {name}): finished trials are kept, "
        "failed ones resume"
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


def estimate_sweep(cfg: SweepConfig, flop_rate: Optional[float] = None) -> list[str]:
    """The cost table of the planned sweep (sweep_cost), without running anything: each trial's tokens from its
    spec, FLOPs/token from one meta-device model per family and size, and the time left at the tokens/s the sweep's
    finished trials measured (or at flop_rate FLOP/s)."""
    from data_pipeline import TokenWindows
    from orchestrator.sizes import size_of_model
    from orchestrator.sweep_cost import cost_lines, cost_rows, trial_cost
    from orchestrator.trainer import plan_run

    plan = plan_sweep(cfg)
    base = cfg.base
    val = TokenWindows(os.path.abspath(base.data), "validation", base.seq_len)
    val_tokens = val.eval_plan()["tokens"]
    windows = base.train_eval_windows if base.train_eval_windows is not None else val.eval_plan()["windows"]
    plans: dict = {}
    costs = []
    for spec in plan.specs:
        key = (spec.train.arch, spec.train.variant, json.dumps(spec.train.model_overrides, sort_keys=True))
        if key not in plans:
            plans[key] = plan_run(spec, workers=cfg.workers_per_trial, verify_data=False)
        run_plan = plans[key]
        run_plan = dataclasses.replace(run_plan, spec=spec)
        family = spec.train.variant or spec.train.arch
        size = size_of_model(run_plan.model_config, cfg.sizes) if cfg.sizes else "-"
        cost = trial_cost(spec, run_plan, family, size or "-", val_tokens, windows * base.seq_len)
        done = _trial_dir(spec).finished_summary(spec.total_steps) if spec.train.resume else None
        if done is not None:
            cost.finished, cost.tokens_per_s = True, done.get("tokens_per_s")
        costs.append(cost)
    concurrent = cfg.max_concurrent or os.cpu_count() or 1  # CPU trials take one thread each by default
    return [f"sweep {cfg.name}: {len(costs)} trials planned", "", *cost_lines(cost_rows(costs, flop_rate), concurrent)]
