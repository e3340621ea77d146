"""Training-run configuration: the TrainConfig dataclass, its validation, and per-preset defaults."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

DEFAULT_STORAGE = "./runs"

# Learning rates that train each preset family stably at its scale (small models tolerate larger steps).
_DEFAULT_LR = {"debug": 3e-3, "cpu": 1e-3, "seed": 3e-4}

# CLI override flag -> model config field.
# Model-config fields a run may override (the CLI's flags for them are in cli.TRAIN_OPTIONS). The component switches
# (positions, norm, mlp, sinks, tie_embeddings) are gptoss's, see gptoss/variants.py; sliding_window 0 is no window.
MODEL_OVERRIDES = (
    "n_layers",
    "d_model",
    "n_heads",
    "n_kv_heads",
    "head_dim",
    "num_experts",
    "experts_per_token",
    "intermediate_size",
    "sliding_window",
    "dropout",
    "aux_loss_coef",
    "positions",
    "norm",
    "mlp",
    "sinks",
    "tie_embeddings",
    "parametrization",
    "mup_base_width",
)

SCHEDULES = ("cosine", "wsd", "constant")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def cooldown_start(steps: int, cooldown_frac: float) -> int:
    """First step of a WSD cooldown: the last round(cooldown_frac * steps) steps (at least one) cool down.

    The lr function and the budget branches both use this, so a branch starts exactly where its lr leaves the long run's."""
    return steps - min(steps, max(1, round(cooldown_frac * steps)))


def default_lr(preset: str) -> float:
    family = preset.split("-")[0]
    return _DEFAULT_LR.get(family, 1e-3)


@dataclass
class TrainConfig:
    """Everything one training run needs; the CLI maps its flags onto these fields and nothing else."""

    data: str = "data/tinystories"
    arch: str = "gptoss"
    preset: str = "cpu-tiny"
    variant: Optional[str] = None  # a named gptoss variant (gptoss/variants.py); model_overrides apply on top
    model_overrides: dict[str, Any] = field(default_factory=dict)
    seq_len: int = 256
    batch_size: int = 16  # per worker, per micro-step
    grad_accum: int = 1
    max_steps: Optional[int] = None
    max_tokens: Optional[int] = None
    lr: Optional[float] = None  # None: the preset family's default
    min_lr: Optional[float] = None  # None: lr / 10
    warmup_steps: Optional[int] = None  # None: 5% of the steps, at most 200
    schedule: str = "cosine"  # cosine | wsd (warmup, stable, 1-sqrt cooldown) | constant (after warmup)
    cooldown_frac: float = 0.2  # wsd: the last fraction of the steps that cools down to min_lr
    branch_points: list[int] = field(default_factory=list)  # steps at which the full training state is kept aside
    init_from: Optional[str] = None  # a kept training state (branch point) to start from when the run has no checkpoint
    start_step: Optional[int] = None  # the step that state must hold (checked)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_windows: int = 128  # fixed validation windows per eval (0: the whole split)
    log_every: int = 10
    workers: Optional[int] = None  # None: one per GPU, else 1
    cpu: bool = False  # force CPU workers even when GPUs exist
    gpu: bool = False  # require GPU workers
    threads_per_worker: Optional[int] = None  # CPU workers: torch threads (None: CPUs / workers)
    address: Optional[str] = None
    storage: str = DEFAULT_STORAGE
    name: Optional[str] = None  # None: "<arch>-<preset>"
    resume: bool = True
    keep: int = 2
    max_failures: int = 0
    seed: int = 0
    compile: bool = False
    wandb: bool = False
    wandb_project: str = "nano-gpt-oss"
    wandb_group: Optional[str] = None
    prompt: str = "Once upon a time"
    sample_tokens: int = 120
    tokenizer_dir: Optional[str] = None
    verify_data: bool = True  # check every shard's checksum before step 1 (skip for huge data you trust)
    verbose: bool = False
    inject_failure_at: Optional[int] = None  # testing: rank world-1 dies once at this step

    def __post_init__(self):
        from gptoss import ARCHS
        from gptoss.variants import canonical_variant

        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.variant is not None:
            if self.arch != "gptoss":
                raise ValueError(
                    f"--variant {self.variant} is a gptoss variant; use it with --arch gptoss, not {self.arch}"
                )
            self.variant = canonical_variant(self.variant)
        positive = dict(
            seq_len=self.seq_len,
            batch_size=self.batch_size,
            grad_accum=self.grad_accum,
            eval_every=self.eval_every,
            log_every=self.log_every,
            keep=self.keep,
        )
        for name, value in positive.items():
            if value is None or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        for name in ("max_steps", "max_tokens", "warmup_steps", "threads_per_worker"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "warmup_steps" else 1):
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.max_steps is not None and self.max_tokens is not None:
            raise ValueError("give --max-steps or --max-tokens, not both")
        if self.lr is not None and not (0 < self.lr < 1):
            raise ValueError(f"--lr must be in (0, 1), got {self.lr}")
        if self.min_lr is not None and self.min_lr < 0:
            raise ValueError(f"--min-lr must be >= 0, got {self.min_lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not (0 < self.cooldown_frac <= 1):
            raise ValueError(f"--cooldown-frac must be in (0, 1], got {self.cooldown_frac}")
        if any(not isinstance(b, int) or b < 1 for b in self.branch_points):
            raise ValueError(f"branch_points must be positive step numbers, got {self.branch_points}")
        if (self.init_from is None) != (self.start_step is None):
            raise ValueError("init_from and start_step go together: the kept state and the step it holds")
        if self.start_step is not None and self.start_step < 1:
            raise ValueError(f"start_step must be >= 1, got {self.start_step}")
        if self.eval_windows < 0:
            raise ValueError(f"--eval-windows must be >= 0, got {self.eval_windows}")
        if self.max_failures < -1:
            raise ValueError(f"--max-failures must be >= -1 (-1: retry forever), got {self.max_failures}")
        if self.cpu and self.gpu:
            raise ValueError("--cpu and --gpu contradict each other; give one")
        if self.name is not None and not _NAME_RE.match(self.name):
            raise ValueError(f"--name must be letters, digits, '.', '_' or '-' (at most 100), got {self.name!r}")
        unknown = set(self.model_overrides) - set(MODEL_OVERRIDES) - {"vocab_size", "max_seq_len"}
        if unknown:
            raise ValueError(f"unknown model override(s) {sorted(unknown)}; allowed: {sorted(MODEL_OVERRIDES)}")

    def resolved_model_overrides(self) -> dict[str, Any]:
        """The model config overrides of this run: the variant's switches, then model_overrides on top."""
        from gptoss.variants import variant_overrides

        return {**(variant_overrides(self.variant) if self.variant else {}), **self.model_overrides}

    @property
    def run_name(self) -> str:
        return self.name or f"{self.arch}-{self.preset}"

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else default_lr(self.preset)

    @property
    def resolved_min_lr(self) -> float:
        return self.min_lr if self.min_lr is not None else self.resolved_lr / 10

    def tokens_per_step(self, world_size: int) -> int:
        return self.batch_size * self.seq_len * self.grad_accum * world_size

    def total_steps(self, world_size: int) -> int:
        if self.max_tokens is not None:
            return max(1, math.ceil(self.max_tokens / self.tokens_per_step(world_size)))
        return self.max_steps if self.max_steps is not None else 500

    def resolved_warmup(self, steps: int) -> int:
        if self.warmup_steps is not None:
            return min(self.warmup_steps, steps)
        return min(200, max(1, steps // 20))

    def cooldown_start(self, steps: int) -> int:
        """wsd: the first step of the cooldown of a `steps`-step run (the branch point of that budget)."""
        return cooldown_start(steps, self.cooldown_frac)

    def check_schedule(self, steps: int) -> None:
        """What only the step count can tell: a wsd cooldown that would start inside the warmup, branch points past
        the end, a branch whose start_step is not its cooldown start."""
        warmup = self.resolved_warmup(steps)
        if self.schedule == "wsd" and warmup > self.cooldown_start(steps):
            raise ValueError(
                f"--schedule wsd: the cooldown of this {steps}-step run starts at step {self.cooldown_start(steps)}, "
                f"inside the {warmup}-step warmup; lower --warmup-steps or --cooldown-frac"
            )
        late = [b for b in self.branch_points if b > steps]
        if late:
            raise ValueError(f"branch points {late} lie beyond the run's {steps} steps")
        if self.start_step is not None:
            if self.schedule != "wsd":
                raise ValueError("a run started from a branch point (init_from) needs --schedule wsd")
            if self.start_step != self.cooldown_start(steps):
                raise ValueError(
                    f"start_step {self.start_step} is not the cooldown start {self.cooldown_start(steps)} "
                    f"of this {steps}-step run"
                )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
