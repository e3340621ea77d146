"""The driver side of a training run: validate, place workers, launch Ray Train's TorchTrainer, show progress, summarise."""
from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

from orchestrator.config import TrainConfig
from orchestrator.runtime import ClusterError, ClusterInfo
from orchestrator.storage import Storage, open_storage

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
# Config fields that must match for a run to continue from its checkpoint.
_RESUME_KEYS = ("arch", "preset", "model_overrides", "seq_len", "data")


class TrainingError(RuntimeError):
    """The run failed after it started (a worker error beyond --max-failures); one line for the user."""


@dataclass
class RunPlan:
    """A validated run: everything the workers need, decided on the driver before anything is written."""

    cfg: TrainConfig
    manifest: dict
    model_overrides: dict
    byte_lengths: Any  # numpy int array, UTF-8 bytes per model token id
    workers: int = 1
    use_gpu: bool = False
    threads_per_worker: int = 1
    params: dict = field(default_factory=dict)
    model_config: dict = field(default_factory=dict)
    flops_per_token: float = 0.0

    @property
    def total_steps(self) -> int:
        return self.cfg.total_steps(self.workers)

    def job(self, **extra) -> dict:
        return dict(config=self.cfg.to_dict(), model_overrides=self.model_overrides, manifest=self.manifest,
                    byte_lengths=self.byte_lengths, total_steps=self.total_steps,
                    threads_per_worker=self.threads_per_worker, **extra)


def plan_run(cfg: TrainConfig, workers: int = 1) -> RunPlan:
    """Check data, model and batch against each other; raise ValueError with one line if they do not fit."""
    from data_pipeline import TokenWindows, load_manifest, token_byte_lengths
    from gptoss import build_config, build_model, count_params, flops_per_token

    cfg.data = os.path.abspath(os.path.expanduser(cfg.data))
    manifest = load_manifest(cfg.data)
    overrides = dict(cfg.model_overrides)
    overrides["vocab_size"] = int(manifest["vocab_size"])
    model_cfg = build_config(cfg.arch, cfg.preset, **overrides)
    if cfg.seq_len > model_cfg.max_seq_len:
        raise ValueError(f"--seq-len {cfg.seq_len} is beyond what the model supports (max_seq_len {model_cfg.max_seq_len} "
                         f"for {cfg.arch}/{cfg.preset}); use --seq-len <= {model_cfg.max_seq_len}")
    cfg.check_schedule(cfg.total_steps(workers))
    # Raises ValueError when the split holds fewer windows than one global batch.
    TokenWindows(cfg.data, "train", cfg.seq_len, rank=0, world_size=workers, seed=cfg.seed).batches_per_epoch(cfg.batch_size)
    val = TokenWindows(cfg.data, "validation", cfg.seq_len, rank=0, world_size=workers, seed=cfg.seed)
    if val.num_windows < workers:
        raise ValueError(f"the validation split has {val.num_windows} windows of {cfg.seq_len + 1} tokens, fewer than "
                         f"--workers {workers}; use a smaller --seq-len or prepare more validation data")
    import torch

    with torch.device("meta"):
        meta_model = build_model(cfg.arch, cfg.preset, **overrides)
    return RunPlan(cfg=cfg, manifest=manifest, model_overrides=overrides, byte_lengths=token_byte_lengths(manifest),
                   params=count_params(meta_model), model_config=asdict(model_cfg),
                   flops_per_token=flops_per_token(meta_model, cfg.seq_len))


def place_workers(cfg: TrainConfig, info: ClusterInfo) -> tuple[int, bool, int]:
    """(workers, use_gpu, threads per CPU worker) for this cluster; refuse at once what it cannot place."""
    if cfg.gpu and info.gpus < 1:
        raise ClusterError(f"--gpu was given but the cluster at {info.address} has no GPUs; drop --gpu to train on CPUs")
    use_gpu = (info.gpus >= 1 and not cfg.cpu) or cfg.gpu
    workers = cfg.workers or (int(info.gpus) if use_gpu else 1)
    if use_gpu and workers > info.gpus:
        raise ClusterError(f"cannot place {workers} GPU workers: the cluster has {info.gpus:g} GPUs; "
                           f"use --workers <= {int(info.gpus)} or --cpu")
    if not use_gpu and workers > info.cpus:
        raise ClusterError(f"cannot place {workers} CPU workers: the cluster has {info.cpus:g} CPUs; "
                           f"use --workers <= {int(info.cpus)}")
    threads = cfg.threads_per_worker or max(1, int(info.cpus // workers))
    if not use_gpu and workers * threads > info.cpus:
        raise ClusterError(f"{workers} workers x {threads} threads need {workers * threads} CPUs but the cluster has "
                           f"{info.cpus:g}; lower --threads-per-worker or --workers")
    return workers, use_gpu, threads


# ----------------------------------------------------------------------------------------------
# Run directory: config, metrics.jsonl, summary, and the resume decision.


class RunDir:
    def __init__(self, storage: Storage, name: str):
        self.storage, self.name = storage, name
        self.path = storage.path(name)
        self.records: list[dict] = []

    def checkpoints(self) -> list[str]:
        return [p for p in self.storage.list_dirs(self.path) if p.rsplit("/", 1)[-1].startswith("checkpoint_")]

    def saved_config(self) -> Optional[dict]:
        path = f"{self.path}/{CONFIG_FILE}"
        return json.loads(self.storage.read_text(path)) if self.storage.exists(path) else None

    def prepare(self, plan: RunPlan, say: Callable[[str], None]) -> None:
        """Decide resume vs fresh start before anything is launched, and record the resolved config."""
        cfg = plan.cfg
        saved = self.saved_config()
        has_ckpt = bool(self.checkpoints())
        if saved and has_ckpt and cfg.resume:
            diffs = [k for k in _RESUME_KEYS if saved.get("config", {}).get(k) != cfg.to_dict().get(k)]
            if diffs:
                raise ValueError(f"run {self.name!r} exists with a different {', '.join(diffs)}; pass another --name, "
                                 f"or --no-resume to start it over (the old run is kept aside)")
            say(f"resuming run {self.name} from its latest checkpoint")
            self.records = self.load_records()
        elif self.storage.exists(self.path):
            aside = self.storage.move_aside(self.path)
            if has_ckpt:
                say(f"starting {self.name} over; the previous run was moved to {aside}")
        self.storage.write_text(f"{self.path}/{CONFIG_FILE}", json.dumps(
            dict(config=cfg.to_dict(), model_overrides=plan.model_overrides, workers=plan.workers, use_gpu=plan.use_gpu,
                 threads_per_worker=plan.threads_per_worker, total_steps=plan.total_steps, params=plan.params,
                 model_config=plan.model_config, flops_per_token=plan.flops_per_token, lr=cfg.resolved_lr,
                 tokenizer=plan.manifest.get("tokenizer"), vocab_size=plan.manifest.get("vocab_size")), indent=1))

    def load_records(self) -> list[dict]:
        path = f"{self.path}/{METRICS_FILE}"
        if not self.storage.exists(path):
            return []
        return [json.loads(line) for line in self.storage.read_text(path).splitlines() if line.strip()]

    def restart_at(self, step: int) -> None:
        """A (re)started worker group continues from `step`: records after it belong to a lost attempt."""
        self.records = [r for r in self.records if r.get("step", 0) <= step]

    def add(self, record: dict) -> None:
        self.records.append(record)

    def flush(self) -> None:
        text = "".join(json.dumps(r) + "\n" for r in self.records)
        self.storage.write_text(f"{self.path}/{METRICS_FILE}", text)

    def write_summary(self, summary: dict) -> None:
        self.storage.write_text(f"{self.path}/{SUMMARY_FILE}", json.dumps(summary, indent=1))


# ----------------------------------------------------------------------------------------------
# Console: a tqdm bar on the driver fed by rank 0's events.


class ConsoleProgress:
    def __init__(self, enabled: bool, run_name: str):
        self.enabled, self.run_name, self.bar = enabled, run_name, None

    def __call__(self, event: dict) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        kind = event["kind"]
        if kind == "start":
            if self.bar is None:
                self.bar = tqdm(total=event["total_steps"], initial=event["step"], desc=self.run_name, unit="step",
                                dynamic_ncols=True)
            else:
                self.bar.n = event["step"]
                tqdm.write(f"worker group restarted from step {event['step']}")
                self.bar.refresh()
        elif kind in ("step", "eval") and self.bar is not None:
            self.bar.update(event["step"] - self.bar.n)
            self.bar.set_postfix(loss=f"{event['train_loss']:.3f}", tok_s=f"{event['tokens_per_s']:,.0f}", refresh=False)
            if kind == "eval":
                tqdm.write(f"step {event['step']:>6}  val loss {event['val_loss']:.4f}  val bpb {event['val_bpb']:.4f}  "
                           f"train loss {event['train_loss']:.4f}  lr {event['lr']:.2e}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def say(text: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(text)


# ----------------------------------------------------------------------------------------------
# Launch.


def make_trainer(plan: RunPlan, storage: Storage, progress_queue, callbacks: Optional[list] = None,
                 cpu_held_by_caller: float = 0.0):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from orchestrator.train_loop import train_worker

    cfg = plan.cfg
    # A caller that itself holds a sliver of CPU (a Tune trial) gives it back here: trials x (sliver + whole CPUs)
    # would not fit the cluster, and the second trial's workers would wait for the first trial to end.
    resources = {"CPU": 1, "GPU": 1} if plan.use_gpu else {"CPU": plan.threads_per_worker - cpu_held_by_caller}
    job = plan.job(progress=progress_queue, run_dir=storage.uri_of(cfg.run_name), failure_marker=os.path.join(storage.uri, cfg.run_name, ".injected_failure")
                   if storage.is_local else None)
    return TorchTrainer(
        train_worker,
        train_loop_config=job,
        scaling_config=ScalingConfig(num_workers=plan.workers, use_gpu=plan.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=cfg.run_name,
            storage_path=storage.uri,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep, checkpoint_score_attribute="val_loss",
                                               checkpoint_score_order="min"),
            callbacks=callbacks or [],
        ),
    )


def fit_with_progress(trainer, progress_queue, on_event: Callable[[dict], None]):
    """Run trainer.fit() in a thread while this thread drains rank 0's events; return the Result."""
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
            events = progress_queue.get_nowait_batch(progress_queue.qsize()) if progress_queue.qsize() else []
        except Exception:
            events = []
        for event in events:
            on_event(event)
        if not alive:
            break
        thread.join(timeout=0.25)
    if "error" in box:
        raise TrainingError(_failure_line(box["error"])) from None
    result = box["result"]
    if getattr(result, "error", None) is not None:
        raise TrainingError(_failure_line(result.error))
    return result


def _failure_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"training failed: {text[:500]}"


def run_training(cfg: TrainConfig, show_progress: bool = True, callbacks: Optional[list] = None,
                 info: Optional[ClusterInfo] = None, cpu_held_by_caller: float = 0.0) -> dict:
    """Validate, launch on Ray, stream progress, and return the run's summary (also written to summary.json)."""
    from orchestrator.cluster import check_shared_storage
    from orchestrator.runtime import init_ray

    plan = plan_run(cfg, workers=cfg.workers or 1)  # fail on bad data/model/batch before Ray starts
    info = info or init_ray(cfg.address, cfg.verbose)
    plan.workers, plan.use_gpu, plan.threads_per_worker = place_workers(cfg, info)
    if plan.workers != (cfg.workers or 1):
        plan_run(cfg, workers=plan.workers)  # re-check the batch against the real worker count
    storage = open_storage(cfg.storage)
    check_shared_storage(storage.uri, info, warn=say)  # several nodes: every one must see the checkpoints
    run = RunDir(storage, cfg.run_name)
    run.prepare(plan, say if show_progress else (lambda s: None))
    if show_progress:
        say(_start_line(plan, info))

    import ray
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # On the driver's own node: a queue on a node that dies mid-run would take the run's metrics with it.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    progress_queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
    console = ConsoleProgress(show_progress, cfg.run_name)
    logger = _WandbLogger(cfg, plan) if cfg.wandb else None
    started = time.time()

    def on_event(event: dict) -> None:
        if event["kind"] == "start":
            run.restart_at(event["step"])
        elif event["kind"] in ("step", "eval"):
            run.add({k: v for k, v in event.items()})
            if event["kind"] == "eval":
                run.flush()
            if logger:
                logger.log(event)
        console(event)

    try:
        trainer = make_trainer(plan, storage, progress_queue, callbacks, cpu_held_by_caller)
        result = fit_with_progress(trainer, progress_queue, on_event)
    finally:
        console.close()
        run.flush()
        try:
            ray.kill(progress_queue.actor)
        except Exception:
            pass
    summary = summarize(plan, run, result, time.time() - started)
    if cfg.sample_tokens > 0 and summary.get("best_checkpoint"):
        summary["sample"] = sample_from(summary["best_checkpoint"], cfg, storage)
    run.write_summary(summary)
    if logger:
        logger.finish(summary)
    if show_progress:
        print_summary(summary)
    return summary


def _start_line(plan: RunPlan, info: ClusterInfo) -> str:
    cfg = plan.cfg
    kind = "GPU" if plan.use_gpu else f"CPU x{plan.threads_per_worker} threads"
    return (f"{cfg.run_name}: {cfg.arch}/{cfg.preset}, {plan.params['total']/1e6:.2f}M params "
            f"({plan.params['active']/1e6:.2f}M active), {plan.workers} worker(s) [{kind}] on {info.num_nodes} node(s), "
            f"global batch {cfg.tokens_per_step(plan.workers):,} tokens, {plan.total_steps} steps")


def summarize(plan: RunPlan, run: RunDir, result, wall_s: float) -> dict:
    evals = [r for r in run.records if r.get("kind") == "eval"]
    steps = [r for r in run.records if "tokens_per_s" in r]
    best_ckpt = None
    best_checkpoints = getattr(result, "best_checkpoints", None) or []
    scored = [(m.get("val_loss", math.inf), c) for c, m in best_checkpoints if m]
    if scored:
        best_ckpt = min(scored, key=lambda t: t[0])[1].path
    latest = result.checkpoint.path if getattr(result, "checkpoint", None) else None
    return dict(
        run=plan.cfg.run_name,
        run_dir=run.storage.uri_of(plan.cfg.run_name),
        arch=plan.cfg.arch,
        preset=plan.cfg.preset,
        steps=evals[-1]["step"] if evals else 0,
        tokens=evals[-1]["tokens"] if evals else 0,
        final_val_loss=evals[-1]["val_loss"] if evals else None,
        final_val_bpb=evals[-1]["val_bpb"] if evals else None,
        best_val_loss=min((e["val_loss"] for e in evals), default=None),
        tokens_per_s=sum(s["tokens_per_s"] for s in steps) / len(steps) if steps else None,
        wall_s=wall_s,
        params=plan.params,
        workers=plan.workers,
        best_checkpoint=best_ckpt or latest,
        latest_checkpoint=latest,
    )


def sample_from(checkpoint_path: str, cfg: TrainConfig, storage: Storage) -> str:
    from orchestrator.inference import generate_text, open_checkpoint

    with open_checkpoint(checkpoint_path, storage) as bundle:
        return generate_text(bundle, cfg.prompt, max_new_tokens=cfg.sample_tokens, temperature=0.8, top_k=50,
                             seed=cfg.seed, tokenizer_dir=cfg.tokenizer_dir)


def print_summary(summary: dict) -> None:
    p = summary["params"]
    lines = [
        "",
        f"run {summary['run']}: {summary['steps']} steps, {summary['tokens']:,} tokens in {summary['wall_s']:.0f}s"
        + (f" ({summary['tokens_per_s']:,.0f} tokens/s)" if summary.get("tokens_per_s") else ""),
        f"  val loss final {summary['final_val_loss']:.4f}  best {summary['best_val_loss']:.4f}  "
        f"bits/byte {summary['final_val_bpb']:.4f}" if summary.get("final_val_loss") is not None else "  no evaluation ran",
        f"  params {p['total']/1e6:.2f}M total, {p['active']/1e6:.2f}M active, {p['embedding']/1e6:.2f}M embedding",
        f"  checkpoint {summary['best_checkpoint']}",
    ]
    if summary.get("sample"):
        lines += ["", "sample:", summary["sample"]]
    say("\n".join(lines))


class _WandbLogger:
    """Optional Weights & Biases logging from the driver; never required (WANDB_MODE=offline works without an account)."""

    def __init__(self, cfg: TrainConfig, plan: RunPlan):
        try:
            import wandb
        except ImportError:
            raise ValueError("--wandb needs the wandb package: pip install wandb") from None
        self.wandb = wandb
        self.run = wandb.init(project=cfg.wandb_project, name=cfg.run_name, group=cfg.wandb_group,
                              config=dict(cfg.to_dict(), model=plan.model_overrides, params=plan.params), reinit=True)

    def log(self, event: dict) -> None:
        self.run.log({k: v for k, v in event.items() if isinstance(v, (int, float))}, step=event["step"])

    def finish(self, summary: dict) -> None:
        if summary.get("sample"):
            self.run.summary["sample"] = summary["sample"]
        for key in ("final_val_loss", "best_val_loss", "tokens_per_s"):
            if summary.get(key) is not None:
                self.run.summary[key] = summary[key]
        self.run.finish()


def run_local(cfg: TrainConfig, run_dir: str, on_event: Optional[Callable[[dict], None]] = None) -> list[dict]:
    """The same training loop in this process, without Ray (one worker): for benchmarks, GPU checks and debugging.

    Checkpoints go to run_dir/checkpoint_*; returns the progress events (step and eval records).
    """
    import torch

    from orchestrator.train_loop import train_worker

    plan = plan_run(cfg, workers=1)
    plan.threads_per_worker = cfg.threads_per_worker or torch.get_num_threads()
    events: list[dict] = []

    def collect(event: dict) -> None:
        events.append(event)
        if on_event:
            on_event(event)

    train_worker(plan.job(progress=collect, local_run_dir=run_dir, run_dir=run_dir, failure_marker=os.path.join(run_dir, ".injected_failure")))
    return events
