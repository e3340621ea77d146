"""Tests for gptoss/rope.py: YaRN frequencies and concentration as in the openai/gpt-oss reference."""

import math

import torch

from gptoss.rope import YarnRotaryEmbedding, yarn_inv_freq_and_concentration


def test_yarn_frequencies_ramp_from_original_to_interpolated():
    inv_freq, concentration = yarn_inv_freq_and_concentration(64, 150000.0, 32.0, 1.0, 32.0, 4096)
    assert math.isclose(concentration, 0.1 * math.log(32) + 1)
    original = 1.0 / 150000.0 ** (torch.arange(0, 64, 2).float() / 64)
    # ramp bounds for head_dim 64: low ~ 8.09, high ~ 17.4 (pairs, not rounded)
    torch.testing.assert_close(inv_freq[:9], original[:9])  # fast pairs keep their frequency
    torch.testing.assert_close(inv_freq[18:], original[18:] / 32)  # slow pairs are interpolated
    assert torch.all(inv_freq[9:18] < original[9:18]) and torch.all(inv_freq[9:18] > original[9:18] / 32)


def test_rotation_uses_halves_and_scales_by_concentration():
    rope = YarnRotaryEmbedding(4, 8, 150000.0, 32.0, 1.0, 32.0, 4096)
    x = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 1, 4)
    c = 0.1 * math.log(32) + 1
    torch.testing.assert_close(rope(x, torch.tensor([0])).flatten(), torch.tensor([c, 0.0, 0.0, 0.0]))
    out = rope(x, torch.tensor([1])).flatten()
    # pair 0 is (x[0], x[2]): rotating it by angle a gives (c cos a, 0, c sin a, 0)
    assert out[1] == 0 and out[3] == 0 and math.isclose(out[0] ** 2 + out[2] ** 2, c * c, rel_tol=1e-5)


def test_rotation_backward_equals_autograd_of_the_formula():
    # The hand-written backward (rotation by minus the angle) against autograd through cos/sin arithmetic.
    torch.manual_seed(0)
    rope = YarnRotaryEmbedding(8, 64, 150000.0, 32.0, 1.0, 32.0, 4096).double()
    x = torch.randn(2, 3, 10, 8, dtype=torch.float64, requires_grad=True)
    positions = torch.arange(5, 15)
    got = rope(x, positions)
    cos, sin = rope.cos[positions], rope.sin[positions]
    x1, x2 = x.chunk(2, dim=-1)
    want = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    upstream = torch.randn_like(got)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        torch.autograd.grad(got, x, upstream)[0], torch.autograd.grad(want, x, upstream)[0], rtol=1e-12, atol=1e-12
    )
