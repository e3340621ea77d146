"""orchestrator/lr_selection.py: which schedule fields an lr sweep and the sweep that reads its lrs disagree on."""

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
