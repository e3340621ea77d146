"""Tests for gptoss/presets.py: registry, builders, dict round trip, error messages."""

import pytest

from gptoss import ARCHS, PRESETS, build_config, config_from_dict, config_to_dict, list_presets


def test_every_preset_builds_a_valid_config():
    assert ARCHS == ("gptoss", "gpt2")
    for arch in ARCHS:
        assert {"debug", "cpu-tiny", "cpu-small", "seed-6l", "seed-8l", "seed-12l"} <= set(list_presets(arch))
        for preset in list_presets(arch):
            config = build_config(arch, preset)
            assert config.arch == arch
            assert config_from_dict(config_to_dict(config)) == config
    assert set(list_presets()) == set(PRESETS["gptoss"]) | set(PRESETS["gpt2"])


def test_seed_and_cpu_presets_match_the_brief():
    seed = build_config("gptoss", "seed-8l")
    assert (seed.n_layers, seed.d_model, seed.n_heads, seed.n_kv_heads) == (8, 1024, 8, 4)
    assert (seed.num_experts, seed.experts_per_token, seed.vocab_size) == (4, 1, 201088)
    tiny = build_config("gptoss", "cpu-tiny")
    # active MLP weights per layer ~ gpt2's 8 d^2: k * 3 * d * I
    assert abs(2 * 3 * 128 * tiny.intermediate_size / (8 * 128**2) - 1) < 0.05
    debug = build_config("gptoss")
    assert (debug.num_experts, debug.experts_per_token, debug.n_kv_heads, debug.head_dim) == (4, 2, 2, 16)


def test_overrides_and_errors():
    assert build_config("gpt2", "cpu-tiny", vocab_size=1000).vocab_size == 1000
    with pytest.raises(ValueError, match="gptoss, gpt2"):
        build_config("llama")
    with pytest.raises(ValueError, match="preset 'huge'.*cpu-small"):
        build_config("gpt2", "huge")
    with pytest.raises(ValueError, match="'sliding_window'.*allowed"):
        build_config("gpt2", sliding_window=4)
    with pytest.raises(ValueError, match="arch"):
        config_from_dict({"n_layers": 2})


@pytest.mark.slow
def test_compile_model_traces_the_moe_loop_whole_and_matches_eager():
    """The loop path's group sizes (.tolist()) and counts (bincount) used to split each MoE layer's graph; compiled
    with compile_model there is one graph (dynamo's own backend: the tracing is what is tested, not inductor)."""
    import torch
    from torch._dynamo.utils import counters

    from gptoss import build_model, compile_model

    torch.manual_seed(0)
    model = build_model("gptoss", "debug")
    x = torch.randint(0, 512, (2, 32))
    y = torch.randint(0, 512, (2, 32))
    _, eager_loss = model(x, y)
    eager_loss.backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch._dynamo.reset()
    counters.clear()
    # compile_model sets a process-wide dynamo option: the patch gives the other tests back the value they had
    with torch._dynamo.config.patch(capture_scalar_outputs=torch._dynamo.config.capture_scalar_outputs):
        _, loss = compile_model(model, backend="eager")(x, y)
        loss.backward()
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1
    assert torch.allclose(loss, eager_loss, atol=1e-6)
    for p, g in zip(model.parameters(), eager_grads):
        assert torch.allclose(p.grad, g, atol=1e-6)
