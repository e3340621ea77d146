"""The sweep report's tables, from hand-made rows: best-lr selection, the lr table and paired improvements."""
from __future__ import annotations

import pytest

from orchestrator.report import WEIGHTS_NAME, best_lr_rows, headline_table, lr_table


def _row(arch, lr, seed, loss, layers=4, experts=4):
    return dict(trial=f"{arch}-L{layers}-E{experts}-s{seed}-lr{lr}", arch=arch, n_layers=layers, d_model=128, n_heads=4,
                num_experts=experts if arch == "gptoss" else "", experts_per_token=2 if arch == "gptoss" else "",
                seed=seed, lr=lr, final_val_loss=loss, val_bpb=loss / 3)


def test_each_model_is_compared_at_its_own_best_lr():
    rows = [_row("gpt2", 1e-3, 0, 2.0), _row("gpt2", 1e-3, 1, 2.2), _row("gpt2", 3e-3, 0, 1.9), _row("gpt2", 3e-3, 1, 2.1),
            _row("gptoss", 1e-3, 0, 1.8), _row("gptoss", 1e-3, 1, 1.8), _row("gptoss", 3e-3, 0, 2.5), _row("gptoss", 3e-3, 1, 2.5)]
    kept = best_lr_rows(rows)
    assert {(r["arch"], r["lr"]) for r in kept} == {("gpt2", 3e-3), ("gptoss", 1e-3)}
    table = "\n".join(lr_table(rows))
    assert "| gpt2 | 4 | - | 0.003 | 2.0000 ± 0.1414 | 2 | **best** |" in table
    assert "| gptoss | 4 | 4 (2) | 0.001 | 1.8000 ± 0.0000 | 2 | **best** |" in table
    # Headline at the best lrs: gpt2 2.0 vs gptoss 1.8 -> +10.0%; per-seed improvements 5.26% and 14.29%.
    headline = "\n".join(headline_table(rows))
    assert "| 4 | 4 | 1.8000 ± 0.0000 | 2.0000 ± 0.1414 | +10.0% ± 6.4 |" in headline


def test_one_lr_per_model_keeps_every_row_and_no_lr_table():
    rows = [_row("gpt2", 1e-3, s, 2.0 + s) for s in range(2)] + [_row("gptoss", 2e-3, s, 2.1 + s) for s in range(2)]
    assert best_lr_rows(rows) == rows and lr_table(rows) == []
    # Means 2.6 vs 2.5 -> -4.0%; per seed (2-2.1)/2 = -5.0% and (3-3.1)/3 = -3.3%, std 1.2.
    assert "| -4.0% ± 1.2 |" in "\n".join(headline_table(rows))


def test_the_report_names_the_weights_file_as_checkpoints_write_it():
    from gptoss.checkpoint import WEIGHTS_NAME as written

    assert WEIGHTS_NAME == written


@pytest.mark.parametrize("layers", [2, 6])
def test_depths_without_gpt2_still_get_a_row(layers):
    assert f"| {layers} | 4 |" in "\n".join(headline_table([_row("gptoss", 1e-3, 0, 2.0, layers=layers)]))
