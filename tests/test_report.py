"""The sweep report's tables, from hand-made rows: best-lr selection, the lr table and paired improvements."""

from __future__ import annotations

import pytest

from orchestrator.report_tables import best_lr_rows, headline_table, lr_table
from orchestrator.run_dir import WEIGHTS_FILE as WEIGHTS_NAME


def _row(arch, lr, seed, loss, layers=4, experts=4, budget=1048576):
    return dict(
        trial=f"{arch}-L{layers}-E{experts}-s{seed}-lr{lr}-D{budget}",
        arch=arch,
        n_layers=layers,
        d_model=128,
        n_heads=4,
        num_experts=experts if arch == "gptoss" else "",
        experts_per_token=2 if arch == "gptoss" else "",
        seed=seed,
        lr=lr,
        budget=budget,
        tokens=budget,
        train_flops=budget * (2e6 if arch == "gptoss" else 1e6),
        final_val_loss=loss,
        val_bpb=loss / 3,
    )


def test_each_model_is_compared_at_its_own_best_lr():
    rows = [
        _row("gpt2", 1e-3, 0, 2.0),
        _row("gpt2", 1e-3, 1, 2.2),
        _row("gpt2", 3e-3, 0, 1.9),
        _row("gpt2", 3e-3, 1, 2.1),
        _row("gptoss", 1e-3, 0, 1.8),
        _row("gptoss", 1e-3, 1, 1.8),
        _row("gptoss", 3e-3, 0, 2.5),
        _row("gptoss", 3e-3, 1, 2.5),
    ]
    kept = best_lr_rows(rows)
    assert {(r["arch"], r["lr"]) for r in kept} == {("gpt2", 3e-3), ("gptoss", 1e-3)}
    table = "\n".join(lr_table(rows))
    # One row per model, a column per lr; with two lrs the best is at the grid's edge, which the table says.
    assert "| model | layers | experts (top-k) | budget | lr 0.001 | lr 0.003 | best lr | seeds |" in table
    assert "| gpt2 | 4 | - | 1.05M | 2.1000 ± 0.1414 | **2.0000 ± 0.1414** | 0.003 (edge) | 2 |" in table
    assert "| gptoss | 4 | 4 (2) | 1.05M | **1.8000 ± 0.0000** | 2.5000 ± 0.0000 | 0.001 (edge) | 2 |" in table
    # Headline at the best lrs: gpt2 2.0 vs gptoss 1.8 -> +10.0%; per-seed improvements 5.26% and 14.29%; in nats
    # 0.2 (per seed 0.1 and 0.3), in bits/byte a third of that.
    headline = "\n".join(headline_table(rows))
    assert (
        "| 1.05M | 4 | 4 | 1.8000 ± 0.0000 | 2.0000 ± 0.1414 | +10.0% ± 6.4 | +0.2000 ± 0.1414 | +0.0667 ± 0.0471 |"
        in headline
    )


def test_the_lr_table_marks_an_interior_best_and_leaves_lrs_a_model_did_not_run_blank():
    rows = [_row("gpt2", lr, 0, loss) for lr, loss in ((1e-3, 2.2), (2e-3, 2.0), (4e-3, 2.3))]
    rows += [_row("gptoss", lr, 0, loss) for lr, loss in ((2e-3, 1.9), (4e-3, 1.8))]
    table = lr_table(rows)
    assert table[2] == "| gpt2 | 4 | - | 1.05M | 2.2000 | **2.0000** | 2.3000 | 0.002 | 1 |"
    assert table[3] == "| gptoss | 4 | 4 (2) | 1.05M |  | 1.9000 | **1.8000** | 0.004 (edge) | 1 |"


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
    assert f"| 1.05M | {layers} | 4 |" in "\n".join(headline_table([_row("gptoss", 1e-3, 0, 2.0, layers=layers)]))


def _trial_files(trial_dir, arch="gptoss", seed=0, loss=2.0):
    import json

    trial_dir.mkdir(parents=True)
    summary = dict(
        steps=10,
        tokens=1000,
        final_val_loss=loss,
        best_val_loss=loss,
        final_val_bpb=loss / 3,
        tokens_per_s=100.0,
        wall_s=5.0,
        best_checkpoint=None,
        params=dict(total=1000, active=800, embedding=200, non_embedding=800, bytes_bf16=2000),
    )
    config = dict(
        config=dict(arch=arch, seed=seed, lr=1e-3),
        model_config=dict(n_layers=2, d_model=64, n_heads=4, num_experts=4, experts_per_token=2),
        flops_per_token=1e6,
        lr=1e-3,
    )
    (trial_dir / "summary.json").write_text(json.dumps(summary))
    (trial_dir / "config.json").write_text(json.dumps(config))
    (trial_dir / "metrics.jsonl").write_text(json.dumps(dict(kind="eval", step=10, tokens=1000, val_loss=loss)) + "\n")
    return trial_dir


def test_damaged_trials_are_named_and_skipped_and_an_unfinished_sweep_says_so_first(tmp_path):
    import json

    from typer.testing import CliRunner

    import cli

    sweep = tmp_path / "sw"
    points = ["gptoss-L2-s0", "gpt2-L2-s0", "gptoss-L2-s1", "gpt2-L2-s1", "gptoss-L2-s2"]
    sweep.mkdir()
    (sweep / "sweep.json").write_text(json.dumps(dict(name="sw", points=points, grid={}, base={})))
    _trial_files(sweep / "trials" / points[0])
    _trial_files(sweep / "trials" / points[1], arch="gpt2", loss=2.2)
    truncated = _trial_files(sweep / "trials" / points[2], seed=1) / "summary.json"
    truncated.write_text(truncated.read_text()[:40])
    lacking = _trial_files(sweep / "trials" / points[3], arch="gpt2", seed=1) / "summary.json"
    lacking.write_text(json.dumps({k: v for k, v in json.loads(lacking.read_text()).items() if k != "final_val_bpb"}))
    # points[4] never ran (the sweep was interrupted)
    out = CliRunner().invoke(cli.app, ["report", str(sweep)])
    assert out.exit_code == 0, out.output
    assert "Traceback" not in out.output
    assert f"warning: trial {points[2]} left out of the report: {truncated} is not valid JSON" in out.output
    assert f"warning: trial {points[3]} left out of the report: {lacking} lacks final_val_bpb" in out.output
    assert "unfinished sweep: 3 trial(s) have no result yet" in out.output
    assert out.output.strip().splitlines()[-1].startswith("2 trials -> ")
    report = (sweep / "REPORT.md").read_text().splitlines()
    assert report[0].startswith("> **Unfinished sweep: 2 of 5 trials finished.**")
    assert points[4] in report[0] and "Rerun `python cli.py sweep` with the same name" in report[0]
    assert report[1] == report[3] == report[5] == "" and report[6].startswith("# Sweep report")
    assert report[2] == f"> **Trial {points[3]} left out: {lacking} lacks final_val_bpb.**"
    assert report[4].startswith(f"> **Trial {points[2]} left out: {truncated} is not valid JSON")
    assert [r["trial"] for r in json.loads((sweep / "results.json").read_text())] == [points[1], points[0]]


def test_a_complete_sweep_report_starts_with_its_title(tmp_path):
    import json

    from orchestrator.report import write_report

    sweep = tmp_path / "sw"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(json.dumps(dict(name="sw", points=["a"], grid={}, base={})))
    _trial_files(sweep / "trials" / "a")
    result = write_report(str(sweep))
    assert result["unfinished"] == [] and result["skipped"] == []
    assert (sweep / "REPORT.md").read_text().startswith("# Sweep report: sw")


def test_a_report_rebuilt_without_the_data_directory_keeps_its_reference_lines(tmp_path):
    # Committed study results are rebuilt on a clean clone, where data/ (and its baselines.json) is not.
    import json
    import shutil

    from orchestrator.report import write_report

    data = tmp_path / "data"
    data.mkdir()
    fits = [
        dict(
            train_tokens=1000,
            models={
                "unigram": dict(nats_per_token=5.9, bits_per_byte=2.0),
                "kn_trigram": dict(nats_per_token=3.2, bits_per_byte=1.1),
            },
        )
    ]
    (data / "baselines.json").write_text(json.dumps(dict(fits=fits)))
    sweep = tmp_path / "sw"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(json.dumps(dict(name="sw", points=["a"], grid={}, base=dict(data=str(data)))))
    _trial_files(sweep / "trials" / "a")
    write_report(str(sweep))
    first = (sweep / "REPORT.md").read_text()
    assert "| KN trigram | 1,000 | 3.2000 | 1.1000 |" in first
    shutil.rmtree(data)
    write_report(str(sweep))
    assert (sweep / "REPORT.md").read_text() == first


def test_lrs_are_chosen_per_budget_and_the_headline_has_a_row_per_budget():
    rows = [
        _row("gpt2", lr, 0, loss, budget=b)
        for lr, b, loss in [(1e-3, 2**20, 2.0), (3e-3, 2**20, 2.1), (1e-3, 2**22, 1.9), (3e-3, 2**22, 1.7)]
    ]
    rows += [_row("gptoss", 1e-3, 0, 1.8, budget=b) for b in (2**20, 2**22)]
    assert {(r["lr"], r["budget"]) for r in best_lr_rows(rows) if r["arch"] == "gpt2"} == {(1e-3, 2**20), (3e-3, 2**22)}
    headline = "\n".join(headline_table(rows))
    assert "| 1.05M | 4 | 4 | 1.8000 | 2.0000 | +10.0% | +0.2000 |" in headline
    assert "| 4.19M | 4 | 4 | 1.8000 | 1.7000 | -5.9% | -0.1000 |" in headline


def test_the_budget_section_fits_compares_and_says_which_way_the_multiplier_moves():
    from orchestrator.budget_report import budget_section
    from orchestrator.report_tables import model_label

    budgets = [2**20, 2**21, 2**22, 2**23]
    law = lambda d: 1.5 + 300 * d**-0.4  # noqa: E731
    rows = [_row("gpt2", 1e-3, s, law(b) + 0.01 * s, budget=b) for s in (0, 1) for b in budgets]
    # GPT-OSS is ahead at the small budgets and the lead shrinks: its curve flattens towards the same E.
    rows += [
        _row("gptoss", 1e-3, s, law(b * 4 / (1 + i)) + 0.01 * s, budget=b)
        for s in (0, 1)
        for i, b in enumerate(budgets)
    ]
    section = budget_section([dict(r, model=model_label(r)) for r in rows], "gpt2", [("KN trigram", 3.2, 1.1)])
    text = "\n".join(section["lines"])
    assert section["plot"][:8] == b"\x89PNG\r\n\x1a\n"
    fit = section["fits"]["gpt2-L4-d128-h4"]
    assert fit["E"] == pytest.approx(1.505, abs=0.01) and fit["beta"] == pytest.approx(0.4, abs=0.02)
    assert "| gptoss-L4-E4k2-d128-h4 | 1.05M |" in text and "4.00x [" in text  # paired seeds: a (tight) interval
    assert "data multiplier **falling** as the budget grows (4.00x at 1.05M tokens, 1.00x at 8.39M)" in text
    assert "| gpt2-L4-d128-h4 | 1.05M |" not in text  # the baseline is not compared with itself
    # Each model against the baseline per budget, paired over seeds: gptoss - gpt2 per seed, the epochs of each budget.
    section = budget_section([dict(r, model=model_label(r)) for r in rows], "gpt2", [], epoch_tokens=2**21)
    text = "\n".join(section["lines"])
    assert "| 1.05M | 0.50 | gpt2-L4-d128-h4 | " in text and "| 2 | baseline |" in text
    gap = law(2**22) - law(2**20)  # gptoss at 1M is where gpt2 is at 4M; both seeds differ by the same amount
    assert f"| 1.05M | 0.50 | gptoss-L4-E4k2-d128-h4 | {law(2**22) + 0.005:.4f} ± 0.0071 | " in text
    assert f"| {gap:+.4f} | 0.0000 | [{gap:+.4f}, {gap:+.4f}] |" in text and "| 2 | resolved |" in text
    # Several baselines: the differences against the first, the multipliers against each.
    both = "\n".join(budget_section([dict(r, model=model_label(r)) for r in rows], "gpt2,gptoss", [])["lines"])
    assert "### Each model against gpt2, per budget" in both and "### Each model against gptoss" not in both
    assert "multipliers against gpt2" in both and "### Effective data and compute multipliers against gptoss" in both
    assert "| gpt2-L4-d128-h4 | 1.05M |" in both  # gpt2 read on gptoss's curve
    few = budget_section([dict(r, model=model_label(r)) for r in rows if r["budget"] <= 2**22], "gpt2", [])
    assert "get no fit" in "\n".join(few["lines"]) and few["fits"]["gpt2-L4-d128-h4"] is None


def test_the_tables_results_md_quotes_are_what_report_rebuilds_from_the_committed_results(tmp_path, monkeypatch):
    # `python cli.py report studies/<name>` regenerates RESULTS.md's tables byte for byte from the committed raw
    # results alone (a copy of the sweep folder, as a clean clone has it: no checkpoints).
    import re
    import shutil

    from conftest import REPO

    from orchestrator import budget_report, ladder, report, size_report
    from orchestrator.report import write_report

    for module, name in (
        (report, "plot_curves"),
        (report, "plot_loss_vs_params"),
        (report, "plot_loss_vs_compute"),
        (budget_report, "plot_loss_vs_budget"),
        (ladder, "plot_waterfall"),
        (size_report, "plot_loss_vs_params"),
        (size_report, "plot_frontiers"),
        (size_report, "plot_multipliers"),
    ):
        monkeypatch.setattr(module, name, lambda *a, **k: b"")  # the tables only: drawing is most of a report's time

    text = (REPO / "RESULTS.md").read_text()
    blocks = re.findall(r"<!-- from: (\S+)/REPORT\.md -->\n(.*?)<!-- end -->", text, re.S)
    assert {source for source, _ in blocks} == {
        "studies/study-sizes",
        "studies/study-lr-check",
        "studies/study-lr-transfer-d64",
        "studies/study-lr-transfer-d192",
    }
    rebuilt = {}
    for source, block in blocks:
        if source not in rebuilt:
            copy = tmp_path / source.replace("/", "_")
            shutil.copytree(
                REPO / source,
                copy,
                ignore=shutil.ignore_patterns("*.png", "REPORT.md", "results.*", "checkpoint_*", "branch_points"),
            )
            write_report(str(copy))
            rebuilt[source] = set((copy / "REPORT.md").read_text().splitlines())
        table = [line for line in block.splitlines() if line.startswith("|")]
        assert table and [line for line in table if line not in rebuilt[source]] == [], source


def test_every_loss_says_which_tokens_it_is_over():
    from orchestrator.report import final_eval_scope
    from orchestrator.report_tables import loss_scope_line

    new = dict(val_tokens=122763, val_windows=480, val_fraction=1.0, val_scope="whole split")
    assert final_eval_scope(dict(new, val_loss=3.1), {"seq_len": 256}) == new
    old = final_eval_scope(dict(val_tokens=122624), {"seq_len": 256, "eval_windows": 0})
    assert old == dict(
        val_tokens=122624, val_windows=479, val_fraction=None, val_scope="every full window (the tail not scored)"
    )
    short = final_eval_scope(dict(val_tokens=128 * 256), {"seq_len": 256, "eval_windows": 128})
    assert short["val_scope"] == "first 128 windows" and short["val_windows"] == 128
    line = loss_scope_line([new, new, old])
    assert line.startswith("Tokens these losses are over")
    assert "2 trial(s): 122,763 target tokens, 480 windows, whole split, 100.00% of the split's target tokens" in line
    assert "1 trial(s): 122,624 target tokens, 479 windows, every full window (the tail not scored)" in line
