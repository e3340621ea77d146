"""Model definitions: nano GPT-OSS and the GPT-2 baseline, their presets, checkpoints and HF export."""

from .accounting import count_params, flops_per_token
from .checkpoint import load_checkpoint, save_checkpoint
from .generation import generate
from .hf_export import export_hf
from .model_gpt2 import GPT2, GPT2Config
from .model_gptoss import GptOss, GptOssConfig
from .presets import (
    ARCHS,
    PRESETS,
    add_vocab_rows,
    build_config,
    build_model,
    compile_model,
    config_from_dict,
    config_to_dict,
    list_presets,
    unwrap_model,
)

__all__ = [
    "ARCHS",
    "PRESETS",
    "GPT2",
    "GPT2Config",
    "GptOss",
    "GptOssConfig",
    "add_vocab_rows",
    "build_config",
    "build_model",
    "compile_model",
    "config_from_dict",
    "config_to_dict",
    "count_params",
    "export_hf",
    "flops_per_token",
    "generate",
    "list_presets",
    "load_checkpoint",
    "save_checkpoint",
    "unwrap_model",
]
