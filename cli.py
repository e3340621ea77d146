"""Command-line interface: maps flags onto the config dataclasses of gptoss/, data_pipeline/ and orchestrator/."""

from __future__ import annotations

import functools
import inspect
import os
from dataclasses import dataclass
from typing import Annotated, Any, Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train and sweep nano GPT-OSS vs GPT-2 on TinyStories with Ray.",
)

DEFAULT_DATA = "data/tinystories"
Opt = typer.Option


def _as_flags(exc: BaseException, text: str) -> str:
    """A config error names fields (as a sweep file spells them); on the command line they are flags."""
    from orchestrator.config import ConfigError

    if not isinstance(exc, ConfigError):
        return text
    return exc.as_flags({o.dest: o.flags[0].split("/")[0] for o in TRAIN_OPTIONS})


def _user_errors(fn):
    """Bad input ends in one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (
            ValueError,
            FileNotFoundError,
            FileExistsError,
            PermissionError,
            NotADirectoryError,
            IsADirectoryError,
        ) as exc:
            typer.echo(f"error: {_one_line(exc)}", err=True)
            raise typer.Exit(2)
        except OSError as exc:
            if type(exc).__name__ != "StorageFull":  # a full, over-quota or read-only disk (orchestrator.storage)
                raise
            typer.echo(f"error: {_one_line(exc)}", err=True)
            raise typer.Exit(2)
        except RuntimeError as exc:
            # ClusterError and friends: our own one-line runtime failures.
            if type(exc).__name__.endswith("Error") and type(exc).__module__.split(".")[0] in (
                "orchestrator",
                "data_pipeline",
                "gptoss",
                "raysetup",
            ):
                typer.echo(f"error: {_one_line(exc)}", err=True)
                raise typer.Exit(2)
            raise
        except KeyboardInterrupt as exc:
            # prepare/train/sweep raise a KeyboardInterrupt subclass whose text says what was kept and how to go on.
            text = _one_line(exc) if str(exc) else "interrupted before anything was written; run the same command again"
            typer.echo(text, err=True)
            raise typer.Exit(130)

    return wrapper


def _one_line(exc: BaseException) -> str:
    text = _as_flags(exc, str(exc) or type(exc).__name__)
    if isinstance(exc, (FileNotFoundError, PermissionError)) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return " ".join(text.split())


@app.command()
def version():
    """Print the versions of this project, torch and ray."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as pkg_version

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
    source: Annotated[
        Optional[str],
        typer.Option(
            "--source",
            help=(
                "A .txt (stories separated by <|endoftext|> lines), .jsonl/.json or .parquet file, a directory "
                "(train.* + validation.* map to the splits) or a glob. "
                "Default: the Hugging Face dataset roneneldan/TinyStories."
            ),
        ),
    ] = None,
    out: Annotated[
        str, typer.Option("--out", help="Output directory for the shards and manifest.json.")
    ] = DEFAULT_DATA,
    tokenizer: Annotated[
        str, typer.Option("--tokenizer", help="o200k_harmony (GPT-OSS), o200k_base, cl100k_base or gpt2.")
    ] = "o200k_harmony",
    tokenizer_dir: Annotated[
        Optional[str],
        typer.Option(
            "--tokenizer-dir", help="Folder of tiktoken rank files for offline use (also $GPTOSS_TOKENIZER_DIR)."
        ),
    ] = None,
    compact_vocab: Annotated[
        bool,
        typer.Option(
            "--compact-vocab/--full-vocab",
            help="Remap the token ids that occur in the data to a dense range (a much smaller embedding).",
        ),
    ] = True,
    limit: Annotated[
        Optional[int],
        typer.Option("--limit", help="Use at most N stories (shared between the splits), for quick runs."),
    ] = None,
    val_fraction: Annotated[
        float,
        typer.Option(
            "--val-fraction",
            help="Stories held out for validation, spread evenly, when the source has no validation files.",
        ),
    ] = 0.05,
    text_field: Annotated[
        str, typer.Option("--text-field", help="The JSON field / Parquet column holding the story.")
    ] = "text",
    shard_tokens: Annotated[
        int, typer.Option("--shard-tokens", help="Most tokens per shard file (shards end at story boundaries).")
    ] = 100_000_000,
    errors: Annotated[
        str, typer.Option("--errors", help="Invalid UTF-8: strict (fail naming file and offset) or replace.")
    ] = "strict",
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if --out already holds this data.")] = False,
    address: Annotated[
        Optional[str],
        typer.Option("--address", help="Join this Ray cluster (default: $RAY_ADDRESS, else start one here)."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Ray's own logs and progress bars.")] = False,
):
    """Tokenize TinyStories with tiktoken into memory-mappable Arrow shards (Ray Data)."""
    from data_pipeline import PrepareConfig
    from data_pipeline import prepare as run_prepare

    cfg = PrepareConfig(
        out=out,
        source=source,
        tokenizer=tokenizer,
        tokenizer_dir=tokenizer_dir,
        compact_vocab=compact_vocab,
        limit=limit,
        val_fraction=val_fraction,
        text_field=text_field,
        shard_tokens=shard_tokens,
        errors=errors,
        force=force,
        address=address,
        verbose=verbose,
    )
    run_prepare(cfg, echo=typer.echo)


@app.command()
@_user_errors
def baseline(
    data_dir: Annotated[str, typer.Argument(help="Prepared data directory (from `prepare`).")],
    train_tokens: Annotated[
        Optional[int], typer.Option("--train-tokens", help="Fit on the first N training tokens (default: all).")
    ] = None,
):
    """Fit unigram and Kneser-Ney bigram/trigram models on the training tokens; score validation; \
write baselines.json."""
    from data_pipeline.ngram import BASELINES_NAME, fit_baselines

    result = fit_baselines(data_dir, train_tokens)
    typer.echo(
        f"fitted on {result['train_tokens']:,} training tokens, scored on {result['validation_tokens']:,} "
        f"validation tokens in {result['seconds']:.1f}s"
    )
    for name, m in result["models"].items():
        extra = f"  (discount {m['discount']})" if "discount" in m else ""
        typer.echo(f"  {name:<11} {m['nats_per_token']:.4f} nats/token  {m['bits_per_byte']:.4f} bits/byte{extra}")
    typer.echo(f"-> {os.path.join(data_dir, BASELINES_NAME)}")


# ----------------------------------------------------------------------------------------------
# The training options: ONE definition, from which both `train` (one run) and `sweep` (every trial) get their flags,
# so the two cannot drift apart. In `sweep`, options marked `axis` (and every model override) take a comma list and
# become grid axes; every other option applies to each trial, and an option not given leaves the sweep YAML's value.


@dataclass(frozen=True)
class TrainOption:
    dest: str  # TrainConfig field, or (model=True) the model-config field it overrides
    flags: tuple  # flag names, e.g. ("--seq-len",) or ("--resume/--no-resume",)
    type: Any
    help: str
    model: bool = False  # a model-config override (TrainConfig.model_overrides); a grid axis in sweeps
    axis: bool = False  # a sweep grid axis (a comma list in `sweep`)
    sweep_aliases: tuple = ()  # extra flag names `sweep` also accepts (its older spellings)
    sweep_dest: Optional[str] = None  # where `sweep` puts it, when not the TrainConfig field (a SweepConfig field)
    hidden: bool = False


TRAIN_OPTIONS: tuple[TrainOption, ...] = (
    TrainOption("data", ("--data",), str, "Prepared data directory (from `prepare`)."),
    TrainOption("arch", ("--arch",), str, "gptoss or gpt2.", axis=True, sweep_aliases=("--archs",)),
    TrainOption("preset", ("--preset",), str, "Model preset: debug, cpu-tiny, cpu-small, seed-6l, seed-8l, seed-12l."),
    # Model overrides: any preset field.
    TrainOption("n_layers", ("--layers",), int, "Override: transformer blocks.", model=True),
    TrainOption("d_model", ("--d-model",), int, "Override: hidden size.", model=True),
    TrainOption("n_heads", ("--heads",), int, "Override: attention heads.", model=True),
    TrainOption("n_kv_heads", ("--kv-heads",), int, "Override (gptoss): key/value heads.", model=True),
    TrainOption("head_dim", ("--head-dim",), int, "Override (gptoss): per-head size.", model=True),
    TrainOption("num_experts", ("--experts",), int, "Override (gptoss): MoE experts.", model=True),
    TrainOption("experts_per_token", ("--top-k",), int, "Override (gptoss): experts per token.", model=True),
    TrainOption("intermediate_size", ("--intermediate",), int, "Override: MLP / expert intermediate size.", model=True),
    TrainOption(
        "sliding_window",
        ("--window",),
        int,
        "Override (gptoss): sliding-window length (0: none, every layer full attention).",
        model=True,
    ),
    TrainOption("dropout", ("--dropout",), float, "Override (gpt2): dropout.", model=True),
    TrainOption(
        "aux_loss_coef", ("--aux-loss-coef",), float, "Override (gptoss): load-balancing loss coefficient.", model=True
    ),
    # Component switches (gptoss; GPT-2's setting first) and named variants (gptoss/variants.py).
    TrainOption(
        "variant",
        ("--variant",),
        str,
        "A named gptoss variant: a ladder rung (gpt2, +untied, +rope, +yarn, "
        "+rmsnorm, +swiglu, +gqa, +sinks, +window, gptoss) or a leave-one-out (gptoss-no-moe, gptoss-no-sinks, "
        "...); in a sweep also the groups ladder and leave-one-out. Switch flags apply on top.",
        axis=True,
        sweep_aliases=("--variants",),
    ),
    TrainOption("positions", ("--positions",), str, "Switch (gptoss): learned, rope or yarn.", model=True),
    TrainOption("norm", ("--norm",), str, "Switch (gptoss): layernorm or rmsnorm.", model=True),
    TrainOption("mlp", ("--mlp",), str, "Switch (gptoss): gelu, swiglu (dense) or moe.", model=True),
    TrainOption("sinks", ("--sinks/--no-sinks",), bool, "Switch (gptoss): attention sinks.", model=True),
    TrainOption(
        "tie_embeddings",
        ("--tie-embeddings/--untie-embeddings",),
        bool,
        "Switch: share the embedding with the output layer.",
        model=True,
    ),
    TrainOption(
        "parametrization",
        ("--parametrization",),
        str,
        "Width parametrization: standard or mup (lr transfers across d_model from --mup-base-width).",
        model=True,
    ),
    TrainOption(
        "mup_base_width",
        ("--mup-base-width",),
        int,
        "The d_model at which mup equals standard (default 128).",
        model=True,
    ),
    # Data, batch and schedule.
    TrainOption("seq_len", ("--seq-len",), int, "Tokens per training window."),
    TrainOption("batch_size", ("--batch-size",), int, "Windows per worker per micro-step."),
    TrainOption("grad_accum", ("--grad-accum",), int, "Micro-steps per optimizer step."),
    TrainOption("max_steps", ("--max-steps",), int, "Optimizer steps (default 500 unless --max-tokens)."),
    TrainOption(
        "max_tokens",
        ("--max-tokens",),
        int,
        "Training tokens; sets the steps from the global batch.",
        sweep_aliases=("--budget-tokens",),
    ),
    TrainOption(
        "lr",
        ("--lr",),
        float,
        "Peak learning rate (default per preset: debug 3e-3, cpu-* 1e-3, seed-* 3e-4).",
        axis=True,
    ),
    TrainOption(
        "min_lr", ("--min-lr",), float, "Learning rate at the end of the cosine decay or wsd cooldown (default lr/10)."
    ),
    TrainOption("warmup_steps", ("--warmup-steps",), int, "Linear warmup steps (default 5% of steps, at most 200)."),
    TrainOption(
        "schedule",
        ("--schedule",),
        str,
        "lr schedule after warmup: cosine, wsd (stable, then a 1-sqrt cooldown "
        "over the last --cooldown-frac) or constant.",
    ),
    TrainOption("cooldown_frac", ("--cooldown-frac",), float, "wsd: fraction of the steps that cool down to --min-lr."),
    TrainOption("weight_decay", ("--weight-decay",), float, "AdamW weight decay on matrices."),
    TrainOption("grad_clip", ("--grad-clip",), float, "Gradient norm clipping."),
    TrainOption("eval_every", ("--eval-every",), int, "Steps between evaluations and checkpoints."),
    TrainOption(
        "eval_windows", ("--eval-windows",), int, "Fixed validation windows per evaluation (0: the whole split)."
    ),
    TrainOption(
        "train_eval_windows",
        ("--train-eval-windows",),
        int,
        "Training windows the last evaluation also scores, spread over the split (default: as many as of "
        "validation; 0: none).",
    ),
    TrainOption("seed", ("--seed",), int, "Seed for init and data order.", axis=True, sweep_aliases=("--seeds",)),
    # Where and how it runs.
    TrainOption(
        "workers",
        ("--workers",),
        int,
        "Training workers (default: one per GPU, else 1); per trial in a sweep.",
        sweep_aliases=("--workers-per-trial",),
        sweep_dest="workers_per_trial",
    ),
    TrainOption("cpu", ("--cpu",), bool, "Train on CPUs even when the cluster has GPUs."),
    TrainOption("gpu", ("--gpu",), bool, "Require GPU workers; fail if the cluster has none."),
    TrainOption(
        "threads_per_worker", ("--threads-per-worker",), int, "Torch threads (and CPUs reserved) per CPU worker."
    ),
    TrainOption(
        "compile",
        ("--compile",),
        bool,
        "torch.compile the model as one graph (gptoss.compile_model); pays on long runs.",
    ),
    TrainOption("address", ("--address",), str, "Join this Ray cluster (default: $RAY_ADDRESS, else start one here)."),
    TrainOption("storage", ("--storage",), str, "Where runs live: a path, shared mount or URI (s3://...)."),
    TrainOption(
        "resume", ("--resume/--no-resume",), bool, "Continue a run of the same name from its latest checkpoint."
    ),
    TrainOption("keep", ("--keep",), int, "Checkpoints kept per run: the best by val loss, plus the latest."),
    TrainOption(
        "max_failures", ("--max-failures",), int, "Worker-group restarts from the latest checkpoint (-1: forever)."
    ),
    TrainOption("wandb", ("--wandb",), bool, "Log to Weights & Biases (WANDB_MODE=offline works without an account)."),
    TrainOption("wandb_project", ("--wandb-project",), str, "Weights & Biases project."),
    TrainOption("prompt", ("--prompt",), str, "Prompt of the sample story printed at the end."),
    TrainOption("sample_tokens", ("--sample-tokens",), int, "Tokens in the final sample (0: none)."),
    TrainOption(
        "tokenizer_dir",
        ("--tokenizer-dir",),
        str,
        "Folder of tiktoken rank files (offline use; also $GPTOSS_TOKENIZER_DIR).",
    ),
    TrainOption(
        "verify_data",
        ("--verify-data/--no-verify-data",),
        bool,
        "Check every shard's checksum before step 1 (skip for huge data you trust).",
    ),
    TrainOption("verbose", ("--verbose",), bool, "Show Ray's own logs."),
    TrainOption(
        "inject_failure_at",
        ("--inject-failure-at",),
        int,
        "Testing: the last worker dies once at this step.",
        hidden=True,
    ),
)
_ENVVARS = {"address": "RAY_ADDRESS", "tokenizer_dir": "GPTOSS_TOKENIZER_DIR"}


def _option_parameter(opt: TrainOption, for_sweep: bool) -> inspect.Parameter:
    """The Typer parameter of one training option: train's default is TrainConfig's; in a sweep every option
    defaults to None (not given: the YAML's value, else TrainConfig's), and axes are comma lists."""
    from orchestrator.config import TrainConfig

    flags, kind = opt.flags, opt.type
    if for_sweep:
        flags = flags + opt.sweep_aliases
        default = None
        if opt.axis or opt.model:
            kind = str
    else:
        field_ = TrainConfig.__dataclass_fields__.get(opt.dest)
        default = None if opt.model or field_ is None else field_.default
    annotation = Annotated[
        Optional[kind],
        typer.Option(
            *flags,
            help=opt.help + (" Comma list: a grid axis." if (for_sweep and (opt.axis or opt.model)) else ""),
            hidden=opt.hidden,
            envvar=_ENVVARS.get(opt.dest),
            show_default=default is not None,
        ),
    ]
    return inspect.Parameter(opt.dest, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def with_train_options(for_sweep: bool):
    """Give a command every training option as a keyword argument (after its own parameters); the command receives
    them together as `options`: a dict of TrainConfig / model field -> value (None: not given)."""

    def decorate(command):
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "options"]
        names = {p.name for p in own}
        shared = [_option_parameter(opt, for_sweep) for opt in TRAIN_OPTIONS if opt.dest not in names]

        @functools.wraps(command)
        def wrapper(**kwargs):
            options = {
                opt.dest: kwargs.pop(opt.dest) for opt in TRAIN_OPTIONS if opt.dest in kwargs and opt.dest not in names
            }
            return command(**kwargs, options=options)

        wrapper.__signature__ = inspect.Signature(own + shared)
        wrapper.__annotations__ = {}
        return wrapper

    return decorate


def _train_config(options: dict, **fields):
    """A TrainConfig from the training options given (model overrides gathered into model_overrides)."""
    from orchestrator.config import TrainConfig

    model = {o.dest for o in TRAIN_OPTIONS if o.model}
    overrides = {k: v for k, v in options.items() if k in model and v is not None}
    return TrainConfig(**{k: v for k, v in options.items() if k not in model}, model_overrides=overrides, **fields)


@app.command()
@_user_errors
@with_train_options(for_sweep=False)
def train(
    name: Annotated[
        Optional[str], Opt("--name", help="Run name (default <arch>-<preset>); the same name resumes.")
    ] = None,
    local: Annotated[
        bool,
        Opt("--local", help="Train in this process without Ray (one worker; e.g. a GPU machine without Ray)."),
    ] = False,
    options: Optional[dict] = None,
):
    """Train a model with Ray Train (DDP over GPUs, or CPUs when there are none), or in this process (--local)."""
    from orchestrator.trainer import run_training

    run_training(_train_config(options, name=name), local=local)


@app.command()
@_user_errors
def generate(
    checkpoint: Annotated[
        str, typer.Argument(help="A checkpoint directory, or a run directory (its best checkpoint).")
    ],
    prompt: Annotated[str, Opt("--prompt", help="Text to continue.")] = "Once upon a time",
    max_tokens: Annotated[int, Opt("--max-tokens", help="New tokens at most (stops early at end-of-text).")] = 200,
    temperature: Annotated[float, Opt("--temperature", help="Sampling temperature (0: greedy).")] = 0.8,
    top_k: Annotated[Optional[int], Opt("--top-k", help="Sample from the k most likely tokens.")] = 50,
    top_p: Annotated[Optional[float], Opt("--top-p", help="Nucleus sampling mass.")] = None,
    seed: Annotated[
        int, Opt("--seed", help="Seed of the sampling (the same seed, prompt and settings give the same text).")
    ] = 0,
    tokenizer_dir: Annotated[
        Optional[str],
        Opt(
            "--tokenizer-dir",
            envvar="GPTOSS_TOKENIZER_DIR",
            help="Folder of tiktoken rank files (only for data prepared by older versions).",
        ),
    ] = None,
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
        warn = lambda line: typer.echo(line, err=True)  # noqa: E731
        typer.echo(generate_text(bundle, prompt, max_tokens, temperature, top_k, top_p, seed, tokenizer_dir, warn))


@app.command()
@_user_errors
def evaluate(
    checkpoint: Annotated[
        str, typer.Argument(help="A checkpoint directory, or a run directory (its best checkpoint).")
    ],
    data: Annotated[str, Opt("--data", help="Prepared data directory (from `prepare`).")] = DEFAULT_DATA,
    split: Annotated[str, Opt("--split", help="Split to score.")] = "validation",
    batch_size: Annotated[int, Opt("--batch-size", help="Windows per forward pass.")] = 16,
    seq_len: Annotated[Optional[int], Opt("--seq-len", help="Window length (default: the training run's).")] = None,
    json_out: Annotated[bool, Opt("--json", help="Print the result as JSON.")] = False,
    address: Annotated[
        Optional[str],
        Opt(
            "--address",
            envvar="RAY_ADDRESS",
            help="Run the evaluation as a task on this Ray cluster (paths must be shared).",
        ),
    ] = None,
    verify_data: Annotated[
        bool, Opt("--verify-data/--no-verify-data", help="Check the split's shard checksums first.")
    ] = True,
    verbose: Annotated[bool, Opt("--verbose", help="Show Ray's own logs.")] = False,
):
    """Loss, perplexity and bits/byte of a checkpoint over a whole split."""
    import json

    from orchestrator.inference import evaluate_checkpoint, evaluate_on_cluster

    if address:
        result = evaluate_on_cluster(address, checkpoint, data, split, batch_size, seq_len, verbose, verify_data)
    else:
        result = evaluate_checkpoint(
            checkpoint, data, split, batch_size, seq_len, progress=not json_out, verify_data=verify_data
        )
    if json_out:
        typer.echo(json.dumps(result))
    else:
        typer.echo(
            f"{result['split']}: loss {result['loss']:.4f}  perplexity {result['perplexity']:.2f}  "
            f"bits/byte {result['bits_per_byte']:.4f}  ({result['tokens']:,} tokens in {result['windows']} windows, "
            f"{result['split_fraction']:.0%} of the split's target tokens, seq {result['seq_len']})"
        )


_BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def _cast(kind, text: str):
    if kind is bool:
        if text.lower() not in _BOOL_WORDS:
            raise ValueError(text)
        return _BOOL_WORDS[text.lower()]
    return kind(text)


def _comma_list(flag: str, text: Optional[str], cast) -> Optional[list]:
    if text is None:
        return None
    items = [t.strip() for t in str(text).split(",")]
    if not all(items):
        raise ValueError(f"{flag} {text!r} has an empty entry; give a comma list such as 6,8,12")
    try:
        return [_cast(cast, t) for t in items]
    except ValueError:
        raise ValueError(f"{flag} {text!r} must be a comma list of {cast.__name__} values") from None


def _lr_by_arch(
    text: Optional[str], flag: str = "--lr-by-arch", example: str = "gptoss=1e-3,gpt2=2e-3"
) -> Optional[dict]:
    if text is None:
        return None
    pairs = [p.split("=", 1) for p in _comma_list(flag, text, str)]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"{flag} {text!r} must look like {example}")
    try:
        return {arch.strip(): float(lr) for arch, lr in pairs}
    except ValueError:
        raise ValueError(f"{flag} {text!r} must give a number after each '='") from None


# Help of the sweep-only options (the training options' help is in TRAIN_OPTIONS).
_SWEEP_HELP = {
    "config": "Sweep YAML: train settings at the top level and a `grid:` of axis -> list.",
    "name": "Sweep name (default 'sweep'); the same name resumes.",
    "lr_by_arch": "Each arch's own lr, e.g. gptoss=1e-3,gpt2=2e-3 (without an --lr axis).",
    "lr_by_variant": "Each variant's own lr, e.g. gpt2=1.5e-3,+rope=2e-3 (before --lr-by-arch; without an --lr axis).",
    "budgets": (
        "Comma list of token budgets, e.g. 1048576,2097152,4194304 (with --schedule wsd): one run per point "
        "to the largest, each smaller budget's cooldown branched off it."
    ),
    "sizes": (
        "Comma list of model shapes, each applied whole and crossed with the other axes, written as trial-"
        "name abbreviations: L4-d64-h4-hd16,L4-d128-h8-hd16 (L n_layers, d d_model, h n_heads, hd head_dim, "
        "kv n_kv_heads, i intermediate_size, E num_experts, k experts_per_token)."
    ),
    "baseline": (
        "The report's multipliers are measured against this arch, variant or model; several comma-separated, "
        "the first also for the per-budget differences (default gpt2)."
    ),
    "lr_from": (
        "A finished lr sweep's directory: each variant (or arch) trains at its best lr there (without an --lr axis)."
    ),
    "max_concurrent": "Trials at once (default: what the cluster fits).",
    "cost": (
        "Print what the sweep costs (trials, tokens, FLOPs, and hours left at the tokens/s its finished trials "
        "measured) and run nothing."
    ),
    "cost_flop_rate": "With --cost: FLOP/s per trial to time the groups with no finished trial (e.g. 5e10 on a CPU).",
    "local": (
        "Run the trials as processes on this machine without Ray (e.g. a GPU machine without Ray); same plan and files."
    ),
}


@app.command()
@_user_errors
@with_train_options(for_sweep=True)
def sweep(
    config: Annotated[
        Optional[str],
        Opt("--config", help=_SWEEP_HELP["config"]),
    ] = None,
    name: Annotated[Optional[str], Opt("--name", help=_SWEEP_HELP["name"])] = None,
    lr_by_arch: Annotated[
        Optional[str],
        Opt("--lr-by-arch", help=_SWEEP_HELP["lr_by_arch"]),
    ] = None,
    lr_by_variant: Annotated[
        Optional[str],
        Opt("--lr-by-variant", help=_SWEEP_HELP["lr_by_variant"]),
    ] = None,
    budgets: Annotated[
        Optional[str],
        Opt("--budgets", help=_SWEEP_HELP["budgets"]),
    ] = None,
    sizes: Annotated[
        Optional[str],
        Opt("--sizes", help=_SWEEP_HELP["sizes"]),
    ] = None,
    baseline: Annotated[
        Optional[str],
        Opt("--baseline", help=_SWEEP_HELP["baseline"]),
    ] = None,
    lr_from: Annotated[
        Optional[str],
        Opt("--lr-from", help=_SWEEP_HELP["lr_from"]),
    ] = None,
    max_concurrent: Annotated[Optional[int], Opt("--max-concurrent", help=_SWEEP_HELP["max_concurrent"])] = None,
    local: Annotated[
        bool,
        Opt("--local", help=_SWEEP_HELP["local"]),
    ] = False,
    asha: Annotated[Optional[bool], Opt("--asha/--no-asha", help="Stop weak trials early on val loss (ASHA).")] = None,
    cost: Annotated[bool, Opt("--cost", help=_SWEEP_HELP["cost"])] = False,
    cost_flop_rate: Annotated[Optional[float], Opt("--cost-flop-rate", help=_SWEEP_HELP["cost_flop_rate"])] = None,
    options: Optional[dict] = None,
):
    """Sweep a grid of training runs with Ray Tune (default: the seed's depth x architecture x experts grid), then
    write the report. Every `train` option applies to every trial; --arch, --seed, --lr and the model overrides take
    comma lists and become grid axes."""
    from orchestrator.sweep import run_sweep
    from orchestrator.sweep_file import build_sweep_config

    grid, train_flags = {}, {}
    sweep_flags = dict(
        name=name,
        max_concurrent=max_concurrent,
        asha=asha,
        lr_by_arch=_lr_by_arch(lr_by_arch),
        lr_by_variant=_lr_by_arch(lr_by_variant, "--lr-by-variant", "gpt2=1.5e-3,+rope=2e-3"),
        budgets=_comma_list("--budgets", budgets, int),
        sizes=_comma_list("--sizes", sizes, str),
        baseline=baseline,
        lr_from=lr_from,
    )
    for opt in TRAIN_OPTIONS:
        value = options[opt.dest]
        if opt.axis or opt.model:
            grid[opt.dest] = _comma_list(opt.flags[0], value, opt.type)
        elif opt.sweep_dest:
            sweep_flags[opt.sweep_dest] = value
        else:
            train_flags[opt.dest] = value
    cfg = build_sweep_config(config, grid, sweep_flags, train_flags)
    if cost_flop_rate is not None and (not cost or cost_flop_rate <= 0):
        raise ValueError("--cost-flop-rate needs --cost and a positive FLOP/s, e.g. --cost --cost-flop-rate 5e10")
    if cost:
        from orchestrator.sweep import estimate_sweep

        print("\n".join(estimate_sweep(cfg, cost_flop_rate)))
        return
    run_sweep(cfg, local=local)


@app.command()
@_user_errors
def report(
    sweep_dir: Annotated[str, typer.Argument(help="A sweep directory (<storage>/<sweep name>).")],
    baseline: Annotated[
        Optional[str],
        Opt(
            "--baseline",
            help=(
                "Measure data/compute multipliers against this arch (the same depth's model), variant or model label; "
                "several comma-separated (default: the sweep's own, else gpt2)."
            ),
        ),
    ] = None,
    predict: Annotated[
        Optional[str],
        Opt(
            "--predict",
            help=(
                "SIZE,BUDGET (a size label of the sweep and a token budget, e.g. L4-d256-h4,4194304): fit every "
                "other size and write <sweep>/predictions.json before that size's trials run; the report then "
                "checks it once they have."
            ),
        ),
    ] = None,
):
    """(Re)write a sweep's results.csv/json, REPORT.md and plots from its trial runs."""
    from orchestrator.report import write_report

    if predict is not None:
        from orchestrator.holdout import parse_predict, write_predictions

        write_predictions(sweep_dir, parse_predict(predict), typer.echo)
    result = write_report(sweep_dir, baseline)
    for name, why in result.get("skipped", []):
        typer.echo(f"warning: trial {name} left out of the report: {why}", err=True)
    if result.get("unfinished"):
        typer.echo(
            f"warning: unfinished sweep: {len(result['unfinished'])} trial(s) have no result yet "
            f"({', '.join(result['unfinished'][:5])}{', ...' if len(result['unfinished']) > 5 else ''}); "
            f"the report says so",
            err=True,
        )
    typer.echo(f"{result['trials']} trials -> {result['report']}")


@app.command()
@_user_errors
def export(
    checkpoint: Annotated[
        str, typer.Argument(help="A checkpoint directory, or a run directory (its best checkpoint).")
    ],
    out: Annotated[str, typer.Argument(help="Output directory for the Hugging Face model.")],
):
    """Export a checkpoint to Hugging Face format (GptOssForCausalLM / GPT2LMHeadModel)."""
    from orchestrator.inference import export_checkpoint

    typer.echo(export_checkpoint(checkpoint, out))


@app.command()
@_user_errors
def cluster(
    address: Annotated[
        Optional[str],
        typer.Option(
            "--address",
            envvar="RAY_ADDRESS",
            help="Ray cluster to inspect (default: start one here, as other commands do).",
        ),
    ] = None,
    storage: Annotated[
        Optional[str], typer.Option("--storage", help="Also check that this --storage path is visible from every node.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Ray's own logs.")] = False,
):
    """Show the Ray cluster the other commands would use: address, nodes, CPUs and GPUs per node."""
    from orchestrator.cluster import describe_cluster
    from raysetup import check_shared_storage, init_ray, is_uri, shutdown_ray

    try:
        info = init_ray(address, verbose=verbose)
        joined = address or os.environ.get("RAY_ADDRESS")
        note = (
            ""
            if joined
            else " (a local instance started by this command; pass --address or set RAY_ADDRESS for a cluster)"
        )
        typer.echo(describe_cluster(info, note))
        if storage:
            if is_uri(storage):
                typer.echo(
                    f"storage: {storage} is a URI, reachable from every node with the right credentials (not checked)"
                )
            elif info.num_nodes <= 1:
                typer.echo(f"storage: {storage} (one node: nothing to share)")
            else:
                check_shared_storage(storage, info)
                typer.echo(f"storage: {storage} is visible from all {info.num_nodes} nodes")
    finally:
        shutdown_ray()


if __name__ == "__main__":
    app()
