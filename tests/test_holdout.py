"""Predict-then-verify plumbing: --predict's spelling, which trials are held out, and N at a held-out size from the
meta-device accounting (equal to the count of the real model)."""

from __future__ import annotations

import pytest

from orchestrator.config import TrainConfig
from orchestrator.holdout import held_out_params, is_held_out, parse_predict, sweep_config_of
from orchestrator.sweep_plan import SweepConfig

SIZES = [{"d_model": 32, "n_heads": 2, "head_dim": 16}, {"d_model": 64, "n_heads": 4, "head_dim": 16}]


def test_predict_flag_and_held_out_names():
    assert parse_predict("L4-d256-h4,4194304") == {"size": "L4-d256-h4", "budget": 4194304}
    for bad in ("L4-d256-h4", "L4,4M", ",100", "a,b,c"):
        with pytest.raises(ValueError, match="--predict takes SIZE,BUDGET"):
            parse_predict(bad)
    points = {"v-gpt2-d64-h4-s0"}
    assert is_held_out("v-gpt2-d64-h4-s0", points) and is_held_out("v-gpt2-d64-h4-s0-D1024", points)
    assert not is_held_out("v-gpt2-d32-h2-s0-D1024", points)


def test_held_out_params_match_the_built_model_and_the_sweep_json_round_trips():
    from gptoss import build_model, count_params

    cfg = SweepConfig(
        base=TrainConfig(preset="debug", schedule="wsd"),
        grid={"variant": ["gpt2", "gptoss"]},
        sizes=SIZES,
        budgets=[1024, 2048],
        holdout={"size": "d64-h4-hd16", "budget": 2048},
        name="t",
    )
    again = sweep_config_of(cfg.to_dict())
    assert again.sizes == cfg.sizes and again.holdout == cfg.holdout
    got = held_out_params(cfg, "d64-h4-hd16", vocab_size=600)
    built = build_model("gptoss", "debug", d_model=64, n_heads=4, head_dim=16, vocab_size=600, intermediate_size=None)
    assert got["gptoss"] == count_params(built)["non_embedding"]
    assert set(got) == {"gpt2", "gptoss"} and got["gpt2"] != got["gptoss"]
