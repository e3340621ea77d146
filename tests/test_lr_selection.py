"""orchestrator/lr_selection.py: each model's best lr in an lr sweep, and which schedule fields that sweep and the sweep
that reads its lrs disagree on."""

from __future__ import annotations

from orchestrator.lr_selection import lr_sweep_schedule_mismatch, resolved_warmup

GRID = dict(schedule="wsd", cooldown_frac=0.2, batch_size=16, grad_accum=1, seq_len=256, max_steps=512)


def test_the_same_schedule_matches_and_each_difference_is_named():
    assert lr_sweep_schedule_mismatch(GRID, dict(GRID)) == []
    assert lr_sweep_schedule_mismatch(GRID, dict(GRID, seq_len=512, batch_size=32)) == ["batch", "seq"]
    assert lr_sweep_schedule_mismatch(GRID, dict(GRID, batch_size=8, grad_accum=2)) == []  # same sequences per step
    assert lr_sweep_schedule_mismatch(GRID, dict(GRID, schedule="cosine")) == ["cooldown", "schedule"]
    assert lr_sweep_schedule_mismatch(GRID, dict(GRID, cooldown_frac=0.1)) == ["cooldown"]


def test_warmup_is_compared_as_trained():
    # The grid's default warmup is 5% of its 512 steps (25); budget runs pinned at 102 warmup steps differ.
    assert resolved_warmup(GRID) == 25
    assert lr_sweep_schedule_mismatch(GRID, dict(GRID, max_steps=2048, warmup_steps=102)) == ["warmup"]
    assert lr_sweep_schedule_mismatch(GRID, dict(GRID, max_steps=2048, warmup_steps=25)) == []
    assert lr_sweep_schedule_mismatch(dict(GRID, warmup_steps=None), dict(GRID, max_steps=4000)) == ["warmup"]


def _trial(root, name, variant, lr, seed, loss, **config):
    import json

    trial = root / "trials" / name
    trial.mkdir(parents=True)
    settings = dict(GRID, arch="gptoss", variant=variant, seed=seed, **config)
    (trial / "config.json").write_text(json.dumps(dict(config=settings, lr=lr, total_steps=512)))
    (trial / "summary.json").write_text(json.dumps(dict(steps=512, final_val_loss=loss)))


def test_a_sweep_reading_lrs_is_told_when_its_schedule_or_its_seeds_bias_them(tmp_path, capfd):
    from orchestrator.config import TrainConfig
    from orchestrator.lr_selection import apply_lr_from
    from orchestrator.sweep_plan import SweepConfig, expand_grid

    for i, (lr, loss) in enumerate(((1e-3, 3.0), (2e-3, 2.9), (4e-3, 3.1))):
        _trial(tmp_path, f"t{i}", "gpt2", lr, 0, loss)
    base = dict(preset="debug", schedule="wsd", batch_size=16, seq_len=256)
    same = SweepConfig(
        base=TrainConfig(**base, max_steps=512), grid={"variant": ["gpt2"], "seed": [1, 2]}, lr_from=str(tmp_path)
    )
    capfd.readouterr()
    assert apply_lr_from(same, expand_grid(same))["gpt2"]["lr"] == 2e-3
    assert "warning" not in capfd.readouterr().out  # same schedule, disjoint seeds: nothing to say
    budgets = SweepConfig(
        base=TrainConfig(**base, warmup_steps=102),
        grid={"variant": ["gpt2"], "seed": [0, 1]},
        lr_from=str(tmp_path),
        budgets=[2**20, 2**23],
    )
    apply_lr_from(budgets, expand_grid(budgets))
    out = capfd.readouterr().out
    assert "its lrs were tuned under another warmup than this sweep trains with" in out
    assert "seed(s) 0 chose the lrs there and are measured here too" in out and "--seeds 100,101" in out


def test_lrs_are_compared_within_one_shape_not_averaged_over_a_transfer_check_beside_the_grid(tmp_path):
    # study-lr-check's gpt2: a 3-lr grid at d128 and a 2-lr transfer check at d64 (final val losses as measured).
    # Averaged over both shapes, 8e-3 (tried at d128 only) would look best; within d128, 4e-3 is.
    from orchestrator.lr_selection import best_lrs

    d128, d64 = dict(n_layers=4, d_model=128, n_heads=4), dict(n_layers=4, d_model=64, n_heads=2)
    for lr, loss in ((2e-3, 2.8416), (4e-3, 2.7436), (8e-3, 2.8096)):
        _trial(tmp_path, f"a{lr}", "gpt2", lr, 0, loss, **d128)
    for lr, loss in ((2e-3, 2.9828), (4e-3, 2.9411)):
        _trial(tmp_path, f"b{lr}", "gpt2", lr, 0, loss, **d64)
    got = best_lrs(str(tmp_path))["gpt2"]
    assert (got["lr"], got["shape"], got["grid"]) == (4e-3, "L4-d128-h4", [2e-3, 4e-3, 8e-3])
    assert got["val_loss"] == 2.7436 and not got["edge"] and got["other_shapes"] == {"L4-d64-h2": 4e-3}
