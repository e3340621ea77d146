"""Tests for gptoss/variants.py: the ladder is cumulative from GPT-2 to gptoss, leave-one-outs differ in one
component."""

import re

import pytest

from gptoss import build_config
from gptoss.variants import (
    LADDER,
    LEAVE_ONE_OUT,
    ONE_FACTOR,
    VARIANTS,
    canonical_variant,
    expand_variants,
    variant_overrides,
    variant_token,
)

SWITCHES = ("tie_embeddings", "positions", "norm", "mlp", "n_kv_heads", "sinks", "sliding_window")


def _switches(name):
    c = build_config("gptoss", "cpu-tiny", **variant_overrides(name))
    return {s: getattr(c, s) for s in SWITCHES}


def test_the_ladder_turns_on_one_component_per_rung_from_gpt2_to_gptoss():
    assert LADDER == ("gpt2", "+untied", "+rope", "+yarn", "+rmsnorm", "+swiglu", "+gqa", "+sinks", "+window", "gptoss")
    gpt2 = _switches("gpt2")
    assert gpt2 == dict(
        tie_embeddings=True,
        positions="learned",
        norm="layernorm",
        mlp="gelu",
        n_kv_heads=4,
        sinks=False,
        sliding_window=None,
    )
    assert _switches("gptoss") == dict(
        tie_embeddings=False, positions="yarn", norm="rmsnorm", mlp="moe", n_kv_heads=2, sinks=True, sliding_window=128
    )
    for prev, rung in zip(LADDER, LADDER[1:]):
        a, b = _switches(prev), _switches(rung)
        changed = [s for s in SWITCHES if a[s] != b[s]]
        assert len(changed) == 1, (rung, changed)
    assert variant_overrides("+moe") == {} and canonical_variant("+moe") == "gptoss"


def test_dense_rungs_and_no_moe_share_gpt2s_active_mlp_size():
    assert build_config("gptoss", "cpu-tiny", **variant_overrides("gpt2")).intermediate_size == 512
    assert build_config("gptoss", "cpu-tiny", **variant_overrides("+swiglu")).intermediate_size == 336
    assert build_config("gptoss", "cpu-tiny", **variant_overrides("gptoss-no-moe")).intermediate_size == 336
    assert build_config("gptoss", "cpu-tiny", **variant_overrides("gpt2")).max_seq_len == 1024  # GPT-2's table
    assert build_config("gptoss", "cpu-tiny", **variant_overrides("+rope")).max_seq_len == 4096


def test_each_leave_one_out_differs_from_gptoss_in_one_component():
    full = _switches("gptoss")
    for name in LEAVE_ONE_OUT:
        changed = [s for s in SWITCHES if _switches(name)[s] != full[s]]
        assert len(changed) == 1, (name, changed)
    assert _switches("gptoss-no-yarn")["positions"] == "rope" and _switches("gptoss-no-rope")["positions"] == "learned"


def test_gpt2_rope_differs_from_gpt2_in_positions_only():
    assert ONE_FACTOR == ("gpt2-rope",)
    gpt2, rope = _switches("gpt2"), _switches("gpt2-rope")
    assert [s for s in SWITCHES if gpt2[s] != rope[s]] == ["positions"] and rope["positions"] == "rope"
    plain, swapped = (build_config("gptoss", "cpu-tiny", **variant_overrides(v)) for v in ("gpt2", "gpt2-rope"))
    assert swapped.intermediate_size == plain.intermediate_size == 512  # the same dense GELU MLP
    assert swapped.max_seq_len == 4096  # no position table to bound it


def test_groups_tokens_and_errors():
    assert expand_variants(["ladder"]) == list(LADDER)
    assert expand_variants(["gpt2", "leave-one-out", "+moe"]) == ["gpt2", "gptoss", *LEAVE_ONE_OUT]
    for name in VARIANTS:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", variant_token(name))
    assert variant_token("+rope") == "p-rope" and variant_token("gptoss-no-moe") == "gptoss-no-moe"
    assert len({variant_token(n) for n in VARIANTS}) == len(VARIANTS)
    with pytest.raises(ValueError, match="unknown variant 'llama'; allowed: gpt2, \\+untied"):
        expand_variants(["llama"])
