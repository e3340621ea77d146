"""Data preparation: tokenizing TinyStories with tiktoken into Arrow shards, and reading them back for training."""

from .config import DEFAULT_DATA_DIR, SUPPORTED_TOKENIZERS, DataError, PrepareConfig
from .manifest import data_identity, load_manifest, token_byte_lengths
from .prepare import prepare
from .reader import TokenWindows, ray_dataset
from .tokenizers import ModelTokenizer, TokenizerError, UnknownTokenError, get_encoding, load_tokenizer

__all__ = [
    "DEFAULT_DATA_DIR",
    "SUPPORTED_TOKENIZERS",
    "DataError",
    "PrepareConfig",
    "data_identity",
    "load_manifest",
    "token_byte_lengths",
    "prepare",
    "TokenWindows",
    "ray_dataset",
    "ModelTokenizer",
    "TokenizerError",
    "UnknownTokenError",
    "get_encoding",
    "load_tokenizer",
]
