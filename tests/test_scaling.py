"""Scaling analysis: power-law fits, interpolation on a baseline's curve and data/compute multipliers with intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.budget_report import extrapolation_note, interval_cell
from orchestrator.ladder import t95
from orchestrator.scaling import (
    extrapolations,
    fit_power_law,
    model_curves,
    multipliers,
    pick_baseline,
    tokens_to_reach,
    trend,
)

BUDGETS = [2**20, 2**21, 2**22, 2**23, 2**24, 2**25]


def test_the_fit_recovers_a_known_law():
    d = np.array(BUDGETS, dtype=float)
    fit = fit_power_law(d, 1.7 + 410.0 * d**-0.42)
    assert fit["E"] == pytest.approx(1.7, abs=1e-3)
    assert fit["B"] == pytest.approx(410.0, rel=1e-2)
    assert fit["beta"] == pytest.approx(0.42, abs=1e-3)
    assert fit["rmse"] < 1e-6
    assert fit_power_law(d[:3], 1.7 + 410.0 * d[:3] ** -0.42) is None  # fewer than 4 budgets: no fit


def test_the_fit_recovers_a_law_through_noise():
    rng = np.random.default_rng(1)
    d = np.geomspace(1e6, 1e9, 8)
    fit = fit_power_law(d, 2.0 + 80.0 * d**-0.3 + rng.normal(0, 1e-3, len(d)))
    assert fit["E"] == pytest.approx(2.0, abs=0.05) and fit["beta"] == pytest.approx(0.3, abs=0.05)


def _rows(model, arch, losses_by_seed, budgets, fpt=1e6, layers=4):
    return [
        dict(
            model=model,
            arch=arch,
            n_layers=layers,
            seed=seed,
            budget=b,
            tokens=b,
            train_flops=fpt * b,
            final_val_loss=loss,
            val_bpb=loss / 3,
        )
        for seed, losses in losses_by_seed.items()
        for b, loss in zip(budgets, losses)
    ]


def test_in_a_size_sweep_each_model_is_measured_against_the_baseline_of_its_own_shape():
    # Three gpt2 sizes at one depth: each gptoss size reads its multiplier on the gpt2 curve of its width, not on
    # none (ambiguous by depth) and not on another width's.
    rows = []
    for width, shift in ((64, 0.3), (128, 0.2), (192, 0.1)):
        for model, arch, extra in ((f"gpt2-d{width}", "gpt2", 0.0), (f"gptoss-d{width}", "gptoss", -0.2)):
            for r in _rows(model, arch, {0: [4.0 + shift + extra, 3.0 + shift + extra]}, BUDGETS[:2]):
                rows.append(dict(r, d_model=width, n_heads=width // 32))
    curves = model_curves(rows)
    for width in (64, 128, 192):
        assert pick_baseline(curves, curves[f"gptoss-d{width}"], "gpt2").model == f"gpt2-d{width}"
    no_width = model_curves([{k: v for k, v in r.items() if k != "d_model"} for r in rows if "d64" not in r["model"]])
    assert pick_baseline(no_width, no_width["gptoss-d128"], "gpt2") is None  # two at one depth, no shape: ambiguous


def test_interpolation_in_log_log_and_extrapolation_is_marked():
    tokens, loss = [1e6, 4e6], [4.0, 1.0]  # log-log line: loss = 4 * (D / 1e6)^-1
    assert tokens_to_reach(tokens, loss, 2.0) == (pytest.approx(2e6), False)
    assert tokens_to_reach(tokens, loss, 0.5) == (pytest.approx(8e6), True)  # below the curve: last segment extended
    assert tokens_to_reach(tokens, loss, 8.0) == (pytest.approx(5e5), True)  # above it: first segment extended
    assert tokens_to_reach(tokens, loss, 4.0) == (pytest.approx(1e6), False)


def test_a_model_against_itself_is_one_and_against_a_shifted_curve_is_the_shift():
    law = lambda d: 30.0 * d**-0.25  # noqa: E731  (a pure power law is a straight line in log-log)
    seeds = {0: 1.00, 1: 1.02, 2: 0.99}  # per-seed multiplicative noise, the same at every budget of a seed
    base = _rows("gpt2-L4", "gpt2", {s: [law(b) * n for b in BUDGETS] for s, n in seeds.items()}, BUDGETS, fpt=1e6)
    # The shifted model reaches at D what the baseline reaches at 3 D, at twice the FLOPs per token.
    shifted = _rows(
        "gptoss-L4",
        "gptoss",
        {s: [law(3 * b) * n for b in BUDGETS[:4]] for s, n in seeds.items()},
        BUDGETS[:4],
        fpt=2e6,
    )
    curves = model_curves(base + shifted)
    me = multipliers(curves["gpt2-L4"], curves["gpt2-L4"])
    assert [m.data for m in me] == pytest.approx([1.0] * len(BUDGETS))
    assert all(m.data_interval == pytest.approx((1.0, 1.0)) and not m.extrapolated for m in me)
    other = multipliers(curves["gptoss-L4"], curves["gpt2-L4"])
    assert [m.data for m in other] == pytest.approx([3.0] * 4)
    assert [m.compute for m in other] == pytest.approx([1.5] * 4)
    # Paired seeds carry the same noise on both sides: every resample gives 3.
    assert all(m.data_interval == pytest.approx((3.0, 3.0)) for m in other)
    assert not any(m.extrapolated for m in other)
    assert trend([m.data for m in other]) == "flat"


def test_a_multiplier_that_falls_with_budget_is_reported_falling():
    law = lambda d: 30.0 * d**-0.25  # noqa: E731
    base = _rows("gpt2", "gpt2", {0: [law(b) for b in BUDGETS]}, BUDGETS)
    # The advantage shrinks: 4x at the smallest budget, 1.5x at the largest.
    factors = np.geomspace(4.0, 1.5, 4)
    model = _rows("gptoss", "gptoss", {0: [law(f * b) for f, b in zip(factors, BUDGETS)]}, BUDGETS[:4])
    curves = model_curves(base + model)
    result = multipliers(curves["gptoss"], curves["gpt2"])
    assert [m.data for m in result] == pytest.approx(list(factors))
    assert trend([m.data for m in result]) == "falling"
    assert all(m.data_interval is None for m in result)  # one seed: no interval
    assert trend([1.0, 1.5]) == "rising" and trend([2.0]) == "one budget"


def test_the_multiplier_interval_is_a_t_interval_over_the_per_seed_multipliers():
    law = lambda d: 30.0 * d**-0.25  # noqa: E731
    base_noise, model_noise = {0: 1.00, 1: 1.01, 2: 0.99}, {0: 1.0, 1: 0.995, 2: 1.004}
    base = _rows("gpt2", "gpt2", {s: [law(b) * n for b in BUDGETS] for s, n in base_noise.items()}, BUDGETS)
    model = _rows(
        "gptoss", "gptoss", {s: [law(3 * b) * n for b in BUDGETS[:3]] for s, n in model_noise.items()}, BUDGETS[:3]
    )
    curves = model_curves(base + model)
    result = multipliers(curves["gptoss"], curves["gpt2"])
    # Seed s reaches on the baseline's seed-s curve what it would at 3 D (n_b / n_m)^4: its multiplier exactly.
    logs = [math.log(3 * (base_noise[s] / model_noise[s]) ** 4) for s in range(3)]
    half = t95(2) * np.std(logs, ddof=1) / math.sqrt(3)
    expected = (math.exp(np.mean(logs) - half), math.exp(np.mean(logs) + half))
    for m in result:
        assert m.data_interval == pytest.approx(expected, rel=1e-6)
        assert m.seeds == 3 and "t-interval over 3 per-seed multipliers (paired" in m.interval_method
        assert interval_cell(m) == "t95, 3 seeds paired"


def test_an_extrapolated_multiplier_carries_its_spread_across_rules():
    tokens = [1e6, 2e6, 4e6, 8e6]
    loss = [4.0, 3.5, 3.2, 3.05]  # bending: each doubling gains less
    rules = extrapolations(tokens, loss, 2.9)
    assert set(rules) == {"last segment", "last three"}
    last = math.exp(math.log(8e6) + (math.log(2.9) - math.log(3.05)) * math.log(2) / (math.log(3.05) - math.log(3.2)))
    assert rules["last segment"] == pytest.approx(last)
    assert rules["last three"] < rules["last segment"]  # the steeper earlier segment pulls the line down
    assert extrapolations(tokens, loss, 3.3) == {}  # inside the range: nothing extrapolated
    base = _rows("gpt2", "gpt2", {0: loss, 1: [x + 0.01 for x in loss]}, tokens)
    model = _rows("gptoss", "gptoss", {0: [3.0], 1: [3.01]}, [8e6])
    curves = model_curves(base + model)
    (m,) = multipliers(curves["gptoss"], curves["gpt2"])
    assert m.extrapolated and set(m.by_rule) == {"last segment", "last three"}
    note = extrapolation_note(m)
    assert note.startswith("*extrapolated*: beyond the baseline's measured range (> 8M tokens)")
    assert "across rules (last segment" in note
