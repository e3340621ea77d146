"""orchestrator/contrasts.py and report_contrasts.py: paired differences, their trend with size, a component's share
of the gap from both ends, and train - val gaps, checked on rows whose effects are known exactly."""

from __future__ import annotations

import math

import pytest

from orchestrator.contrasts import (
    Contrast,
    contrasts_for,
    gap_contrast,
    paired_cells,
    repetition,
    shares,
    size_trend,
)
from orchestrator.report_contrasts import contrast_lines

SIZES = {"s": 1e5, "m": 2e5, "l": 4e5}  # N doubles from size to size
# Effects in nats against gpt2; rope carries 0.30 added to gpt2 and 0.25 removed from gptoss, out of a 0.40 gap.
EFFECT = {"gpt2": 0.0, "gpt2-rope": -0.30, "gptoss-no-rope": -0.15, "gptoss": -0.40}


def _rows(seeds=(1, 2, 3), gap_slope=-0.02, device_of_seed=None) -> list[dict]:
    rows = []
    for size, n in SIZES.items():
        doublings = math.log2(n / 1e5)
        for budget in (1e6, 2e6):
            for seed in seeds:
                noise = 0.01 * seed * (1 if budget == 1e6 else -1)  # shared by every family of a seed: cancels
                for fam, effect in EFFECT.items():
                    scale = 1 + (gap_slope * doublings / -0.40 if fam == "gptoss" else 0.0)
                    loss = 3.0 - 0.1 * doublings + effect * scale + noise + (0.003 * seed if fam == "gptoss" else 0)
                    rows.append(
                        dict(
                            trial=f"{fam}-{size}-{budget}-{seed}",
                            family=fam,
                            arch="gpt2" if fam.startswith("gpt2") else "gptoss",
                            size=size,
                            params_non_embedding=n,
                            budget=budget,
                            tokens=budget,
                            seed=seed,
                            final_val_loss=loss,
                            val_bpb=loss / 3,
                            use_gpu=bool(device_of_seed and device_of_seed(seed, fam)),
                            epochs=budget / 2.5e6,
                            train_eval_loss=loss - (0.05 if fam == "gptoss" else 0.02) * budget / 1e6,
                        )
                    )
    return rows


def test_the_contrasts_are_each_family_against_the_baseline_then_every_one_factor_pair_present():
    got = [(c.reference, c.changed, c.component) for c in contrasts_for(set(EFFECT), "gpt2")]
    assert got == [  # gpt2-rope against gpt2 is the rope pair: one table, not two
        ("gpt2", "gptoss", None),
        ("gpt2", "gptoss-no-rope", None),
        ("gpt2", "gpt2-rope", "rope"),
        ("gptoss-no-rope", "gptoss", "rope"),
    ]
    assert Contrast("gpt2", "gpt2-rope", "rope").label == "rope added to gpt2"
    assert Contrast("gptoss-no-rope", "gptoss", "rope").label == "rope kept in gptoss"
    assert contrasts_for({"gpt2"}, "gpt2") == [] and contrasts_for({"a", "b"}, "gpt2") == []


def test_paired_differences_cancel_what_a_seed_shares_and_keep_what_differs():
    rows = _rows()
    cells = paired_cells(rows, Contrast("gpt2", "gpt2-rope", "rope"))
    assert set(cells) == {(s, b) for s in SIZES for b in (1e6, 2e6)}
    for step in cells.values():
        assert step["nats"] == pytest.approx(-0.30) and step["nats_std"] == pytest.approx(0, abs=1e-12)
        assert step["n"] == 3 and step["resolved"]
    gap = paired_cells(rows, Contrast("gpt2", "gptoss"))[("s", 1e6)]
    assert gap["nats"] == pytest.approx(-0.40 + 0.006)  # gptoss's seed term 0.003 * seed, mean over seeds 1-3
    assert gap["nats_std"] == pytest.approx(0.003)


def test_the_trend_with_size_is_each_seeds_slope_per_doubling_of_n():
    trend = size_trend(_rows(gap_slope=-0.02), Contrast("gpt2", "gptoss"))
    assert set(trend) == {1e6, 2e6}
    t = trend[1e6]
    assert t["slope"]["mean"] == pytest.approx(-0.02) and t["slope"]["n"] == 3
    assert t["span"]["mean"] == pytest.approx(-0.04)  # two doublings from s to l
    assert (t["smallest"], t["largest"]) == ("s", "l")
    flat = size_trend(_rows(gap_slope=0.0), Contrast("gpt2", "gptoss"))[1e6]["slope"]
    assert flat["mean"] == pytest.approx(0.0, abs=1e-12) and not flat["resolved"]


def test_a_components_share_is_bounded_from_both_ends():
    rows = _rows(gap_slope=0.0)
    whole = Contrast("gpt2", "gptoss")
    first = shares(rows, Contrast("gpt2", "gpt2-rope", "rope"), whole)[("m", 2e6)]
    last = shares(rows, Contrast("gptoss-no-rope", "gptoss", "rope"), whole)[("m", 2e6)]
    # Per seed: -0.30 / (-0.40 + 0.003 s) and (-0.25 + 0.003 s) / (-0.40 + 0.003 s), averaged over seeds 1-3.
    assert first["mean"] == pytest.approx(sum(-0.30 / (-0.40 + 0.003 * s) for s in (1, 2, 3)) / 3)
    assert last["mean"] == pytest.approx(sum((-0.25 + 0.003 * s) / (-0.40 + 0.003 * s) for s in (1, 2, 3)) / 3)
    assert first["low"] < first["mean"] < first["high"] and first["n"] == 3


def test_pairs_are_only_within_a_device_type():
    rows = _rows(device_of_seed=lambda seed, fam: seed == 3 and fam == "gptoss")
    cells = paired_cells(rows, Contrast("gpt2", "gptoss"))
    assert all(step["n"] == 2 for step in cells.values())


def test_train_val_gaps_and_their_paired_difference():
    rows = _rows()
    reps = repetition(rows)
    assert reps[("gptoss", "l", 2e6)]["mean"] == pytest.approx(-0.10)
    assert reps[("gpt2", "s", 1e6)]["mean"] == pytest.approx(-0.02)
    diff = gap_contrast(rows, Contrast("gpt2", "gptoss"))
    assert diff[("m", 2e6)]["mean"] == pytest.approx(-0.06) and diff[("m", 1e6)]["n"] == 3
    assert repetition([{k: v for k, v in r.items() if k != "train_eval_loss"} for r in rows]) == {}


def test_the_report_lines_name_every_contrast_share_and_gap():
    text = "\n".join(contrast_lines(_rows(), "gpt2"))
    for heading in (
        "#### gptoss - gpt2",
        "#### rope added to gpt2: gpt2-rope - gpt2",
        "#### rope kept in gptoss: gptoss - gptoss-no-rope",
        "#### Share of gptoss - gpt2 that rope carries",
        "### What repetition does",
    ):
        assert heading in text
    assert "| per doubling of N (slope) |" in text and "| l minus s |" in text
    assert "**-0.300 [-0.300, -0.300] (3)**" in text  # rope added to gpt2, resolved
    assert "| s | rope added to gpt2 | 76% [" in text and "| s | rope kept in gptoss | " in text
    assert contrast_lines([r for r in _rows() if r["family"] == "gpt2"], "gpt2") == []
