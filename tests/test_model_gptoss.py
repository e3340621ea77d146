"""Tests for gptoss/model_gptoss.py: config validation, forward/loss contract, causality, sliding window, sinks."""

import pytest
import torch

from gptoss import GptOssConfig, build_config, build_model


def random_ids(T, B=2, V=512, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def test_forward_shapes_losses_and_logging_attributes():
    torch.manual_seed(0)
    model = build_model("gptoss")
    idx = random_ids(20)
    logits = model(idx)
    assert logits.shape == (2, 20, 512)
    targets = idx.clone()
    targets[:, :5] = -100
    none, loss = model(idx, targets)
    assert none is None  # the loss path never forms the logits
    ce = torch.nn.functional.cross_entropy(logits.view(-1, 512), targets.view(-1), ignore_index=-100)
    torch.testing.assert_close(model.last_ce_loss, ce.detach())
    torch.testing.assert_close(loss.detach(), ce.detach() + 0.01 * model.last_aux_loss)
    assert not model.last_aux_loss.requires_grad and model.last_aux_loss.ndim == 0
    assert len(model.last_expert_load) == 2
    for load in model.last_expert_load:
        assert load.shape == (4,) and abs(load.sum().item() - 1) < 1e-6
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_init_is_deterministic_under_manual_seed_and_sinks_start_at_zero():
    torch.manual_seed(3)
    a = build_model("gptoss")
    torch.manual_seed(3)
    b = build_model("gptoss")
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
    assert torch.all(a.blocks[0].attn.sinks == 0) and torch.all(a.blocks[0].attn.qkv.bias == 0)
    assert a.blocks[1].attn.window is None and a.blocks[0].attn.window == 128  # sliding on even layers


def test_causality():
    torch.manual_seed(0)
    model = build_model("gptoss", sliding_window=8).eval()
    idx = random_ids(30)
    changed = idx.clone()
    changed[:, 17] = (changed[:, 17] + 1) % 512
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :17], b[:, :17], rtol=0, atol=0)
    assert (a[:, 17:] - b[:, 17:]).abs().max() > 1e-4


@pytest.mark.parametrize("layer_type,reaches", [("sliding_attention", False), ("full_attention", True)])
def test_sliding_window_limits_what_a_token_sees(layer_type, reaches):
    window = 8
    torch.manual_seed(0)
    model = build_model("gptoss", n_layers=1, layer_types=[layer_type], sliding_window=window).eval()
    idx = random_ids(24)
    last = 23
    with torch.no_grad():
        base = model(idx)[:, last]
        for back, visible in ((window, reaches), (window - 1, True)):  # key at last - back
            changed = idx.clone()
            changed[:, last - back] = (changed[:, last - back] + 1) % 512
            moved = (model(changed)[:, last] - base).abs().max().item()
            assert (moved > 1e-5) == visible, (back, moved)


def test_large_sink_shrinks_attention_contribution():
    torch.manual_seed(0)
    model = build_model("gptoss", n_layers=1).eval()
    attn = model.blocks[0].attn
    x = torch.randn(1, 10, 64)
    pos = torch.arange(10)
    from gptoss.attention import causal_mask

    with torch.no_grad():
        attn.out.bias.zero_()
        plain = attn(x, pos, causal_mask(pos, pos, None)).norm()
        attn.sinks.fill_(12.0)
        sunk = attn(x, pos, causal_mask(pos, pos, None)).norm()
    assert sunk < 0.01 * plain


def test_sequence_longer_than_max_seq_len_raises():
    model = build_model("gptoss", max_seq_len=16)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(random_ids(17))


@pytest.mark.parametrize(
    "overrides,field",
    [
        (dict(n_heads=3, head_dim=None), "n_heads"),
        (dict(n_kv_heads=3), "n_kv_heads"),
        (dict(experts_per_token=5), "experts_per_token"),
        (dict(d_model=0), "d_model"),
        (dict(num_experts=-1), "num_experts"),
        (dict(intermediate_size=0), "intermediate_size"),
        (dict(sliding_window=-1), "sliding_window"),
        (dict(head_dim=7), "head_dim"),
        (dict(swiglu_limit=0.0), "swiglu_limit"),  # the SwiGLU backward nudges its clamp bounds one ulp out
        (dict(swiglu_alpha=0.0), "swiglu_alpha"),  # and divides by alpha
        (dict(layer_types=["full_attention"]), "layer_types"),
        (dict(bogus=1), "bogus"),
    ],
)
def test_bad_configs_raise_value_error_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        build_config("gptoss", "debug", **overrides)


def test_config_derives_head_dim_and_layer_types():
    config = GptOssConfig(d_model=96, n_heads=6, n_kv_heads=3, n_layers=3)
    assert config.head_dim == 16 and config.arch == "gptoss"
    assert config.layer_types == ["sliding_attention", "full_attention", "sliding_attention"]


def test_bf16_autocast_trains_and_decay_names_skip_biases():
    torch.manual_seed(0)
    model = build_model("gptoss")
    idx = random_ids(24)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(idx)
        _, loss = model(idx, idx)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    names = model.decay_param_names()
    assert "blocks.0.mlp.gate_up" in names and "blocks.0.mlp.gate_up_bias" not in names
    assert "blocks.0.attn.sinks" not in names and "unembedding.weight" in names


def test_explicit_head_dim_need_not_divide_d_model():
    model = build_model("gptoss", d_model=48, n_heads=4, n_kv_heads=2, head_dim=16)
    assert model(random_ids(5)).shape == (2, 5, 512)


# ----------------------------------------------------------------------------------------------
# Component switches (the GPT-2 -> GPT-OSS ladder).


def _gpt2_to_gptoss_state(gpt2_state: dict) -> dict:
    """GPT2's parameter names -> GptOss's with every switch at its GPT-2 setting (same layouts, renamed)."""
    renames = [
        ("token_embedding.", "embedding."),
        ("lm_head.", "unembedding."),
        ("ln_f.", "norm."),
        (".ln_1.", ".attn_norm."),
        (".ln_2.", ".mlp_norm."),
    ]
    out = {}
    for name, tensor in gpt2_state.items():
        for old, new in renames:
            name = name.replace(old, new)
        out[name] = tensor
    return out


def test_every_switch_at_gpt2_computes_gpt2s_logits_given_the_same_weights():
    from gptoss.variants import variant_overrides

    torch.manual_seed(0)
    gpt2 = build_model("gpt2", max_seq_len=256)  # debug: V 512, 2 layers, d 64, 4 heads, tied
    with torch.no_grad():  # weights well away from init, so biases and LayerNorm affine terms all matter
        for p in gpt2.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model = build_model("gptoss", **{**variant_overrides("gpt2"), "max_seq_len": 256})
    state = _gpt2_to_gptoss_state(gpt2.state_dict())
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state)
    assert model.unembedding.weight is model.embedding.weight
    idx = random_ids(40)
    gpt2.eval(), model.eval()
    with torch.no_grad():
        theirs, ours = gpt2(idx), model(idx)
        assert (ours - theirs).abs().max().item() < 1e-5
        # Teeth: one switch off the GPT-2 setting (RMSNorm drops the LayerNorm biases) moves the logits.
        other = build_model("gptoss", **{**variant_overrides("gpt2"), "max_seq_len": 256, "norm": "rmsnorm"})
        other.load_state_dict({k: v for k, v in state.items() if "norm.bias" not in k})
        assert (other(idx) - theirs).abs().max().item() > 1e-3
    _, loss = model(idx, idx)
    assert model.last_aux_loss is None and model.last_expert_load == []
    torch.testing.assert_close(loss, model.last_ce_loss)


def test_every_switch_at_gptoss_is_todays_gptoss():
    from gptoss.variants import variant_overrides

    assert build_config("gptoss", "cpu-tiny", **variant_overrides("gptoss")) == build_config("gptoss", "cpu-tiny")
    config = build_config("gptoss")
    assert (config.tie_embeddings, config.positions, config.norm, config.mlp, config.sinks) == (
        False,
        "yarn",
        "rmsnorm",
        "moe",
        True,
    )


@pytest.mark.parametrize(
    "switches",
    [
        dict(positions="rope"),
        dict(positions="learned", tie_embeddings=True),
        dict(norm="layernorm", mlp="gelu"),
        dict(mlp="swiglu", intermediate_size=None),
        dict(n_kv_heads=None, sinks=False),
        dict(sliding_window=None),
        dict(positions="learned", mlp="gelu", intermediate_size=None, sinks=False, n_kv_heads=1),
    ],
)
def test_any_mix_trains_and_decodes_with_the_cache_as_without(switches):
    from gptoss import generate

    torch.manual_seed(0)
    model = (
        build_model("gptoss", sliding_window=4, **switches)
        if "sliding_window" not in switches
        else build_model("gptoss", **switches)
    )
    idx = random_ids(12)
    logits, loss = model(idx, idx)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())
    model.eval()
    assert generate(model, [1, 2, 3], 10, temperature=0) == generate(
        model, [1, 2, 3], 10, temperature=0, use_cache=False
    )


def test_switches_shape_the_model():
    learned = build_model(
        "gptoss", positions="learned", tie_embeddings=True, norm="layernorm", sinks=False, sliding_window=None
    )
    assert learned.position_embedding.weight.shape == (1024, 64) and learned.blocks[0].attn.rope is None
    assert learned.unembedding.weight is learned.embedding.weight
    assert isinstance(learned.norm, torch.nn.LayerNorm) and learned.blocks[0].attn.sinks is None
    assert all(block.window is None for block in learned.blocks)
    no_window = build_config("gptoss", sliding_window=0)  # 0 spells None where None cannot be given (flags, axes)
    assert no_window.sliding_window is None and no_window.layer_types == ["full_attention"] * 2
    assert "embedding.weight" in learned.decay_param_names() and "unembedding.weight" not in learned.decay_param_names()
    yarn, rope = build_model("gptoss"), build_model("gptoss", positions="rope")
    # YaRN's concentration (0.1 ln 32 + 1 = 1.347 on cos and sin) scales q.k by ~1.81 even at position 0.
    assert abs(yarn.blocks[0].attn.rope.cos[0, 0].item() ** 2 - 1.813) < 1e-3
    assert rope.blocks[0].attn.rope.cos[0, 0].item() == 1.0
    assert not hasattr(yarn, "position_embedding")


def test_dense_mlps_follow_the_active_size_rule():
    # gelu 4d; a dense SwiGLU 8d/3 (3 d I weights ~ 8 d^2); the MoE 8d/(3k) per expert: same active MLP weights.
    for mlp, k in (("gelu", 2), ("swiglu", 2), ("moe", 2), ("moe", 1)):
        config = build_config("gptoss", "cpu-tiny", mlp=mlp, experts_per_token=k, intermediate_size=None)
        d, i = config.d_model, config.intermediate_size
        active = 8 * d * d if mlp == "gelu" else 3 * d * i * (k if mlp == "moe" else 1)
        assert abs(active / (8 * d * d) - 1) < 0.05, (mlp, k, i)
    assert (
        build_config("gptoss", "cpu-tiny", mlp="moe", intermediate_size=None).intermediate_size
        == build_config("gptoss", "cpu-tiny").intermediate_size
        == 176
    )


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(positions="alibi"), "positions must be one of learned, rope, yarn"),
        (dict(norm="batchnorm"), "norm must be one of"),
        (dict(mlp="relu"), "mlp must be one of gelu, swiglu, moe"),
        (dict(sinks="yes"), "sinks must be true or false"),
        (dict(tie_embeddings=1), "tie_embeddings must be true or false"),
        (dict(sliding_window=None, layer_types=["sliding_attention", "full_attention"]), "sliding_window is None"),
    ],
)
def test_bad_switches_raise_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_config("gptoss", "debug", **overrides)
