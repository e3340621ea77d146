"""Nano GPT-OSS: config, transformer block and language model, in forward order."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .attention import KVCache, SinkAttention, causal_mask
from .moe import MoEMLP
from .norm import RMSNorm
from .output import linear_cross_entropy
from .rope import YarnRotaryEmbedding

LAYER_TYPES = ("sliding_attention", "full_attention")


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
    n_kv_heads: int = 4
    head_dim: int | None = None  # None -> d_model // n_heads (the reference fixes 64)
    num_experts: int = 4
    experts_per_token: int = 2
    intermediate_size: int = 336  # per expert
    max_seq_len: int = 4096  # longest context accepted; the rope table is this long
    sliding_window: int = 128
    layer_types: list[str] | None = None  # None -> sliding on even layers 0, 2, ..., full on odd ones
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

    def __post_init__(self):
        require_positive(self, "vocab_size", "n_layers", "d_model", "n_heads", "n_kv_heads", "num_experts",
                          "experts_per_token", "intermediate_size", "max_seq_len", "sliding_window", "rope_theta",
                          "rope_scaling_factor", "initial_context_length", "norm_eps")
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ValueError(f"n_heads must divide d_model={self.d_model} when head_dim is derived; "
                                 f"got n_heads={self.n_heads} (or set head_dim explicitly)")
            self.head_dim = self.d_model // self.n_heads
        require_positive(self, "head_dim")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even (rope rotates pairs of halves), got {self.head_dim}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_kv_heads must divide n_heads={self.n_heads}, got n_kv_heads={self.n_kv_heads}")
        if self.experts_per_token > self.num_experts:
            raise ValueError(f"experts_per_token must be in 1..num_experts={self.num_experts}, "
                             f"got {self.experts_per_token}")
        if self.aux_loss_coef < 0:
            raise ValueError(f"aux_loss_coef must be >= 0, got {self.aux_loss_coef}")
        if self.layer_types is None:
            self.layer_types = [LAYER_TYPES[i % 2] for i in range(self.n_layers)]
        self.layer_types = list(self.layer_types)
        if len(self.layer_types) != self.n_layers or any(t not in LAYER_TYPES for t in self.layer_types):
            raise ValueError(f"layer_types must list n_layers={self.n_layers} entries from {LAYER_TYPES}, "
                             f"got {self.layer_types}")


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + moe(norm(x))."""

    def __init__(self, config: GptOssConfig, layer_idx: int, rope: YarnRotaryEmbedding):
        super().__init__()
        sliding = config.layer_types[layer_idx] == "sliding_attention"
        self.window = config.sliding_window if sliding else None
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = SinkAttention(config.d_model, config.n_heads, config.n_kv_heads, config.head_dim,
                                  self.window, rope)
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = MoEMLP(config.d_model, config.intermediate_size, config.num_experts, config.experts_per_token,
                          config.swiglu_alpha, config.swiglu_limit)

    def forward(self, x, positions, allowed, cache=None, layer_idx=0):
        x = x + self.attn(self.attn_norm(x), positions, allowed, cache, layer_idx)
        h, aux, load = self.mlp(self.mlp_norm(x))
        return x + h, aux, load


class GptOss(nn.Module):
    def __init__(self, config: GptOssConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        # Built once, shared by every layer (non-persistent buffers, moved with the model).
        rope = YarnRotaryEmbedding(config.head_dim, config.max_seq_len, config.rope_theta, config.rope_scaling_factor,
                                   config.rope_ntk_alpha, config.rope_ntk_beta, config.initial_context_length)
        self.blocks = nn.ModuleList(Block(config, i, rope) for i in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.unembedding = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.last_aux_loss: torch.Tensor | None = None
        self.last_expert_load: list[torch.Tensor] = []
        self.last_ce_loss: torch.Tensor | None = None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 style: N(0, 0.02) matrices, residual output projections scaled by 1/sqrt(2 * n_layers), zero biases
        and sinks, unit norm weights."""
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        nn.init.normal_(self.embedding.weight, std=std)
        nn.init.normal_(self.unembedding.weight, std=std)
        for block in self.blocks:
            nn.init.normal_(block.attn.qkv.weight, std=std)
            nn.init.zeros_(block.attn.qkv.bias)
            nn.init.zeros_(block.attn.sinks)
            nn.init.normal_(block.attn.out.weight, std=residual_std)
            nn.init.zeros_(block.attn.out.bias)
            nn.init.normal_(block.mlp.router.weight, std=std)
            nn.init.zeros_(block.mlp.router.bias)
            nn.init.normal_(block.mlp.gate_up, std=std)
            nn.init.zeros_(block.mlp.gate_up_bias)
            nn.init.normal_(block.mlp.down, std=residual_std)
            nn.init.zeros_(block.mlp.down_bias)
            for norm in (block.attn_norm, block.mlp_norm):
                nn.init.ones_(norm.weight)
        nn.init.ones_(self.norm.weight)

    def decay_param_names(self) -> list[str]:
        """Weight matrices (embeddings included, as nanoGPT). Not a plain ndim >= 2 rule: the stacked expert biases
        (E, n) are 2-D but are biases, so they stay undecayed with the other biases, norms and sinks."""
        return [name for name, p in self.named_parameters() if p.ndim >= 2 and not name.endswith("_bias")]

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
        masks = {window: None if cache is not None else causal_mask(positions, positions, window)
                 for window in {block.window for block in self.blocks}}
        x = self.embedding(idx)
        aux_losses, loads = [], []
        for i, block in enumerate(self.blocks):
            x, aux, load = block(x, positions, masks[block.window], cache, i)
            aux_losses.append(aux)
            loads.append(load.detach())
        if cache is not None:
            cache.seen += T
        x = self.norm(x)

        aux_loss = torch.stack(aux_losses).mean()
        self.last_aux_loss = aux_loss.detach()
        self.last_expert_load = loads
        if targets is None:
            return self.unembedding(x)
        ce = linear_cross_entropy(x, self.unembedding.weight, targets, ignore_index=-100)
        self.last_ce_loss = ce.detach()
        return None, ce + self.config.aux_loss_coef * aux_loss
