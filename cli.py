"""Command-line interface: maps flags onto the config dataclasses of gptoss/, data_pipeline/ and orchestrator/."""
from __future__ import annotations

import functools
import os
from typing import Annotated, Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train and sweep nano GPT-OSS vs GPT-2 on TinyStories with Ray.",
)

DEFAULT_DATA = "data/tinystories"


def _user_errors(fn):
    """Bad input ends in one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError, IsADirectoryError) as exc:
            typer.echo(f"error: {_one_line(exc)}", err=True)
            raise typer.Exit(2)
        except RuntimeError as exc:
            # ClusterError and friends: our own one-line runtime failures.
            if type(exc).__name__.endswith("Error") and type(exc).__module__.split(".")[0] in ("orchestrator", "data_pipeline", "gptoss"):
                typer.echo(f"error: {_one_line(exc)}", err=True)
                raise typer.Exit(2)
            raise
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130)

    return wrapper


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (FileNotFoundError, PermissionError)) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return " ".join(text.split())


@app.command()
def version():
    """Print the versions of this project, torch and ray."""
    from importlib.metadata import PackageNotFoundError, version as pkg_version

    def v(name: str) -> str:
        try:
            return pkg_version(name)
        except PackageNotFoundError:
            return "not installed"

    typer.echo(f"nano-gpt-oss {v('nano-gpt-oss')}")
    typer.echo(f"torch {v('torch')}")
    typer.echo(f"ray {v('ray')}")


@app.command()
@_user_errors
def prepare(
    source: Annotated[Optional[str], typer.Option("--source", help="A .txt (stories separated by <|endoftext|> lines), .jsonl/.json or .parquet file, a directory (train.* + validation.* map to the splits) or a glob. Default: the Hugging Face dataset roneneldan/TinyStories.")] = None,
    out: Annotated[str, typer.Option("--out", help="Output directory for the shards and manifest.json.")] = DEFAULT_DATA,
    tokenizer: Annotated[str, typer.Option("--tokenizer", help="o200k_harmony (GPT-OSS), o200k_base, cl100k_base or gpt2.")] = "o200k_harmony",
    tokenizer_dir: Annotated[Optional[str], typer.Option("--tokenizer-dir", help="Folder of tiktoken rank files for offline use (also $GPTOSS_TOKENIZER_DIR).")] = None,
    compact_vocab: Annotated[bool, typer.Option("--compact-vocab/--full-vocab", help="Remap the token ids that occur in the data to a dense range (a much smaller embedding).")] = True,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Use at most N stories (shared between the splits), for quick runs.")] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Stories held out for validation, spread evenly, when the source has no validation files.")] = 0.05,
    text_field: Annotated[str, typer.Option("--text-field", help="The JSON field / Parquet column holding the story.")] = "text",
    shard_tokens: Annotated[int, typer.Option("--shard-tokens", help="Most tokens per shard file (shards end at story boundaries).")] = 100_000_000,
    errors: Annotated[str, typer.Option("--errors", help="Invalid UTF-8: strict (fail naming file and offset) or replace.")] = "strict",
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if --out already holds this data.")] = False,
    address: Annotated[Optional[str], typer.Option("--address", help="Join this Ray cluster (default: $RAY_ADDRESS, else start one here).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Ray's own logs and progress bars.")] = False,
):
    """Tokenize TinyStories with tiktoken into memory-mappable Arrow shards (Ray Data)."""
    from data_pipeline import PrepareConfig, prepare as run_prepare

    cfg = PrepareConfig(out=out, source=source, tokenizer=tokenizer, tokenizer_dir=tokenizer_dir, compact_vocab=compact_vocab,
                        limit=limit, val_fraction=val_fraction, text_field=text_field, shard_tokens=shard_tokens,
                        errors=errors, force=force, address=address, verbose=verbose)
    run_prepare(cfg, echo=typer.echo)



@app.command()
@_user_errors
def baseline(
    data_dir: Annotated[str, typer.Argument(help="Prepared data directory (from `prepare`).")],
    train_tokens: Annotated[Optional[int], typer.Option("--train-tokens", help="Fit on the first N training tokens (default: all).")] = None,
):
    """Fit unigram and Kneser-Ney bigram/trigram models on the training tokens; score validation; write baselines.json."""
    from data_pipeline.ngram import BASELINES_NAME, fit_baselines

    result = fit_baselines(data_dir, train_tokens)
    typer.echo(f"fitted on {result['train_tokens']:,} training tokens, scored on {result['validation_tokens']:,} "
               f"validation tokens in {result['seconds']:.1f}s")
    for name, m in result["models"].items():
        extra = f"  (discount {m['discount']})" if "discount" in m else ""
        typer.echo(f"  {name:<11} {m['nats_per_token']:.4f} nats/token  {m['bits_per_byte']:.4f} bits/byte{extra}")
    typer.echo(f"-> {os.path.join(data_dir, BASELINES_NAME)}")


# ----------------------------------------------------------------------------------------------
# Options shared by `train` and `sweep` (a sweep applies every train flag to each of its trials).

Opt = typer.Option
DataOpt = Annotated[str, Opt("--data", help="Prepared data directory (from `prepare`).")]
PresetOpt = Annotated[str, Opt("--preset", help="Model preset: debug, cpu-tiny, cpu-small, seed-6l, seed-8l, seed-12l.")]
SeqLenOpt = Annotated[int, Opt("--seq-len", help="Tokens per training window.")]
BatchOpt = Annotated[int, Opt("--batch-size", help="Windows per worker per micro-step.")]
AccumOpt = Annotated[int, Opt("--grad-accum", help="Micro-steps per optimizer step.")]
MaxStepsOpt = Annotated[Optional[int], Opt("--max-steps", help="Optimizer steps (default 500 unless --max-tokens).")]
MaxTokensOpt = Annotated[Optional[int], Opt("--max-tokens", help="Training tokens; sets the steps from the global batch.")]
LrOpt = Annotated[Optional[float], Opt("--lr", help="Peak learning rate (default per preset: debug 3e-3, cpu-* 1e-3, seed-* 3e-4).")]
MinLrOpt = Annotated[Optional[float], Opt("--min-lr", help="Learning rate at the end of the cosine decay or wsd cooldown (default lr/10).")]
WarmupOpt = Annotated[Optional[int], Opt("--warmup-steps", help="Linear warmup steps (default 5% of steps, at most 200).")]
ScheduleOpt = Annotated[str, Opt("--schedule", help="lr schedule after warmup: cosine, wsd (stable, then a 1-sqrt cooldown over the last --cooldown-frac) or constant.")]
CooldownOpt = Annotated[float, Opt("--cooldown-frac", help="wsd: fraction of the steps that cool down to --min-lr.")]
WdOpt = Annotated[float, Opt("--weight-decay", help="AdamW weight decay on matrices.")]
ClipOpt = Annotated[float, Opt("--grad-clip", help="Gradient norm clipping.")]
EvalEveryOpt = Annotated[int, Opt("--eval-every", help="Steps between evaluations and checkpoints.")]
EvalWindowsOpt = Annotated[int, Opt("--eval-windows", help="Fixed validation windows per evaluation (0: the whole split).")]
CpuOpt = Annotated[bool, Opt("--cpu", help="Train on CPUs even when the cluster has GPUs.")]
GpuOpt = Annotated[bool, Opt("--gpu", help="Require GPU workers; fail if the cluster has none.")]
ThreadsOpt = Annotated[Optional[int], Opt("--threads-per-worker", help="Torch threads (and CPUs reserved) per CPU worker.")]
AddressOpt = Annotated[Optional[str], Opt("--address", envvar="RAY_ADDRESS", help="Join this Ray cluster (default: start one here).")]
StorageOpt = Annotated[str, Opt("--storage", help="Where runs live: a path, shared mount or URI (s3://...).")]
KeepOpt = Annotated[int, Opt("--keep", help="Checkpoints kept per run: the best by val loss, plus the latest.")]
FailuresOpt = Annotated[int, Opt("--max-failures", help="Worker-group restarts from the latest checkpoint (-1: forever).")]
SeedOpt = Annotated[int, Opt("--seed", help="Seed for init and data order.")]
CompileOpt = Annotated[bool, Opt("--compile", help="torch.compile the model.")]
WandbOpt = Annotated[bool, Opt("--wandb", help="Log to Weights & Biases (WANDB_MODE=offline works without an account).")]
WandbProjectOpt = Annotated[str, Opt("--wandb-project", help="Weights & Biases project.")]
TokDirOpt = Annotated[Optional[str], Opt("--tokenizer-dir", envvar="GPTOSS_TOKENIZER_DIR", help="Folder of tiktoken rank files (offline use).")]
VerboseOpt = Annotated[bool, Opt("--verbose", help="Show Ray's own logs.")]
# Model overrides (any preset field).
LayersOpt = Annotated[Optional[int], Opt("--layers", help="Override: transformer blocks.")]
DModelOpt = Annotated[Optional[int], Opt("--d-model", help="Override: hidden size.")]
HeadsOpt = Annotated[Optional[int], Opt("--heads", help="Override: attention heads.")]
KvHeadsOpt = Annotated[Optional[int], Opt("--kv-heads", help="Override (gptoss): key/value heads.")]
HeadDimOpt = Annotated[Optional[int], Opt("--head-dim", help="Override (gptoss): per-head size.")]
ExpertsOpt = Annotated[Optional[int], Opt("--experts", help="Override (gptoss): MoE experts.")]
TopKOpt = Annotated[Optional[int], Opt("--top-k", help="Override (gptoss): experts per token.")]
InterOpt = Annotated[Optional[int], Opt("--intermediate", help="Override: MLP / expert intermediate size.")]
WindowOpt = Annotated[Optional[int], Opt("--window", help="Override (gptoss): sliding-window length.")]
DropoutOpt = Annotated[Optional[float], Opt("--dropout", help="Override (gpt2): dropout.")]
AuxOpt = Annotated[Optional[float], Opt("--aux-loss-coef", help="Override (gptoss): load-balancing loss coefficient.")]


def _model_overrides(**flags) -> dict:
    from orchestrator.config import MODEL_OVERRIDE_FLAGS

    return {MODEL_OVERRIDE_FLAGS[k]: v for k, v in flags.items() if v is not None}


@app.command()
@_user_errors
def train(
    data: DataOpt = DEFAULT_DATA,
    arch: Annotated[str, Opt("--arch", help="gptoss or gpt2.")] = "gptoss",
    preset: PresetOpt = "cpu-tiny",
    layers: LayersOpt = None, d_model: DModelOpt = None, heads: HeadsOpt = None, kv_heads: KvHeadsOpt = None,
    head_dim: HeadDimOpt = None, experts: ExpertsOpt = None, top_k: TopKOpt = None, intermediate: InterOpt = None,
    window: WindowOpt = None, dropout: DropoutOpt = None, aux_loss_coef: AuxOpt = None,
    seq_len: SeqLenOpt = 256, batch_size: BatchOpt = 16, grad_accum: AccumOpt = 1,
    max_steps: MaxStepsOpt = None, max_tokens: MaxTokensOpt = None,
    lr: LrOpt = None, min_lr: MinLrOpt = None, warmup_steps: WarmupOpt = None,
    schedule: ScheduleOpt = "cosine", cooldown_frac: CooldownOpt = 0.2, weight_decay: WdOpt = 0.1,
    grad_clip: ClipOpt = 1.0, eval_every: EvalEveryOpt = 100, eval_windows: EvalWindowsOpt = 128,
    workers: Annotated[Optional[int], Opt("--workers", help="Training workers (default: one per GPU, else 1).")] = None,
    cpu: CpuOpt = False, gpu: GpuOpt = False, threads_per_worker: ThreadsOpt = None,
    address: AddressOpt = None, storage: StorageOpt = "./runs",
    name: Annotated[Optional[str], Opt("--name", help="Run name (default <arch>-<preset>); the same name resumes.")] = None,
    resume: Annotated[bool, Opt("--resume/--no-resume", help="Continue the run of the same name from its latest checkpoint.")] = True,
    keep: KeepOpt = 2, max_failures: FailuresOpt = 0, seed: SeedOpt = 0, compile: CompileOpt = False,
    wandb: WandbOpt = False, wandb_project: WandbProjectOpt = "nano-gpt-oss",
    prompt: Annotated[str, Opt("--prompt", help="Prompt of the sample story printed at the end.")] = "Once upon a time",
    sample_tokens: Annotated[int, Opt("--sample-tokens", help="Tokens in the final sample (0: none).")] = 120,
    tokenizer_dir: TokDirOpt = None, verbose: VerboseOpt = False,
    inject_failure_at: Annotated[Optional[int], Opt("--inject-failure-at", hidden=True)] = None,
):
    """Train a model with Ray Train (DDP over GPUs, or CPUs when there are none)."""
    from orchestrator.config import TrainConfig
    from orchestrator.trainer import run_training

    overrides = _model_overrides(layers=layers, d_model=d_model, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                                 experts=experts, top_k=top_k, intermediate=intermediate, window=window,
                                 dropout=dropout, aux_loss_coef=aux_loss_coef)
    cfg = TrainConfig(
        data=data, arch=arch, preset=preset, model_overrides=overrides, seq_len=seq_len, batch_size=batch_size,
        grad_accum=grad_accum, max_steps=max_steps, max_tokens=max_tokens, lr=lr, min_lr=min_lr,
        warmup_steps=warmup_steps, schedule=schedule, cooldown_frac=cooldown_frac, weight_decay=weight_decay,
        grad_clip=grad_clip, eval_every=eval_every,
        eval_windows=eval_windows, workers=workers, cpu=cpu, gpu=gpu, threads_per_worker=threads_per_worker,
        address=address, storage=storage, name=name, resume=resume, keep=keep, max_failures=max_failures, seed=seed,
        compile=compile, wandb=wandb, wandb_project=wandb_project, prompt=prompt, sample_tokens=sample_tokens,
        tokenizer_dir=tokenizer_dir, verbose=verbose, inject_failure_at=inject_failure_at,
    )
    run_training(cfg)


@app.command()
@_user_errors
def generate(
    checkpoint: Annotated[str, typer.Argument(help="A checkpoint directory, or a run directory (its best checkpoint).")],
    prompt: Annotated[str, Opt("--prompt", help="Text to continue.")] = "Once upon a time",
    max_tokens: Annotated[int, Opt("--max-tokens", help="New tokens at most (stops early at end-of-text).")] = 200,
    temperature: Annotated[float, Opt("--temperature", help="Sampling temperature (0: greedy).")] = 0.8,
    top_k: Annotated[Optional[int], Opt("--top-k", help="Sample from the k most likely tokens.")] = 50,
    top_p: Annotated[Optional[float], Opt("--top-p", help="Nucleus sampling mass.")] = None,
    seed: SeedOpt = 0,
    tokenizer_dir: TokDirOpt = None,
):
    """Generate a story from a checkpoint."""
    from orchestrator.inference import generate_text, open_checkpoint

    if max_tokens < 1:
        raise ValueError(f"--max-tokens must be >= 1, got {max_tokens}")
    if temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"--top-p must be in (0, 1], got {top_p}")
    with open_checkpoint(checkpoint) as bundle:
        typer.echo(generate_text(bundle, prompt, max_tokens, temperature, top_k, top_p, seed, tokenizer_dir))


@app.command()
@_user_errors
def evaluate(
    checkpoint: Annotated[str, typer.Argument(help="A checkpoint directory, or a run directory (its best checkpoint).")],
    data: DataOpt = DEFAULT_DATA,
    split: Annotated[str, Opt("--split", help="Split to score.")] = "validation",
    batch_size: BatchOpt = 16,
    seq_len: Annotated[Optional[int], Opt("--seq-len", help="Window length (default: the training run's).")] = None,
    json_out: Annotated[bool, Opt("--json", help="Print the result as JSON.")] = False,
    address: Annotated[Optional[str], Opt("--address", envvar="RAY_ADDRESS", help="Run the evaluation as a task on this Ray cluster (paths must be shared).")] = None,
    verbose: VerboseOpt = False,
):
    """Loss, perplexity and bits/byte of a checkpoint over a whole split."""
    import json

    from orchestrator.inference import evaluate_checkpoint, evaluate_on_cluster

    if address:
        result = evaluate_on_cluster(address, checkpoint, data, split, batch_size, seq_len, verbose)
    else:
        result = evaluate_checkpoint(checkpoint, data, split, batch_size, seq_len, progress=not json_out)
    if json_out:
        typer.echo(json.dumps(result))
    else:
        typer.echo(f"{result['split']}: loss {result['loss']:.4f}  perplexity {result['perplexity']:.2f}  "
                   f"bits/byte {result['bits_per_byte']:.4f}  ({result['tokens']:,} tokens, seq {result['seq_len']})")


def _comma_list(flag: str, text: Optional[str], cast) -> Optional[list]:
    if text is None:
        return None
    items = [t.strip() for t in str(text).split(",")]
    if not all(items):
        raise ValueError(f"{flag} {text!r} has an empty entry; give a comma list such as 6,8,12")
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise ValueError(f"{flag} {text!r} must be a comma list of {cast.__name__} values") from None


def _lr_by_arch(text: Optional[str]) -> Optional[dict]:
    if text is None:
        return None
    pairs = [p.split("=", 1) for p in _comma_list("--lr-by-arch", text, str)]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"--lr-by-arch {text!r} must look like gptoss=1e-3,gpt2=2e-3")
    try:
        return {arch.strip(): float(lr) for arch, lr in pairs}
    except ValueError:
        raise ValueError(f"--lr-by-arch {text!r} must give a number after each '='") from None


@app.command()
@_user_errors
def sweep(
    data: Annotated[Optional[str], Opt("--data", help="Prepared data directory (from `prepare`).")] = None,
    config: Annotated[Optional[str], Opt("--config", help="Sweep YAML: train settings at the top level and a `grid:` of axis -> list.")] = None,
    name: Annotated[Optional[str], Opt("--name", help="Sweep name (default 'sweep'); the same name resumes.")] = None,
    archs: Annotated[Optional[str], Opt("--archs", help="Comma list of archs (default gptoss,gpt2).")] = None,
    layers: Annotated[Optional[str], Opt("--layers", help="Comma list of depths (default 6,8,12).")] = None,
    experts: Annotated[Optional[str], Opt("--experts", help="Comma list of expert counts, gptoss only (default 4,8,16).")] = None,
    top_k: Annotated[Optional[str], Opt("--top-k", help="Comma list of experts per token, gptoss only.")] = None,
    seeds: Annotated[Optional[str], Opt("--seeds", help="Comma list of seeds (default 0).")] = None,
    lr: Annotated[Optional[str], Opt("--lr", help="Comma list of peak learning rates.")] = None,
    lr_by_arch: Annotated[Optional[str], Opt("--lr-by-arch", help="Each arch's own lr, e.g. gptoss=1e-3,gpt2=2e-3 (without an --lr axis).")] = None,
    d_model: Annotated[Optional[str], Opt("--d-model", help="Comma list of hidden sizes.")] = None,
    heads: Annotated[Optional[str], Opt("--heads", help="Comma list of head counts.")] = None,
    kv_heads: Annotated[Optional[str], Opt("--kv-heads", help="Comma list of kv head counts, gptoss only.")] = None,
    budget_tokens: Annotated[Optional[int], Opt("--budget-tokens", help="Training tokens per trial (the same for every trial).")] = None,
    budgets: Annotated[Optional[str], Opt("--budgets", help="Comma list of token budgets, e.g. 1048576,2097152,4194304 (with --schedule wsd): one run per point to the largest, each smaller budget's cooldown branched off it.")] = None,
    schedule: Annotated[Optional[str], Opt("--schedule", help="lr schedule of every trial: cosine, wsd or constant.")] = None,
    cooldown_frac: Annotated[Optional[float], Opt("--cooldown-frac", help="wsd: fraction of each budget's steps that cool down.")] = None,
    baseline: Annotated[Optional[str], Opt("--baseline", help="The report's multipliers are measured against this arch or model (default gpt2).")] = None,
    max_steps: MaxStepsOpt = None,
    workers_per_trial: Annotated[Optional[int], Opt("--workers-per-trial", help="Ray Train workers per trial.")] = None,
    max_concurrent: Annotated[Optional[int], Opt("--max-concurrent", help="Trials at once (default: what the cluster fits).")] = None,
    asha: Annotated[Optional[bool], Opt("--asha/--no-asha", help="Stop weak trials early on val loss (ASHA).")] = None,
    preset: Annotated[Optional[str], Opt("--preset", help="Model preset of every trial (default cpu-tiny); the grid overrides its depth and experts.")] = None,
    seq_len: Annotated[Optional[int], Opt("--seq-len", help="Tokens per training window.")] = None,
    batch_size: Annotated[Optional[int], Opt("--batch-size", help="Windows per worker per micro-step.")] = None,
    grad_accum: Annotated[Optional[int], Opt("--grad-accum", help="Micro-steps per optimizer step.")] = None,
    eval_every: Annotated[Optional[int], Opt("--eval-every", help="Steps between evaluations.")] = None,
    eval_windows: Annotated[Optional[int], Opt("--eval-windows", help="Fixed validation windows per evaluation.")] = None,
    warmup_steps: WarmupOpt = None,
    cpu: Annotated[Optional[bool], Opt("--cpu", help="Train on CPUs even when the cluster has GPUs.")] = None,
    gpu: Annotated[Optional[bool], Opt("--gpu", help="Require GPU workers.")] = None,
    threads_per_worker: ThreadsOpt = None,
    address: AddressOpt = None,
    storage: Annotated[Optional[str], Opt("--storage", help="Where the sweep lives (default ./runs).")] = None,
    wandb: Annotated[Optional[bool], Opt("--wandb", help="Log each trial to Weights & Biases, one group per sweep.")] = None,
    tokenizer_dir: TokDirOpt = None,
    verbose: VerboseOpt = False,
):
    """Sweep depth x architecture x MoE experts with Ray Tune, then write the report."""
    from orchestrator.sweep import build_sweep_config, run_sweep

    grid = dict(arch=_comma_list("--archs", archs, str), n_layers=_comma_list("--layers", layers, int),
                num_experts=_comma_list("--experts", experts, int), experts_per_token=_comma_list("--top-k", top_k, int),
                seed=_comma_list("--seeds", seeds, int), lr=_comma_list("--lr", lr, float),
                d_model=_comma_list("--d-model", d_model, int), n_heads=_comma_list("--heads", heads, int),
                n_kv_heads=_comma_list("--kv-heads", kv_heads, int))
    sweep_flags = dict(name=name, workers_per_trial=workers_per_trial, max_concurrent=max_concurrent, asha=asha,
                       lr_by_arch=_lr_by_arch(lr_by_arch), budgets=_comma_list("--budgets", budgets, int), baseline=baseline)
    train_flags = dict(data=data, max_tokens=budget_tokens, max_steps=max_steps, preset=preset, seq_len=seq_len,
                       batch_size=batch_size, grad_accum=grad_accum, eval_every=eval_every, eval_windows=eval_windows,
                       warmup_steps=warmup_steps, schedule=schedule, cooldown_frac=cooldown_frac, cpu=cpu, gpu=gpu, threads_per_worker=threads_per_worker,
                       address=address, storage=storage, wandb=wandb, tokenizer_dir=tokenizer_dir, verbose=verbose)
    run_sweep(build_sweep_config(config, grid, sweep_flags, train_flags))


@app.command()
@_user_errors
def report(
    sweep_dir: Annotated[str, typer.Argument(help="A sweep directory (<storage>/<sweep name>).")],
    baseline: Annotated[str, Opt("--baseline", help="Measure data/compute multipliers against this arch (the same depth's model) or model label.")] = "gpt2",
):
    """(Re)write a sweep's results.csv/json, REPORT.md and plots from its trial runs."""
    from orchestrator.report import write_report

    result = write_report(sweep_dir, baseline)
    typer.echo(f"{result['trials']} trials -> {result['report']}")


@app.command()
@_user_errors
def export(
    checkpoint: Annotated[str, typer.Argument(help="A checkpoint directory, or a run directory (its best checkpoint).")],
    out: Annotated[str, typer.Argument(help="Output directory for the Hugging Face model.")],
):
    """Export a checkpoint to Hugging Face format (GptOssForCausalLM / GPT2LMHeadModel)."""
    from orchestrator.inference import export_checkpoint

    typer.echo(export_checkpoint(checkpoint, out))


@app.command()
@_user_errors
def cluster(
    address: Annotated[Optional[str], typer.Option("--address", envvar="RAY_ADDRESS", help="Ray cluster to inspect (default: start one here, as other commands do).")] = None,
    storage: Annotated[Optional[str], typer.Option("--storage", help="Also check that this --storage path is visible from every node.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Ray's own logs.")] = False,
):
    """Show the Ray cluster the other commands would use: address, nodes, CPUs and GPUs per node."""
    from orchestrator.cluster import check_shared_storage, describe_cluster, is_uri
    from orchestrator.runtime import init_ray, shutdown_ray

    try:
        info = init_ray(address, verbose=verbose)
        joined = address or os.environ.get("RAY_ADDRESS")
        note = "" if joined else " (a local instance started by this command; pass --address or set RAY_ADDRESS for a cluster)"
        typer.echo(describe_cluster(info, note))
        if storage:
            if is_uri(storage):
                typer.echo(f"storage: {storage} is a URI, reachable from every node with the right credentials (not checked)")
            elif info.num_nodes <= 1:
                typer.echo(f"storage: {storage} (one node: nothing to share)")
            else:
                check_shared_storage(storage, info)
                typer.echo(f"storage: {storage} is visible from all {info.num_nodes} nodes")
    finally:
        shutdown_ray()


if __name__ == "__main__":
    app()
