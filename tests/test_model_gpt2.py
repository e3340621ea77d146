"""Tests for gptoss/model_gpt2.py: forward/loss contract, causality, tying, dropout, config validation."""

import pytest
import torch

from gptoss import build_config, build_model


def test_forward_loss_and_logging_attributes():
    torch.manual_seed(0)
    model = build_model("gpt2")
    idx = torch.randint(0, 512, (2, 16))
    targets = idx.clone()
    targets[0, :4] = -100
    logits = model(idx)
    assert logits.shape == (2, 16, 512)
    none, loss = model(idx, targets)
    assert none is None  # the loss path never forms the logits
    ce = torch.nn.functional.cross_entropy(logits.view(-1, 512), targets.view(-1), ignore_index=-100)
    torch.testing.assert_close(loss, ce)
    torch.testing.assert_close(model.last_ce_loss, ce.detach())
    assert model.last_aux_loss is None and model.last_expert_load == []
    loss.backward()
    assert model.config.arch == "gpt2"


def test_tied_by_default_and_untie_option():
    tied = build_model("gpt2")
    assert tied.lm_head.weight is tied.token_embedding.weight
    untied = build_model("gpt2", tie_embeddings=False)
    assert untied.lm_head.weight is not untied.token_embedding.weight


def test_causality():
    torch.manual_seed(0)
    model = build_model("gpt2").eval()
    idx = torch.randint(0, 512, (1, 20))
    changed = idx.clone()
    changed[0, 9] = (changed[0, 9] + 1) % 512
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :9], b[:, :9], rtol=0, atol=0)
    assert (a[:, 9:] - b[:, 9:]).abs().max() > 1e-4


def test_dropout_only_in_training():
    torch.manual_seed(0)
    model = build_model("gpt2", dropout=0.5)
    idx = torch.randint(0, 512, (1, 8))
    assert not torch.equal(model(idx), model(idx))
    model.eval()
    assert torch.equal(model(idx), model(idx))


def test_sequence_longer_than_position_table_raises():
    with pytest.raises(ValueError, match="max_seq_len"):
        build_model("gpt2", max_seq_len=8)(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.parametrize(
    "overrides,field",
    [
        (dict(n_heads=3), "n_heads"),
        (dict(d_model=-4), "d_model"),
        (dict(dropout=1.5), "dropout"),
        (dict(n_kv_heads=2), "n_kv_heads"),
        (dict(num_experts=2), "num_experts"),
        (dict(max_seq_len=0), "max_seq_len"),
    ],
)
def test_bad_configs_raise_value_error_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        build_config("gpt2", "debug", **overrides)
