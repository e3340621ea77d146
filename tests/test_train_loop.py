"""The worker loop without Ray: schedule checks, and a local run that learns, checkpoints, resumes and branches."""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest
import torch
from conftest import TIKTOKEN_DIR

from orchestrator.config import TrainConfig, cooldown_start
from orchestrator.spec import BranchStart, RunSpec


def test_schedule_settings_are_validated():
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="cooldown_frac must be in"):
        TrainConfig(cooldown_frac=0)
    with pytest.raises(ValueError, match="train_eval_windows must be >= 0"):
        TrainConfig(train_eval_windows=-1)
    with pytest.raises(ValueError, match="branch start step must be a positive"):
        BranchStart("long", 0)
    with pytest.raises(ValueError, match="inside the 30-step warmup"):
        TrainConfig(schedule="wsd", warmup_steps=30, max_steps=32).check_schedule(32)
    with pytest.raises(ValueError, match="branch start step 5 is not the cooldown start 8"):
        RunSpec(TrainConfig(schedule="wsd"), branch=BranchStart("long", 5)).check(10)
    with pytest.raises(ValueError, match=r"branch points \[12\] lie beyond"):
        RunSpec(TrainConfig(schedule="wsd"), keep_states_at=(12,)).check(10)


def _cfg(data, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        arch="gptoss",
        preset="debug",
        seq_len=64,
        batch_size=8,
        max_steps=30,
        eval_every=10,
        eval_windows=16,
        log_every=5,
        sample_tokens=0,
        threads_per_worker=2,
        tokenizer_dir=str(TIKTOKEN_DIR),
    )
    base.update(kw)
    return TrainConfig(**base)


def run_local(spec, run_dir: str) -> list[dict]:
    """The worker loop in this process on a run directory, as an executor runs it; returns rank 0's events."""
    from orchestrator.run_dir import RunDir
    from orchestrator.train_loop import train_worker
    from orchestrator.trainer import plan_run

    events: list[dict] = []
    plan = plan_run(spec)
    plan.threads_per_worker = plan.cfg.threads_per_worker
    train_worker(plan.job(RunDir.at(run_dir), progress=events.append))
    return events


def test_local_run_learns_checkpoints_and_resumes_exactly(prepared_data, tmp_path):
    straight = run_local(_cfg(prepared_data), str(tmp_path / "straight"))
    evals = [e for e in straight if e["kind"] == "eval"]
    assert [e["step"] for e in evals] == [10, 20, 30]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.3, "validation loss should fall"
    assert evals[0]["val_loss"] < math.log(json.load(open(prepared_data / "manifest.json"))["vocab_size"])
    assert 0 < evals[-1]["val_bpb"] < evals[0]["val_bpb"]
    ckpts = sorted(d for d in os.listdir(tmp_path / "straight") if d.startswith("checkpoint_"))
    assert ckpts[-1] == "checkpoint_0000030" and len(ckpts) <= 2  # --keep 2: best and latest

    # Lose the step-30 checkpoint: the next call resumes from step 20 and must land exactly where the straight run did.
    shutil.rmtree(tmp_path / "straight" / "checkpoint_0000030")
    resumed = [e for e in run_local(_cfg(prepared_data), str(tmp_path / "straight")) if e["kind"] in ("start", "eval")]
    assert resumed[0]["kind"] == "start" and resumed[0]["step"] == 20
    assert [e["step"] for e in resumed[1:]] == [30]
    assert resumed[1]["val_loss"] == pytest.approx(evals[-1]["val_loss"], abs=1e-5)
    assert resumed[1]["train_loss"] == pytest.approx(evals[-1]["train_loss"], abs=1e-5)


def test_a_budget_branch_continues_the_long_run_exactly_and_differs_only_through_the_lr(prepared_data, tmp_path):
    from orchestrator.run_dir import RunDir

    wsd = dict(schedule="wsd", warmup_steps=2, log_every=1, eval_every=6)
    point = cooldown_start(12, 0.2)  # the 12-step budget cools down over its last 2 steps: branch at step 10
    assert point == 10
    long_spec = RunSpec(_cfg(prepared_data, max_steps=20, **wsd), keep_states_at=(point,))
    long_run = run_local(long_spec, str(tmp_path / "long"))
    kept = RunDir.at(str(tmp_path / "long")).branch_state(point)
    assert os.path.isfile(os.path.join(kept, "model.safetensors")) and os.path.isfile(
        os.path.join(kept, "optimizer.pt")
    )
    assert json.load(open(os.path.join(kept, "train_state.json")))["step"] == point
    branch_spec = RunSpec(_cfg(prepared_data, max_steps=12, **wsd), branch=BranchStart("long", point))
    branch = run_local(branch_spec, str(tmp_path / "branch"))
    straight = run_local(_cfg(prepared_data, max_steps=12, **wsd), str(tmp_path / "straight"))

    def losses(events):
        return {e["step"]: e["train_loss"] for e in events if e["kind"] in ("step", "eval")}

    long_loss, branch_loss, straight_loss = losses(long_run), losses(branch), losses(straight)
    assert branch[0]["kind"] == "start" and branch[0]["step"] == point and sorted(branch_loss) == [11, 12]
    # Step 11 is computed from the kept state on the long run's batch: the same loss, to the bit.
    assert branch_loss[11] == long_loss[11]
    # Step 12 follows an update at the cooled-down lr: it leaves the long run, and lands where a straight 12-step
    # wsd run lands (same batches, same lr at every step).
    assert branch_loss[12] != long_loss[12]
    assert branch_loss[12] == pytest.approx(straight_loss[12], abs=1e-6)
    val = {e["step"]: e["val_loss"] for e in branch if e["kind"] == "eval"}
    straight_val = {e["step"]: e["val_loss"] for e in straight if e["kind"] == "eval"}
    assert val[12] == pytest.approx(straight_val[12], abs=1e-6)
    lrs = {e["step"]: e["lr"] for e in branch if "lr" in e}
    assert lrs[12] == pytest.approx(TrainConfig(preset="debug").resolved_min_lr)


@pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None, reason="inductor's CPU code needs a C++ compiler"
)
def test_compiled_local_run_matches_the_eager_one(prepared_data, tmp_path):
    """`train --compile`: the whole loop (training steps, evaluation, checkpoint) through gptoss.compile_model."""
    # compile_model sets a process-wide dynamo option: the patch gives the other tests back the value they had
    with torch._dynamo.config.patch(capture_scalar_outputs=torch._dynamo.config.capture_scalar_outputs):
        runs = {
            compiled: [
                e
                for e in run_local(_cfg(prepared_data, max_steps=10, compile=compiled), str(tmp_path / str(compiled)))
                if e["kind"] == "eval"
            ]
            for compiled in (False, True)
        }
    assert [e["step"] for e in runs[True]] == [10]
    assert runs[True][0]["val_loss"] == pytest.approx(runs[False][0]["val_loss"], abs=1e-4)
    assert runs[True][0]["train_loss"] == pytest.approx(runs[False][0]["train_loss"], abs=1e-4)
    assert "checkpoint_0000010" in os.listdir(tmp_path / "True")


@pytest.mark.slow
def test_the_last_evaluation_of_a_run_scores_the_whole_split(prepared_data, tmp_path):
    events = run_local(_cfg(prepared_data, max_steps=10, eval_every=5, eval_windows=4), str(tmp_path / "run"))
    evals = [e for e in events if e["kind"] == "eval"]
    split = json.load(open(prepared_data / "manifest.json"))["splits"]["validation"]["tokens"]
    assert [(e["val_windows"], e["val_scope"]) for e in evals[:-1]] == [(4, "first 4 windows")]
    assert evals[0]["val_tokens"] == 4 * 64 and "final_eval" not in evals[0]
    last = evals[-1]
    assert last["val_tokens"] == split - 1 and last["val_fraction"] == 1.0
    assert last["final_eval"] == last["val_scope"] == "whole split"
    # ... and as many training windows, spread over the train split, scored the same way: train - val.
    assert last["train_eval_windows"] == last["val_windows"] and last["train_eval_tokens"] == 64 * last["val_windows"]
    assert 0 < last["train_eval_loss"] < evals[0]["val_loss"] and "train_eval_loss" not in evals[0]
    # The best checkpoint and best_val_loss rank the final model on the windows the earlier evals scored.
    from orchestrator.run_dir import RunDir

    assert "shared_val_loss" not in evals[0] and last["shared_val_loss"] != last["val_loss"]
    assert last["best_val_loss"] == min(evals[0]["val_loss"], last["shared_val_loss"])
    run = RunDir.at(str(tmp_path / "run"))
    assert run.checkpoint_val_loss(run.latest_checkpoint()) == last["shared_val_loss"]
