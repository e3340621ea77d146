"""The report's size fields: added only when the rows span more than one size, with N, family and epochs."""

from __future__ import annotations

from orchestrator.report_sizes import SIZE_COLUMNS, add_size_fields


def _row(trial, d, arch="gptoss", experts=4, variant=""):
    return dict(
        trial=trial, arch=arch, variant=variant, n_layers=2, d_model=d, n_heads=4, num_experts=experts,
        total_params=1000 + d, active_params=900 + d, non_embedding_params=10 * d, tokens=500,
    )  # fmt: skip


def _configs(rows, data=None):
    return {
        r["trial"]: dict(model_config=dict(n_layers=2, d_model=r["d_model"], n_heads=4), config=dict(data=data))
        for r in rows
    }


def test_one_size_leaves_rows_as_they_were():
    rows = [_row("a", 64), _row("b", 64, experts=8)]
    before = [dict(r) for r in rows]
    assert add_size_fields(rows, _configs(rows), []) is False and rows == before


def test_several_sizes_give_size_family_n_and_epochs(tmp_path):
    (tmp_path / "manifest.json").write_text('{"splits": {"train": {"tokens": 250}}}')
    rows = [_row("a", 64), _row("b", 128, experts=8), _row("c", 128, variant="gpt2")]
    sizes = [{"name": "small", "d_model": 64}, {"d_model": 128, "n_layers": 2}]
    assert add_size_fields(rows, _configs(rows, str(tmp_path)), sizes) is True
    assert [r["size"] for r in rows] == ["small", "L2-d128", "L2-d128"]
    assert [r["family"] for r in rows] == ["gptoss-E4", "gptoss-E8", "gpt2"]
    assert [r["params_non_embedding"] for r in rows] == [640, 1280, 1280]
    assert all(r["epochs"] == 2.0 for r in rows) and all(set(SIZE_COLUMNS) <= set(r) for r in rows)
    no_data = [_row("a", 64), _row("b", 128)]
    add_size_fields(no_data, _configs(no_data, str(tmp_path / "gone")), [])
    assert "epochs" not in no_data[0] and no_data[1]["size"] == "L2-d128-h4"


def test_the_size_section_reads_each_model_at_its_best_lr_only():
    from orchestrator.report_sizes import _at_best_lr

    rows = []
    for d in (64, 128):
        for lr, loss in ((1e-3, 3.0), (2e-3, 2.9)):
            for seed in (0, 1):
                r = _row(f"t{d}-{lr}-{seed}", d, experts=4)
                rows.append(dict(r, experts_per_token=2, lr=lr, seed=seed, budget=500, final_val_loss=loss + d / 1e4))
    best, note = _at_best_lr(rows)
    assert {r["lr"] for r in best} == {2e-3} and len(best) == 4
    assert "4 of 8 trials" in note[0]
    one_lr = [r for r in rows if r["lr"] == 2e-3]
    assert _at_best_lr(one_lr) == (one_lr, [])


def test_the_prediction_check_states_the_predicted_and_measured_gap_at_the_held_out_size():
    from orchestrator.size_report import check_table

    def check(fam, budget, predicted, measured):
        empty = dict(interval=None, interval_method="", measured_std=None, error_nats=None, inside=None, reason=None)
        return dict(empty, family=fam, budget=budget, predicted=predicted, measured=measured, seeds=2)

    checks = [check("gpt2", 1e6, 3.0, 3.1), check("gptoss", 1e6, 2.7, 2.75), check("gptoss", 2e6, 2.5, None)]
    text = "\n".join(check_table(checks, dict(holdout=dict(size="L4-d192", budget=2e6)), "gpt2"))
    assert "- gptoss - gpt2 at 1M: predicted -0.3000 nats, measured -0.3500" in text
    assert "at 2M" not in text.split("The gap at the held-out size")[1]  # no gpt2 prediction at 2M: no gap
    assert "The gap" not in "\n".join(check_table(checks[1:], dict(holdout=dict(size="x", budget=2e6)), "gpt2"))
