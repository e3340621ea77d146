"""Tests for orchestrator/ladder.py: paired per-seed steps, their intervals and verdicts, the tables and the plot."""

from __future__ import annotations

import math

import pytest

from orchestrator.ladder import ladder_section, ladder_steps, leave_one_out_steps, paired_step, plot_waterfall, t95


def _row(variant, seed, loss, layers=4):
    return dict(
        trial=f"v-{variant}-s{seed}",
        arch="gptoss",
        variant=variant,
        n_layers=layers,
        d_model=128,
        n_heads=4,
        num_experts=4,
        experts_per_token=2,
        seed=seed,
        lr=1e-3,
        final_val_loss=loss,
        val_bpb=loss / 3,
    )


LOSSES = {  # variant -> loss per seed
    "gpt2": [4.00, 4.10, 3.90],
    "+untied": [3.90, 3.95, 3.85],  # steps -0.10, -0.15, -0.05
    "+rope": [3.80, 3.86, 3.74],  # steps -0.10, -0.09, -0.11
    "gptoss": [3.30, 3.40],  # two seeds; steps from +rope (the next rung present) -0.50, -0.46
    "gptoss-no-moe": [3.35, 3.41],  # +0.05, +0.01 against gptoss
    "gptoss-no-sinks": [3.32],  # one seed
}
ROWS = [_row(v, s, loss) for v, losses in LOSSES.items() for s, loss in enumerate(losses)]


def _by_variant(rows):
    out = {}
    for r in rows:
        out.setdefault(r["variant"], []).append(r)
    return out


def test_paired_steps_exactly():
    steps = ladder_steps(_by_variant(ROWS))
    assert [(e["variant"], e["previous"]) for e in steps] == [
        ("gpt2", None),
        ("+untied", "gpt2"),
        ("+rope", "+untied"),
        ("gptoss", "+rope"),
    ]
    untied = steps[1]["step"]
    assert untied["n"] == 3 and untied["seeds"] == [0, 1, 2]
    assert untied["nats"] == pytest.approx(-0.10) and untied["nats_std"] == pytest.approx(0.05)
    half = 4.303 * 0.05 / math.sqrt(3)
    assert (untied["low"], untied["high"]) == (pytest.approx(-0.10 - half), pytest.approx(-0.10 + half))
    assert untied["bpb"] == pytest.approx(-0.10 / 3) and untied["bpb_std"] == pytest.approx(0.05 / 3)
    assert not untied["resolved"]  # the interval [-0.224, +0.024] straddles 0
    rope = steps[2]["step"]
    assert rope["nats"] == pytest.approx(-0.10) and rope["nats_std"] == pytest.approx(0.01) and rope["resolved"]
    full = steps[3]["step"]  # paired on the two seeds both have
    assert (
        full["n"] == 2
        and full["nats"] == pytest.approx(-0.48)
        and full["nats_std"] == pytest.approx(0.02 * math.sqrt(2))
    )
    assert full["high"] == pytest.approx(-0.48 + 12.706 * 0.02 * math.sqrt(2) / math.sqrt(2)) and full["resolved"]


def test_leave_one_out_is_measured_against_full_gptoss():
    loo = {e["variant"]: e["step"] for e in leave_one_out_steps(_by_variant(ROWS))}
    assert list(loo) == ["gptoss-no-sinks", "gptoss-no-moe"]  # the order of gptoss.variants.LEAVE_ONE_OUT
    assert loo["gptoss-no-moe"]["nats"] == pytest.approx(0.03) and not loo["gptoss-no-moe"]["resolved"]
    assert loo["gptoss-no-sinks"]["n"] == 1 and loo["gptoss-no-sinks"]["nats"] == pytest.approx(0.02)
    assert loo["gptoss-no-sinks"]["low"] is None and not loo["gptoss-no-sinks"]["resolved"]
    assert leave_one_out_steps(_by_variant([r for r in ROWS if r["variant"] != "gptoss"])) == []


def test_the_tables_say_what_is_resolved():
    text = "\n".join(ladder_section(ROWS))
    assert "| gpt2 | 4.0000 ± 0.1000 | 1.3333 ± 0.0333 | | | | | 3 | start |" in text
    assert (
        "| +untied | 3.9000 ± 0.0500 | 1.3000 ± 0.0167 | -0.1000 | 0.0500 | [-0.2242, +0.0242] | -0.0333 | 3 | "
        "not resolved |" in text
    )
    assert (
        "| +rope | 3.8000 ± 0.0600 | 1.2667 ± 0.0200 | -0.1000 | 0.0100 | [-0.1248, -0.0752] | -0.0333 | 3 | resolved |"
        in text
    )
    assert (
        "| gptoss-no-moe | 3.3800 ± 0.0424 | 1.1267 ± 0.0141 | +0.0300 | 0.0283 | [-0.2241, +0.2841] | +0.0100 | 2 | "
        "not resolved |" in text
    )
    assert "| gptoss-no-sinks | 3.3200 | 1.1067 | +0.0200 | - | - | +0.0067 | 1 | not resolved (1 seed) |" in text
    assert "gpt2 -> gptoss: -0.7000 nats (-0.2333 bits/byte) over 2 paired seed(s), resolved." in text
    assert "### Leave one out, against full gptoss (n_layers 4, d_model 128" in text


def test_shapes_get_separate_tables_and_the_plot_is_a_png():
    rows = ROWS + [_row("gpt2", 0, 3.9, layers=2), _row("+untied", 0, 3.8, layers=2)]
    text = "\n".join(ladder_section(rows))
    assert text.count("### Ladder (") == 2 and "### Ladder (n_layers 2," in text
    png = plot_waterfall(rows)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_t_quantiles():
    assert t95(1) == 12.706 and t95(4) == 2.776 and t95(30) == 2.042 and t95(200) == 1.96


def test_no_shared_seed_means_no_step():
    step = paired_step([_row("gpt2", 0, 4.0)], [_row("gptoss", 1, 3.0)])
    assert step["n"] == 0 and step["nats"] is None and not step["resolved"]
    assert "no shared seeds" in "\n".join(ladder_section([_row("gpt2", 0, 4.0), _row("gptoss", 1, 3.0)]))


def test_paired_steps_pair_only_trials_of_the_same_device_type():
    from orchestrator.ladder import device_lines

    def row(variant, seed, loss, gpu, budget=1 << 20):
        return dict(variant=variant, seed=seed, final_val_loss=loss, val_bpb=loss / 3, use_gpu=gpu, budget=budget)

    before = [row("gpt2", s, 3.0 + 0.01 * s, True) for s in range(3)]
    after = [row("+rope", 0, 2.9, False)] + [row("+rope", s, 2.95 + 0.01 * s, True) for s in (1, 2)]
    step = paired_step(before, after)
    assert step["n"] == 2 and step["seeds"] == [1, 2]  # seed 0 ran on another device: not a pair
    assert step["nats"] == pytest.approx(-0.05)
    lines = device_lines(before + after)
    assert "more than one device type" in lines[0] and "1.05M: MIXED cpu (1 models); cuda (2 models)" in lines[0]
    assert device_lines(before) == []
