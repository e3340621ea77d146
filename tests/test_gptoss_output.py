"""Tests for gptoss/output.py: the chunked linear + cross-entropy equals the plain formulation, loss and gradients,
for both architectures, and the vocabulary padding it uses internally is invisible."""

import pytest
import torch
import torch.nn.functional as F

from gptoss import build_model, count_params, export_hf
from gptoss.output import VOCAB_PAD, linear_cross_entropy, padded_size


def plain_loss(hidden, weight, targets):
    return F.cross_entropy(
        F.linear(hidden, weight).float().reshape(-1, weight.shape[0]), targets.reshape(-1), ignore_index=-100
    )


def grads(loss_fn, hidden, weight, targets, grad_scale=1.0):
    hidden, weight = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    loss = loss_fn(hidden, weight, targets)
    (loss * grad_scale).backward()
    return loss.detach(), hidden.grad, weight.grad


def test_padded_size_rounds_up_to_the_multiple():
    assert VOCAB_PAD == 64
    assert padded_size(10571) == 10624 and padded_size(10624) == 10624 and padded_size(1) == 64


@pytest.mark.parametrize("vocab", [512, 517, 10571])  # a multiple of 64 (no padding), and two that get padded
@pytest.mark.parametrize("chunk_rows", [7, 256])  # 7 does not divide the 2 x 45 rows: a short last chunk
def test_loss_and_gradients_equal_the_plain_path(vocab, chunk_rows):
    torch.manual_seed(0)
    hidden = torch.randn(2, 45, 32)
    weight = torch.randn(vocab, 32) * 0.3
    targets = torch.randint(0, vocab, (2, 45))
    targets[0, :9] = -100  # ignored positions count neither in the mean nor in the gradients
    targets[1, -1] = vocab - 1  # the last real row must be reachable
    fused = grads(lambda h, w, t: linear_cross_entropy(h, w, t, chunk_rows=chunk_rows), hidden, weight, targets, 0.37)
    plain = grads(plain_loss, hidden, weight, targets, 0.37)
    for got, want in zip(fused, plain):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_padded_columns_never_enter_the_softmax():
    # Every real logit very negative: a padded column at logit 0 would take almost all the probability mass,
    # driving the loss up by about 100 nats, if it were not excluded.
    torch.manual_seed(0)
    vocab = 100  # padded to 128
    weight = -torch.ones(vocab, 4)
    hidden = torch.full((6, 4), 25.0) + torch.randn(6, 4)
    targets = torch.randint(0, vocab, (6,))
    fused = grads(linear_cross_entropy, hidden, weight, targets)
    plain = grads(plain_loss, hidden, weight, targets)
    assert fused[0].item() < 10
    for got, want in zip(fused, plain):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_loss_beyond_fp32_underflow_is_still_exact():
    # Target logits about 120 below the rest: p_t = exp(-120) is 0 in fp32, so -log(softmax[t]) would be inf;
    # the loss (a diverging run's) must still come out as the plain path's ~120 nats, gradients included.
    torch.manual_seed(0)
    weight = torch.randn(50, 8) * 0.1
    weight[:5] = 0.0
    weight[:5, 0] = -12.0
    hidden = torch.zeros(6, 8)
    hidden[:, 0] = 10.0
    targets = torch.randint(0, 5, (6,))
    fused = grads(linear_cross_entropy, hidden, weight, targets)
    plain = grads(plain_loss, hidden, weight, targets)
    assert 100 < fused[0].item() < 200
    for got, want in zip(fused, plain):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_no_grad_gives_the_loss_and_retained_graph_runs_backward_twice():
    torch.manual_seed(0)
    hidden, weight = torch.randn(20, 16, requires_grad=True), torch.randn(77, 16, requires_grad=True)
    targets = torch.randint(0, 77, (20,))
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, targets), plain_loss(hidden, weight, targets))
    loss = linear_cross_entropy(hidden, weight, targets)
    loss.backward(retain_graph=True)
    once = weight.grad.clone()
    loss.backward()
    torch.testing.assert_close(weight.grad, 2 * once)


def test_all_targets_ignored_gives_nan_like_cross_entropy():
    hidden, weight = torch.randn(4, 8), torch.randn(10, 8)
    targets = torch.full((4,), -100)
    assert torch.isnan(linear_cross_entropy(hidden, weight, targets))
    assert torch.isnan(plain_loss(hidden, weight, targets))


@pytest.mark.parametrize(
    "arch,overrides",
    [
        ("gptoss", dict(aux_loss_coef=0.0)),  # aux off so the loss is the CE alone, gradients included
        ("gpt2", {}),  # tied: the unembedding's gradient adds to the embedding's
        ("gpt2", dict(tie_embeddings=False)),
    ],
)
@pytest.mark.parametrize("vocab", [512, 517])
def test_model_loss_path_equals_cross_entropy_of_its_logits(arch, overrides, vocab):
    torch.manual_seed(0)
    model = build_model(arch, vocab_size=vocab, **overrides)
    idx = torch.randint(0, vocab, (2, 24))
    targets = torch.roll(idx, -1, 1)
    targets[:, -1] = -100

    model.zero_grad()
    none, loss = model(idx, targets)
    assert none is None
    loss.backward()
    fused = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    logits = model(idx)
    assert logits.shape == (2, 24, vocab)  # the user-visible vocabulary, never the padded one
    plain = F.cross_entropy(logits.view(-1, vocab), targets.view(-1), ignore_index=-100)
    plain.backward()
    torch.testing.assert_close(loss.detach(), plain.detach(), rtol=1e-5, atol=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(fused[name], p.grad, rtol=1e-5, atol=1e-5, msg=name)


def test_padding_leaves_parameters_counts_and_export_at_the_real_vocabulary(tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model = build_model("gptoss", vocab_size=517)
    idx = torch.randint(0, 517, (1, 10))
    model(idx, idx)[1].backward()
    assert model.unembedding.weight.shape[0] == 517 and model.unembedding.weight.grad.shape[0] == 517
    counts = count_params(model)
    assert counts["embedding"] == 2 * 517 * model.config.d_model
    export_hf(model, tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    assert tensors["lm_head.weight"].shape[0] == 517 and tensors["model.embed_tokens.weight"].shape[0] == 517
