"""Where runs execute. Two executors with one interface: RayExecutor (a run is a Ray Train TorchTrainer, a set of
trials is a Ray Tune experiment) and LocalExecutor (a run is the loop in this process, a set of trials is a pool of
child processes). They differ only in how they launch: every trial, either way, is `run_trial(spec, executor)`."""

from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from orchestrator.console import say
from orchestrator.run_dir import RunDir
from orchestrator.spec import RunSpec
from orchestrator.storage import Storage, StorageFull, open_storage
from raysetup import ClusterError, ClusterInfo

if TYPE_CHECKING:
    from orchestrator.trainer import RunPlan

# A Tune trial only launches a trainer; its workers hold the real CPUs. A whole CPU per trial would starve them, and
# Tune refuses a zero reservation, so a trial holds this sliver and its trainer's workers reserve that much less.
TRIAL_CPU = 0.01
Failure = tuple[str, str]  # (trial name, one-line reason)


@dataclass(frozen=True)
class Phase:
    """A set of a sweep's trials to run together: `concurrent` at a time, as the experiment `experiment` of the sweep
    at `sweep_uri` (Tune's folder name there; ignored by the local pool)."""

    specs: list
    concurrent: int
    experiment: str
    sweep_uri: str
    show_progress: bool
    asha: bool = False


@dataclass(frozen=True)
class Placement:
    workers: int
    use_gpu: bool
    threads: int  # torch threads per CPU worker
    where: str  # for the start line: "on 2 node(s)", "in this process, without Ray"


def run_trial(spec: RunSpec, executor: "Executor") -> dict:
    """The one trial body, under Tune or in a child process: a trial finished by an earlier run of its sweep is
    reported, not trained again; a branch's kept state is released once the branch has finished."""
    from orchestrator.trainer import run_spec

    run = RunDir(open_storage(spec.train.storage), spec.name)
    summary = run.finished_summary(spec.total_steps) if spec.train.resume else None
    if summary is None:
        require_branch_start(spec, run)
        summary = run_spec(spec, executor, show_progress=False)
        if summary["invocation"]["steps"] == 0:
            executor.report_reused(summary)  # trained to its end before: nothing reported a result yet
    else:
        executor.report_reused(summary)
    release_branch_state(spec, run.storage)
    return summary


def require_branch_start(spec: RunSpec, run: RunDir) -> None:
    """Refuse a branch whose kept state is missing when it has no checkpoints of its own to resume from either."""
    if spec.branch is None:
        return
    source = RunDir(run.storage, spec.branch.run)
    if not source.has_branch_state(spec.branch.step) and not run.checkpoints():
        raise ValueError(
            f"{spec.name}: the long run {spec.branch.run} has no kept state at step {spec.branch.step} to branch "
            f"from (it did not get that far)"
        )


def release_branch_state(spec: RunSpec, storage: Storage) -> None:
    if spec.branch is not None:
        RunDir(storage, spec.branch.run).remove_branch_state(spec.branch.step)


def _error_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class Executor:
    """How runs are launched. `place` decides workers and devices before anything is written; `fit` trains one
    planned run; `run_trials` runs one Phase of a sweep's trials and returns their failures."""

    def place(self, cfg, storage: Storage) -> Placement:
        raise NotImplementedError

    def capacity(self, base, storage: Storage) -> tuple[bool, float, float]:
        """(use_gpu, GPUs, CPUs) that a sweep's trials share."""
        raise NotImplementedError

    def fit(self, plan: "RunPlan", run: RunDir, on_event: Callable[[dict], None], invocation: int) -> None:
        raise NotImplementedError

    def run_trials(self, phase: "Phase") -> list[Failure]:
        raise NotImplementedError

    def report_reused(self, summary: dict) -> None:
        """A trial's result that no training reported (it had finished before)."""


# ----------------------------------------------------------------------------------------------
# This machine, without Ray.


class LocalExecutor(Executor):
    def place(self, cfg, storage: Storage) -> Placement:
        import torch

        if not storage.is_local:
            raise ValueError(f"a run without Ray writes to a local directory; --storage {cfg.storage} is not one")
        if (cfg.workers or 1) != 1:
            raise ValueError("a run without Ray has one worker; drop --workers (or run it on Ray)")
        use_gpu = torch.cuda.is_available() and not cfg.cpu
        if cfg.gpu and not use_gpu:
            raise ValueError("--gpu was given but this machine has no GPU that torch can use")
        return Placement(1, use_gpu, cfg.threads_per_worker or torch.get_num_threads(), "in this process, without Ray")

    def capacity(self, base, storage: Storage) -> tuple[bool, float, float]:
        import os

        import torch

        gpus = torch.cuda.device_count()
        if base.gpu and gpus < 1:
            raise ClusterError("--gpu was given but this machine has no GPU that torch can use")
        return gpus >= 1 and not base.cpu, gpus, os.cpu_count() or 1

    def fit(self, plan: "RunPlan", run: RunDir, on_event: Callable[[dict], None], invocation: int) -> None:
        """The loop in this process; a failure becomes a TrainingError with its traceback as the full text."""
        from orchestrator.train_loop import train_worker
        from orchestrator.trainer import TrainingError

        try:
            train_worker(plan.job(run, progress=on_event))
        except (KeyboardInterrupt, ValueError, StorageFull):
            raise
        except Exception as exc:
            error = TrainingError(" ".join(f"{type(exc).__name__}: {exc}".split())[:400])
            error.full_text = traceback.format_exc()
            raise error from None

    def run_trials(self, phase: "Phase") -> list[Failure]:
        """`concurrent` child processes at a time (spawned: CUDA cannot be forked), this machine's GPUs dealt
        round-robin."""
        from orchestrator.local_pool import run_in_processes

        return run_in_processes(phase.specs, phase.concurrent, phase.experiment, phase.show_progress)


# ----------------------------------------------------------------------------------------------
# Ray: Train for a run, Tune for a set of trials.


def place_workers(cfg, info: ClusterInfo) -> tuple[int, bool, int]:
    """(workers, use_gpu, threads per CPU worker) for this cluster; refuse at once what it cannot place."""
    if cfg.gpu and info.gpus < 1:
        raise ClusterError(
            f"--gpu was given but the cluster at {info.address} has no GPUs; drop --gpu to train on CPUs"
        )
    use_gpu = (info.gpus >= 1 and not cfg.cpu) or cfg.gpu
    workers = cfg.workers or (int(info.gpus) if use_gpu else 1)
    if use_gpu and workers > info.gpus:
        raise ClusterError(
            f"cannot place {workers} GPU workers: the cluster has {info.gpus:g} GPUs; "
            f"use --workers <= {int(info.gpus)} or --cpu"
        )
    if not use_gpu and workers > info.cpus:
        raise ClusterError(
            f"cannot place {workers} CPU workers: the cluster has {info.cpus:g} CPUs; use --workers <= {int(info.cpus)}"
        )
    threads = cfg.threads_per_worker or max(1, int(info.cpus // workers))
    if not use_gpu and workers * threads > info.cpus:
        raise ClusterError(
            f"{workers} workers x {threads} threads need {workers * threads} CPUs but the cluster has "
            f"{info.cpus:g}; lower --threads-per-worker or --workers"
        )
    return workers, use_gpu, threads


class RayExecutor(Executor):
    """in_trial: the run is a Tune trial (it forwards rank 0's metrics to Tune, and its workers give back the sliver
    of CPU the trial holds)."""

    def __init__(self, in_trial: bool = False):
        self.in_trial = in_trial

    def place(self, cfg, storage: Storage) -> Placement:
        from raysetup import check_shared_storage, init_ray

        info = init_ray(cfg.address, cfg.verbose)
        workers, use_gpu, threads = place_workers(cfg, info)
        check_shared_storage(storage.uri, info, warn=say)  # several nodes: every one must see the checkpoints
        return Placement(workers, use_gpu, threads, f"on {info.num_nodes} node(s)")

    def capacity(self, base, storage: Storage) -> tuple[bool, float, float]:
        from raysetup import check_shared_storage, init_ray

        info = init_ray(base.address, base.verbose)
        if base.gpu and info.gpus < 1:
            raise ClusterError(f"--gpu was given but the cluster at {info.address} has no GPUs")
        check_shared_storage(storage.uri, info, warn=say)
        return (info.gpus >= 1 and not base.cpu) or base.gpu, info.gpus, info.cpus

    def fit(self, plan: "RunPlan", run: RunDir, on_event: Callable[[dict], None], invocation: int) -> None:
        import ray
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # On the driver's own node: a queue on a node that dies mid-run would take the run's metrics with it.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
        callbacks = []
        if self.in_trial:
            from ray.tune.integration.ray_train import TuneReportCallback

            callbacks.append(TuneReportCallback())
        try:
            _fit_with_progress(self._trainer(plan, run, queue, invocation, callbacks), queue, on_event)
        finally:
            try:
                ray.kill(queue.actor)
            except Exception:
                pass

    def _trainer(self, plan: "RunPlan", run: RunDir, queue, invocation: int, callbacks: Optional[list] = None):
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        from orchestrator.train_loop import train_worker

        # A caller that itself holds a sliver of CPU (a Tune trial) gives it back here: trials x (sliver + whole
        # CPUs) would not fit the cluster, and the second trial's workers would wait for the first trial to end.
        held = TRIAL_CPU if self.in_trial else 0.0
        resources = {"CPU": 1, "GPU": 1} if plan.use_gpu else {"CPU": plan.threads_per_worker - held}
        storage_path, name = run.ray_train_location(invocation)
        return TorchTrainer(
            train_worker,
            train_loop_config={"job": plan.job(run, progress=queue, on_ray=True)},
            scaling_config=ScalingConfig(
                num_workers=plan.workers, use_gpu=plan.use_gpu, resources_per_worker=resources
            ),
            run_config=RunConfig(
                name=name,
                storage_path=storage_path,
                failure_config=FailureConfig(max_failures=plan.cfg.max_failures),
                callbacks=callbacks or [],
            ),
        )

    def report_reused(self, summary: dict) -> None:
        if not self.in_trial:
            return
        from ray import tune

        # Tune refuses a trial without a result carrying its metric (strict metric checking).
        tune.report(
            {
                "step": summary["steps"],
                "tokens": summary["tokens"],
                "val_loss": summary["final_val_loss"],
                "best_val_loss": summary["best_val_loss"],
                "reused": 1,
            }
        )

    def run_trials(self, phase: "Phase") -> list[Failure]:
        from orchestrator.tune_runner import run_with_tune

        return run_with_tune(phase)


def _fit_with_progress(trainer, queue, on_event: Callable[[dict], None]) -> None:
    """Run trainer.fit() in a thread while this thread drains rank 0's events."""
    box: dict = {}

    def target():
        try:
            box["result"] = trainer.fit()
        except BaseException as exc:  # re-raised below, on the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    while True:
        alive = thread.is_alive()
        try:
            events = queue.get_nowait_batch(queue.qsize()) if queue.qsize() else []
        except Exception:
            events = []
        for event in events:
            on_event(event)
        if not alive:
            break
        thread.join(timeout=0.25)
    error = box.get("error") or getattr(box.get("result"), "error", None)
    if error is not None:
        if isinstance(error, KeyboardInterrupt):
            raise error
        raise _training_error(error) from None


def _training_error(exc: BaseException):
    from orchestrator.failures import describe_failure
    from orchestrator.trainer import TrainingError

    line, full = describe_failure(exc)
    error = TrainingError(f"training failed: {line}")
    error.full_text = full
    return error
