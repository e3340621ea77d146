"""The prepare command's settings (PrepareConfig), the shared error type, and defaults used across data_pipeline."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DATA_DIR = "data/tinystories"
SUPPORTED_TOKENIZERS = ("o200k_harmony", "o200k_base", "cl100k_base", "gpt2")
ERROR_MODES = ("strict", "replace")
SPLITS = ("train", "validation")


class DataError(RuntimeError):
    """Bad input data or a broken prepared directory; the message is one line for the user."""


class PrepareInterrupted(KeyboardInterrupt):
    """Ctrl-C during prepare, after cleaning up: what was kept and how to continue, in one line (the CLI exits 130)."""


@dataclass
class PrepareConfig:
    out: str = DEFAULT_DATA_DIR
    source: str | None = None  # None: the Hugging Face dataset roneneldan/TinyStories
    tokenizer: str = "o200k_harmony"
    tokenizer_dir: str | None = None  # falls back to $GPTOSS_TOKENIZER_DIR, then tiktoken's cache/download
    compact_vocab: bool = True
    limit: int | None = None
    val_fraction: float = 0.05
    text_field: str = "text"
    shard_tokens: int = 100_000_000
    errors: str = "strict"
    force: bool = False
    address: str | None = None
    verbose: bool = False
    hf_dataset: str = "roneneldan/TinyStories"  # the default source when `source` is None

    def __post_init__(self):
        if not self.out or not str(self.out).strip():
            raise ValueError("out must be a directory path, got an empty string")
        if self.tokenizer not in SUPPORTED_TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {', '.join(SUPPORTED_TOKENIZERS)}; got {self.tokenizer!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ValueError(f"limit must be a positive number of stories (or None for all); got {self.limit!r}")
        if not (0.0 <= float(self.val_fraction) < 0.5):
            raise ValueError(f"val_fraction must be in [0, 0.5) (0 = no validation split); got {self.val_fraction!r}")
        if not self.text_field:
            raise ValueError("text_field must name a field, got an empty string")
        if not isinstance(self.shard_tokens, int) or self.shard_tokens < 1024:
            raise ValueError(f"shard_tokens must be an integer >= 1024; got {self.shard_tokens!r}")
        if self.errors not in ERROR_MODES:
            raise ValueError(f"errors must be one of {', '.join(ERROR_MODES)}; got {self.errors!r}")
        if self.source is not None and not str(self.source).strip():
            raise ValueError(
                "source must be a file, directory or glob; got an empty string (omit it for the Hugging Face dataset)"
            )


def project_version() -> str:
    """The installed package's version, else pyproject's (a plain checkout), else 'unknown'."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nano-gpt-oss")
    except PackageNotFoundError:
        pass
    try:
        from pathlib import Path

        import tomllib

        with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
            return str(tomllib.load(f)["project"]["version"])
    except Exception:
        return "unknown"
