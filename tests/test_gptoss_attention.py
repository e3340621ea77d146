"""Tests for gptoss/attention.py: exact sink attention, GQA head mapping, masks and the KV cache."""

import math

import pytest
import torch

from gptoss import build_model
from gptoss.attention import KVCache, SinkAttention, causal_mask, cpu_causal_sink_attention, sink_attention
from gptoss.rope import YarnRotaryEmbedding


def explicit_sink_attention(q, k, v, sinks, allowed, scale):
    """The reference formulation: repeat kv heads, scores, mask, append the sink column, softmax, drop it."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~allowed, float("-inf"))
    B, H, Tq, _ = q.shape
    scores = torch.cat([scores, sinks.view(1, H, 1, 1).expand(B, H, Tq, 1)], dim=-1)
    return torch.softmax(scores, dim=-1)[..., :-1] @ v


def test_sink_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    for D, window, kv_heads in ((16, None, 6), (13 * 2, 5, 3), (8, 7, 2), (32, None, 1)):
        q = torch.randn(2, 6, 20, D)
        k, v = torch.randn(2, kv_heads, 20, D), torch.randn(2, kv_heads, 20, D)
        sinks = torch.randn(6) * 2
        pos = torch.arange(20)
        allowed = causal_mask(pos, pos, window)
        got = sink_attention(q, k, v, sinks, allowed, D**-0.5)
        torch.testing.assert_close(got, explicit_sink_attention(q, k, v, sinks, allowed, D**-0.5), rtol=1e-5, atol=1e-5)


def test_large_sink_shrinks_attention_output():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 10, 8) for _ in range(3))
    pos = torch.arange(10)
    allowed = causal_mask(pos, pos, None)
    plain = sink_attention(q, k, v, torch.full((2,), -30.0), allowed, 8**-0.5)
    sunk = sink_attention(q, k, v, torch.full((2,), 10.0), allowed, 8**-0.5)
    assert sunk.norm() < 0.01 * plain.norm()
    # Exact: with a sink the output is the plain one scaled by Z / (Z + e^s) per query.
    torch.testing.assert_close(
        plain, explicit_sink_attention(q, k, v, torch.full((2,), -1e9), allowed, 8**-0.5), rtol=1e-5, atol=1e-5
    )


def test_causal_mask_window_semantics():
    pos = torch.arange(6)
    allowed = causal_mask(pos, pos, 3)
    # query 5 sees keys 3, 4, 5 (window counts itself), nothing later
    assert allowed[5].tolist() == [False, False, False, True, True, True]
    assert allowed[1].tolist() == [True, True, False, False, False, False]


def make_attention(n_heads=4, n_kv_heads=2, window=None):
    rope = YarnRotaryEmbedding(8, 64, 150000.0, 32.0, 1.0, 32.0, 4096)
    torch.manual_seed(0)
    attn = SinkAttention(16, n_heads, n_kv_heads, 8, window, rope)
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
    return attn


def test_grouped_query_heads_use_kv_head_h_div_group():
    attn = make_attention(n_heads=4, n_kv_heads=2)
    captured = []
    attn.out.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].view(1, 7, 4, 8)))
    x = torch.randn(1, 7, 16)
    pos = torch.arange(7)
    attn(x, pos, causal_mask(pos, pos, None))
    with torch.no_grad():  # rows of kv head 1's keys in the fused [q (4 heads) | k (2) | v (2)] projection
        attn.qkv.weight[4 * 8 + 8 : 4 * 8 + 16] += 1.0
    attn(x, pos, causal_mask(pos, pos, None))
    before, after = captured
    torch.testing.assert_close(after[:, :, :2], before[:, :, :2])  # query heads 0, 1 read kv head 0
    assert (after[:, 1:, 2:] - before[:, 1:, 2:]).abs().max() > 1e-3  # heads 2, 3 read kv head 1


def test_kv_cache_keeps_only_window_for_sliding_layers():
    attn = make_attention(window=4)
    x = torch.randn(1, 11, 16)
    pos = torch.arange(11)
    full = attn(x, pos, causal_mask(pos, pos, 4))
    cache = KVCache(1)
    steps = [attn(x[:, :6], pos[:6], None, cache, 0)]
    for t in range(6, 11):
        steps.append(attn(x[:, t : t + 1], pos[t : t + 1], None, cache, 0))
        assert cache.layers[0][0].shape[2] == 4
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)
    assert math.isclose(attn.scale, 8**-0.5)


def test_sink_attention_runs_sdpa_flash_kernel_on_cpu_with_exact_gradients():
    # v is padded to q/k's padded head dim so that SDPA picks its fused CPU flash kernel rather than the math one.
    torch.manual_seed(0)
    q = torch.randn(2, 4, 16, 12, requires_grad=True)
    k, v = torch.randn(2, 2, 16, 12, requires_grad=True), torch.randn(2, 2, 16, 12, requires_grad=True)
    sinks = torch.randn(4, requires_grad=True)
    pos = torch.arange(16)
    allowed = causal_mask(pos, pos, 5)
    with torch.profiler.profile() as prof:
        got = sink_attention(q, k, v, sinks, allowed, 12**-0.5)
    kernels = {e.key for e in prof.key_averages()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in kernels
    assert "aten::_scaled_dot_product_attention_math" not in kernels
    upstream = torch.randn_like(got)
    grads = torch.autograd.grad(got, (q, k, v, sinks), upstream)
    want = explicit_sink_attention(q, k, v, sinks, allowed, 12**-0.5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(grads, torch.autograd.grad(want, (q, k, v, sinks), upstream)):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window,block", [(None, 128), (None, 5), (6, 128), (6, 4), (6, 6), (4, 7), (19, 8)])
@pytest.mark.parametrize("with_sinks", [True, False])
def test_cpu_causal_path_equals_explicit_attention_with_gradients(window, block, with_sinks):
    # Query blocks that do and do not divide T = 19, windows shorter and longer than a block, GQA 4 -> 2 heads.
    torch.manual_seed(0)
    q = torch.randn(2, 4, 19, 6, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, 2, 19, 6, dtype=torch.float64, requires_grad=True) for _ in range(2))
    sinks = (torch.randn(4, dtype=torch.float64) * 2).requires_grad_() if with_sinks else None
    pos = torch.arange(19)
    inputs = (q, k, v) + ((sinks,) if with_sinks else ())
    got = cpu_causal_sink_attention(q, k, v, sinks, window, 0.4, block)
    reference_sinks = sinks if with_sinks else torch.full((4,), -1e9, dtype=torch.float64)  # exp(-1e9) = 0
    want = explicit_sink_attention(q, k, v, reference_sinks, causal_mask(pos, pos, window), 0.4)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    upstream = torch.randn_like(got)
    for g, w in zip(torch.autograd.grad(got, inputs, upstream), torch.autograd.grad(want, inputs, upstream)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


def test_model_takes_the_cpu_causal_path_and_matches_the_masked_one():
    torch.manual_seed(0)
    model = build_model("gptoss", "debug", sliding_window=8)  # layer 0 windowed, layer 1 full
    idx = torch.randint(0, 512, (2, 24))
    pos = torch.arange(24)
    with torch.profiler.profile() as prof:
        _, loss = model(idx, idx)
    kernels = {e.key for e in prof.key_averages()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in kernels
    assert "aten::scaled_dot_product_attention" not in kernels  # the masked SDPA path was not taken
    x = torch.randn(2, 24, 64)
    for block in model.blocks:  # each layer: the default (mask None) against its explicit mask
        torch.testing.assert_close(
            block.attn(x, pos, None), block.attn(x, pos, causal_mask(pos, pos, block.window)), rtol=1e-5, atol=1e-5
        )
