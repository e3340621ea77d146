"""orchestrator/evaluation.py: every target token and window of a split scored once, and what a loss is over."""

from __future__ import annotations

import math
from contextlib import nullcontext

import pytest
import torch

from data_pipeline import TokenWindows
from orchestrator.evaluation import eval_scope_fields, evaluate_windows


class _UniformModel(torch.nn.Module):
    """Logits of zeros: every target costs log(vocab) nats, so the loss and the token count can be checked exactly."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward(self, x):
        return torch.zeros(*x.shape, self.vocab)


def test_evaluation_counts_every_target_token_and_window(tmp_path):
    from test_reader import make_prepared

    d, total = make_prepared(tmp_path, sizes=(1000, 540))  # 24 full windows and a tail of 3 targets
    w = TokenWindows(d, "train", 64)
    args = (torch.ones(60000, dtype=torch.int64), torch.device("cpu"), nullcontext(), 1)
    ev = evaluate_windows(_UniformModel(60000), w.eval_batches(7), *args)
    assert ev["tokens"] == total - 1 and ev["windows"] == w.num_windows + 1  # the tail window too
    assert ev["loss"] == pytest.approx(math.log(60000))
    part = evaluate_windows(_UniformModel(60000), w.eval_batches(7, 5), *args)
    assert (part["tokens"], part["windows"]) == (5 * 64, 5)
    fields = eval_scope_fields(part["tokens"], part["windows"], total - 1, whole=False)
    assert fields == dict(val_tokens=320, val_windows=5, val_fraction=320 / (total - 1), val_scope="first 5 windows")
