"""The loop every training worker runs (data, model, AdamW, schedule, eval, checkpoints), with or without Ray."""

from __future__ import annotations

import json
import math
import os
import resource
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist

from orchestrator.allocator import keep_freed_memory
from orchestrator.config import TrainConfig
from orchestrator.evaluation import eval_scope_fields, evaluate_windows
from orchestrator.optimizer import build_optimizer, lr_at, set_lr
from orchestrator.run_dir import (
    MANIFEST_FILE,
    OPTIMIZER_FILE,
    TRAIN_STATE_FILE,
    RunDir,
    read_state,
    temporary_checkpoint_dir,
)
from orchestrator.storage import full_disk_is_one_line

# Dense bf16 peak of the GPUs we expect to meet, for MFU. Unknown devices report achieved TFLOP/s only.
_GPU_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 70e12, "L40S": 362e12}


@dataclass
class WorkerJob:
    """Everything a worker needs, decided on the driver (orchestrator.trainer.plan_run): one typed, picklable value."""

    config: TrainConfig
    model_overrides: dict
    manifest: dict
    byte_lengths: Any  # numpy int array, UTF-8 bytes per model token id
    total_steps: int
    run_dir: str  # path or URI of the run directory; rank 0 writes checkpoints there, every rank restores from it
    threads_per_worker: int = 1
    use_gpu: bool = False
    start_state: Optional[str] = None  # a budget branch: the kept state it starts from when it has no checkpoint
    start_step: Optional[int] = None  # the step that state must hold
    keep_states_at: tuple = ()  # steps at which this run keeps its full state for budget branches
    progress: Any = None  # where rank 0 sends its events: a callable in this process, or a Ray queue
    inject_failure_at: Optional[int] = None  # testing: the last rank dies once before this step
    on_ray: bool = False  # launched by Ray Train (ranks, devices and the report barrier come from it)

    @property
    def failure_marker(self) -> str:
        return os.path.join(self.run_dir, ".injected_failure")


# ----------------------------------------------------------------------------------------------
# Where the loop runs: rank, device, and how a step's metrics are reported (Ray Train's barrier, or nothing).


@dataclass
class WorkerEnv:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    report: Callable[[dict], None] = lambda metrics: None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _ray_env() -> WorkerEnv:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    # Metrics only: checkpoints are this project's (RunDir); report() is the barrier that forwards rank 0's metrics
    # to Tune when the run is a sweep trial.
    return WorkerEnv(ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device(), ray.train.report)


def _worker_env(job: WorkerJob) -> WorkerEnv:
    if job.on_ray:
        return _ray_env()
    return WorkerEnv(device=torch.device("cuda" if job.use_gpu else "cpu"))


# ----------------------------------------------------------------------------------------------
# Pieces of the loop.


def peak_flops(device: torch.device) -> Optional[float]:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in _GPU_PEAK_BF16.items() if k in name), None)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state().tolist()
    return state


def _set_rng_state(state: dict) -> None:
    if "torch" in state:
        torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8))


def save_train_checkpoint(out_dir: str, model, optimizer, state: dict, manifest: dict) -> None:
    """Model (safetensors + config.json), optimizer, loop state and the data manifest, in one directory."""
    from gptoss import save_checkpoint

    save_checkpoint(model, out_dir, extra={"train": state.get("config", {})})
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": state["scheduler"]}, os.path.join(out_dir, OPTIMIZER_FILE)
    )
    with open(os.path.join(out_dir, TRAIN_STATE_FILE), "w") as f:
        json.dump(state, f, indent=1)
    with open(os.path.join(out_dir, MANIFEST_FILE), "w") as f:
        json.dump(manifest, f)


def _local_copy(run: RunDir, path: str):
    """A checkpoint (or kept state) of the run's storage as a local directory: itself when local, else a download."""
    if run.storage.is_local:
        return nullcontext(path)
    import pyarrow.fs as pafs

    tmp = temporary_checkpoint_dir()
    pafs.copy_files(path, tmp.name, source_filesystem=run.storage.fs, destination_filesystem=pafs.LocalFileSystem())
    return tmp


@dataclass
class LoopState:
    """Where the loop stands: what a checkpoint restores and the next step continues from."""

    step: int = 0
    tokens: int = 0
    best_val: float = math.inf


class Trainer:
    """One worker's model, optimizer, data and schedule, built from a job; `run()` trains to the job's last step."""

    def __init__(self, job: WorkerJob):
        from data_pipeline import TokenWindows
        from gptoss import build_model, flops_per_token

        self.job, self.cfg = job, job.config
        self.env = _worker_env(job)
        self.emit = _event_sink(job.progress, self.env.is_main)
        self.device = self.env.device
        if self.device.type == "cpu":
            torch.set_num_threads(job.threads_per_worker)
            keep_freed_memory()
        self.run_dir = RunDir.at(job.run_dir)
        torch.manual_seed(self.cfg.seed)  # identical init on every rank
        self.model = build_model(self.cfg.arch, self.cfg.preset, **job.model_overrides).to(self.device)
        self.optimizer = build_optimizer(self.model, self.cfg, self.device)
        env, cfg = self.env, self.cfg
        self.train_windows = TokenWindows(cfg.data, "train", cfg.seq_len, env.rank, env.world_size, seed=cfg.seed)
        self.val_windows = TokenWindows(cfg.data, "validation", cfg.seq_len, env.rank, env.world_size, seed=cfg.seed)
        self.byte_lengths = torch.as_tensor(np.asarray(job.byte_lengths), dtype=torch.int64, device=self.device)
        cuda = self.device.type == "cuda"
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
        self.flops_per_token = flops_per_token(self.model, cfg.seq_len)
        self.peak = peak_flops(self.device)
        self.warmup = cfg.resolved_warmup(job.total_steps)
        self.tokens_per_step = cfg.tokens_per_step(env.world_size)

    # -- state ---------------------------------------------------------------------------------------------------

    def restore(self, ckpt_dir: str) -> LoopState:
        from gptoss import load_checkpoint

        self.model.load_state_dict(load_checkpoint(ckpt_dir).state_dict())
        opt_state = torch.load(os.path.join(ckpt_dir, OPTIMIZER_FILE), map_location=self.device, weights_only=False)
        self.optimizer.load_state_dict(opt_state["optimizer"])
        state = read_state(ckpt_dir)
        _set_rng_state(state.get("rng", {}).get(str(self.env.rank), {}))
        return LoopState(state["step"], state["tokens"], state.get("best_val_loss", math.inf))

    def starting_state(self) -> LoopState:
        """The run's newest checkpoint (the driver has set damaged ones aside), else a budget branch's kept state,
        else step 0."""
        latest = self.run_dir.latest_checkpoint()
        if latest is not None:
            with _local_copy(self.run_dir, latest) as ckpt_dir:
                return self.restore(ckpt_dir)
        job = self.job
        if job.start_state is not None:
            if not self.run_dir.storage.exists(f"{job.start_state}/{TRAIN_STATE_FILE}"):
                raise FileNotFoundError(
                    f"no kept training state at {job.start_state} (was the long run's branch point removed?)"
                )
            with _local_copy(self.run_dir, job.start_state) as ckpt_dir:
                state = self.restore(ckpt_dir)
            if state.step != job.start_step:
                raise ValueError(
                    f"the kept state {job.start_state} holds step {state.step}, not the branch point {job.start_step}"
                )
            return state
        torch.manual_seed(self.cfg.seed + 1 + self.env.rank)  # per-rank dropout streams
        return LoopState()

    def state_record(self, state: LoopState, **extra) -> dict:
        cfg, job = self.cfg, self.job
        scheduler = dict(
            warmup=self.warmup,
            total=job.total_steps,
            lr=cfg.resolved_lr,
            min_lr=cfg.resolved_min_lr,
            schedule=cfg.schedule,
            cooldown_frac=cfg.cooldown_frac,
        )
        return dict(
            step=state.step,
            tokens=state.tokens,
            data_position=state.step * cfg.grad_accum,
            **extra,
            best_val_loss=state.best_val,
            config=cfg.to_dict(),
            total_steps=job.total_steps,
            scheduler=scheduler,
            model_overrides=job.model_overrides,
        )

    def keep_state(self, state: LoopState) -> None:
        """A budget branch starts here: rank 0 keeps the whole training state (every rank's RNG too)."""
        rng = _gather_rng(self.env.world_size)
        if not self.env.is_main:
            return
        with temporary_checkpoint_dir() as tmp:
            record = self.state_record(state, rng=rng)
            with full_disk_is_one_line(tmp):
                save_train_checkpoint(tmp, self.model, self.optimizer, record, self.job.manifest)
            self.run_dir.write_branch_state(tmp, state.step)

    def checkpoint(self, state: LoopState, val_loss: float, metrics: dict) -> None:
        """Rank 0 writes the checkpoint into the run directory; every rank then reports (Ray's barrier)."""
        rng = _gather_rng(self.env.world_size)
        if self.env.is_main:
            with temporary_checkpoint_dir() as tmp:
                record = self.state_record(state, val_loss=val_loss, rng=rng)
                with full_disk_is_one_line(tmp):
                    save_train_checkpoint(tmp, self.model, self.optimizer, record, self.job.manifest)
                self.run_dir.write_checkpoint(tmp, state.step, self.cfg.keep)
        self.env.report(metrics)

    # -- the loop ------------------------------------------------------------------------------------------------

    def step(self, step: int, model) -> float:
        """One optimizer step (grad_accum micro-steps); returns its mean loss."""
        cfg = self.cfg
        lr = lr_at(step, self.job.total_steps, self.warmup, cfg.resolved_lr, cfg.resolved_min_lr, cfg.schedule,
                   cfg.cooldown_frac)  # fmt: skip
        set_lr(self.optimizer, lr)
        step_loss = 0.0
        for micro in range(cfg.grad_accum):
            x, y = self.train_windows.batch(step * cfg.grad_accum + micro, cfg.batch_size)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            sync = micro == cfg.grad_accum - 1 or self.env.world_size == 1
            with nullcontext() if sync else model.no_sync(), self.autocast:
                _, loss = model(x, y)
                (loss / cfg.grad_accum).backward()
            step_loss += loss.item() / cfg.grad_accum
        self.last_grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.last_lr = lr
        return step_loss

    def window_metrics(self, state: LoopState, window: "_Window") -> dict:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - window.start
        tps = window.tokens / max(elapsed, 1e-9)
        epoch_len = max(1, self.train_windows.batches_per_epoch(self.cfg.batch_size))
        metrics = dict(
            step=state.step,
            time=time.time(),
            tokens=state.tokens,
            train_loss=window.loss / window.steps,
            lr=self.last_lr,
            grad_norm=self.last_grad_norm,
            tokens_per_s=tps,
            window_s=elapsed,
            window_tokens=window.tokens,
            first_window=window.first,
            epoch=((state.step - 1) * self.cfg.grad_accum) // epoch_len,
        )
        metrics.update(_throughput(self.flops_per_token, tps, self.peak, self.env.world_size, self.device))
        metrics.update(_moe_metrics(self.model))
        return metrics

    def evaluate(self, state: LoopState, metrics: dict) -> dict:
        """Validation loss folded into the step's metrics, then a checkpoint. Intermediate evals score eval_windows
        fixed windows (cheap); the run's last one scores the whole split."""
        env = self.env
        final = state.step == self.job.total_steps
        scope_max = None if final else (self.cfg.eval_windows or None)
        batches = self.val_windows.eval_batches(self.cfg.batch_size, scope_max)
        ev = evaluate_windows(self.model, batches, self.byte_lengths, self.device, self.autocast, env.world_size)
        train_loss = torch.tensor([metrics["train_loss"]], device=self.device)
        if env.world_size > 1:
            dist.all_reduce(train_loss)
        metrics.update(
            train_loss=train_loss.item() / env.world_size,
            val_loss=ev["loss"],
            val_bpb=ev["bpb"],
            peak_mem_mb=peak_memory_mb(self.device),
        )
        whole = self.val_windows.eval_plan(scope_max)["fraction"] == 1.0
        split_targets = self.val_windows.total_tokens - 1
        metrics.update(eval_scope_fields(ev["tokens"], ev["windows"], split_targets, whole))
        shared = ev["loss"]
        if final:
            metrics["final_eval"] = metrics["val_scope"]
            metrics.update(self.evaluate_train_sample(ev["windows"]))
            if self.cfg.eval_windows and self.val_windows.eval_plan(self.cfg.eval_windows)["fraction"] < 1.0:
                # Earlier evals scored only the first eval_windows windows: rank the final model on those too, so
                # best_val_loss and the best checkpoint compare losses over the same tokens.
                sampled = self.val_windows.eval_batches(self.cfg.batch_size, self.cfg.eval_windows)
                shared = evaluate_windows(
                    self.model, sampled, self.byte_lengths, self.device, self.autocast, env.world_size
                )["loss"]
                metrics["shared_val_loss"] = shared
        metrics.update(_replica_report(self.model, env.world_size))
        state.best_val = min(state.best_val, shared)
        metrics["best_val_loss"] = state.best_val
        self.checkpoint(state, shared, metrics)
        return metrics

    def evaluate_train_sample(self, val_windows: int) -> dict:
        """The final model's loss on a fixed sample of training windows spread over the split (as many as validation
        scored, unless train_eval_windows says otherwise), scored exactly as validation is: train_eval_loss minus
        val_loss is what the model learned of the windows it trained on beyond what carries to new text."""
        count = self.cfg.train_eval_windows if self.cfg.train_eval_windows is not None else val_windows
        if not count:
            return {}
        batches = self.train_windows.sample_batches(self.cfg.batch_size, count)
        ev = evaluate_windows(self.model, batches, self.byte_lengths, self.device, self.autocast, self.env.world_size)
        if not ev["tokens"]:
            return {}
        return dict(train_eval_loss=ev["loss"], train_eval_tokens=ev["tokens"], train_eval_windows=ev["windows"])

    def run(self) -> None:
        from gptoss import compile_model, count_params

        job, cfg, env = self.job, self.cfg, self.env
        state = self.starting_state()
        start = dict(kind="start", step=state.step, total_steps=job.total_steps, world_size=env.world_size)
        self.emit(dict(start, device=str(self.device), params=count_params(self.model)))
        model = self.model
        if env.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile:
            model = compile_model(model)
        keep_at = set(job.keep_states_at)
        window = _Window(first=True)  # start-up (allocation, caches, compile) lands in it
        model.train()
        for step in range(state.step, job.total_steps):
            _maybe_inject_failure(job, env, step)
            window.add(self.step(step, model), self.tokens_per_step)
            state.step, state.tokens = step + 1, state.tokens + self.tokens_per_step
            if state.step in keep_at:
                self.keep_state(state)
            is_eval = state.step % cfg.eval_every == 0 or state.step == job.total_steps
            if state.step % cfg.log_every == 0 or is_eval:
                metrics = self.window_metrics(state, window)
                if is_eval:
                    self.emit(dict(kind="eval", **self.evaluate(state, metrics)))
                else:
                    self.emit(dict(kind="step", **metrics))
                window = _Window()  # evaluation time is not training throughput
        _maybe_inject_failure(job, env, job.total_steps)  # at total_steps: after the last checkpoint
        self.emit(dict(kind="done", step=job.total_steps))


@dataclass
class _Window:
    """One logging window of training steps: its loss, steps and tokens since `start`."""

    loss: float = 0.0
    steps: int = 0
    tokens: int = 0
    start: float = field(default_factory=time.perf_counter)
    first: bool = False

    def add(self, loss: float, tokens: int) -> None:
        self.loss, self.steps, self.tokens = self.loss + loss, self.steps + 1, self.tokens + tokens


def train_worker(job) -> None:
    """Entry point of every worker: a WorkerJob (Ray Train passes its train_loop_config, {"job": WorkerJob})."""
    if isinstance(job, dict):
        job = job["job"]
    Trainer(job).run()


def _maybe_inject_failure(job: WorkerJob, env: WorkerEnv, step: int) -> None:
    """Testing (--inject-failure-at): the last rank dies once, hard, before `step` (or after the last step's
    checkpoint when step == total_steps), as a lost node would make it."""
    if job.inject_failure_at is None or step != job.inject_failure_at or env.rank != env.world_size - 1:
        return
    marker = job.failure_marker
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(17)


def _throughput(fpt: float, tps: float, peak: Optional[float], world_size: int, device: torch.device) -> dict:
    achieved = fpt * tps  # global FLOP/s
    if peak:
        return dict(mfu=achieved / (peak * world_size), tflops=achieved / 1e12)
    return dict(gflops=achieved / 1e9)


def _moe_metrics(model) -> dict:
    loads = getattr(model, "last_expert_load", None) or []
    if not loads:
        return {}
    ratios = [float(load.max() / load.mean().clamp_min(1e-9)) for load in loads]
    out = dict(aux_loss=float(model.last_aux_loss), expert_load_max_mean=sum(ratios) / len(ratios))
    out.update({f"expert_load_l{i}": r for i, r in enumerate(ratios)})
    return out


def _gather_rng(world_size: int) -> dict:
    """Every rank's RNG state, keyed by rank, so that a resumed run continues each dropout stream."""
    mine = _rng_state()
    if world_size == 1:
        return {"0": mine}
    gathered: list = [None] * world_size
    dist.all_gather_object(gathered, mine)
    return {str(r): s for r, s in enumerate(gathered)}


def _replica_report(model, world_size: int) -> dict:
    """Which node each rank runs on, and how far the DDP replicas' weights drifted apart (0.0 when in sync)."""
    fingerprint = sum(float(p.detach().double().abs().sum()) * (i + 1) for i, p in enumerate(model.parameters()))
    mine = (_node_id(), fingerprint)
    gathered = [mine]
    if world_size > 1:
        gathered = [None] * world_size
        dist.all_gather_object(gathered, mine)
    prints = [g[1] for g in gathered]
    return dict(worker_nodes=[g[0] for g in gathered], replica_max_diff=max(prints) - min(prints))


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    except Exception:
        return "local"


def _event_sink(progress, is_main: bool) -> Callable[[dict], None]:
    """Rank 0 streams progress events to the driver (a Ray queue, or a plain callable when run locally)."""
    if not is_main or progress is None:
        return lambda event: None
    if callable(progress):
        return progress

    def put(event: dict) -> None:
        try:
            progress.put_nowait(event)
        except Exception:
            pass  # the console is best-effort; never let it stop training

    return put
