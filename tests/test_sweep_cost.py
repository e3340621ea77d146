"""orchestrator/sweep_cost.py: a planned trial's tokens, evaluations and FLOPs, and the time left at measured rates."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from orchestrator.config import TrainConfig
from orchestrator.spec import BranchStart, RunSpec
from orchestrator.sweep_cost import EVAL_COST, TrialCost, cost_lines, cost_rows, trial_cost


def _plan(total_steps: int, fpt: float = 1e6):
    return SimpleNamespace(total_steps=total_steps, workers=1, flops_per_token=fpt)


def test_a_long_run_and_a_branch_cost_what_they_train_and_score():
    cfg = TrainConfig(schedule="wsd", batch_size=4, seq_len=64, eval_every=10, eval_windows=0)
    long_run = trial_cost(RunSpec(replace(cfg, name="long")), _plan(40), "gpt2", "s", val_tokens=1000, train_sample=500)
    assert long_run.train_tokens == 40 * 4 * 64 and long_run.steps == 40
    assert long_run.eval_tokens == 4 * 1000 + 500  # steps 10, 20, 30, 40; the last also the training sample
    assert long_run.flops == pytest.approx(1e6 * (40 * 256 + EVAL_COST * 4500))
    branch = trial_cost(
        RunSpec(replace(cfg, name="b"), branch=BranchStart("long", 32)),
        _plan(40),
        "gpt2",
        "s",
        val_tokens=1000,
        train_sample=0,
    )
    assert branch.steps == 8 and branch.train_tokens == 8 * 256
    assert branch.eval_tokens == 1000  # only step 40 in (32, 40]
    odd = trial_cost(RunSpec(replace(cfg, name="o")), _plan(35), "gpt2", "s", val_tokens=1000, train_sample=0)
    assert odd.eval_tokens == 4 * 1000  # 10, 20, 30 and the last step, 35
    few = TrainConfig(schedule="wsd", batch_size=4, seq_len=64, eval_every=10, eval_windows=2)
    short = trial_cost(RunSpec(replace(few, name="f")), _plan(20), "gpt2", "s", val_tokens=1000, train_sample=0)
    assert short.eval_tokens == 2 * 64 + 1000  # intermediate evals score 2 windows, the last the whole split


def test_hours_left_come_from_the_groups_measured_rate_else_the_flop_rate():
    def cost(name, fam, done=False, tps=None):
        return TrialCost(name, fam, "s", 10, 3600, 0, 1e6, finished=done, tokens_per_s=tps)

    costs = [cost("a", "gpt2", True, 2.0), cost("b", "gpt2"), cost("c", "gpt2"), cost("d", "gptoss")]
    rows = {r["family"]: r for r in cost_rows(costs, flop_rate=1e6)}
    assert rows["gpt2"]["hours_left"] == pytest.approx(2 * 3600 / 2.0 / 3600) and rows["gpt2"]["source"] == "measured"
    assert rows["gptoss"]["hours_left"] == pytest.approx(3600 * 1e6 / 1e6 / 3600) and rows["gptoss"]["finished"] == 0
    # Without a flop rate, an unmeasured group is timed at the FLOP/s the measured ones reached (2 tokens/s x 1e6).
    implied = {r["family"]: r for r in cost_rows(costs)}["gptoss"]
    assert implied["hours_left"] == pytest.approx(3600 * 1e6 / 2e6 / 3600) and implied["source"] == "measured FLOP/s"
    assert cost_rows([cost("b", "gpt2")])[0]["hours_left"] is None
    text = "\n".join(cost_lines(cost_rows(costs, flop_rate=1e6), concurrent=2))
    assert "4 trials" in text and "2.0 trial-hours left, about 1.0 h of wall time at 2 at once" in text
