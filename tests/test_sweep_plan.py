"""Sweep planning with sizes: shapes expand whole and are named in abbreviation order, names without sizes do not
change, bad shapes and holdouts are refused at construction in one line naming the field."""

from __future__ import annotations

import pytest

from orchestrator.config import TrainConfig
from orchestrator.sizes import parse_compact, shape_label, size_of_model
from orchestrator.sweep_plan import SweepConfig, expand_grid

SHAPES = [{"d_model": 64, "n_layers": 4, "n_heads": 4}, "L4-d128-h8", {"name": "deep", "d_model": 64, "n_layers": 8}]


def _sweep(grid=None, **kw) -> SweepConfig:
    base = TrainConfig(**{"preset": "debug", **kw.pop("base", {})})
    return SweepConfig(base=base, grid=grid or {}, name="t", **kw)


def test_sizes_cross_the_other_axes_and_apply_each_shape_whole():
    points = expand_grid(_sweep({"variant": ["gpt2", "gptoss"], "seed": [0, 1]}, sizes=SHAPES))
    assert len(points) == 2 * 2 * 3  # shapes are not crossed with each other
    names = {p.name: p.size for p in points}
    assert names["v-gpt2-L4-d64-h4-s0"] == "L4-d64-h4"
    assert names["v-gptoss-L4-d128-h8-s1"] == "L4-d128-h8"
    assert names["v-gpt2-L8-d64-s1"] == "deep"
    point = next(p for p in points if p.name == "v-gptoss-L4-d128-h8-s1")
    tcfg = point.train_config(_sweep().base, "unused", 1)
    assert tcfg.model_overrides == {"n_layers": 4, "d_model": 128, "n_heads": 8, "intermediate_size": None}
    assert tcfg.seed == 1


def test_names_without_sizes_are_unchanged_and_gpt2_drops_gptoss_fields():
    assert [p.name for p in expand_grid(_sweep({"arch": ["gpt2"], "n_layers": [2, 4]}))] == ["gpt2-L2", "gpt2-L4"]
    shapes = [{"d_model": 32, "n_heads": 2, "head_dim": 16}, {"d_model": 64, "n_heads": 4, "head_dim": 16}]
    points = expand_grid(_sweep({"arch": ["gpt2", "gptoss"]}, sizes=shapes))
    assert [p.name for p in points] == ["gpt2-d32-h2", "gpt2-d64-h4", "gptoss-d32-h2-hd16", "gptoss-d64-h4-hd16"]


def test_compact_spelling_labels_and_matching_a_trials_model():
    assert parse_compact("d64-L4-h4-hd16") == {"d_model": 64, "n_layers": 4, "n_heads": 4, "head_dim": 16}
    cfg = _sweep(sizes=["d64-L4-h4", {"n_layers": 4, "d_model": 128, "n_heads": 8}])
    assert [shape_label(s) for s in cfg.sizes] == ["L4-d64-h4", "L4-d128-h8"]
    assert size_of_model({"n_layers": 4, "d_model": 128, "n_heads": 8, "vocab_size": 9}, cfg.sizes) == "L4-d128-h8"
    assert size_of_model({"n_layers": 2, "d_model": 128, "n_heads": 8}, cfg.sizes) is None


@pytest.mark.parametrize(
    "sizes, grid, message",
    [
        ([{"d_model": "64"}], {}, "size field 'd_model' takes integer values, got '64'"),
        ([{"width": 64}], {}, "size field 'width' is not a model field"),
        ([{"name": "x"}], {}, "sets no model field"),
        (["L4-dd"], {}, "part 'dd' is not an abbreviation and a number"),
        ([{"d_model": 64}, "d64"], {}, "size d64 is given twice"),
        ([{"d_model": 64, "n_layers": 2}], {"n_layers": [2, 4]}, "n_layers are also grid axes"),
        ({"d_model": 64}, {}, "sizes must be a non-empty list"),
    ],
)
def test_bad_shapes_are_refused_in_one_line(sizes, grid, message):
    with pytest.raises(ValueError, match=message) as exc:
        _sweep(grid, sizes=sizes)
    assert "\n" not in str(exc.value)


def test_holdout_names_a_size_and_a_budget_of_the_sweep():
    base = dict(schedule="wsd")
    cfg = _sweep(sizes=SHAPES, budgets=[1024, 2048], holdout={"size": "L4-d128-h8", "budget": 2048}, base=base)
    assert cfg.holdout == {"size": "L4-d128-h8", "budget": 2048}
    by_shape = _sweep(sizes=SHAPES, budgets=[1024, 2048], holdout={"size": "d128-L4-h8", "budget": 1024}, base=base)
    assert by_shape.holdout == {"size": "L4-d128-h8", "budget": 1024}
    with pytest.raises(ValueError, match="holdout size 'L2-d8' is none of the sweep's sizes"):
        _sweep(sizes=SHAPES, budgets=[1024, 2048], holdout={"size": "L2-d8", "budget": 1024}, base=base)
    with pytest.raises(ValueError, match="holdout budget 4096 is not one of the sweep's budgets"):
        _sweep(sizes=SHAPES, budgets=[1024, 2048], holdout={"size": "deep", "budget": 4096}, base=base)
    with pytest.raises(ValueError, match="holdout needs sizes"):
        _sweep(budgets=[1024, 2048], holdout={"size": "deep", "budget": 1024}, base=base)


def test_a_wider_gptoss_shape_sizes_its_mlp_at_its_own_width():
    from gptoss import build_config

    cfg = _sweep({"variant": ["gptoss", "gpt2"]}, sizes=[{"d_model": 64, "n_heads": 2}, {"d_model": 192, "n_heads": 6}])
    cfg.base = TrainConfig(preset="cpu-tiny")
    widths = {}
    for p in expand_grid(cfg):
        tcfg = p.train_config(cfg.base, "unused", 1)
        widths[p.name] = build_config("gptoss", "cpu-tiny", **tcfg.resolved_model_overrides()).intermediate_size
    # moe top-2: 8d/(3*2) rounded to 16; the gpt2 variant's gelu: 4d. cpu-tiny's own 176 is the rule at d128.
    assert widths == {"v-gptoss-d64-h2": 80, "v-gptoss-d192-h6": 256, "v-gpt2-d64-h2": 256, "v-gpt2-d192-h6": 768}
    pinned = _sweep(sizes=[{"d_model": 64, "n_heads": 2, "intermediate_size": 96}])
    assert expand_grid(pinned)[0].train_config(pinned.base, "u", 1).model_overrides["intermediate_size"] == 96


def test_sizes_flag_replaces_the_default_grids_depths():
    from orchestrator.sweep_file import build_sweep_config

    cfg = build_sweep_config(None, {}, {"sizes": ["L4-d64-h4", "L4-d128-h8"]}, {"preset": "debug"})
    assert "n_layers" not in cfg.grid and cfg.grid["arch"] == ["gptoss", "gpt2"]
    names = [p.name for p in expand_grid(cfg)]
    assert "gpt2-L4-d64-h4" in names and "gptoss-L4-d128-h8-E8" in names
