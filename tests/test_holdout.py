"""Predict-then-verify plumbing: --predict's spelling, which trials are held out, and N at a held-out size from the
meta-device accounting (equal to the count of the real model)."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import REPO

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


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_the_size_study_committed_its_predictions_before_any_held_out_trial():
    # The prediction is only a test of the law if it was on record before the held-out size was seen: in git history,
    # predictions.json is committed once and never changed, and every held-out trial's files come in later commits
    # descending from it, their first recorded training step timed after that commit.
    study = "studies/study-sizes"
    try:
        shallow = _git("rev-parse", "--is-shallow-repository")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the history this test reads is not here")
    if shallow == "true":
        pytest.skip("a shallow clone: the history this test reads is not here")
    commits = _git("log", "--format=%H %ct", "--", f"{study}/predictions.json").splitlines()
    assert len(commits) == 1, f"{study}/predictions.json was committed {len(commits)} times; a prediction is made once"
    predicted_at_commit, predicted_at = commits[0].split()[0], int(commits[0].split()[1])
    holdout = json.loads((REPO / study / "predictions.json").read_text())["holdout"]
    held_out = sorted(p for p in (REPO / study / "trials").iterdir() if f"-{holdout['size']}-" in p.name)
    assert held_out, f"no held-out trial ({holdout['size']}) in {study}/trials"
    for trial in held_out:
        path = str(trial.relative_to(REPO))
        first_commit = _git("log", "--reverse", "--format=%H %ct", "--", path).splitlines()
        if not first_commit:
            continue  # running now, not committed yet: nothing in history to order
        sha, committed_at = first_commit[0].split()
        assert int(committed_at) > predicted_at, path
        _git("merge-base", "--is-ancestor", predicted_at_commit, sha)  # raises unless it descends from the prediction
        with open(trial / "metrics.jsonl") as f:
            first_step = next(json.loads(line) for line in f if '"kind": "step"' in line)
        assert first_step["time"] > predicted_at, f"{path} trained before the prediction was committed"
