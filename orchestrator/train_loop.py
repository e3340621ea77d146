"""The loop every training worker runs (data, model, AdamW, schedule, eval, checkpoints), with or without Ray."""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from orchestrator.allocator import keep_freed_memory
from orchestrator.config import TrainConfig, cooldown_start

OPTIMIZER_FILE = "optimizer.pt"
TRAIN_STATE_FILE = "train_state.json"
MANIFEST_FILE = "manifest.json"

# Dense bf16 peak of the GPUs we expect to meet, for MFU. Unknown devices report achieved TFLOP/s only.
_GPU_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 70e12, "L40S": 362e12}


# ----------------------------------------------------------------------------------------------
# Where the loop runs: rank, device, and how it reports (Ray Train, or a plain local directory).


@dataclass
class WorkerEnv:
    rank: int
    world_size: int
    device: torch.device
    report: Callable[[dict, Optional[str]], None]  # (metrics, checkpoint dir written by rank 0 or None)
    latest_checkpoint: Callable[[], Any]  # -> context manager yielding a local dir, or None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _ray_env() -> WorkerEnv:
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    ctx = ray.train.get_context()

    def report(metrics: dict, ckpt_dir: Optional[str]) -> None:
        ckpt = Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None
        name = f"checkpoint_{metrics['step']:07d}" if ckpt_dir else None
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name)

    def latest():
        ckpt = ray.train.get_checkpoint()
        return ckpt.as_directory() if ckpt else None

    return WorkerEnv(ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device(), report, latest)


def _local_env(run_dir: str, keep: int, use_gpu: bool) -> WorkerEnv:
    """One process, no Ray: checkpoints go to run_dir/checkpoint_*, keeping the latest and the best."""
    device = torch.device("cuda" if use_gpu else "cpu")
    os.makedirs(run_dir, exist_ok=True)

    def ckpt_dirs() -> list[str]:
        return sorted(d for d in os.listdir(run_dir) if d.startswith("checkpoint_"))

    def report(metrics: dict, ckpt_dir: Optional[str]) -> None:
        if not ckpt_dir:
            return
        target = os.path.join(run_dir, f"checkpoint_{metrics['step']:07d}")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(ckpt_dir, target + ".tmp")
        os.replace(target + ".tmp", target)
        names = ckpt_dirs()
        scored = sorted(names[:-1], key=lambda n: _read_state(os.path.join(run_dir, n)).get("val_loss", math.inf))
        for stale in scored[max(0, keep - 1) :]:
            shutil.rmtree(os.path.join(run_dir, stale), ignore_errors=True)

    def latest():
        names = ckpt_dirs()
        return nullcontext(os.path.join(run_dir, names[-1])) if names else None

    return WorkerEnv(0, 1, device, report, latest)


def _read_state(ckpt_dir: str) -> dict:
    try:
        with open(os.path.join(ckpt_dir, TRAIN_STATE_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


# ----------------------------------------------------------------------------------------------
# Pieces of the loop.


def lr_at(
    step: int, total: int, warmup: int, lr: float, min_lr: float, schedule: str = "cosine", cooldown_frac: float = 0.2
) -> float:
    """The lr of optimizer step `step` (0-based) of a `total`-step run: a pure function of the step.

    All schedules warm up linearly to lr over `warmup` steps. Then cosine decays to min_lr (reached at step total);
    constant stays at lr; wsd (warmup-stable-decay) stays at lr until cooldown_start(total) and then cools down to
    min_lr over the remaining steps along 1 - sqrt(progress), reaching min_lr at the last step. 1-sqrt rather than
    linear: it leaves the lr high for longer and then drops fast, which Hägele et al. 2024 ("Scaling Laws and
    Compute-Optimal Training Beyond Fixed Training Durations") found to match a tuned cosine run where linear falls
    short. The stable phase does not depend on `total`, so runs of different lengths share it step for step.
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    if schedule == "wsd":
        start = cooldown_start(total, cooldown_frac)
        if step < start:
            return lr
        progress = min(1.0, (step - start + 1) / (total - start))
        return min_lr + (1 - math.sqrt(progress)) * (lr - min_lr)
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * (lr - min_lr)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only; the model names them (stacked expert biases are 2-D but not decayed).

    One group per (decay, lr multiplier): the model's param_lr_multipliers (mup scales hidden matrices' lr); each
    group's lr_mult is applied by set_lr. Under standard every multiplier is 1.0: the same two groups as ever."""
    decay_names = set(model.decay_param_names())
    mults = model.param_lr_multipliers()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = []
    for decay, weight_decay in ((True, cfg.weight_decay), (False, 0.0)):
        by_mult: dict[float, list] = {}
        for n, p in named:
            if (n in decay_names) == decay:
                by_mult.setdefault(mults[n], []).append(p)
        for mult, params in sorted((by_mult or {1.0: []}).items(), reverse=True):
            groups.append(dict(params=params, weight_decay=weight_decay, lr_mult=mult, lr=cfg.resolved_lr * mult))
    # The fused kernel (one pass over each parameter) also exists for the CPU: 4-5x faster steps than the foreach
    # default on a cpu-tiny model, same updates within float rounding.
    extra = {"fused": True} if device.type in ("cuda", "cpu") else {}
    return torch.optim.AdamW(groups, lr=cfg.resolved_lr, betas=(cfg.beta1, cfg.beta2), **extra)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The step's lr on every group, times the group's lr_mult (absent in optimizer states saved before it: 1.0)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)


@torch.no_grad()
def evaluate_windows(model, batches, byte_lengths: torch.Tensor, device, autocast, world_size: int) -> dict:
    """Sum of token losses, tokens and target bytes over the given batches, summed across ranks."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast:
            logits = model(x)
        nats = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
        totals[0] += nats.double()
        totals[1] += y.numel()
        totals[2] += byte_lengths[y].sum().double()
    if world_size > 1:
        dist.all_reduce(totals)
    model.train()
    nats, tokens, nbytes = totals.tolist()
    loss = nats / max(tokens, 1)
    return dict(loss=loss, tokens=int(tokens), bytes=int(nbytes), bpb=nats / max(nbytes, 1) / math.log(2))


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


BRANCH_DIR = "branch_points"  # beside the checkpoints, out of reach of Ray Train's num_to_keep


def branch_point_path(run_dir: str, step: int) -> str:
    """Where a long run keeps its full training state at `step` for the budget branch that starts there."""
    return f"{run_dir.rstrip('/')}/{BRANCH_DIR}/step_{step:07d}"


def _keep_branch_point(job: dict, step: int, model, optimizer, rng: dict, is_main: bool, state: dict) -> None:
    """Rank 0 writes the state (model, optimizer, every rank's RNG, step) as a checkpoint directory, atomically."""
    if not is_main:
        return
    from orchestrator.storage import open_storage

    storage = open_storage(job["run_dir"])
    target = branch_point_path(storage.root, step)
    with tempfile.TemporaryDirectory(prefix="branch-") as tmp:
        save_train_checkpoint(tmp, model, optimizer, dict(state, rng=rng), job["manifest"])
        storage.put_dir(tmp, target)


def _local_dir(path: str):
    """A kept state as a local directory: itself when local, else a temporary download."""
    from raysetup import is_uri

    if not is_uri(path):
        if not os.path.isfile(os.path.join(path, TRAIN_STATE_FILE)):
            raise FileNotFoundError(f"no kept training state at {path} (was the long run's branch point removed?)")
        return nullcontext(path)
    import pyarrow.fs as pafs

    tmp = tempfile.TemporaryDirectory(prefix="branch-")
    fs, root = pafs.FileSystem.from_uri(path)
    pafs.copy_files(root, tmp.name, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return tmp


# ----------------------------------------------------------------------------------------------
# The loop.


def train_worker(job: dict) -> None:
    """Entry point of every worker. `job` comes from orchestrator.trainer.plan_run (a plain dict, so Ray can ship it)."""
    from data_pipeline import TokenWindows
    from gptoss import build_model, compile_model, count_params, flops_per_token, load_checkpoint

    cfg = TrainConfig.from_dict(job["config"])
    env = (
        _local_env(job["local_run_dir"], cfg.keep, job.get("use_gpu", torch.cuda.is_available()))
        if job.get("local_run_dir")
        else _ray_env()
    )
    emit = _event_sink(job.get("progress"), env.is_main)
    device = env.device
    if device.type == "cpu":
        torch.set_num_threads(job["threads_per_worker"])
        keep_freed_memory()
    total_steps = job["total_steps"]

    torch.manual_seed(cfg.seed)  # identical init on every rank
    model = build_model(cfg.arch, cfg.preset, **job["model_overrides"]).to(device)
    optimizer = build_optimizer(model, cfg, device)
    start_step, tokens_seen, best_val = 0, 0, math.inf

    def restore(ckpt_dir: str) -> tuple[int, int, float]:
        saved = load_checkpoint(ckpt_dir)
        model.load_state_dict(saved.state_dict())
        opt_state = torch.load(os.path.join(ckpt_dir, OPTIMIZER_FILE), map_location=device, weights_only=False)
        optimizer.load_state_dict(opt_state["optimizer"])
        state = _read_state(ckpt_dir)
        _set_rng_state(state.get("rng", {}).get(str(env.rank), {}))
        return state["step"], state["tokens"], state.get("best_val_loss", math.inf)

    restored = env.latest_checkpoint()
    if restored is not None:
        with restored as ckpt_dir:
            start_step, tokens_seen, best_val = restore(ckpt_dir)
    elif cfg.init_from is not None:
        # A budget branch: continue the long run from its kept state at this branch's cooldown start.
        with _local_dir(cfg.init_from) as ckpt_dir:
            start_step, tokens_seen, best_val = restore(ckpt_dir)
        if start_step != cfg.start_step:
            raise ValueError(
                f"the kept state {cfg.init_from} holds step {start_step}, not the branch point {cfg.start_step}"
            )
    else:
        torch.manual_seed(cfg.seed + 1 + env.rank)  # per-rank dropout streams
    emit(
        dict(
            kind="start",
            step=start_step,
            total_steps=total_steps,
            world_size=env.world_size,
            device=str(device),
            params=count_params(model),
        )
    )

    raw_model = model
    if env.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = compile_model(model)

    train_windows = TokenWindows(
        cfg.data, "train", cfg.seq_len, rank=env.rank, world_size=env.world_size, seed=cfg.seed
    )
    val_windows = TokenWindows(
        cfg.data, "validation", cfg.seq_len, rank=env.rank, world_size=env.world_size, seed=cfg.seed
    )
    byte_lengths = torch.as_tensor(np.asarray(job["byte_lengths"]), dtype=torch.int64, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    fpt = flops_per_token(raw_model, cfg.seq_len)
    peak = peak_flops(device)
    warmup = cfg.resolved_warmup(total_steps)
    lr0, min_lr = cfg.resolved_lr, cfg.resolved_min_lr
    tokens_per_step = cfg.tokens_per_step(env.world_size)
    eval_max = cfg.eval_windows or None
    branch_points = set(cfg.branch_points)

    window_loss, window_steps, window_tokens = 0.0, 0, 0
    window_start = time.perf_counter()
    first_window = True  # start-up (allocation, caches, compile) lands in it: not steady-state throughput
    last_grad_norm = 0.0
    model.train()
    for step in range(start_step, total_steps):
        _maybe_inject_failure(cfg, job, env, step)

        lr = lr_at(step, total_steps, warmup, lr0, min_lr, cfg.schedule, cfg.cooldown_frac)
        set_lr(optimizer, lr)
        step_loss = 0.0
        for micro in range(cfg.grad_accum):
            x, y = train_windows.batch(step * cfg.grad_accum + micro, cfg.batch_size)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            sync = micro == cfg.grad_accum - 1 or env.world_size == 1
            with nullcontext() if sync else model.no_sync(), autocast:
                _, loss = model(x, y)
                (loss / cfg.grad_accum).backward()
            step_loss += loss.item() / cfg.grad_accum
        last_grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens_seen += tokens_per_step
        window_loss += step_loss
        window_steps += 1
        window_tokens += tokens_per_step
        done = step + 1
        if done in branch_points:
            _keep_branch_point(
                job,
                done,
                raw_model,
                optimizer,
                _gather_rng(env.world_size),
                env.is_main,
                dict(
                    step=done,
                    tokens=tokens_seen,
                    data_position=done * cfg.grad_accum,
                    best_val_loss=best_val,
                    config=cfg.to_dict(),
                    total_steps=total_steps,
                    scheduler=dict(
                        warmup=warmup,
                        total=total_steps,
                        lr=lr0,
                        min_lr=min_lr,
                        schedule=cfg.schedule,
                        cooldown_frac=cfg.cooldown_frac,
                    ),
                    model_overrides=job["model_overrides"],
                ),
            )

        is_eval = done % cfg.eval_every == 0 or done == total_steps
        if done % cfg.log_every == 0 or is_eval:
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - window_start
            tps = window_tokens / max(elapsed, 1e-9)
            metrics = dict(
                step=done,
                time=time.time(),
                tokens=tokens_seen,
                train_loss=window_loss / window_steps,
                lr=lr,
                grad_norm=last_grad_norm,
                tokens_per_s=tps,
                window_s=elapsed,
                window_tokens=window_tokens,
                first_window=first_window,
                epoch=(step * cfg.grad_accum) // max(1, train_windows.batches_per_epoch(cfg.batch_size)),
            )
            first_window = False
            metrics.update(_throughput(fpt, tps, peak, env.world_size, device))
            metrics.update(_moe_metrics(raw_model))
            if not is_eval:
                emit(dict(kind="step", **metrics))
            window_loss, window_steps, window_tokens = 0.0, 0, 0
            window_start = time.perf_counter()

        if is_eval:
            ev = evaluate_windows(
                raw_model,
                val_windows.eval_batches(cfg.batch_size, eval_max),
                byte_lengths,
                device,
                autocast,
                env.world_size,
            )
            train_loss = torch.tensor([metrics["train_loss"]], device=device)
            if env.world_size > 1:
                dist.all_reduce(train_loss)
            metrics.update(
                train_loss=train_loss.item() / env.world_size,
                val_loss=ev["loss"],
                val_bpb=ev["bpb"],
                val_tokens=ev["tokens"],
                peak_mem_mb=peak_memory_mb(device),
            )
            metrics.update(_replica_report(raw_model, env.world_size))
            best_val = min(best_val, ev["loss"])
            metrics["best_val_loss"] = best_val
            rng = _gather_rng(env.world_size)
            with tempfile.TemporaryDirectory(prefix="ckpt-") as tmp:
                ckpt_dir = None
                if env.is_main:
                    state = dict(
                        step=done,
                        tokens=tokens_seen,
                        data_position=done * cfg.grad_accum,
                        val_loss=ev["loss"],
                        best_val_loss=best_val,
                        rng=rng,
                        config=cfg.to_dict(),
                        total_steps=total_steps,
                        scheduler=dict(
                            warmup=warmup,
                            total=total_steps,
                            lr=lr0,
                            min_lr=min_lr,
                            schedule=cfg.schedule,
                            cooldown_frac=cfg.cooldown_frac,
                        ),
                        model_overrides=job["model_overrides"],
                    )
                    save_train_checkpoint(tmp, raw_model, optimizer, state, job["manifest"])
                    ckpt_dir = tmp
                env.report(metrics, ckpt_dir)
            emit(dict(kind="eval", **metrics))
            window_start = time.perf_counter()  # eval time is not training throughput
    _maybe_inject_failure(cfg, job, env, total_steps)  # at total_steps: after the last checkpoint
    emit(dict(kind="done", step=total_steps))


def _maybe_inject_failure(cfg: TrainConfig, job: dict, env: WorkerEnv, step: int) -> None:
    """Testing (--inject-failure-at): the last rank dies once, hard, before `step` (or after the last step's
    checkpoint when step == total_steps), as a lost node would make it."""
    if cfg.inject_failure_at is None or step != cfg.inject_failure_at or env.rank != env.world_size - 1:
        return
    marker = job["failure_marker"]
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
