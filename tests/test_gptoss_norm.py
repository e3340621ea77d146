"""Tests for gptoss/norm.py: the hand-written RMSNorm backward equals autograd through the plain formula."""

import torch

from gptoss.norm import RMSNorm


def reference_rms_norm(x, weight, eps):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


def test_forward_and_gradients_match_the_plain_formula():
    torch.manual_seed(0)
    norm = RMSNorm(24, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = (torch.randn(3, 7, 24) * 3).requires_grad_()
    upstream = torch.randn(3, 7, 24)
    got = norm(x)
    want = reference_rms_norm(x, norm.weight, 1e-5)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    for g, w in zip(
        torch.autograd.grad(got, (x, norm.weight), upstream), torch.autograd.grad(want, (x, norm.weight), upstream)
    ):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_bf16_input_keeps_its_dtype_and_uses_fp32_statistics():
    torch.manual_seed(0)
    norm = RMSNorm(16)
    x = (torch.randn(4, 16) * 100).bfloat16().requires_grad_()
    y = norm(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), reference_rms_norm(x.float(), norm.weight, 1e-5), rtol=1e-2, atol=1e-2)
    y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and norm.weight.grad.dtype == torch.float32
