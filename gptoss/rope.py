"""Rotary position embedding with GPT-OSS's YaRN scaling (NTK-by-parts frequencies, concentration on cos and sin)."""

from __future__ import annotations

import math

import torch
from torch import nn


def yarn_inv_freq_and_concentration(
    head_dim: int,
    theta: float,
    scaling_factor: float,
    ntk_alpha: float,
    ntk_beta: float,
    initial_context_length: int,
) -> tuple[torch.Tensor, float]:
    """Per-pair inverse frequencies (head_dim // 2,) and the YaRN attention concentration.

    Follows the openai/gpt-oss reference: pairs that rotate more than ntk_beta times over the initial context keep
    their original frequency (extrapolation), pairs that rotate fewer than ntk_alpha times are divided by the scaling
    factor (interpolation), with a linear ramp in between. The ramp bounds are not rounded (HF calls this
    truncate=False). fp32 throughout, as the reference computes it.
    """
    freq = theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    if scaling_factor <= 1.0:
        return 1.0 / freq, 1.0
    concentration = 0.1 * math.log(scaling_factor) + 1.0
    d_half = head_dim / 2
    low = d_half * math.log(initial_context_length / (ntk_beta * 2 * math.pi)) / math.log(theta)
    high = d_half * math.log(initial_context_length / (ntk_alpha * 2 * math.pi)) / math.log(theta)
    ramp = ((torch.arange(int(d_half), dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    keep_original = 1 - ramp  # 1 for fast-rotating (high frequency) pairs
    inv_freq = (1.0 / (scaling_factor * freq)) * ramp + (1.0 / freq) * keep_original
    return inv_freq, concentration


class YarnRotaryEmbedding(nn.Module):
    """Precomputed cos/sin tables for positions [0, max_seq_len); applied to the two halves of each head."""

    def __init__(
        self,
        head_dim: int,
        max_seq_len: int,
        theta: float,
        scaling_factor: float,
        ntk_alpha: float,
        ntk_beta: float,
        initial_context_length: int,
    ):
        super().__init__()
        inv_freq, concentration = yarn_inv_freq_and_concentration(
            head_dim, theta, scaling_factor, ntk_alpha, ntk_beta, initial_context_length
        )
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)
        # Non-persistent: derived from the config, so checkpoints stay weights only.
        self.register_buffer("cos", angles.cos() * concentration, persistent=False)
        self.register_buffer("sin", angles.sin() * concentration, persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x: (B, heads, T, head_dim); positions: (T,) absolute positions."""
        return _Rotate.apply(x, self.cos[positions].to(x.dtype), self.sin[positions].to(x.dtype))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)  # non-interleaved: pair i is (x[i], x[i + head_dim/2])
    return torch.cat((torch.addcmul(x1 * cos, x2, sin, value=-1), torch.addcmul(x2 * cos, x1, sin)), dim=-1)


class _Rotate(torch.autograd.Function):
    """Rotation of each pair by its angle. It is orthogonal, so its backward is the rotation by minus the angle:
    five kernels each way, where autograd through the formula records about twice as many."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return _rotate(grad, cos, -sin), None, None
