"""The worker loop without Ray: schedule, optimizer groups, and a local run that learns, checkpoints and resumes."""
from __future__ import annotations

import json
import math
import os
import shutil

import pytest
import torch

from conftest import TIKTOKEN_DIR
from orchestrator.config import TrainConfig
from orchestrator.train_loop import build_optimizer, lr_at


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    total, warmup, lr, min_lr = 100, 10, 1e-3, 1e-4
    lrs = [lr_at(s, total, warmup, lr, min_lr) for s in range(total)]
    assert lrs[0] == pytest.approx(lr / warmup)
    assert lrs[warmup - 1] == pytest.approx(lr)
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))  # monotone decay after warmup
    assert lr_at(total, total, warmup, lr, min_lr) == pytest.approx(min_lr)
    assert lrs[-1] > min_lr


def test_weight_decay_only_on_matrices():
    from gptoss import build_model

    model = build_model("gptoss", "debug")
    opt = build_optimizer(model, TrainConfig(arch="gptoss", preset="debug"), torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() >= 2 for p in decay["params"])
    assert not any("bias" in names[id(p)] or "norm" in names[id(p)] or "sink" in names[id(p)] for p in decay["params"])
    assert any(p.dim() >= 2 for p in no_decay["params"]), "stacked expert biases are matrices that must not decay"
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def _cfg(data, **kw) -> TrainConfig:
    base = dict(data=str(data), arch="gptoss", preset="debug", seq_len=64, batch_size=8, max_steps=30,
                eval_every=10, eval_windows=16, log_every=5, sample_tokens=0, threads_per_worker=2,
                tokenizer_dir=str(TIKTOKEN_DIR))
    base.update(kw)
    return TrainConfig(**base)


def test_local_run_learns_checkpoints_and_resumes_exactly(prepared_data, tmp_path):
    from orchestrator.trainer import run_local

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
