"""Tests for gptoss/flex_attention.py: the sliding-window block mask and exact sinks through the LSE, in forward on
the CPU (FlexAttention has no CPU backward in torch 2.13; CUDA gradients are checked by bench/bench_gpu.py)."""

import pytest
import torch

from gptoss import build_model
from gptoss.attention import causal_mask, sink_attention
from gptoss.flex_attention import BLOCK_SIZE, flex_sink_attention, sliding_block_mask

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


@pytest.mark.parametrize(
    "T, window, heads, kv_heads, D",
    [(300, 64, 8, 4, 32), (200, None, 6, 2, 16), (130, 129, 4, 4, 64), (257, 128, 4, 1, 32)],
)
def test_flex_sink_attention_equals_sdpa_sink_attention(T, window, heads, kv_heads, D):
    torch.manual_seed(0)
    q = torch.randn(2, heads, T, D)
    k, v = torch.randn(2, kv_heads, T, D), torch.randn(2, kv_heads, T, D)
    sinks = torch.randn(heads) * 2
    pos = torch.arange(T)
    want = sink_attention(q, k, v, sinks, causal_mask(pos, pos, window), D**-0.5)
    got = flex_sink_attention(q, k, v, sinks, sliding_block_mask(T, window, "cpu"), D**-0.5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_large_sink_scales_output_by_sigmoid_of_lse():
    # With sink -> -inf the output is plain attention; a huge sink drives it to zero.
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 64, 16) for _ in range(3))
    mask = sliding_block_mask(64, None, "cpu")
    plain = flex_sink_attention(q, k, v, torch.full((2,), -1e4), mask, 0.25)
    reference = (
        torch.softmax(
            (q @ k.transpose(-1, -2) * 0.25).masked_fill(
                ~causal_mask(torch.arange(64), torch.arange(64), None), float("-inf")
            ),
            -1,
        )
        @ v
    )
    torch.testing.assert_close(plain, reference, rtol=1e-5, atol=1e-5)
    assert flex_sink_attention(q, k, v, torch.full((2,), 40.0), mask, 0.25).abs().max() < 1e-6


def test_block_mask_skips_key_blocks_outside_the_window():
    T = 4 * BLOCK_SIZE
    windowed, full = sliding_block_mask(T, BLOCK_SIZE, "cpu"), sliding_block_mask(T, None, "cpu")
    # Query block i sees key blocks i-1 and i with a window of one block (its diagonal block alone for i = 0) ...
    kv_blocks = windowed.kv_num_blocks + (windowed.full_kv_num_blocks if windowed.full_kv_num_blocks is not None else 0)
    assert kv_blocks.flatten().tolist() == [1, 2, 2, 2]
    # ... and all blocks up to its own without one.
    kv_full = full.kv_num_blocks + (full.full_kv_num_blocks if full.full_kv_num_blocks is not None else 0)
    assert kv_full.flatten().tolist() == [1, 2, 3, 4]
    assert sliding_block_mask(T, BLOCK_SIZE, "cpu") is windowed  # built once per shape


def test_gptoss_flex_forward_equals_sdpa_forward_and_refuses_cpu_training():
    torch.manual_seed(0)
    sdpa = build_model("gptoss", "debug", sliding_window=24).eval()
    flex = build_model("gptoss", "debug", sliding_window=24, attn_impl="flex").eval()
    flex.load_state_dict(sdpa.state_dict())
    with torch.no_grad():
        for block in sdpa.blocks:
            block.attn.sinks.normal_(0, 2)  # non-trivial sinks
        flex.load_state_dict(sdpa.state_dict())
        idx = torch.randint(0, 512, (2, 150))
        torch.testing.assert_close(flex(idx), sdpa(idx), rtol=1e-5, atol=1e-5)
    flex.train()
    with pytest.raises(ValueError, match="attn_impl='flex' cannot train on the CPU"):
        flex(idx, idx)


def test_attn_impl_is_validated():
    with pytest.raises(ValueError, match="attn_impl must be one of sdpa, flex"):
        build_model("gptoss", "debug", attn_impl="flash")
