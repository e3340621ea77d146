"""Tests for gptoss/moe.py: grouped expert compute, the Switch aux loss, gradients of idle experts."""

import pytest
import torch

from gptoss.moe import MoEMLP, deinterleave, load_balancing_loss, swiglu


def make_moe(num_experts=4, k=2, d=16, inter=8, seed=0):
    torch.manual_seed(seed)
    moe = MoEMLP(d, inter, num_experts, k)
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0, 0.5)  # biases too, and big enough to hit the +-7 clamps
    return moe


def naive_moe(moe: MoEMLP, x: torch.Tensor) -> torch.Tensor:
    """Per-token loop straight from the definition."""
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        logits = x[n] @ moe.router.weight.T + moe.router.bias
        top = torch.topk(logits, moe.experts_per_token)
        weights = torch.softmax(top.values, dim=-1)
        for w, e in zip(weights, top.indices):
            h = x[n] @ moe.gate_up[e] + moe.gate_up_bias[e]
            glu, lin = h[0::2].clamp(max=7.0), h[1::2].clamp(-7.0, 7.0)
            act = glu * torch.sigmoid(1.702 * glu) * (lin + 1)
            out[n] += w * (act @ moe.down[e] + moe.down_bias[e])
    return out


def test_moe_matches_naive_per_token_loop():
    for k in (1, 2, 3):
        moe = make_moe(k=k)
        x = torch.randn(2, 13, 16)
        out, _, load = moe(x)
        torch.testing.assert_close(out, naive_moe(moe, x.reshape(-1, 16)).reshape(2, 13, 16), rtol=1e-5, atol=1e-5)
        assert load.shape == (4,) and abs(load.sum().item() - 1) < 1e-6


def test_dense_single_expert_path_matches_naive():
    moe = make_moe(num_experts=1, k=1)
    x = torch.randn(7, 16)
    torch.testing.assert_close(moe(x)[0], naive_moe(moe, x), rtol=1e-5, atol=1e-5)


def test_swiglu_clamps_and_interleaving():
    gate_up = torch.tensor([[10.0, 10.0, -10.0, -10.0]])  # (glu, linear) pairs: (10, 10), (-10, -10)
    out = swiglu(gate_up)
    expected_first = 7.0 * torch.sigmoid(torch.tensor(1.702 * 7.0)) * 8.0  # glu clamped to 7, linear to 7
    expected_second = -10.0 * torch.sigmoid(torch.tensor(-17.02)) * -6.0  # glu not clamped below, linear to -7
    torch.testing.assert_close(out, torch.stack([expected_first, expected_second])[None])


def autograd_swiglu(gate_up, alpha=1.702, limit=7.0, interleaved=True):
    """The formula as written (GPT-OSS's reference), differentiated by autograd."""
    glu, linear = (gate_up[..., 0::2], gate_up[..., 1::2]) if interleaved else gate_up.chunk(2, dim=-1)
    glu, linear = glu.clamp(max=limit), linear.clamp(min=-limit, max=limit)
    return glu * torch.sigmoid(alpha * glu) * (linear + 1)


@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6), (torch.bfloat16, 1e-2)])
def test_swiglu_backward_equals_autograd_of_the_formula(interleaved, dtype, tol):
    # Values beyond both clamps and exactly on them: the clamps pass gradient at their bounds, as torch.clamp does.
    torch.manual_seed(0)
    gate_up = torch.randn(3, 5, 16) * 6
    gate_up[0, 0, :6] = torch.tensor([7.0, 7.0, -7.0, -7.0, 7.0, -7.0])
    gate_up = gate_up.to(dtype).requires_grad_()
    got, want = swiglu(gate_up, interleaved=interleaved), autograd_swiglu(gate_up, interleaved=interleaved)
    upstream = torch.randn_like(got)
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    got_grad, want_grad = (torch.autograd.grad(y, gate_up, upstream)[0] for y in (got, want))
    torch.testing.assert_close(got_grad, want_grad, rtol=tol, atol=tol)
    assert ((got_grad == 0) == (want_grad == 0)).all()  # the same gradient mask, bounds included


def test_aux_loss_is_one_under_uniform_routing():
    # Zero logits: every mean router prob is 1/E; assignments spread evenly by construction.
    E = 4  # experts; each token picks 2 of them below
    idx = torch.tensor([[0, 1], [2, 3], [1, 2], [3, 0]])
    loss, fraction = load_balancing_loss(torch.zeros(4, E), idx, E)
    assert loss.item() == 1.0
    torch.testing.assert_close(fraction, torch.full((E,), 0.25))
    # Through the module: token n's router logit peaks at expert n, so top-1 sends one token to each expert and
    # the softmax means are uniform by symmetry though each row is not.
    moe = make_moe(num_experts=4, k=1, d=4)
    with torch.no_grad():
        moe.router.weight.copy_(3.0 * torch.eye(4))
        moe.router.bias.zero_()
    _, aux, load = moe(torch.eye(4))
    torch.testing.assert_close(aux, torch.tensor(1.0))
    torch.testing.assert_close(load, torch.full((4,), 0.25))


def test_aux_loss_grows_with_imbalance_and_has_router_gradient():
    moe = make_moe(num_experts=4, k=1)
    with torch.no_grad():
        moe.router.bias.copy_(torch.tensor([10.0, 0.0, 0.0, 0.0]))  # everyone picks expert 0
    _, aux, load = moe(torch.randn(32, 16))
    assert load[0].item() == 1.0 and aux.item() > 3.0  # -> E * 1 * ~1 = 4 at the extreme
    aux.backward()
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0


def test_expert_with_no_tokens_still_gets_zero_gradient():
    moe = make_moe(num_experts=4, k=1)
    with torch.no_grad():
        moe.router.bias.copy_(torch.tensor([0.0, 50.0, 50.0, -50.0]))  # expert 3 never wins, expert 0 almost never
    out, aux, load = moe(torch.randn(10, 16))
    assert load[3].item() == 0.0
    (out.sum() + aux).backward()
    for name in ("gate_up", "gate_up_bias", "down", "down_bias"):
        grad = getattr(moe, name).grad
        assert grad is not None and grad.shape == getattr(moe, name).shape
        assert torch.all(grad[3] == 0)
    assert moe.gate_up.grad[1].abs().sum() > 0


def test_gradients_match_naive_per_token_loop():
    # The per-expert weights are unbound views of the stacks; their gradients must land in the right slices.
    moe = make_moe(num_experts=4, k=2)
    x = torch.randn(19, 16, requires_grad=True)
    upstream = torch.randn(19, 16)
    out, _, _ = moe(x)
    got = torch.autograd.grad(out, [x, *moe.parameters()], upstream)
    want = torch.autograd.grad(naive_moe(moe, x), [x, *moe.parameters()], upstream, allow_unused=True)
    names = ["x"] + [name for name, _ in moe.named_parameters()]
    for name, g, w in zip(names, got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5, msg=name)


def test_deinterleaved_layout_gives_the_same_swiglu():
    gate_up = torch.randn(5, 12) * 5  # beyond the clamps too
    halves = deinterleave(gate_up)
    torch.testing.assert_close(halves, torch.cat([gate_up[:, 0::2], gate_up[:, 1::2]], dim=1), rtol=0, atol=0)
    torch.testing.assert_close(swiglu(halves, interleaved=False), swiglu(gate_up), rtol=0, atol=0)
