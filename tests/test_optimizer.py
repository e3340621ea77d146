"""orchestrator/optimizer.py: the lr schedule as a pure function of the step, and AdamW's parameter groups."""

from __future__ import annotations

import math

import pytest
import torch

from orchestrator.config import TrainConfig, cooldown_start
from orchestrator.optimizer import build_optimizer, lr_at


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    total, warmup, lr, min_lr = 100, 10, 1e-3, 1e-4
    lrs = [lr_at(s, total, warmup, lr, min_lr) for s in range(total)]
    assert lrs[0] == pytest.approx(lr / warmup)
    assert lrs[warmup - 1] == pytest.approx(lr)
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1 :]))  # monotone decay after warmup
    assert lr_at(total, total, warmup, lr, min_lr) == pytest.approx(min_lr)
    assert lrs[-1] > min_lr


def test_wsd_warms_up_holds_then_cools_down_along_1_minus_sqrt():
    total, warmup, lr, min_lr = 100, 10, 1e-3, 1e-4
    lrs = [lr_at(s, total, warmup, lr, min_lr, "wsd", 0.2) for s in range(total)]
    assert lrs[:warmup] == pytest.approx([lr * (s + 1) / warmup for s in range(warmup)])
    assert lrs[warmup:80] == [lr] * 70  # stable: exactly the peak, the last 20 steps cool down
    assert lrs[80] < lr and lrs[-1] == pytest.approx(min_lr)
    for s in range(80, 100):
        assert lrs[s] == pytest.approx(min_lr + (lr - min_lr) * (1 - math.sqrt((s - 79) / 20)))
    # The stable phase does not depend on the run's length: a shorter run is the long one until its own cooldown.
    short = [lr_at(s, 40, warmup, lr, min_lr, "wsd", 0.2) for s in range(40)]
    assert short[:32] == lrs[:32] and short[32] < lrs[32]
    assert [lr_at(s, total, warmup, lr, min_lr, "constant") for s in range(warmup, total)] == [lr] * (total - warmup)


@pytest.mark.parametrize(
    "steps, frac, start",
    [
        (100, 0.2, 80),
        (10, 0.2, 8),
        (15, 0.2, 12),
        (64, 0.2, 51),
        (128, 0.2, 102),
        (7, 0.5, 3),
        (3, 0.1, 2),
        (1, 0.2, 0),
        (40, 1.0, 0),
    ],
)
def test_cooldown_start_is_exact_integer_arithmetic(steps, frac, start):
    assert cooldown_start(steps, frac) == start
    # The lr agrees: the step before the cooldown start is at the peak, the cooldown start is below it.
    if start > 0:
        assert lr_at(start - 1, steps, 0, 1.0, 0.0, "wsd", frac) == 1.0
    assert lr_at(start, steps, 0, 1.0, 0.0, "wsd", frac) < 1.0


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
