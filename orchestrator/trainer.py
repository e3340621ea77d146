"""One run, from spec to summary: validate it against the data (plan_run), decide and prepare its directory, launch
it through an executor (Ray or this process), record the invocation, sample, summarise."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Union

from orchestrator.config import TrainConfig
from orchestrator.console import ConsoleProgress, WandbLogger, say
from orchestrator.run_dir import RunDir, one_writer
from orchestrator.run_summary import print_summary, summarize
from orchestrator.spec import RunSpec
from orchestrator.storage import open_storage
from orchestrator.train_loop import WorkerJob

if TYPE_CHECKING:
    from orchestrator.executors import Executor


class TrainingError(RuntimeError):
    """The run failed after it started (a worker error beyond --max-failures); one line for the user."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C: what was kept and how to continue, in one line (the CLI prints it and exits 130)."""


@dataclass
class RunPlan:
    """A validated run: everything the workers need, decided on the driver before anything is written."""

    spec: RunSpec
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
    def cfg(self) -> TrainConfig:
        return self.spec.train

    @property
    def total_steps(self) -> int:
        return self.spec.steps(self.workers)

    def job(self, run: RunDir, progress=None, on_ray: bool = False) -> WorkerJob:
        spec = self.spec
        start_state = None
        if spec.branch is not None:
            start_state = RunDir(run.storage, spec.branch.run).branch_state(spec.branch.step)
        return WorkerJob(
            config=self.cfg,
            model_overrides=self.model_overrides,
            manifest=self.manifest,
            byte_lengths=self.byte_lengths,
            total_steps=self.total_steps,
            run_dir=run.uri,
            threads_per_worker=self.threads_per_worker,
            use_gpu=self.use_gpu,
            start_state=start_state,
            start_step=spec.branch.step if spec.branch else None,
            keep_states_at=tuple(spec.keep_states_at),
            progress=progress,
            inject_failure_at=self.cfg.inject_failure_at,
            on_ray=on_ray,
        )

    def checkpoint_bytes(self) -> int:
        """About what one checkpoint takes: fp32 weights and AdamW's two moments, plus the small files."""
        return 3 * 4 * int(self.params.get("total", 0)) + 2**20

    def saved_config(self) -> dict:
        """What config.json records: the resolved settings, the spec's sweep additions, and the model's size."""
        cfg = self.cfg
        return dict(
            config=cfg.to_dict(),
            spec={k: v for k, v in self.spec.to_dict().items() if k != "train"},
            model_overrides=self.model_overrides,
            workers=self.workers,
            use_gpu=self.use_gpu,
            threads_per_worker=self.threads_per_worker,
            total_steps=self.total_steps,
            params=self.params,
            model_config=self.model_config,
            flops_per_token=self.flops_per_token,
            lr=cfg.resolved_lr,
            tokenizer=self.manifest.get("tokenizer"),
            vocab_size=self.manifest.get("vocab_size"),
        )


def plan_run(spec: Union[RunSpec, TrainConfig], workers: int = 1, verify_data: Optional[bool] = None) -> RunPlan:
    """Check data, model and batch against each other, and everything the end of the run needs (the sample's
    tokenizer and prompt); raise ValueError with one line if they do not fit. verify_data (default cfg.verify_data)
    checks every shard's checksum."""
    from data_pipeline import TokenWindows, load_manifest, token_byte_lengths
    from data_pipeline.manifest import check_shards
    from gptoss import build_config, build_model, count_params, flops_per_token

    spec = spec if isinstance(spec, RunSpec) else RunSpec(spec)
    cfg = dataclasses.replace(spec.train, data=os.path.abspath(os.path.expanduser(spec.train.data)))
    spec = spec.replace(train=cfg)
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
    spec.check(spec.steps(workers))
    # Raises ValueError when the split holds fewer windows than one global batch.
    train = TokenWindows(cfg.data, "train", cfg.seq_len, rank=0, world_size=workers, seed=cfg.seed)
    train.batches_per_epoch(cfg.batch_size)
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
        spec=spec,
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
    from data_pipeline import load_tokenizer

    tokenizer = load_tokenizer(manifest, cfg.tokenizer_dir)  # TokenizerError (one line) when it cannot be loaded
    # Words the training data never had still encode (as generate does): through pieces the model reads as zeros.
    ids = tokenizer.encode(cfg.prompt, on_unknown="extend") if cfg.prompt else [tokenizer.eot_id]
    if len(ids) + cfg.sample_tokens > max_seq_len:
        raise ValueError(
            f"--prompt ({len(ids)} tokens) + --sample-tokens {cfg.sample_tokens} exceeds the model's "
            f"max_seq_len {max_seq_len}; lower --sample-tokens"
        )


def run_training(cfg: TrainConfig, show_progress: bool = True, local: bool = False) -> dict:
    """Train one run of a TrainConfig: on Ray (DDP over the cluster's GPUs, else CPUs), or with local=True in this
    process without Ray (one worker, this machine's GPU if it has one). Same files, same summary."""
    from orchestrator.executors import LocalExecutor, RayExecutor

    return run_spec(RunSpec(cfg), LocalExecutor() if local else RayExecutor(), show_progress)


def run_spec(spec: RunSpec, executor: "Executor", show_progress: bool = True) -> dict:
    """Validate, place, prepare the run directory, train through the executor, and return the run's summary (also
    written to summary.json)."""
    started = time.time()  # this invocation's wall time includes Ray's start-up: the user waits for it too
    plan = plan_run(spec, workers=spec.train.workers or 1)  # fail on bad data/model/batch before anything starts
    cfg = plan.cfg
    run = RunDir(open_storage(cfg.storage), cfg.run_name)
    with one_writer(run.storage, run.name):
        return _run_locked(plan, run, executor, show_progress, started)


def _run_locked(plan: RunPlan, run: RunDir, executor: "Executor", show_progress: bool, started: float) -> dict:
    cfg, spec = plan.cfg, plan.spec
    decision = run.decide(plan)  # a refused resume fails here, in seconds, before Ray starts
    placement = executor.place(cfg, run.storage)
    plan.workers, plan.use_gpu, plan.threads_per_worker = placement.workers, placement.use_gpu, placement.threads
    if plan.workers != (cfg.workers or 1):
        plan_run(plan.spec, workers=plan.workers, verify_data=False)  # the batch against the real worker count
    run.check_room(plan.checkpoint_bytes() * (1 + len(spec.keep_states_at)), "one checkpoint of this run")
    run.prepare(plan, say if show_progress else (lambda s: None), decision)
    if show_progress:
        say(_start_line(plan, placement.where))
    invocation = dict(started_unix=started, start_step=0, end_step=0)
    index = run.start_invocation(invocation)
    finished = run.checkpoint_steps()
    if cfg.resume and finished and max(finished) >= plan.total_steps and run.records:
        # Trained to the end by an earlier invocation that failed or was stopped afterwards (the sample, the
        # summary): nothing to train; finish the run.
        invocation.update(start_step=max(finished), end_step=max(finished))
        return _finish_run(plan, run, index, invocation, started, show_progress, None)
    logger = WandbLogger(cfg, plan, spec.group) if cfg.wandb else None
    _train(plan, run, executor, index, invocation, started, show_progress, logger)
    return _finish_run(plan, run, index, invocation, started, show_progress, logger)


def _train(plan: RunPlan, run: RunDir, executor, index: int, invocation: dict, started: float, show_progress, logger):
    """The training itself, with rank 0's events going to metrics.jsonl, the console and wandb."""
    console = ConsoleProgress(show_progress, plan.cfg.run_name)
    starts: list[int] = []

    def on_event(event: dict) -> None:
        if event["kind"] == "start":
            starts.append(event["step"])
            run.restart_at(event["step"])
        elif event["kind"] in ("step", "eval"):
            run.add(dict(event))
            if event["kind"] == "eval":
                run.flush()
            if logger:
                logger.log(event)
        console(event)

    outcome = "failed"
    try:
        executor.fit(plan, run, on_event, index)
        outcome = "trained"
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise RunInterrupted(_interrupted_line(run)) from None
    except TrainingError as exc:
        # The one line names the root cause; the whole error (Ray's cut traceback, every rank's) goes beside the run.
        where = run.write_error(getattr(exc, "full_text", str(exc)))
        raise TrainingError(f"{exc} (full error: {where})") from None
    finally:
        console.close()
        run.flush()
        evals = [r for r in run.records if r.get("kind") == "eval"]
        invocation.update(start_step=starts[0] if starts else 0, end_step=evals[-1]["step"] if evals else 0)
        if outcome != "trained":
            _record(run, index, invocation, started, outcome)


def _record(run: RunDir, index: int, invocation: dict, started: float, outcome: str) -> list[dict]:
    try:
        return run.end_invocation(index, dict(invocation, wall_s=round(time.time() - started, 3), outcome=outcome))
    except Exception:  # bookkeeping must never mask the run's own error
        return []


def _interrupted_line(run: RunDir) -> str:
    steps = run.checkpoint_steps()
    if not steps:
        return f"interrupted: run {run.name} has no checkpoint yet ({run.uri}); the same command starts it again"
    return (
        f"interrupted: run {run.name} keeps its checkpoint at step {max(steps)} in {run.uri}; "
        f"run the same command again to continue from there"
    )


def _finish_run(
    plan: RunPlan, run: RunDir, index: int, invocation: dict, started: float, show_progress: bool, logger
) -> dict:
    cfg = plan.cfg
    try:
        sample = None
        best = run.best_checkpoint()
        if cfg.sample_tokens > 0 and best:
            sample = sample_from(best, cfg, run)
    except KeyboardInterrupt:
        _record(run, index, invocation, started, "interrupted")
        raise RunInterrupted(_interrupted_line(run)) from None
    except BaseException:
        _record(run, index, invocation, started, "failed")
        raise
    invocations = _record(run, index, invocation, started, "finished")
    summary = summarize(plan, run, time.time() - started, invocation=invocation, invocations=invocations)
    if sample is not None:
        summary["sample"] = sample
    run.write_summary(summary)
    if logger:
        logger.finish(summary)
    if show_progress:
        print_summary(summary)
    return summary


def _start_line(plan: RunPlan, where: str) -> str:
    cfg = plan.cfg
    kind = "GPU" if plan.use_gpu else f"CPU x{plan.threads_per_worker} threads"
    return (
        f"{cfg.run_name}: {cfg.arch}/{cfg.preset}, {plan.params['total'] / 1e6:.2f}M params "
        f"({plan.params['active'] / 1e6:.2f}M active), {plan.workers} worker(s) [{kind}] {where}, "
        f"global batch {cfg.tokens_per_step(plan.workers):,} tokens, {plan.total_steps} steps"
    )


def sample_from(checkpoint_path: str, cfg: TrainConfig, run: RunDir) -> str:
    from orchestrator.inference import generate_text, open_checkpoint

    with open_checkpoint(checkpoint_path, run.storage) as bundle:
        return generate_text(
            bundle,
            cfg.prompt,
            max_new_tokens=cfg.sample_tokens,
            temperature=0.8,
            top_k=50,
            seed=cfg.seed,
            tokenizer_dir=cfg.tokenizer_dir,
        )
