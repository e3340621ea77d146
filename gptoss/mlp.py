"""Dense MLPs for the component ladder: GPT-2's GELU MLP and one dense GPT-OSS clamped-SwiGLU expert."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .moe import swiglu


class GeluMLP(nn.Module):
    """d -> I -> d with biases and GPT-2's tanh-approximated GELU (parameter names as in model_gpt2.MLP)."""

    def __init__(self, d_model: int, intermediate_size: int):
        super().__init__()
        self.fc = nn.Linear(d_model, intermediate_size)
        self.proj = nn.Linear(intermediate_size, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class SwiGLUMLP(nn.Module):
    """One GPT-OSS expert as a dense MLP: gate_up d -> 2I (interleaved glu/linear columns), clamped SwiGLU,
    down I -> d."""

    def __init__(self, d_model: int, intermediate_size: int, alpha: float = 1.702, limit: float = 7.0):
        super().__init__()
        self.alpha, self.limit = alpha, limit
        self.gate_up = nn.Linear(d_model, 2 * intermediate_size)
        self.down = nn.Linear(intermediate_size, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(swiglu(self.gate_up(x), self.alpha, self.limit))
