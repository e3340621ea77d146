"""Tests for MoEMLP's grouped-GEMM path (gptoss/moe.py, impl="grouped"): the same results as the loop, padded group
layout, and one graph (no host sync). torch._grouped_mm runs here on the CPU in fp32; the CUDA bf16 kernel is
compared with the loop by bench/bench_gpu.py and by the CUDA-only test below."""

import copy

import pytest
import torch

from gptoss import build_model
from gptoss.moe import GROUP_ALIGN, MoEMLP, padded_group_rows


def moe_pair(num_experts, top_k, d=64, inter=48, dtype=torch.float32, device="cpu"):
    torch.manual_seed(0)
    loop = MoEMLP(d, inter, num_experts, top_k).to(device, dtype)
    with torch.no_grad():
        for p in loop.parameters():
            p.normal_(0, 0.1)
    grouped = copy.deepcopy(loop)
    grouped.impl = "grouped"
    return loop, grouped


@pytest.mark.parametrize("num_experts, top_k", [(4, 2), (4, 1), (8, 2), (1, 1)])
def test_grouped_equals_loop_forward_and_backward(num_experts, top_k):
    loop, grouped = moe_pair(num_experts, top_k)
    x = torch.randn(3, 17, 64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    out, aux, load = loop(x)
    out2, aux2, load2 = grouped(x2)
    torch.testing.assert_close(out2, out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(aux2, aux)
    torch.testing.assert_close(load2, load)
    w = torch.randn_like(out)
    ((out * w).sum() + aux).backward()
    ((out2 * w).sum() + aux2).backward()
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(loop.named_parameters(), grouped.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-5, msg=name)


def test_expert_without_tokens_gets_exactly_zero_gradient():
    loop, grouped = moe_pair(4, 1)
    with torch.no_grad():
        grouped.router.bias.copy_(torch.tensor([0.0, 0.0, -1e4, 0.0]))  # nobody picks expert 2
    out, aux, _ = grouped(torch.randn(2, 10, 64))
    (out.square().sum() + aux).backward()
    assert grouped.gate_up.grad[2].abs().max() == 0 and grouped.down_bias.grad[2].abs().max() == 0
    assert grouped.gate_up.grad[0].abs().max() > 0


def test_padded_group_rows_layout():
    counts = torch.tensor([3, 0, 9, 1])
    sorted_expert = torch.repeat_interleave(torch.arange(4), counts)
    rows, ends, total = padded_group_rows(sorted_expert, counts, 8)
    assert total == 16 + 4 * 8  # round_up(13, 8) + E * 8
    # groups start at 0, 8, 8, 24 (expert 2 needs two blocks of 8); the last one runs to the end of the buffer
    assert rows.tolist() == [0, 1, 2, *range(8, 17), 24]
    assert ends.dtype == torch.int32 and ends.tolist() == [8, 8, 24, total]
    assert all(e % GROUP_ALIGN == 0 for e in ends.tolist())


def test_grouped_forward_traces_into_one_graph_and_loop_needs_scalar_capture():
    # fullgraph=True fails on any graph break.
    loop, grouped = moe_pair(4, 2, dtype=torch.bfloat16)  # the grouped GEMM's traced form requires bf16
    x = torch.randn(2, 16, 64, dtype=torch.bfloat16)
    out, _, _ = torch.compile(grouped, backend="eager", fullgraph=True)(x)
    assert out.shape == x.shape
    # The loop reads its group sizes to the host (counts.tolist()): plain dynamo breaks the graph there;
    # gptoss.compile_model captures them as symbolic sizes instead (tests/test_gptoss_presets.py).
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    with torch._dynamo.config.patch(capture_scalar_outputs=False):
        torch.compile(loop, backend="eager")(x)
    assert any("Data dependent" in reason for reason in counters["graph_break"])


def test_expert_impl_is_validated_and_reaches_every_layer():
    model = build_model("gptoss", "debug", expert_impl="grouped")
    assert all(block.mlp.impl == "grouped" for block in model.blocks)
    with pytest.raises(ValueError, match="expert_impl must be one of loop, grouped"):
        build_model("gptoss", "debug", expert_impl="fast")
    with pytest.raises(ValueError, match="multiples of 8"):
        build_model("gptoss", "debug", expert_impl="grouped", intermediate_size=60)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the grouped GEMM kernel needs CUDA")
def test_grouped_equals_loop_under_cuda_bf16_autocast():
    loop, grouped = moe_pair(4, 2, d=256, inter=512, device="cuda")
    x = torch.randn(4, 128, 256, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, _, _ = loop(x)
        out2, _, _ = grouped(x)
    torch.testing.assert_close(out2.float(), out.float(), rtol=2e-2, atol=2e-2)


def test_gptoss_with_grouped_experts_trains_like_the_loop():
    torch.manual_seed(0)
    loop = build_model("gptoss", "debug")
    grouped = build_model("gptoss", "debug", expert_impl="grouped")
    grouped.load_state_dict(loop.state_dict())
    idx = torch.randint(0, 512, (2, 40))
    _, loss = loop(idx, idx)
    _, loss2 = grouped(idx, idx)
    torch.testing.assert_close(loss2, loss, rtol=1e-6, atol=1e-6)
    loss.backward()
    loss2.backward()
    for (name, p), q in zip(loop.named_parameters(), grouped.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_whole_gptoss_forward_is_one_graph_with_grouped_experts():
    # The loop's per-layer host sync splits the model into a graph per layer; the grouped path does not.
    model = build_model("gptoss", "debug", expert_impl="grouped")
    idx = torch.randint(0, 512, (2, 32))

    def loss(idx):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(idx, idx)[1]

    assert torch.isfinite(torch.compile(loss, backend="eager", fullgraph=True)(idx))
