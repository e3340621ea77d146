"""Nano GPT-OSS: config, transformer block and language model, in forward order.

Every GPT-OSS component is a config switch with its GPT-2 counterpart (the component ladder, gptoss/variants.py):
with every switch at its GPT-2 setting this model computes GPT-2's logits (model_gpt2.py) given the same weights."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .attention import KVCache, SinkAttention, causal_mask, cpu_flash_applies
from .flex_attention import sliding_block_mask
from .mlp import GeluMLP, SwiGLUMLP
from .moe import MoEMLP
from .norm import RMSNorm
from .output import linear_cross_entropy
from .parametrization import (
    attention_scale,
    hidden_init_mult,
    lr_multipliers,
    output_mult,
    validate_parametrization,
)
from .rope import YarnRotaryEmbedding

LAYER_TYPES = ("sliding_attention", "full_attention")
# Switch values, GPT-2's first and GPT-OSS's last.
POSITIONS = ("learned", "rope", "yarn")  # learned absolute table | plain RoPE | RoPE with YaRN scaling
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu", "moe")  # GELU MLP | one dense clamped-SwiGLU expert | top-k mixture of SwiGLU experts
ATTN_IMPLS = ("sdpa", "flex")  # flex: FlexAttention (gptoss/flex_attention.py), CUDA training only
EXPERT_IMPLS = ("loop", "grouped")  # grouped: one torch._grouped_mm per projection (gptoss/moe.py), no host sync


def require_positive(config, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")


@dataclass
class GptOssConfig:
    arch: ClassVar[str] = "gptoss"

    vocab_size: int = 201088  # o200k_harmony; the trainer overrides it from the data manifest
    n_layers: int = 6
    d_model: int = 256
    n_heads: int = 8
    n_kv_heads: int | None = 4  # None -> n_heads (multi-head attention, GPT-2)
    head_dim: int | None = None  # None -> d_model // n_heads (the reference fixes 64)
    num_experts: int = 4
    experts_per_token: int = 2
    intermediate_size: int | None = 336  # per expert; None -> the sizing rule of `mlp` (mlp_intermediate_size)
    max_seq_len: int = 4096  # longest context accepted; the rope (or learned position) table is this long
    sliding_window: int | None = 128  # None (or 0) -> no sliding window: every layer full
    layer_types: list[str] | None = None  # None -> sliding on even layers 0, 2, ..., full on odd ones
    # Component switches (GPT-OSS defaults; GPT-2: True, "learned", "layernorm", "gelu", False).
    tie_embeddings: bool = False
    positions: str = "yarn"
    norm: str = "rmsnorm"
    mlp: str = "moe"
    sinks: bool = True
    rope_theta: float = 150000.0
    rope_scaling_factor: float = 32.0
    rope_ntk_alpha: float = 1.0
    rope_ntk_beta: float = 32.0
    initial_context_length: int = 4096
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0
    norm_eps: float = 1e-5
    aux_loss_coef: float = 0.01
    init_std: float = 0.02
    attn_impl: str = "sdpa"  # the default until bench/bench_gpu.py shows "flex" faster on a GPU
    expert_impl: str = "loop"  # the default until bench/bench_gpu.py shows "grouped" faster on a GPU
    # Width parametrization (gptoss/parametrization.py): "mup" transfers the lr across d_model from mup_base_width.
    parametrization: str = "standard"
    mup_base_width: int = 128
    mup_base_head_dim: int | None = None  # None: head_dim does not grow with width (heads are added instead)

    def __post_init__(self):
        validate_parametrization(self)
        for name, allowed in (("positions", POSITIONS), ("norm", NORMS), ("mlp", MLPS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("tie_embeddings", "sinks"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.intermediate_size is None:
            self.intermediate_size = mlp_intermediate_size(self.mlp, self.d_model, self.experts_per_token)
        require_positive(
            self,
            "vocab_size",
            "n_layers",
            "d_model",
            "n_heads",
            "n_kv_heads",
            "num_experts",
            "experts_per_token",
            "intermediate_size",
            "max_seq_len",
            "rope_theta",
            "rope_scaling_factor",
            "initial_context_length",
            "norm_eps",
            "swiglu_alpha",
            "swiglu_limit",
        )
        if self.sliding_window == 0 and not isinstance(self.sliding_window, bool):
            self.sliding_window = None  # 0 spells "no window" where None cannot be given (a flag, a grid axis)
        if self.sliding_window is not None:
            require_positive(self, "sliding_window")
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"n_heads must divide d_model={self.d_model} when head_dim is derived; "
                    f"got n_heads={self.n_heads} (or set head_dim explicitly)"
                )
            self.head_dim = self.d_model // self.n_heads
        require_positive(self, "head_dim")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even (rope rotates pairs of halves), got {self.head_dim}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_kv_heads must divide n_heads={self.n_heads}, got n_kv_heads={self.n_kv_heads}")
        if self.experts_per_token > self.num_experts:
            raise ValueError(
                f"experts_per_token must be in 1..num_experts={self.num_experts}, got {self.experts_per_token}"
            )
        if self.aux_loss_coef < 0:
            raise ValueError(f"aux_loss_coef must be >= 0, got {self.aux_loss_coef}")
        if self.layer_types is None:
            sliding = self.sliding_window is not None
            self.layer_types = [LAYER_TYPES[1 if i % 2 or not sliding else 0] for i in range(self.n_layers)]
        self.layer_types = list(self.layer_types)
        if len(self.layer_types) != self.n_layers or any(t not in LAYER_TYPES for t in self.layer_types):
            raise ValueError(
                f"layer_types must list n_layers={self.n_layers} entries from {LAYER_TYPES}, got {self.layer_types}"
            )
        if self.attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {', '.join(ATTN_IMPLS)}, got {self.attn_impl!r}")
        if self.expert_impl not in EXPERT_IMPLS:
            raise ValueError(f"expert_impl must be one of {', '.join(EXPERT_IMPLS)}, got {self.expert_impl!r}")
        if self.expert_impl == "grouped" and (self.d_model % 8 or self.intermediate_size % 8):
            # torch._grouped_mm needs 16-byte aligned rows of bf16 operands
            raise ValueError(
                f"expert_impl='grouped' needs d_model and intermediate_size multiples of 8, "
                f"got {self.d_model} and {self.intermediate_size}"
            )
        if self.sliding_window is None and LAYER_TYPES[0] in self.layer_types:
            raise ValueError(
                "layer_types has sliding_attention layers but sliding_window is None; give a window "
                "length or make every layer full_attention"
            )


def mlp_intermediate_size(mlp: str, d_model: int, experts_per_token: int) -> int:
    """The sizing rule that keeps ACTIVE MLP weights at GPT-2's 8 d^2 (d -> 4d -> d): gelu 4d; a SwiGLU expert has
    3 d I weights (gate_up d x 2I, down I x d), so I = 8d / (3 k) with k active experts (k = 1 for the dense swiglu),
    rounded to a multiple of 16."""
    if mlp == "gelu":
        return 4 * d_model
    return round(8 * d_model / (3 * (experts_per_token if mlp == "moe" else 1)) / 16) * 16


def make_norm(config: GptOssConfig) -> nn.Module:
    # LayerNorm (GPT-2) has a bias; RMSNorm has none.
    return (
        RMSNorm(config.d_model, config.norm_eps)
        if config.norm == "rmsnorm"
        else nn.LayerNorm(config.d_model, config.norm_eps)
    )


def make_mlp(config: GptOssConfig) -> nn.Module:
    if config.mlp == "moe":
        return MoEMLP(
            config.d_model,
            config.intermediate_size,
            config.num_experts,
            config.experts_per_token,
            config.swiglu_alpha,
            config.swiglu_limit,
            config.expert_impl,
        )
    if config.mlp == "swiglu":
        return SwiGLUMLP(config.d_model, config.intermediate_size, config.swiglu_alpha, config.swiglu_limit)
    return GeluMLP(config.d_model, config.intermediate_size)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x)); the MoE MLP also returns aux loss and load."""

    def __init__(self, config: GptOssConfig, layer_idx: int, rope: YarnRotaryEmbedding | None):
        super().__init__()
        sliding = config.layer_types[layer_idx] == "sliding_attention"
        self.window = config.sliding_window if sliding else None
        self.attn_norm = make_norm(config)
        self.attn = SinkAttention(
            config.d_model,
            config.n_heads,
            config.n_kv_heads,
            config.head_dim,
            self.window,
            rope,
            config.sinks,
            config.attn_impl,
            attention_scale(config, config.head_dim),
        )
        self.mlp_norm = make_norm(config)
        self.mlp = make_mlp(config)
        self.moe = config.mlp == "moe"

    def forward(self, x, positions, allowed, cache=None, layer_idx=0):
        x = x + self.attn(self.attn_norm(x), positions, allowed, cache, layer_idx)
        if not self.moe:
            return x + self.mlp(self.mlp_norm(x)), None, None
        h, aux, load = self.mlp(self.mlp_norm(x))
        return x + h, aux, load


def _reset_norm(norm: nn.Module) -> None:
    nn.init.ones_(norm.weight)
    if getattr(norm, "bias", None) is not None:  # LayerNorm
        nn.init.zeros_(norm.bias)


class GptOss(nn.Module):
    def __init__(self, config: GptOssConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        rope = None
        if config.positions == "learned":  # GPT-2's absolute position table, added to the token embedding
            self.position_embedding = nn.Embedding(config.max_seq_len, config.d_model)
        else:  # built once, shared by every layer (non-persistent buffers); plain RoPE is YaRN with factor 1
            factor = config.rope_scaling_factor if config.positions == "yarn" else 1.0
            rope = YarnRotaryEmbedding(
                config.head_dim,
                config.max_seq_len,
                config.rope_theta,
                factor,
                config.rope_ntk_alpha,
                config.rope_ntk_beta,
                config.initial_context_length,
            )
        self.blocks = nn.ModuleList(Block(config, i, rope) for i in range(config.n_layers))
        self.norm = make_norm(config)
        self.unembedding = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.last_aux_loss: torch.Tensor | None = None
        self.last_expert_load: list[torch.Tensor] = []
        self.last_ce_loss: torch.Tensor | None = None
        self.output_mult = output_mult(config)
        self.reset_parameters()
        if config.tie_embeddings:
            self.unembedding.weight = self.embedding.weight

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 style for every switch setting: N(0, 0.02) matrices (position table included), residual output
        projections (attn.out, the MLP's down/proj) scaled by 1/sqrt(2 * n_layers), zero biases and sinks, unit norm
        weights. Called before tying, so a tied head is the N(0, 0.02) embedding. Under mup the matrices inside the
        blocks start at std / sqrt(width_mult) (gptoss/parametrization.py)."""
        std = self.config.init_std
        hidden_std = std * hidden_init_mult(self.config)  # exactly std under standard
        residual_std = hidden_std / math.sqrt(2 * self.config.n_layers)
        nn.init.normal_(self.embedding.weight, std=std)
        nn.init.normal_(self.unembedding.weight, std=std)
        if self.config.positions == "learned":
            nn.init.normal_(self.position_embedding.weight, std=std)
        for block in self.blocks:
            nn.init.normal_(block.attn.qkv.weight, std=hidden_std)
            nn.init.zeros_(block.attn.qkv.bias)
            if block.attn.sinks is not None:
                nn.init.zeros_(block.attn.sinks)
            nn.init.normal_(block.attn.out.weight, std=residual_std)
            nn.init.zeros_(block.attn.out.bias)
            mlp = block.mlp
            if isinstance(mlp, MoEMLP):
                nn.init.normal_(mlp.router.weight, std=hidden_std)
                nn.init.zeros_(mlp.router.bias)
                nn.init.normal_(mlp.gate_up, std=hidden_std)
                nn.init.zeros_(mlp.gate_up_bias)
                nn.init.normal_(mlp.down, std=residual_std)
                nn.init.zeros_(mlp.down_bias)
            else:
                inner, outer = (mlp.gate_up, mlp.down) if isinstance(mlp, SwiGLUMLP) else (mlp.fc, mlp.proj)
                nn.init.normal_(inner.weight, std=hidden_std)
                nn.init.zeros_(inner.bias)
                nn.init.normal_(outer.weight, std=residual_std)
                nn.init.zeros_(outer.bias)
            for norm in (block.attn_norm, block.mlp_norm):
                _reset_norm(norm)
        _reset_norm(self.norm)

    def decay_param_names(self) -> list[str]:
        """Weight matrices (embeddings included, as nanoGPT). Not a plain ndim >= 2 rule: the stacked expert biases
        (E, n) are 2-D but are biases, so they stay undecayed with the other biases, norms and sinks."""
        return [name for name, p in self.named_parameters() if p.ndim >= 2 and not name.endswith("_bias")]

    def param_lr_multipliers(self) -> dict[str, float]:
        """Factor on the base lr per parameter name (all 1.0 under standard; gptoss/parametrization.py)."""
        return lr_multipliers(self, self.config)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None):
        """idx (B, T) -> logits (B, T, V); with targets (-100 = ignore) -> (None, CE + aux_loss_coef * aux): the
        training path fuses the unembedding into the loss and never forms the logits (call model(idx) for them).
        With a KVCache, idx continues the cached sequence (positions start at cache.seen)."""
        B, T = idx.shape
        start = cache.seen if cache is not None else 0
        if start + T > self.config.max_seq_len:
            raise ValueError(f"sequence length {start + T} exceeds max_seq_len={self.config.max_seq_len}")
        positions = torch.arange(start, start + T, device=idx.device)
        # One mask per attention type, shared by the layers (with a cache each layer builds its own from the cache).
        windows = {block.window for block in self.blocks}
        if self.config.attn_impl == "flex" and cache is None:
            masks = {window: sliding_block_mask(T, window, idx.device) for window in windows}
        elif cache is None and cpu_flash_applies(self.embedding.weight):
            masks = {window: None for window in windows}  # each layer runs causal flash attention, no mask
        else:
            masks = {
                window: None if cache is not None else causal_mask(positions, positions, window) for window in windows
            }
        x = self.embedding(idx)
        if self.config.positions == "learned":
            x = x + self.position_embedding(positions)
        aux_losses, loads = [], []
        for i, block in enumerate(self.blocks):
            x, aux, load = block(x, positions, masks[block.window], cache, i)
            if aux is not None:
                aux_losses.append(aux)
                loads.append(load.detach())
        if cache is not None:
            cache.seen += T
        x = self.norm(x)

        # Dense MLPs have no aux loss or expert load (logged as GPT-2's: None and []).
        aux_loss = torch.stack(aux_losses).mean() if aux_losses else None
        self.last_aux_loss = aux_loss.detach() if aux_losses else None
        self.last_expert_load = loads
        if self.output_mult != 1.0:  # mup's readout multiplier, on the d-wide side of the unembedding
            x = x * self.output_mult
        if targets is None:
            return self.unembedding(x)
        ce = linear_cross_entropy(x, self.unembedding.weight, targets, ignore_index=-100)
        self.last_ce_loss = ce.detach()
        return None, ce if aux_loss is None else ce + self.config.aux_loss_coef * aux_loss
