"""The driver side of a training run: validate, place workers, launch Ray Train's TorchTrainer, show progress,
summarise."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

from orchestrator.config import TrainConfig
from orchestrator.storage import Storage, open_storage
from raysetup import ClusterError, ClusterInfo

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
INVOCATIONS_FILE = "invocations.json"  # one entry per `train` of this run: wall time, steps, how it ended
ERROR_FILE = "error.log"
# Config fields that must match for a run to continue from its checkpoint.
_RESUME_KEYS = ("arch", "preset", "variant", "model_overrides", "seq_len", "data")


class TrainingError(RuntimeError):
    """The run failed after it started (a worker error beyond --max-failures); one line for the user."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C: what was kept and how to continue, in one line (the CLI prints it and exits 130)."""


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
        return dict(
            config=self.cfg.to_dict(),
            model_overrides=self.model_overrides,
            manifest=self.manifest,
            byte_lengths=self.byte_lengths,
            total_steps=self.total_steps,
            threads_per_worker=self.threads_per_worker,
            **extra,
        )


def plan_run(cfg: TrainConfig, workers: int = 1, verify_data: Optional[bool] = None) -> RunPlan:
    """Check data, model and batch against each other, and everything the end of the run needs (the sample's
    tokenizer and prompt); raise ValueError with one line if they do not fit. verify_data (default cfg.verify_data)
    checks every shard's checksum."""
    from data_pipeline import TokenWindows, load_manifest, token_byte_lengths
    from data_pipeline.manifest import check_shards
    from gptoss import build_config, build_model, count_params, flops_per_token

    cfg.data = os.path.abspath(os.path.expanduser(cfg.data))
    manifest = load_manifest(cfg.data)
    if cfg.verify_data if verify_data is None else verify_data:
        check_shards(cfg.data, manifest)
    overrides = cfg.resolved_model_overrides()  # the variant's switches, then explicit overrides
    overrides["vocab_size"] = int(manifest["vocab_size"])
    model_cfg = build_config(cfg.arch, cfg.preset, **overrides)
    if cfg.seq_len > model_cfg.max_seq_len:
        raise ValueError(
            f"--seq-len {cfg.seq_len} is beyond what the model supports (max_seq_len {model_cfg.max_seq_len} "
            f"for {cfg.arch}/{cfg.preset}); use --seq-len <= {model_cfg.max_seq_len}"
        )
    cfg.check_schedule(cfg.total_steps(workers))
    # Raises ValueError when the split holds fewer windows than one global batch.
    TokenWindows(cfg.data, "train", cfg.seq_len, rank=0, world_size=workers, seed=cfg.seed).batches_per_epoch(
        cfg.batch_size
    )
    val = TokenWindows(cfg.data, "validation", cfg.seq_len, rank=0, world_size=workers, seed=cfg.seed)
    if val.num_windows < workers:
        raise ValueError(
            f"the validation split has {val.num_windows} windows of {cfg.seq_len + 1} tokens, fewer than "
            f"--workers {workers}; use a smaller --seq-len or prepare more validation data"
        )
    check_sample(cfg, manifest, model_cfg.max_seq_len)
    import torch

    with torch.device("meta"):
        meta_model = build_model(cfg.arch, cfg.preset, **overrides)
    return RunPlan(
        cfg=cfg,
        manifest=manifest,
        model_overrides=overrides,
        byte_lengths=token_byte_lengths(manifest),
        params=count_params(meta_model),
        model_config=asdict(model_cfg),
        flops_per_token=flops_per_token(meta_model, cfg.seq_len),
    )


def check_sample(cfg: TrainConfig, manifest: dict, max_seq_len: int) -> None:
    """The end-of-run sample must not be what fails after hours of training: load its tokenizer (the manifest's own
    vocabulary, or rank files for data prepared before it carried one) and encode the prompt now."""
    if cfg.sample_tokens <= 0:
        return
    from data_pipeline import UnknownTokenError, load_tokenizer

    tokenizer = load_tokenizer(manifest, cfg.tokenizer_dir)  # TokenizerError (one line) when it cannot be loaded
    try:
        ids = tokenizer.encode(cfg.prompt) if cfg.prompt else [tokenizer.eot_id]
    except UnknownTokenError as exc:
        raise ValueError(f"--prompt {cfg.prompt!r} (the end-of-run sample): {exc}; or pass --sample-tokens 0") from None
    if len(ids) + cfg.sample_tokens > max_seq_len:
        raise ValueError(
            f"--prompt ({len(ids)} tokens) + --sample-tokens {cfg.sample_tokens} exceeds the model's "
            f"max_seq_len {max_seq_len}; lower --sample-tokens"
        )


def place_workers(cfg: TrainConfig, info: ClusterInfo) -> tuple[int, bool, int]:
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


# ----------------------------------------------------------------------------------------------
# Run directory: config, metrics.jsonl, summary, and the resume decision.


@dataclass
class ResumeDecision:
    resume: bool
    had_checkpoints: bool
    checkpoint: Optional[str] = None  # the checkpoint the workers restore
    valid: list = field(default_factory=list)
    damaged: list = field(default_factory=list)  # (path, why) of checkpoints that failed verification


class RunDir:
    def __init__(self, storage: Storage, name: str):
        self.storage, self.name = storage, name
        self.path = storage.path(name)
        self.records: list[dict] = []

    def checkpoints(self) -> list[str]:
        return [p for p in self.storage.list_dirs(self.path) if p.rsplit("/", 1)[-1].startswith("checkpoint_")]

    def saved_config(self) -> Optional[dict]:
        path = f"{self.path}/{CONFIG_FILE}"
        if not self.storage.exists(path):
            return None
        try:
            return json.loads(self.storage.read_text(path))
        except (ValueError, UnicodeDecodeError):
            raise ValueError(f"{path} is unreadable") from None

    def decide(self, plan: RunPlan) -> "ResumeDecision":
        """Resume or start fresh, and from which checkpoint: reads only, so that a refusal leaves the run untouched.

        A rerun with the same name resumes from the newest checkpoint that verifies (weights, optimizer, state, data
        manifest all readable); damaged ones are named and set aside. It is refused when the settings or the data
        differ from the run's, with a one-line ValueError that says how to start over.
        """
        from orchestrator.checkpoints import check_same_data, scan_checkpoints

        cfg = plan.cfg
        try:
            saved = self.saved_config()
        except ValueError:
            saved = None  # an unreadable config.json: nothing to compare against, start over (the old run is kept)
        paths = self.checkpoints()
        if not (saved and paths and cfg.resume):
            return ResumeDecision(resume=False, had_checkpoints=bool(paths))
        diffs = [k for k in _RESUME_KEYS if saved.get("config", {}).get(k) != cfg.to_dict().get(k)]
        if diffs:
            raise ValueError(
                f"run {self.name!r} exists with a different {', '.join(diffs)}; pass another --name, "
                f"or --no-resume to start it over (the old run is kept aside)"
            )
        scan = scan_checkpoints(self.storage, paths)
        if scan.latest is None:
            return ResumeDecision(resume=False, had_checkpoints=True, damaged=scan.damaged)
        check_same_data(self.storage, scan.latest, plan.manifest, cfg.data, self.name)
        return ResumeDecision(
            resume=True, had_checkpoints=True, checkpoint=scan.latest, valid=scan.valid, damaged=scan.damaged
        )

    def prepare(self, plan: RunPlan, say: Callable[[str], None], decision: Optional["ResumeDecision"] = None) -> None:
        """Carry out the resume decision (set damaged checkpoints aside, or move the old run aside) and record the
        resolved config. Called only once the whole plan is validated: nothing is written before."""
        from orchestrator.checkpoints import DAMAGED_PREFIX, repair_ray_snapshot

        cfg = plan.cfg
        decision = decision or self.decide(plan)
        for path, why in decision.damaged:
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if decision.resume:
                self.storage.fs.move(path, f"{self.path}/{DAMAGED_PREFIX}{name}")
            say(
                f"warning: checkpoint {name} of run {self.name} is unusable ({why})"
                + (f"; set aside as {DAMAGED_PREFIX}{name}" if decision.resume else "")
            )
        if decision.resume:
            repair_ray_snapshot(self.storage, self.path, decision.valid)
            step = decision.checkpoint.rstrip("/").rsplit("_", 1)[-1].lstrip("0") or "0"
            say(f"resuming run {self.name} from its checkpoint at step {step}")
            self.records = self.load_records()
        elif self.storage.exists(self.path):
            aside = self.storage.move_aside(self.path)
            if decision.had_checkpoints:
                why = "no checkpoint of it can be restored, " if decision.damaged and cfg.resume else ""
                say(f"{why}starting {self.name} over; the previous run was moved to {aside}")
        self.storage.write_text(
            f"{self.path}/{CONFIG_FILE}",
            json.dumps(
                dict(
                    config=cfg.to_dict(),
                    model_overrides=plan.model_overrides,
                    workers=plan.workers,
                    use_gpu=plan.use_gpu,
                    threads_per_worker=plan.threads_per_worker,
                    total_steps=plan.total_steps,
                    params=plan.params,
                    model_config=plan.model_config,
                    flops_per_token=plan.flops_per_token,
                    lr=cfg.resolved_lr,
                    tokenizer=plan.manifest.get("tokenizer"),
                    vocab_size=plan.manifest.get("vocab_size"),
                ),
                indent=1,
            ),
        )

    def checkpoint_steps(self) -> dict[int, str]:
        """Step -> checkpoint path, from the checkpoint_NNNNNNN directory names."""
        out = {}
        for path in self.checkpoints():
            digits = path.rsplit("_", 1)[-1]
            if digits.isdigit():
                out[int(digits)] = path
        return out

    def checkpoint_val_loss(self, path: str) -> float:
        from orchestrator.train_loop import TRAIN_STATE_FILE

        try:
            return float(json.loads(self.storage.read_text(f"{path}/{TRAIN_STATE_FILE}")).get("val_loss", math.inf))
        except Exception:
            return math.inf

    def load_invocations(self) -> list[dict]:
        path = f"{self.path}/{INVOCATIONS_FILE}"
        try:
            return json.loads(self.storage.read_text(path)) if self.storage.exists(path) else []
        except ValueError:
            return []

    def record_invocation(self, entry: dict) -> list[dict]:
        entries = self.load_invocations() + [entry]
        self.storage.write_text(f"{self.path}/{INVOCATIONS_FILE}", json.dumps(entries, indent=1))
        return entries

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
                self.bar = tqdm(
                    total=event["total_steps"],
                    initial=event["step"],
                    desc=self.run_name,
                    unit="step",
                    dynamic_ncols=True,
                )
            else:
                self.bar.n = event["step"]
                tqdm.write(f"worker group restarted from step {event['step']}")
                self.bar.refresh()
        elif kind in ("step", "eval") and self.bar is not None:
            self.bar.update(event["step"] - self.bar.n)
            self.bar.set_postfix(
                loss=f"{event['train_loss']:.3f}", tok_s=f"{event['tokens_per_s']:,.0f}", refresh=False
            )
            if kind == "eval":
                tqdm.write(
                    f"step {event['step']:>6}  val loss {event['val_loss']:.4f}  val bpb {event['val_bpb']:.4f}  "
                    f"train loss {event['train_loss']:.4f}  lr {event['lr']:.2e}"
                )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def say(text: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(text)


# ----------------------------------------------------------------------------------------------
# Launch.


def make_trainer(
    plan: RunPlan, storage: Storage, progress_queue, callbacks: Optional[list] = None, cpu_held_by_caller: float = 0.0
):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from orchestrator.train_loop import train_worker

    cfg = plan.cfg
    # A caller that itself holds a sliver of CPU (a Tune trial) gives it back here: trials x (sliver + whole CPUs)
    # would not fit the cluster, and the second trial's workers would wait for the first trial to end.
    resources = {"CPU": 1, "GPU": 1} if plan.use_gpu else {"CPU": plan.threads_per_worker - cpu_held_by_caller}
    job = plan.job(
        progress=progress_queue,
        run_dir=storage.uri_of(cfg.run_name),
        failure_marker=os.path.join(storage.uri, cfg.run_name, ".injected_failure") if storage.is_local else None,
    )
    return TorchTrainer(
        train_worker,
        train_loop_config=job,
        scaling_config=ScalingConfig(num_workers=plan.workers, use_gpu=plan.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=cfg.run_name,
            storage_path=storage.uri,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.keep, checkpoint_score_attribute="val_loss", checkpoint_score_order="min"
            ),
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
    error = box.get("error") or getattr(box.get("result"), "error", None)
    if error is not None:
        if isinstance(error, KeyboardInterrupt):
            raise error
        raise _training_error(error) from None
    return box["result"]


def _training_error(exc: BaseException) -> TrainingError:
    from orchestrator.failures import describe_failure

    line, full = describe_failure(exc)
    error = TrainingError(f"training failed: {line}")
    error.full_text = full
    return error


def run_training(
    cfg: TrainConfig,
    show_progress: bool = True,
    callbacks: Optional[list] = None,
    info: Optional[ClusterInfo] = None,
    cpu_held_by_caller: float = 0.0,
    local: bool = False,
) -> dict:
    """Validate, launch on Ray, stream progress, and return the run's summary (also written to summary.json).

    local=True runs the same loop in this process without Ray (one worker, this machine's GPU if it has one): what
    `sweep --local` runs each trial with, e.g. on a GPU machine that has torch but not Ray. Same files, same summary.
    """
    started = time.time()  # this invocation's wall time includes Ray's start-up: the user waits for it too
    plan = plan_run(cfg, workers=cfg.workers or 1)  # fail on bad data/model/batch before Ray starts
    storage = open_storage(cfg.storage)
    run = RunDir(storage, cfg.run_name)
    decision = run.decide(plan)  # a refused resume fails here, in seconds, before Ray starts
    if local:
        plan.workers, plan.use_gpu, plan.threads_per_worker = _place_here(cfg, storage)
    else:
        from raysetup import check_shared_storage, init_ray

        info = info or init_ray(cfg.address, cfg.verbose)
        plan.workers, plan.use_gpu, plan.threads_per_worker = place_workers(cfg, info)
        if plan.workers != (cfg.workers or 1):
            plan_run(cfg, workers=plan.workers, verify_data=False)  # re-check the batch against the real worker count
        check_shared_storage(storage.uri, info, warn=say)  # several nodes: every one must see the checkpoints
    run.prepare(plan, say if show_progress else (lambda s: None), decision)
    if show_progress:
        say(_start_line(plan, info))

    invocation = dict(started_unix=started, start_step=0, end_step=0)
    finished = run.checkpoint_steps()
    if cfg.resume and finished and max(finished) >= plan.total_steps and run.records:
        # Trained to the end by an earlier invocation that failed or was stopped afterwards (the sample, the summary):
        # no new trainer (Ray Train would restore at the last step, train nothing and report nothing); finish the run.
        invocation.update(start_step=max(finished), end_step=max(finished))
        result = _FinishedResult(run, finished)
        return _finish_run(plan, run, storage, result, invocation, started, show_progress, None)

    console = ConsoleProgress(show_progress, cfg.run_name)
    logger = _WandbLogger(cfg, plan) if cfg.wandb else None
    starts: list[int] = []

    def on_event(event: dict) -> None:
        if event["kind"] == "start":
            starts.append(event["step"])
            run.restart_at(event["step"])
        elif event["kind"] in ("step", "eval"):
            run.add({k: v for k, v in event.items()})
            if event["kind"] == "eval":
                run.flush()
            if logger:
                logger.log(event)
        console(event)

    outcome = "failed"
    try:
        if local:
            result = _fit_here(plan, run, on_event)
        else:
            result = _fit_on_ray(plan, storage, callbacks, cpu_held_by_caller, on_event)
        outcome = "trained"
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise RunInterrupted(_interrupted_line(cfg, run, storage)) from None
    except TrainingError as exc:
        # The one line names the root cause; the whole error (Ray's cut traceback, every rank's) goes beside the run.
        log = f"{run.path}/{ERROR_FILE}"
        run.storage.write_text(log, getattr(exc, "full_text", str(exc)))
        raise TrainingError(f"{exc} (full error: {run.storage.uri_of(cfg.run_name, ERROR_FILE)})") from None
    finally:
        console.close()
        run.flush()
        evals = [r for r in run.records if r.get("kind") == "eval"]
        invocation.update(start_step=starts[0] if starts else 0, end_step=evals[-1]["step"] if evals else 0)
        if outcome != "trained":
            _record(run, invocation, started, outcome)
    return _finish_run(plan, run, storage, result, invocation, started, show_progress, logger)


def _fit_on_ray(
    plan: RunPlan,
    storage: Storage,
    callbacks: Optional[list],
    cpu_held_by_caller: float,
    on_event: Callable[[dict], None],
):
    import ray
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # On the driver's own node: a queue on a node that dies mid-run would take the run's metrics with it.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    progress_queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
    try:
        trainer = make_trainer(plan, storage, progress_queue, callbacks, cpu_held_by_caller)
        return fit_with_progress(trainer, progress_queue, on_event)
    finally:
        try:
            ray.kill(progress_queue.actor)
        except Exception:
            pass


def _place_here(cfg: TrainConfig, storage: Storage) -> tuple[int, bool, int]:
    """(workers, use_gpu, threads) of a run in this process: one worker, the GPU when there is one (unless --cpu)."""
    import torch

    if not storage.is_local:
        raise ValueError(f"a run without Ray writes to a local directory; --storage {cfg.storage} is not one")
    if (cfg.workers or 1) != 1:
        raise ValueError("a run without Ray has one worker; drop --workers (or run it on Ray)")
    use_gpu = torch.cuda.is_available() and not cfg.cpu
    if cfg.gpu and not use_gpu:
        raise ValueError("--gpu was given but this machine has no GPU that torch can use")
    return 1, use_gpu, cfg.threads_per_worker or torch.get_num_threads()


def _fit_here(plan: RunPlan, run: RunDir, on_event: Callable[[dict], None]) -> "_FinishedResult":
    """The training loop in this process; a failure becomes a TrainingError with its traceback as the full text."""
    import traceback

    from orchestrator.train_loop import train_worker

    try:
        train_worker(
            plan.job(
                progress=on_event,
                local_run_dir=run.path,
                run_dir=run.path,
                failure_marker=os.path.join(run.path, ".injected_failure"),
                use_gpu=plan.use_gpu,
            )
        )
    except (KeyboardInterrupt, ValueError):
        raise
    except Exception as exc:
        error = TrainingError(" ".join(f"{type(exc).__name__}: {exc}".split())[:400])
        error.full_text = traceback.format_exc()
        raise error from None
    return _FinishedResult(run, run.checkpoint_steps())


def _record(run: RunDir, invocation: dict, started: float, outcome: str) -> list[dict]:
    try:
        return run.record_invocation(dict(invocation, wall_s=round(time.time() - started, 3), outcome=outcome))
    except Exception:  # bookkeeping must never mask the run's own error
        return []


def _interrupted_line(cfg: TrainConfig, run: RunDir, storage: Storage) -> str:
    steps = run.checkpoint_steps()
    where = storage.uri_of(cfg.run_name)
    if not steps:
        return f"interrupted: run {cfg.run_name} has no checkpoint yet ({where}); the same command starts it again"
    return (
        f"interrupted: run {cfg.run_name} keeps its checkpoint at step {max(steps)} in {where}; "
        f"run the same command again to continue from there"
    )


def _finish_run(
    plan: RunPlan, run: RunDir, storage: Storage, result, invocation: dict, started: float, show_progress: bool, logger
) -> dict:
    cfg = plan.cfg
    try:
        sample = None
        best = _best_checkpoint(result)
        if cfg.sample_tokens > 0 and best:
            sample = sample_from(best, cfg, storage)
    except KeyboardInterrupt:
        _record(run, invocation, started, "interrupted")
        raise RunInterrupted(_interrupted_line(cfg, run, storage)) from None
    except BaseException:
        _record(run, invocation, started, "failed")
        raise
    invocations = _record(run, invocation, started, "finished")
    summary = summarize(plan, run, result, time.time() - started, invocation=invocation, invocations=invocations)
    if sample is not None:
        summary["sample"] = sample
    run.write_summary(summary)
    if logger:
        logger.finish(summary)
    if show_progress:
        print_summary(summary)
    return summary


class _FinishedResult:
    """What summarize needs from a ray.train.Result, for a run whose training had already reached its last step."""

    def __init__(self, run: RunDir, steps: dict[int, str]):
        self.error = None
        uri = run.storage.uri_of(run.name)
        paths = {step: f"{uri}/{path.rsplit('/', 1)[-1]}" for step, path in steps.items()}
        self.checkpoint = type("Ckpt", (), {"path": paths[max(paths)]})()
        self.best_checkpoints = [
            (type("Ckpt", (), {"path": paths[step]})(), {"val_loss": run.checkpoint_val_loss(path)})
            for step, path in steps.items()
        ]


def _best_checkpoint(result) -> Optional[str]:
    scored = [(m.get("val_loss", math.inf), c) for c, m in (getattr(result, "best_checkpoints", None) or []) if m]
    if scored:
        return min(scored, key=lambda t: t[0])[1].path
    return result.checkpoint.path if getattr(result, "checkpoint", None) else None


def _start_line(plan: RunPlan, info: Optional[ClusterInfo]) -> str:
    cfg = plan.cfg
    kind = "GPU" if plan.use_gpu else f"CPU x{plan.threads_per_worker} threads"
    where = f"on {info.num_nodes} node(s)" if info else "in this process, without Ray"
    return (
        f"{cfg.run_name}: {cfg.arch}/{cfg.preset}, {plan.params['total'] / 1e6:.2f}M params "
        f"({plan.params['active'] / 1e6:.2f}M active), {plan.workers} worker(s) [{kind}] {where}, "
        f"global batch {cfg.tokens_per_step(plan.workers):,} tokens, {plan.total_steps} steps"
    )


def throughput(records: list[dict]) -> dict:
    """Training-step time and steady-state tokens/s over step records: each record covers one logging window (its
    tokens and seconds, evaluations excluded); the first window of every worker-group start carries the start-up
    and is left out of the steady state (unless it is all there is)."""
    windows = [r for r in records if r.get("window_s")]
    if not windows:  # records from before windows were logged: the mean of the windows' rates
        rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
        return dict(train_s=None, tokens_per_s=sum(rates) / len(rates) if rates else None, steady_windows=0)
    steady = [r for r in windows if not r.get("first_window")] or windows
    return dict(
        train_s=sum(r["window_s"] for r in windows),
        tokens_per_s=sum(r["window_tokens"] for r in steady) / sum(r["window_s"] for r in steady),
        steady_windows=len(steady) if steady is not windows or not windows[0].get("first_window") else 0,
    )


def summarize(
    plan: RunPlan,
    run: RunDir,
    result,
    wall_s: float,
    invocation: Optional[dict] = None,
    invocations: Optional[list[dict]] = None,
) -> dict:
    """The run's summary: the whole run (all invocations) and this invocation apart; tokens/s is the steady state of
    the training steps alone (no start-up, no first window, no evaluations), never tokens over wall time."""
    evals = [r for r in run.records if r.get("kind") == "eval"]
    best_ckpt = _best_checkpoint(result)
    latest = result.checkpoint.path if getattr(result, "checkpoint", None) else None
    invocation = dict(invocation or {})
    tokens_per_step = plan.cfg.tokens_per_step(plan.workers)
    start, end = invocation.get("start_step", 0), invocation.get("end_step", evals[-1]["step"] if evals else 0)
    this = dict(
        start_step=start, end_step=end, steps=end - start, tokens=(end - start) * tokens_per_step, wall_s=wall_s
    )
    this["tokens_per_s_wall"] = this["tokens"] / wall_s if wall_s > 0 else None
    rate = throughput(run.records)
    mine = throughput([r for r in run.records if r.get("step", 0) > start])
    history = invocations or [dict(wall_s=wall_s)]
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
        tokens_per_s=rate["tokens_per_s"],  # steady state, training steps only, whole run
        train_s=rate["train_s"],  # seconds in training steps, whole run (evals and start-up excluded)
        wall_s=wall_s,  # this invocation, start to end
        run_wall_s=sum(i.get("wall_s", 0.0) for i in history),  # every invocation of this run
        invocations=len(history),
        invocation=dict(this, tokens_per_s=mine["tokens_per_s"], train_s=mine["train_s"]),
        params=plan.params,
        workers=plan.workers,
        best_checkpoint=best_ckpt or latest,
        latest_checkpoint=latest,
    )


def sample_from(checkpoint_path: str, cfg: TrainConfig, storage: Storage) -> str:
    from orchestrator.inference import generate_text, open_checkpoint

    with open_checkpoint(checkpoint_path, storage) as bundle:
        return generate_text(
            bundle,
            cfg.prompt,
            max_new_tokens=cfg.sample_tokens,
            temperature=0.8,
            top_k=50,
            seed=cfg.seed,
            tokenizer_dir=cfg.tokenizer_dir,
        )


def summary_lines(summary: dict) -> list[str]:
    p = summary["params"]
    inv = summary.get("invocation") or {}
    whole = f"run {summary['run']}: {summary['steps']} steps, {summary['tokens']:,} tokens" + (
        f" over {summary['invocations']} invocations, {summary['run_wall_s']:.0f}s wall in all"
        if summary.get("invocations", 1) > 1
        else ""
    )
    if summary.get("train_s"):
        whole += f", {summary['train_s']:.0f}s of it in training steps"
    lines = ["", whole]
    if inv:
        if inv["steps"] == 0:
            lines.append(
                f"  this invocation: no steps left to train (already at step {inv['end_step']}), "
                f"{inv['wall_s']:.0f}s wall"
            )
        else:
            lines.append(
                f"  this invocation: steps {inv['start_step']}-{inv['end_step']}, {inv['tokens']:,} tokens in "
                f"{inv['wall_s']:.0f}s wall (start-up, evaluations and checkpoints included)"
            )
    if summary.get("tokens_per_s"):
        lines.append(
            f"  throughput {summary['tokens_per_s']:,.0f} tokens/s in steady-state training steps "
            f"(start-up, first window and evaluations excluded)"
        )
    if summary.get("final_val_loss") is not None:
        lines.append(
            f"  val loss final {summary['final_val_loss']:.4f}  best {summary['best_val_loss']:.4f}  "
            f"bits/byte {summary['final_val_bpb']:.4f}"
        )
    else:
        lines.append("  no evaluation ran")
    lines += [
        (
            f"  params {p['total'] / 1e6:.2f}M total, {p['active'] / 1e6:.2f}M active, "
            f"{p['embedding'] / 1e6:.2f}M embedding"
        ),
        f"  checkpoint {summary['best_checkpoint']}",
    ]
    if summary.get("sample"):
        lines += ["", "sample:", summary["sample"]]
    return lines


def print_summary(summary: dict) -> None:
    say("\n".join(summary_lines(summary)))


class _WandbLogger:
    """Optional Weights & Biases logging from the driver; never required (WANDB_MODE=offline works without an
    account)."""

    def __init__(self, cfg: TrainConfig, plan: RunPlan):
        try:
            import wandb
        except ImportError:
            raise ValueError("--wandb needs the wandb package: pip install wandb") from None
        self.wandb = wandb
        self.run = wandb.init(
            project=cfg.wandb_project,
            name=cfg.run_name,
            group=cfg.wandb_group,
            config=dict(cfg.to_dict(), model=plan.model_overrides, params=plan.params),
            reinit=True,
        )

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

    train_worker(
        plan.job(
            progress=collect,
            local_run_dir=run_dir,
            run_dir=run_dir,
            failure_marker=os.path.join(run_dir, ".injected_failure"),
        )
    )
    return events
