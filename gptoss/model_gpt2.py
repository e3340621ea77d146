"""GPT-2 baseline: config, attention, MLP, block and language model, numerically matching HF GPT2LMHeadModel."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .attention import KVCache, causal_mask
from .model_gptoss import require_positive
from .output import linear_cross_entropy
from .parametrization import (
    attention_scale,
    hidden_init_mult,
    lr_multipliers,
    output_mult,
    validate_parametrization,
)


@dataclass
class GPT2Config:
    arch: ClassVar[str] = "gpt2"

    vocab_size: int = 201088
    n_layers: int = 6
    d_model: int = 256
    n_heads: int = 8
    intermediate_size: int | None = None  # None -> 4 * d_model
    max_seq_len: int = 1024  # size of the learned position table
    dropout: float = 0.0
    tie_embeddings: bool = True
    norm_eps: float = 1e-5
    init_std: float = 0.02
    # Width parametrization (gptoss/parametrization.py): "mup" transfers the lr across d_model from mup_base_width.
    parametrization: str = "standard"
    mup_base_width: int = 128
    mup_base_head_dim: int | None = None  # None: head_dim does not grow with width (heads are added instead)

    def __post_init__(self):
        validate_parametrization(self)
        require_positive(self, "vocab_size", "n_layers", "d_model", "n_heads", "max_seq_len", "norm_eps")
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads must divide d_model={self.d_model}, got n_heads={self.n_heads}")
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.d_model
        require_positive(self, "intermediate_size")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        self.n_heads, self.head_dim, self.dropout = config.n_heads, config.head_dim, config.dropout
        self.scale = attention_scale(config, config.head_dim)  # None: SDPA's default head_dim**-0.5
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache | None = None, layer_idx: int = 0):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2) for t in self.qkv(x).split(C, dim=-1))
        dropout = self.dropout if self.training else 0.0
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout, scale=self.scale)
        else:
            k, v, k_pos = cache.update(layer_idx, k, v, positions, None)
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=causal_mask(positions, k_pos, None), dropout_p=dropout, scale=self.scale
            )
        return self.resid_dropout(self.out(y.transpose(1, 2).reshape(B, T, C)))


class MLP(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.intermediate_size)
        self.proj = nn.Linear(config.intermediate_size, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        # GPT-2's "gelu_new" is the tanh approximation.
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, positions, cache=None, layer_idx=0):
        x = x + self.attn(self.ln_1(x), positions, cache, layer_idx)
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.max_seq_len, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.output_mult = output_mult(config)
        self.reset_parameters()
        if config.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight
        # Same attributes as GptOss so the trainer can log without checking the arch.
        self.last_aux_loss: torch.Tensor | None = None
        self.last_expert_load: list[torch.Tensor] = []
        self.last_ce_loss: torch.Tensor | None = None

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """N(0, 0.02) weights, residual projections scaled by 1/sqrt(2 * n_layers), zero biases, unit LayerNorms.
        Under mup the matrices inside the blocks start at std / sqrt(width_mult) (gptoss/parametrization.py)."""
        std = self.config.init_std
        hidden_std = std * hidden_init_mult(self.config)  # exactly std under standard
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.ndim == 1:  # LayerNorm weights
                nn.init.ones_(p)
            elif name.endswith(("attn.out.weight", "mlp.proj.weight")):
                nn.init.normal_(p, std=hidden_std / math.sqrt(2 * self.config.n_layers))
            elif name.startswith("blocks."):
                nn.init.normal_(p, std=hidden_std)
            else:
                nn.init.normal_(p, std=std)

    def decay_param_names(self) -> list[str]:
        """Weight matrices (the tied embedding once, under token_embedding.weight); no biases or LayerNorms."""
        return [name for name, p in self.named_parameters() if p.ndim >= 2]

    def param_lr_multipliers(self) -> dict[str, float]:
        """Factor on the base lr per parameter name (all 1.0 under standard; gptoss/parametrization.py)."""
        return lr_multipliers(self, self.config)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None):
        """idx (B, T) -> logits (B, T, V); with targets (-100 = ignore) -> (None, mean CE): the training path fuses
        the unembedding into the loss and never forms the logits (call model(idx) for them)."""
        B, T = idx.shape
        start = cache.seen if cache is not None else 0
        if start + T > self.config.max_seq_len:
            raise ValueError(f"sequence length {start + T} exceeds max_seq_len={self.config.max_seq_len}")
        positions = torch.arange(start, start + T, device=idx.device)
        x = self.dropout(self.token_embedding(idx) + self.position_embedding(positions))
        for i, block in enumerate(self.blocks):
            x = block(x, positions, cache, i)
        if cache is not None:
            cache.seen += T
        x = self.ln_f(x)
        self.last_aux_loss, self.last_expert_load = None, []
        if self.output_mult != 1.0:  # mup's readout multiplier, on the d-wide side of the lm head
            x = x * self.output_mult
        if targets is None:
            return self.lm_head(x)
        loss = linear_cross_entropy(x, self.lm_head.weight, targets, ignore_index=-100)
        self.last_ce_loss = loss.detach()
        return None, loss
