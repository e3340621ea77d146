"""Named presets per architecture and the builders that turn (arch, preset, overrides) into configs and models."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from .model_gpt2 import GPT2, GPT2Config
from .model_gptoss import GptOss, GptOssConfig, mlp_intermediate_size

ARCHS = ("gptoss", "gpt2")
CONFIG_CLASSES = {"gptoss": GptOssConfig, "gpt2": GPT2Config}
MODEL_CLASSES = {"gptoss": GptOss, "gpt2": GPT2}

# Sizing rule (model_gptoss.mlp_intermediate_size): gpt2's MLP has 8*d^2 weights (d -> 4d -> d); a GPT-OSS expert has
# 3*d*I (gate_up d x 2I, down I x d), so with k active experts I = 8d / (3k) gives the same ACTIVE MLP weights
# (rounded to a multiple of 16). The ladder's dense SwiGLU rung uses the same rule with k = 1.
# gptoss attention is smaller than gpt2's (kv heads = heads / 2: 3 d^2 vs 4 d^2 weights); that is the architecture.
_SHAPES = {
    #            n_layers d_model n_heads
    "cpu-tiny": (4, 128, 4),
    "cpu-small": (6, 256, 8),
    "seed-6l": (6, 1024, 8),
    "seed-8l": (8, 1024, 8),
    "seed-12l": (12, 1024, 8),
}
_CPU_MOE = {"num_experts": 4, "experts_per_token": 2}  # top-2 at CPU scale: more routing signal per step
_SEED_MOE = {"num_experts": 4, "experts_per_token": 1}  # the seed grid's top-1 routing


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "gptoss": {
        "debug": dict(
            vocab_size=512,
            n_layers=2,
            d_model=64,
            n_heads=4,
            n_kv_heads=2,
            head_dim=16,
            num_experts=4,
            experts_per_token=2,
            intermediate_size=64,
            max_seq_len=1024,
            sliding_window=128,
        ),
    },
    "gpt2": {
        "debug": dict(vocab_size=512, n_layers=2, d_model=64, n_heads=4, max_seq_len=256),
    },
}
for _name, (_layers, _d, _heads) in _SHAPES.items():
    _moe = _CPU_MOE if _name.startswith("cpu") else _SEED_MOE
    PRESETS["gptoss"][_name] = dict(
        vocab_size=201088,
        n_layers=_layers,
        d_model=_d,
        n_heads=_heads,
        n_kv_heads=_heads // 2,
        **_moe,
        intermediate_size=mlp_intermediate_size("moe", _d, _moe["experts_per_token"]),
        max_seq_len=4096,
        sliding_window=128,
    )
    PRESETS["gpt2"][_name] = dict(vocab_size=201088, n_layers=_layers, d_model=_d, n_heads=_heads, max_seq_len=1024)


def list_presets(arch: str | None = None) -> list[str]:
    if arch is None:
        return sorted({name for presets in PRESETS.values() for name in presets})
    _check_arch(arch)
    return sorted(PRESETS[arch])


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; allowed: {', '.join(ARCHS)}")


def _make_config(arch: str, fields: dict[str, Any]):
    cls = CONFIG_CLASSES[arch]
    allowed = [f.name for f in dataclasses.fields(cls)]
    for name in fields:
        if name not in allowed:
            raise ValueError(f"unknown config field {name!r} for arch {arch!r}; allowed: {', '.join(allowed)}")
    return cls(**fields)


def build_config(arch: str, preset: str = "debug", **overrides):
    """The validated config dataclass for a named preset, with any fields overridden."""
    _check_arch(arch)
    if preset not in PRESETS[arch]:
        raise ValueError(f"unknown preset {preset!r} for arch {arch!r}; allowed: {', '.join(list_presets(arch))}")
    return _make_config(arch, {**PRESETS[arch][preset], **overrides})


def config_from_dict(d: dict[str, Any]):
    """Inverse of config_to_dict (also accepts a checkpoint's config.json: its "extra" entry is ignored)."""
    fields = {k: v for k, v in d.items() if k not in ("arch", "extra")}
    if "arch" not in d:
        raise ValueError(f"config dict needs an 'arch' entry; allowed: {', '.join(ARCHS)}")
    _check_arch(d["arch"])
    return _make_config(d["arch"], fields)


def config_to_dict(config) -> dict[str, Any]:
    return {"arch": config.arch, **dataclasses.asdict(config)}


def model_from_config(config) -> nn.Module:
    return MODEL_CLASSES[config.arch](config)


def build_model(arch: str, preset: str = "debug", **overrides) -> nn.Module:
    """A freshly initialised model (seed torch beforehand for a deterministic init)."""
    return model_from_config(build_config(arch, preset, **overrides))


def compile_model(model: nn.Module, **compile_kwargs) -> nn.Module:
    """torch.compile(model) as one graph per forward. The MoE's loop path reads its per-expert group sizes back to the
    host (.tolist(), to split the sorted tokens); dynamo breaks the graph there, once per layer, unless it captures
    such scalars as symbolic sizes, which this turns on (a process-wide dynamo setting)."""
    torch._dynamo.config.capture_scalar_outputs = True
    return torch.compile(model, **compile_kwargs)


def add_vocab_rows(model: nn.Module, rows: int) -> nn.Module:
    """Append `rows` all-zero rows to the token embedding and the output layer, in place (a tied head stays tied).

    For ids a tokenizer can emit but the model never trained on: a zero embedding adds nothing to the residual
    stream, and a zero output row gives a logit of exactly 0 whatever the input, so sampling must exclude those ids
    (generate's vocab_limit; suppress_tokens in an exported generation_config.json)."""
    model = unwrap_model(model)
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if rows == 0:
        return model
    if model.config.arch == "gpt2":
        embedding, head = model.token_embedding, model.lm_head
    else:
        embedding, head = model.embedding, model.unembedding
    tied = head.weight is embedding.weight
    with torch.no_grad():
        grown = torch.cat([embedding.weight, embedding.weight.new_zeros(rows, embedding.weight.shape[1])])
        embedding.weight = nn.Parameter(grown)
        embedding.num_embeddings = grown.shape[0]
        if tied:
            head.weight = embedding.weight
        else:
            head.weight = nn.Parameter(torch.cat([head.weight, head.weight.new_zeros(rows, head.weight.shape[1])]))
        head.out_features = head.weight.shape[0]
    model.config.vocab_size += rows
    return model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare GptOss/GPT2 inside DDP (.module) and torch.compile (._orig_mod) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        else:
            return model
