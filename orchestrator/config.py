"""Training-run configuration: the TrainConfig dataclass, its validation, and per-preset defaults."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

DEFAULT_STORAGE = "./runs"

# Learning rates that train each preset family stably at its scale (small models tolerate larger steps).
_DEFAULT_LR = {"debug": 3e-3, "cpu": 1e-3, "seed": 3e-4}


class ConfigError(ValueError):
    """A setting that is wrong. Its message marks every setting it names as <<field>>: str() shows field names (as a
    sweep file spells them), and the CLI shows the same message with flags (`as_flags`)."""

    _MARK = re.compile(r"<<(\w+)>>")

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field, self.marked = field_name, message

    def __str__(self) -> str:
        return self._MARK.sub(r"\1", self.marked)

    def as_flags(self, flags: dict[str, str]) -> str:
        return self._MARK.sub(lambda m: flags.get(m.group(1), m.group(1)), self.marked)


def _bad(name: str, message: str) -> ConfigError:
    return ConfigError(name, f"<<{name}>> {message}")


@functools.cache
def model_fields() -> dict[str, dict[str, str]]:
    """Each architecture's model-config fields and their annotations, from the config dataclasses themselves."""
    from gptoss.model_gpt2 import GPT2Config
    from gptoss.model_gptoss import GptOssConfig

    return {cfg.arch: {f.name: str(f.type) for f in fields(cfg)} for cfg in (GptOssConfig, GPT2Config)}


def model_overrides_allowed() -> tuple[str, ...]:
    """Model-config fields a run may override: every field of either architecture's config but the vocabulary size,
    which comes from the data. The component switches are gptoss's (gptoss/variants.py)."""
    names = set().union(*(set(f) for f in model_fields().values()))
    return tuple(sorted(names - {"vocab_size"}))


def fields_not_of(arch: str) -> set[str]:
    """Model fields of the other architectures that `arch`'s config lacks (dropped from its overrides)."""
    own = set(model_fields()[arch])
    return {name for other, names in model_fields().items() if other != arch for name in names} - own


SCHEDULES = ("cosine", "wsd", "constant")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def cooldown_start(steps: int, cooldown_frac: float) -> int:
    """First step of a WSD cooldown: the last round(cooldown_frac * steps) steps (at least one) cool down.

    The lr function and the budget branches both use this, so a branch starts exactly where its lr leaves the long
    run's."""
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
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_windows: int = 128  # fixed validation windows per eval (0: the whole split)
    # Training windows the run's last evaluation also scores, spread over the train split, so that train - val says
    # what repetition does (None: as many as it scores of validation; 0: none).
    train_eval_windows: Optional[int] = None
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
            raise _bad("arch", f"must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.variant is not None:
            if self.arch != "gptoss":
                raise ConfigError(
                    "variant",
                    f"<<variant>> {self.variant} is a gptoss variant; use it with <<arch>> gptoss, not {self.arch}",
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
                raise _bad(name, f"must be >= 1, got {value}")
        if self.workers is not None and self.workers < 1:
            raise _bad("workers", f"must be >= 1, got {self.workers}")
        for name in ("max_steps", "max_tokens", "warmup_steps", "threads_per_worker"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "warmup_steps" else 1):
                raise _bad(name, f"must be positive, got {value}")
        if self.max_steps is not None and self.max_tokens is not None:
            raise ConfigError("max_tokens", "give <<max_steps>> or <<max_tokens>>, not both")
        if self.lr is not None and not (0 < self.lr < 1):
            raise _bad("lr", f"must be in (0, 1), got {self.lr}")
        if self.min_lr is not None and self.min_lr < 0:
            raise _bad("min_lr", f"must be >= 0, got {self.min_lr}")
        if self.schedule not in SCHEDULES:
            raise _bad("schedule", f"must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not (0 < self.cooldown_frac <= 1):
            raise _bad("cooldown_frac", f"must be in (0, 1], got {self.cooldown_frac}")
        if self.eval_windows < 0:
            raise _bad("eval_windows", f"must be >= 0, got {self.eval_windows}")
        if self.train_eval_windows is not None and self.train_eval_windows < 0:
            raise _bad("train_eval_windows", f"must be >= 0 (0: none), got {self.train_eval_windows}")
        if self.max_failures < -1:
            raise _bad("max_failures", f"must be >= -1 (-1: retry forever), got {self.max_failures}")
        if self.cpu and self.gpu:
            raise ConfigError("gpu", "<<cpu>> and <<gpu>> contradict each other; give one")
        if self.name is not None and not _NAME_RE.match(self.name):
            raise _bad("name", f"must be letters, digits, '.', '_' or '-' (at most 100), got {self.name!r}")
        allowed = model_overrides_allowed()
        unknown = set(self.model_overrides) - set(allowed) - {"vocab_size"}
        if unknown:
            raise ConfigError(
                "model_overrides", f"unknown model override(s) {sorted(unknown)}; allowed: {', '.join(allowed)}"
            )

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
        """What only the step count can tell: a wsd cooldown that would start inside the warmup."""
        warmup = self.resolved_warmup(steps)
        if self.schedule == "wsd" and warmup > self.cooldown_start(steps):
            raise ConfigError(
                "warmup_steps",
                f"<<schedule>> wsd: the cooldown of this {steps}-step run starts at step {self.cooldown_start(steps)}, "
                f"inside the {warmup}-step warmup; lower <<warmup_steps>> or <<cooldown_frac>>",
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
