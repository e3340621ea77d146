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
    assert abs(2 * 3 * 128 * tiny.intermediate_size / (8 * 128 ** 2) - 1) < 0.05
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
