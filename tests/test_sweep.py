"""Sweeps: grid expansion and validation, and a tiny Ray Tune sweep that reports, regenerates and resumes."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import TIKTOKEN_DIR

from orchestrator.config import TrainConfig
from orchestrator.sweep_plan import SweepConfig, expand_grid, validate_points


def _sweep(grid, **base) -> SweepConfig:
    return SweepConfig(base=TrainConfig(**{"preset": "debug", **base}), grid=grid, name="t")


def test_default_grid_runs_gpt2_once_per_depth():
    points = expand_grid(_sweep({"arch": ["gptoss", "gpt2"], "n_layers": [6, 8, 12], "num_experts": [4, 8, 16]}))
    names = [p.name for p in points]
    assert len(names) == len(set(names)) == 3 * 3 + 3
    assert sorted(n for n in names if n.startswith("gpt2")) == ["gpt2-L12", "gpt2-L6", "gpt2-L8"]
    assert "gptoss-L8-E16" in names


def test_invalid_points_are_named_before_anything_runs():
    cfg = _sweep({"arch": ["gptoss", "gpt2"], "n_layers": [1], "n_kv_heads": [3]})
    with pytest.raises(ValueError, match=r"1 of 2 grid points.*gptoss-L1-kv3"):
        validate_points(cfg, expand_grid(cfg), vocab_size=512)


def test_each_arch_gets_its_own_lr_unless_the_grid_sweeps_lr():
    cfg = SweepConfig(
        base=TrainConfig(preset="debug", lr=5e-4),
        grid={"arch": ["gptoss", "gpt2"], "n_layers": [1]},
        name="t",
        lr_by_arch={"gpt2": 2e-3},
    )
    lrs = {p.arch: p.train_config(cfg.base, "s", 1, lr_by_arch=cfg.lr_by_arch).lr for p in expand_grid(cfg)}
    assert lrs == {"gptoss": 5e-4, "gpt2": 2e-3}
    swept = SweepConfig(base=cfg.base, grid={"arch": ["gpt2"], "lr": [1e-3]}, name="t", lr_by_arch={"gpt2": 2e-3})
    assert [p.train_config(swept.base, "s", 1, lr_by_arch=swept.lr_by_arch).lr for p in expand_grid(swept)] == [1e-3]
    with pytest.raises(ValueError, match="lr_by_arch entry llama"):
        SweepConfig(base=cfg.base, grid={}, name="t", lr_by_arch={"llama": 1e-3})


def test_tied_and_untied_heads_and_single_switches_are_axes():
    cfg = SweepConfig(
        base=TrainConfig(preset="debug"), grid={"arch": ["gptoss", "gpt2"], "tie_embeddings": [True, False]}, name="t"
    )
    points = expand_grid(cfg)
    assert [p.name for p in points] == ["gptoss-tieTrue", "gptoss-tieFalse", "gpt2-tieTrue", "gpt2-tieFalse"]
    untied = points[3].train_config(cfg.base, "s", 1)
    assert untied.model_overrides == {"tie_embeddings": False}
    validate_points(cfg, points, vocab_size=1000)
    switches = SweepConfig(
        base=TrainConfig(preset="debug"),
        name="t",
        grid={"arch": ["gptoss", "gpt2"], "positions": ["rope"], "sliding_window": [0], "sinks": [False]},
    )
    points = expand_grid(switches)
    assert [p.name for p in points] == ["gptoss-w0-posrope-sinksFalse", "gpt2"]
    assert points[0].train_config(switches.base, "s", 1).model_overrides == {
        "sliding_window": 0,
        "positions": "rope",
        "sinks": False,
    }
    validate_points(switches, points, vocab_size=1000)


def test_trials_get_absolute_local_paths(tmp_path, monkeypatch):
    # A Tune trial runs in its own working directory: a relative --data there would name nothing.
    from orchestrator.sweep import trial_base

    monkeypatch.chdir(tmp_path)
    base = trial_base(TrainConfig(data="data/tinystories", tokenizer_dir="tok"))
    assert base.data == str(tmp_path / "data" / "tinystories") and base.tokenizer_dir == str(tmp_path / "tok")
    assert base.verify_data is False  # checked once by the sweep, not by every trial
    assert trial_base(TrainConfig(data="s3://bucket/data")).data == "s3://bucket/data"


@pytest.mark.parametrize(
    "grid, message",
    [
        ({"n_layers": []}, "is empty"),
        ({"arch": ["gptoss", "llama"]}, "unknown arch"),
        ({"colour": [1]}, "unknown sweep axis"),
    ],
)
def test_bad_axes_are_refused(grid, message):
    with pytest.raises(ValueError, match=message):
        _sweep(grid)


def test_more_workers_per_trial_than_the_cluster_has_fails_fast(prepared_data, tmp_path, ray_session):
    from orchestrator.sweep import run_sweep
    from raysetup import ClusterError

    cfg = SweepConfig(
        base=TrainConfig(
            data=str(prepared_data),
            preset="debug",
            storage=str(tmp_path),
            seq_len=64,
            batch_size=8,
            tokenizer_dir=str(TIKTOKEN_DIR),
        ),
        grid={"arch": ["gpt2"], "n_layers": [1]},
        name="big",
        workers_per_trial=3,
    )
    with pytest.raises(ClusterError, match="--workers-per-trial 3 exceeds"):
        run_sweep(cfg, show_progress=False)
    assert not (tmp_path / "big").exists()


def _rows(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tiny_sweep_reports_regenerates_and_resumes(prepared_data, tmp_path, ray_session, capfd):
    from orchestrator.report import write_report
    from orchestrator.sweep import run_sweep

    base = TrainConfig(
        data=str(prepared_data),
        preset="debug",
        storage=str(tmp_path),
        seq_len=64,
        batch_size=8,
        max_steps=10,
        eval_every=5,
        eval_windows=16,
        sample_tokens=0,
        tokenizer_dir=str(TIKTOKEN_DIR),
    )
    grid = {"arch": ["gptoss", "gpt2"], "n_layers": [1, 2], "num_experts": [2]}
    run_sweep(SweepConfig(base=base, grid=grid, name="tiny"), show_progress=False)
    sweep_dir = tmp_path / "tiny"
    rows = _rows(sweep_dir / "results.csv")
    assert sorted(r["trial"] for r in rows) == ["gpt2-L1", "gpt2-L2", "gptoss-L1-E2", "gptoss-L2-E2"]
    assert all(int(r["steps"]) == 10 and float(r["final_val_loss"]) > 0 for r in rows)
    report = (sweep_dir / "REPORT.md").read_text()
    for heading in (
        "## 1. GPT-OSS vs GPT-2 per depth",
        "## 2. Architectures",
        "## 3. Validation loss against parameters",
        "## 4. Best expert count per depth",
        "## 5. Settings",
    ):
        assert heading in report
    assert "| 2 | 2 |" in report  # the depth-2 row of the headline table
    assert all(int(r["checkpoint_bytes"]) > 0 and float(r["train_s"]) > 0 for r in rows)
    for png in ("loss_curves.png", "loss_vs_params.png", "loss_vs_compute.png"):
        data = (sweep_dir / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000

    before = {f: (sweep_dir / f).read_bytes() for f in ("results.csv", "results.json", "REPORT.md")}
    write_report(str(sweep_dir))
    assert {f: (sweep_dir / f).read_bytes() for f in before} == before

    # Widen the grid, and let the new trials die after their last (step-10) checkpoint, before their summary: the
    # state a failure at the end of a trial (the sample, a lost node) leaves behind.
    from raysetup import ClusterError

    finished = sweep_dir / "trials" / "gptoss-L1-E2" / "summary.json"
    stamp = finished.stat().st_mtime_ns
    wider = {**grid, "num_experts": [2, 4]}
    crashing = TrainConfig(**{**base.to_dict(), "inject_failure_at": 10})
    capfd.readouterr()
    with pytest.raises(ClusterError) as failed:
        run_sweep(SweepConfig(base=crashing, grid=wider, name="tiny"), show_progress=True)
    console = capfd.readouterr()
    message = str(failed.value)
    assert "\n" not in message and message.startswith("2 of 6 trial(s) failed") and "same command again" in message
    assert "Traceback" not in message and "Traceback" not in console.out + console.err, console.out + console.err
    failures = [line for line in (console.out + console.err).splitlines() if line.startswith("[failed")]
    assert len(failures) == 2 and all("training failed" in line for line in failures), failures
    interrupted = sweep_dir / "trials" / "gptoss-L2-E4"
    assert (interrupted / "checkpoint_0000010").is_dir() and not (interrupted / "summary.json").exists()
    assert finished.stat().st_mtime_ns == stamp, "a finished trial was trained again"

    # The rerun by name completes the failed trials (they trained to the end: nothing is trained again).
    run_sweep(SweepConfig(base=base, grid=wider, name="tiny"), show_progress=False)
    rows = _rows(sweep_dir / "results.csv")
    assert len(rows) == 6 and len({r["trial"] for r in rows}) == 6
    assert all(int(r["steps"]) == 10 for r in rows)
    assert finished.stat().st_mtime_ns == stamp, "a finished trial was trained again"
    evals = [json.loads(line) for line in open(interrupted / "metrics.jsonl") if line.strip()]
    assert [e["step"] for e in evals if e["kind"] == "eval"] == [5, 10]
    summary = json.loads((interrupted / "summary.json").read_text())
    assert summary["invocation"]["steps"] == 0 and summary["invocations"] == 2 and summary["steps"] == 10


def test_the_example_sweep_file_parses_and_flags_override_it():
    from conftest import REPO

    from orchestrator.sweep_file import build_sweep_config

    cfg = build_sweep_config(str(REPO / "sweeps" / "example.yaml"), {"n_layers": [2]}, {"name": None}, {"seq_len": 128})
    assert cfg.name == "example-cpu" and cfg.base.seq_len == 128 and cfg.base.max_tokens == 1048576
    assert cfg.grid == {"arch": ["gptoss", "gpt2"], "n_layers": [2], "num_experts": [4, 8], "seed": [0, 1]}
    names = [p.name for p in expand_grid(cfg)]
    assert len(names) == 2 * 2 + 2  # gptoss x 2 expert counts x 2 seeds, gpt2 x 2 seeds
    validate_points(cfg, expand_grid(cfg), vocab_size=10_000)
    default = build_sweep_config(None, {"arch": None}, {}, {"max_steps": 10})
    assert default.grid == {"arch": ["gptoss", "gpt2"], "n_layers": [6, 8, 12], "num_experts": [4, 8, 16]}


def test_a_trials_workers_leave_room_for_the_trial_itself(prepared_data, tmp_path):
    # Two trials on two CPUs: each trial holds TRIAL_CPU, so its worker must reserve 1 - TRIAL_CPU, or the second
    # trial's worker waits for the first trial to end (the sweep silently runs one trial at a time).
    from orchestrator.executors import TRIAL_CPU, RayExecutor
    from orchestrator.run_dir import RunDir
    from orchestrator.storage import open_storage
    from orchestrator.trainer import plan_run

    plan = plan_run(TrainConfig(data=str(prepared_data), preset="debug", storage=str(tmp_path)), workers=1)
    run = RunDir(open_storage(str(tmp_path)), "r")
    trainer = RayExecutor(in_trial=True)._trainer(plan, run, None, 0)
    assert 2 * (TRIAL_CPU + trainer.scaling_config.resources_per_worker["CPU"]) <= 2
    alone = RayExecutor()._trainer(plan, run, None, 0)
    assert alone.scaling_config.resources_per_worker == {"CPU": 1}


@pytest.mark.parametrize("name", ["tinystories-cpu", "tinystories-gpu"])
def test_the_study_files_compare_like_with_like(name):
    # RESULTS.md's protocol: both archs at every depth with the same width and heads, the same budget, each arch at
    # the lr its lr-sweep file chose; the lr sweep itself covers every arch at one depth.
    from conftest import REPO

    from gptoss import build_config
    from orchestrator.sweep_file import build_sweep_config

    study = build_sweep_config(str(REPO / "sweeps" / f"{name}.yaml"), {}, {}, {})
    lr_sweep = build_sweep_config(str(REPO / "sweeps" / f"{name}-lr.yaml"), {}, {}, {})
    assert set(study.lr_by_arch) == {"gptoss", "gpt2"} and "lr" not in study.grid
    assert len(lr_sweep.grid["n_layers"]) == 1 and len(lr_sweep.grid["lr"]) >= 3 and len(study.grid["seed"]) >= 2
    assert study.base.max_tokens == lr_sweep.base.max_tokens >= 1_000_000
    points = expand_grid(study)
    validate_points(study, points, vocab_size=10_000)
    shapes = {}
    for p in points:
        cfg = p.train_config(study.base, "s", 1, lr_by_arch=study.lr_by_arch)
        model = build_config(p.arch, cfg.preset, **cfg.model_overrides)
        shapes.setdefault(model.n_layers, set()).add((model.d_model, model.n_heads))
        assert cfg.lr == study.lr_by_arch[p.arch]
    assert len(shapes) == 3 and all(len(s) == 1 for s in shapes.values())
    assert {p.arch for p in points} == {"gptoss", "gpt2"}


# ----------------------------------------------------------------------------------------------
# Variants (the component ladder) as a grid axis.


def test_variants_expand_as_a_gptoss_axis_with_safe_names_and_their_own_lrs():
    cfg = SweepConfig(
        base=TrainConfig(preset="debug", lr=2e-3),
        name="t",
        grid={"arch": ["gptoss", "gpt2"], "variant": ["gpt2", "+rope", "+moe"], "seed": [0, 1]},
        lr_by_variant={"gpt2": 1.5e-3, "+moe": 3e-3},
        lr_by_arch={"gpt2": 1e-3},
    )
    assert cfg.grid["variant"] == ["gpt2", "+rope", "gptoss"] and cfg.lr_by_variant == {"gpt2": 1.5e-3, "gptoss": 3e-3}
    points = expand_grid(cfg)
    assert sorted(p.name for p in points) == [
        "gpt2-s0",
        "gpt2-s1",
        "v-gpt2-s0",
        "v-gpt2-s1",
        "v-gptoss-s0",
        "v-gptoss-s1",
        "v-p-rope-s0",
        "v-p-rope-s1",
    ]  # arch gpt2: once per seed
    configs = {
        p.name: p.train_config(cfg.base, "s", 1, lr_by_arch=cfg.lr_by_arch, lr_by_variant=cfg.lr_by_variant)
        for p in points
    }
    assert {n: (c.variant, c.lr) for n, c in configs.items() if n.endswith("s0")} == {
        "v-gpt2-s0": ("gpt2", 1.5e-3),
        "v-p-rope-s0": ("+rope", 2e-3),
        "v-gptoss-s0": ("gptoss", 3e-3),
        "gpt2-s0": (None, 1e-3),
    }
    assert configs["v-p-rope-s1"].resolved_model_overrides()["positions"] == "rope"
    validate_points(cfg, points, vocab_size=512)


def test_a_ladder_sweep_file_and_flags_build_the_variant_axis():
    from conftest import REPO

    from gptoss.variants import LADDER
    from orchestrator.sweep_file import build_sweep_config

    cfg = build_sweep_config(str(REPO / "sweeps" / "ladder-cpu.yaml"), {}, {}, {})
    assert cfg.grid["variant"] == list(LADDER) and len(cfg.grid["seed"]) >= 3
    assert cfg.lr_by_variant == {"gpt2": 0.0015, "gptoss": 0.003} and cfg.base.max_tokens == 524288
    points = expand_grid(cfg)
    assert len(points) == len(LADDER) * len(cfg.grid["seed"])
    validate_points(cfg, points, vocab_size=10_000)
    tuning = build_sweep_config(str(REPO / "sweeps" / "ladder-cpu-lr.yaml"), {}, {}, {})
    assert tuning.grid["variant"] == list(LADDER) and len(tuning.grid["lr"]) == 3
    assert tuning.base.max_tokens == cfg.base.max_tokens and tuning.base.preset == cfg.base.preset
    flags = build_sweep_config(
        None, {"variant": ["leave-one-out"], "seed": [0]}, {"lr_by_variant": {"gptoss-no-moe": 1e-3}}, {}
    )
    assert flags.grid == {
        "variant": [
            "gptoss",
            "gptoss-no-untied",
            "gptoss-no-rope",
            "gptoss-no-yarn",
            "gptoss-no-rmsnorm",
            "gptoss-no-gqa",
            "gptoss-no-sinks",
            "gptoss-no-window",
            "gptoss-no-moe",
        ],
        "seed": [0],
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(grid={"variant": ["llama"]}), "unknown variant 'llama'"),
        (dict(grid={"arch": ["gpt2"], "variant": ["gpt2"]}), "add gptoss to the archs"),
        (dict(grid={}, lr_by_variant={"gpt2": 2.0}), "lr_by_variant entry gpt2=2.0 needs an lr in"),
        (dict(grid={}, lr_by_variant={"bert": 1e-3}), "unknown variant 'bert'"),
    ],
)
def test_bad_variant_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SweepConfig(base=TrainConfig(preset="debug"), name="t", **kwargs)


def test_a_variant_needs_gptoss_and_resolves_under_explicit_overrides():
    with pytest.raises(ValueError, match="use it with arch gptoss"):
        TrainConfig(arch="gpt2", variant="gpt2")
    cfg = TrainConfig(variant="+moe", model_overrides={"sinks": True})
    assert cfg.variant == "gptoss"
    assert TrainConfig(variant="+window", model_overrides={"mlp": "moe"}).resolved_model_overrides() == {
        "mlp": "moe",
        "intermediate_size": None,
    }


def test_tiny_ladder_sweep_reports_the_decomposition_and_the_waterfall(prepared_data, tmp_path, ray_session):
    # One seed, and no Tune (`local`), keep this short; the paired arithmetic over seeds is tests/test_ladder.py's.
    from orchestrator.sweep import run_sweep

    base = TrainConfig(
        data=str(prepared_data),
        preset="debug",
        storage=str(tmp_path),
        seq_len=64,
        batch_size=8,
        max_steps=6,
        eval_every=6,
        eval_windows=8,
        sample_tokens=0,
        tokenizer_dir=str(TIKTOKEN_DIR),
    )
    cfg = SweepConfig(
        base=base,
        grid={"variant": ["gpt2", "gptoss", "gptoss-no-moe"], "seed": [3]},
        name="ladder",
        lr_by_variant={"gpt2": 2e-3},
    )
    run_sweep(cfg, show_progress=False, local=True)
    sweep_dir = tmp_path / "ladder"
    rows = {r["variant"]: r for r in _rows(sweep_dir / "results.csv")}
    assert sorted(rows) == ["gpt2", "gptoss", "gptoss-no-moe"] and rows["gpt2"]["lr"] == "0.002"
    saved = json.loads((sweep_dir / "trials" / "v-gpt2-s3" / "config.json").read_text())
    assert saved["config"]["variant"] == "gpt2"
    assert (
        saved["model_config"]["positions"],
        saved["model_config"]["mlp"],
        saved["model_config"]["tie_embeddings"],
    ) == ("learned", "gelu", True)
    report = (sweep_dir / "REPORT.md").read_text().splitlines()
    assert "## Component ladder: where the difference comes from" in report
    step = float(rows["gptoss"]["final_val_loss"]) - float(rows["gpt2"]["final_val_loss"])
    ladder_row = next(line for line in report if line.startswith("| gptoss |"))
    assert f"| {step:+.4f} |" in ladder_row and ladder_row.endswith("| 1 | not resolved (1 seed) |")
    loo = float(rows["gptoss-no-moe"]["final_val_loss"]) - float(rows["gptoss"]["final_val_loss"])
    assert f"| {loo:+.4f} |" in next(line for line in report if line.startswith("| gptoss-no-moe |"))
    png = (sweep_dir / "ladder.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("seq_len: sixty\n", "seq_len must be an integer, got 'sixty'"),
        ("seq_len: 64.5\n", "seq_len must be an integer, got 64.5"),
        (
            "lr: 1e-3\n",
            "lr must be a number or null, got '1e-3' (YAML reads 1e-3 as text; write it with a dot, e.g. 0.001)",
        ),
        ("cpu: maybe\n", "cpu must be a true/false, got 'maybe'"),
        ("budget_tokens: lots\n", "budget_tokens must be an integer, got 'lots'"),
        ("workers_per_trial: two\n", "workers_per_trial must be an integer, got 'two'"),
        ("asha: 3\n", "asha must be a true/false, got 3"),
        ("lr_by_arch: 0.001\n", "lr_by_arch must be a mapping, got 0.001"),
        ("grid:\n  n_layers: 2\n", "sweep axis 'n_layers' must be a list of values such as [2], got 2"),
        ("grid:\n  n_layers: [2, four]\n", "sweep axis 'n_layers' takes integer values, got 'four'"),
        ("grid:\n  lr: [1e-3]\n", "sweep axis 'lr' takes number values, got '1e-3' (YAML reads"),
        ("grid: [2, 4]\n", "grid must be a mapping"),
    ],
)
def test_every_yaml_field_is_type_checked_by_name(tmp_path, yaml_text, message):
    from orchestrator.sweep_file import build_sweep_config

    path = tmp_path / "sweep.yaml"
    path.write_text("name: t\n" + yaml_text + ("" if "grid" in yaml_text else "grid:\n  n_layers: [2]\n"))
    with pytest.raises(ValueError) as info:
        build_sweep_config(str(path), {}, {}, {})
    assert message in str(info.value)


def test_ctrl_c_during_a_sweep_exits_130_names_the_finished_trials_and_marks_the_report(
    prepared_data, tmp_path, ray_session, monkeypatch
):
    """The exit path, with Tune replaced by a stand-in that finishes one trial and then meets Ctrl-C (a real SIGINT
    to `cli.py sweep` was checked by hand: exit 130 and these lines)."""
    import os

    from test_report import _trial_files
    from typer.testing import CliRunner

    import cli

    monkeypatch.setenv("TUNE_DISABLE_SIGINT_HANDLER", "0")
    seen = {}

    class InterruptedTuner:
        def __init__(self, trainable, param_space, tune_config, run_config):
            self.storage = run_config.storage_path

        def fit(self):
            seen["tune_sigint_handler_disabled"] = os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"
            _trial_files(tmp_path / "runs" / "cc" / "trials" / "gpt2-L1", arch="gpt2")
            raise KeyboardInterrupt

    import ray.tune

    monkeypatch.setattr(ray.tune, "Tuner", InterruptedTuner)  # the sweep imports Tune when a phase starts
    out = CliRunner().invoke(
        cli.app,
        [
            "sweep",
            "--data",
            str(prepared_data),
            "--preset",
            "debug",
            "--archs",
            "gpt2",
            "--layers",
            "1,2",
            "--max-steps",
            "5",
            "--seq-len",
            "64",
            "--batch-size",
            "8",
            "--storage",
            str(tmp_path / "runs"),
            "--name",
            "cc",
        ],
    )
    assert out.exit_code == 130, out.output
    assert seen["tune_sigint_handler_disabled"]  # else Tune swallows Ctrl-C and fit() returns as if done
    assert "sweep cc interrupted: 1 of 2 trials finished (gpt2-L1)" in out.output
    assert "rerun the same command (same --name cc) to resume" in out.output
    assert "sweep cc done" not in out.output
    report = (tmp_path / "runs" / "cc" / "REPORT.md").read_text()
    assert report.startswith("> **Unfinished sweep: 1 of 2 trials finished.**") and "missing: gpt2-L2" in report


def test_interruption_lines_without_a_finished_trial():
    from orchestrator.sweep import interruption_line
    from orchestrator.sweep_plan import TrialPoint

    points = [TrialPoint("gpt2-L1", "gpt2", ()), TrialPoint("gpt2-L2", "gpt2", ())]
    assert interruption_line("s", points, [], "runs/s").startswith("sweep s interrupted: 0 of 2 trials finished; ")
    line = interruption_line("s", points, ["gpt2-L2"], "runs/s")
    assert "1 of 2 trials finished (gpt2-L2)" in line and "\n" not in line and line.endswith("to resume")


def _budget_sweep(budgets=(2**20, 2**21, 2**22), **base) -> SweepConfig:
    settings = dict(preset="debug", schedule="wsd", seq_len=256, batch_size=16)
    settings.update(base)
    return SweepConfig(
        base=TrainConfig(**settings),
        grid={"arch": ["gptoss", "gpt2"], "n_layers": [1]},
        name="b",
        budgets=list(budgets),
    )


def test_budgets_make_one_long_run_per_point_and_branches_at_exact_cooldown_starts():
    from orchestrator.optimizer import lr_at
    from orchestrator.sweep_plan import plan_trials

    cfg = _budget_sweep()
    long_runs, branches = plan_trials(cfg, expand_grid(cfg), cfg.base, "/runs/b/trials")
    # 4,096 tokens per step: 256, 512 and 1,024 steps; the 20% cooldowns start at 256 - 51 and 512 - 102.
    assert [(s.name, s.total_steps) for s in long_runs] == [("gptoss-L1-D4194304", 1024), ("gpt2-L1-D4194304", 1024)]
    assert long_runs[0].keep_states_at == (205, 410) and long_runs[0].train.max_tokens == 2**22
    assert [(s.name, s.total_steps, s.branch.step, s.branch.run) for s in branches[:2]] == [
        ("gptoss-L1-D1048576", 256, 205, "gptoss-L1-D4194304"),
        ("gptoss-L1-D2097152", 512, 410, "gptoss-L1-D4194304"),
    ]
    assert all(s.train.storage == "/runs/b/trials" for s in long_runs + branches)
    warmups = {s.train.warmup_steps for s in long_runs + branches}
    assert warmups == {51}  # 5% of the largest budget's steps, for every budget: the stable phases coincide
    by_name = {s.name: s.train for s in long_runs}
    for spec in branches:
        long_cfg = by_name[spec.branch.run]
        b, start = spec.train, spec.branch.step
        lr = dict(warmup=51, lr=b.resolved_lr, min_lr=b.resolved_min_lr)
        same = [lr_at(s, spec.total_steps, 51, lr["lr"], lr["min_lr"], "wsd", 0.2) for s in range(start)]
        assert same == [lr_at(s, 1024, 51, lr["lr"], lr["min_lr"], "wsd", 0.2) for s in range(start)]
        assert lr_at(start, spec.total_steps, 51, lr["lr"], lr["min_lr"], "wsd", 0.2) < lr["lr"]
        assert {k: v for k, v in b.to_dict().items() if k not in ("name", "max_tokens")} == {
            k: v for k, v in long_cfg.to_dict().items() if k not in ("name", "max_tokens")
        }
        spec.check(spec.total_steps)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(schedule="cosine"), "budgets need --schedule wsd"),
        (dict(max_tokens=2**20), "give budgets or one budget"),
        (dict(budgets=[2**20, 2**20]), "repeat a value"),
        (dict(budgets=[2**20 - 100, 2**20]), "the same step count"),
        (dict(budgets=[4096 * 10, 2**22], warmup_steps=20), "inside the 20-step warmup"),
        (dict(budgets=[0]), "positive token counts"),
    ],
)
def test_bad_budgets_are_refused_before_anything_runs(kw, message):
    from orchestrator.sweep_plan import plan_trials

    budgets = kw.pop("budgets", [2**20, 2**21])
    with pytest.raises(ValueError, match=message):
        cfg = _budget_sweep(budgets, **kw)
        plan_trials(cfg, expand_grid(cfg), cfg.base, "s")


def test_budgets_on_the_command_line_replace_the_files_single_budget():
    from conftest import REPO

    from orchestrator.sweep_file import build_sweep_config

    cfg = build_sweep_config(
        str(REPO / "sweeps" / "example.yaml"), {}, {"budgets": [2**20, 2**21]}, {"schedule": "wsd"}
    )
    assert cfg.budgets == [2**20, 2**21] and cfg.base.max_tokens is None and cfg.base.schedule == "wsd"
    with pytest.raises(ValueError, match="budgets need --schedule wsd"):
        build_sweep_config(str(REPO / "sweeps" / "example.yaml"), {}, {"budgets": [2**20, 2**21]}, {})


def test_budget_sweep_branches_fits_and_compares(prepared_data, tmp_path, ray_session):
    from data_pipeline.ngram import fit_baselines
    from orchestrator.sweep import run_sweep

    fit_baselines(prepared_data)  # the report draws these as reference lines
    # 512 tokens per step: budgets of 16 and 32 steps; the 16-step budget cools down from step 13 of the long run.
    base = TrainConfig(
        data=str(prepared_data),
        preset="debug",
        storage=str(tmp_path),
        seq_len=64,
        batch_size=8,
        eval_every=8,
        eval_windows=16,
        sample_tokens=0,
        schedule="wsd",
        tokenizer_dir=str(TIKTOKEN_DIR),
    )
    cfg = SweepConfig(
        base=base,
        grid={"arch": ["gptoss", "gpt2"], "n_layers": [1], "num_experts": [2]},
        name="budgets",
        budgets=[8192, 16384],
    )
    run_sweep(cfg, show_progress=False, local=True)
    sweep_dir = tmp_path / "budgets"
    trials = sweep_dir / "trials"
    rows = {r["trial"]: r for r in _rows(sweep_dir / "results.csv")}
    assert sorted(rows) == ["gpt2-L1-D16384", "gpt2-L1-D8192", "gptoss-L1-E2-D16384", "gptoss-L1-E2-D8192"]
    assert {(int(r["budget"]), int(r["steps"])) for r in rows.values()} == {(8192, 16), (16384, 32)}
    for arch in ("gpt2-L1", "gptoss-L1-E2"):
        # The branch trained only its cooldown: its records start after the long run's step 13.
        branch = [json.loads(line) for line in open(trials / f"{arch}-D8192" / "metrics.jsonl") if line.strip()]
        assert branch[0]["step"] > 13 and [e["step"] for e in branch if e["kind"] == "eval"] == [16]
        assert json.load(open(trials / f"{arch}-D8192" / "config.json"))["spec"]["branch"]["step"] == 13
        long_evals = [json.loads(line) for line in open(trials / f"{arch}-D16384" / "metrics.jsonl") if line.strip()]
        assert [e["step"] for e in long_evals if e["kind"] == "eval"] == [8, 16, 24, 32]
        assert not (trials / f"{arch}-D16384" / "branch_points").exists(), "the kept state outlived its branch"
    report = (sweep_dir / "REPORT.md").read_text()
    assert "## 4b. Loss against budget (gpt2 as the baseline)" in report and "get no fit" in report
    fit_row = [line for line in report.splitlines() if line.startswith("| gptoss-L1-E2k2-d64-h4 | 2 | - |")]
    multipliers = [
        line for line in report.splitlines() if line.startswith("| gptoss-L1-E2k2-d64-h4 | ") and "x |" in line
    ]
    assert len(fit_row) == 1 and [line.split(" | ")[1] for line in multipliers] == ["8.19k", "16.4k"]
    assert "data multiplier **" in report
    assert "## 4c. Count-based reference models" in report and "| KN trigram |" in report
    assert "| 8.19k | 1 | 2 |" in report and "| 16.4k | 1 | 2 |" in report  # a headline row per budget
    data = (sweep_dir / "loss_vs_budget.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000

    # Run again: every long run and branch is finished, nothing trains.
    stamps = {t: (trials / t / "summary.json").stat().st_mtime_ns for t in rows}
    run_sweep(cfg, show_progress=False, local=True)
    assert {t: (trials / t / "summary.json").stat().st_mtime_ns for t in rows} == stamps


def test_the_budget_study_file_plans_long_runs_and_branches():
    from conftest import REPO

    from orchestrator.sweep_file import build_sweep_config
    from orchestrator.sweep_plan import plan_trials

    cfg = build_sweep_config(str(REPO / "sweeps" / "tinystories-cpu-budgets.yaml"), {}, {}, {})
    assert cfg.budgets == [2**20, 2**21, 2**22, 2**23] and cfg.base.schedule == "wsd" and cfg.baseline == "gpt2"
    long_runs, branches = plan_trials(cfg, expand_grid(cfg), cfg.base, "s")
    assert len(long_runs) == 6 and len(branches) == 18
    assert long_runs[0].keep_states_at == (205, 410, 819) and long_runs[0].total_steps == 2048
    # Cost: the long run plus each branch's cooldown, against four separate runs.
    cost = long_runs[0].total_steps + sum(b.total_steps - b.branch.step for b in branches[:3])
    assert cost / long_runs[0].total_steps == pytest.approx(1 + 0.2 * (256 + 512 + 1024) / 2048, abs=0.01)


def test_the_study_lr_stage_tunes_each_headline_model_at_a_2m_horizon_with_wsd():
    # Issue 16's protocol: lr per model at >= 2M tokens, >= 3 values a factor of 2 apart, the same schedule shape.
    from conftest import REPO

    from orchestrator.sweep_file import build_sweep_config

    cfg = build_sweep_config(str(REPO / "sweeps" / "study-cpu-lr.yaml"), {}, {}, {})
    assert cfg.grid["variant"] == ["gpt2", "+untied", "gptoss-no-moe", "gptoss"]
    lrs = sorted(cfg.grid["lr"])
    assert len(lrs) >= 3 and all(abs(b / a - 2) < 1e-9 for a, b in zip(lrs, lrs[1:]))
    assert cfg.base.max_tokens >= 2 * 2**20 and cfg.base.schedule == "wsd" and cfg.base.eval_windows == 0
    assert cfg.base.storage == "studies" and cfg.name == "tinystories-lr"
    points = expand_grid(cfg)
    assert len(points) == 4 * len(lrs) * len(cfg.grid["seed"])
    validate_points(cfg, points, vocab_size=10_571)


# ----------------------------------------------------------------------------------------------
# Without Ray (sweep --local), and each model's lr taken from an earlier lr sweep (lr_from).

_LOCAL_SWEEPS = """
import json, sys
sys.modules["ray"] = None  # any import of Ray fails: the machine this path is for has torch but not Ray
from orchestrator.config import TrainConfig
from orchestrator.sweep import run_sweep
from orchestrator.sweep_plan import SweepConfig

data, storage = sys.argv[1], sys.argv[2]
base = dict(data=data, preset="debug", storage=storage, seq_len=64, batch_size=8, eval_every=8, eval_windows=16,
            sample_tokens=4, schedule="wsd")
lrs = SweepConfig(base=TrainConfig(**base, max_tokens=4096), grid={"arch": ["gptoss"], "variant": ["gpt2", "gptoss"],
                  "lr": [0.0005, 0.004], "seed": [0], "n_layers": [1]}, name="lrs", max_concurrent=2)
run_sweep(lrs, show_progress=False, local=True)
budgets = SweepConfig(base=TrainConfig(**base), grid={"arch": ["gptoss"], "variant": ["gpt2", "gptoss"], "seed": [0],
                                                      "n_layers": [1]},
                      name="budgets", budgets=[4096, 8192], lr_from=storage + "/lrs", max_concurrent=2)
run_sweep(budgets, show_progress=False, local=True)
chosen = dict(budgets.lr_by_variant)
# A branch lost with the long run's kept state (results copied without it): the rerun trains it from step 0.
import shutil
branch = storage + "/budgets/trials/v-gpt2-L1-s0-D4096"
before = json.load(open(branch + "/summary.json"))["final_val_loss"]
shutil.rmtree(branch)
run_sweep(budgets, show_progress=False, local=True)
print(json.dumps(dict(chosen=chosen, before=before)))
"""


def test_a_local_sweep_runs_without_ray_branches_and_trains_each_model_at_its_best_lr(prepared_data, tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    from data_pipeline.ngram import fit_baselines
    from orchestrator.lr_selection import best_lrs

    fit_baselines(prepared_data)
    proc = subprocess.run(
        [sys.executable, "-c", _LOCAL_SWEEPS, str(prepared_data), str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    chosen = out["chosen"]
    # Each variant trains at the lr with the lowest final loss in the lr sweep, read from its trials' own files.
    finals = {}
    for trial in (p for p in (tmp_path / "lrs" / "trials").iterdir() if p.is_dir()):  # run dirs, not their locks
        saved = json.loads((trial / "config.json").read_text())
        finals.setdefault(saved["config"]["variant"], {})[saved["lr"]] = json.loads(
            (trial / "summary.json").read_text()
        )["final_val_loss"]
    assert chosen == {v: min(by_lr, key=by_lr.get) for v, by_lr in finals.items()}
    assert {v: b["lr"] for v, b in best_lrs(str(tmp_path / "lrs")).items()} == chosen
    assert json.loads((tmp_path / "budgets" / "sweep.json").read_text())["lr_from"] == str(tmp_path / "lrs")
    trials = tmp_path / "budgets" / "trials"
    for variant in ("gpt2", "gptoss"):
        long_cfg = json.loads((trials / f"v-{variant}-L1-s0-D8192" / "config.json").read_text())
        assert long_cfg["lr"] == chosen[variant] and long_cfg["use_gpu"] is False
        # The 4096-token branch trained only its cooldown, from the long run's kept state at its cooldown start
        # (gpt2's branch was rebuilt from step 0 below).
        saved = json.loads((trials / f"v-{variant}-L1-s0-D4096" / "config.json").read_text())
        start = saved["spec"]["branch"] and saved["spec"]["branch"]["step"]
        branch = [
            json.loads(line) for line in open(trials / f"v-{variant}-L1-s0-D4096" / "metrics.jsonl") if line.strip()
        ]
        assert [e["step"] for e in branch if e["kind"] == "eval"] == [8]
        assert (0 < start < 8 and branch[0]["step"] > start) if variant == "gptoss" else start is None
        assert not (trials / f"v-{variant}-L1-s0-D8192" / "branch_points").exists()
        summary = json.loads((trials / f"v-{variant}-L1-s0-D4096" / "summary.json").read_text())
        assert summary["steps"] == 8 and summary["final_val_loss"] < 9.3 and summary.get("sample") is not None
    report = (tmp_path / "budgets" / "REPORT.md").read_text()
    assert "Unfinished" not in report and "## 4b. Loss against budget" in report
    # The rebuilt branch trained from step 0 to the same loss; the long run was not touched.
    rebuilt = trials / "v-gpt2-L1-s0-D4096"
    assert json.loads((rebuilt / "config.json").read_text())["spec"]["branch"] is None
    assert json.loads((rebuilt / "summary.json").read_text())["final_val_loss"] == pytest.approx(
        out["before"], abs=1e-4
    )
    assert [p.name for p in trials.iterdir() if ".old-" in p.name] == []


def _fake_trial(root, name, variant, lr, seed, loss, steps=512, total=512):
    trial = root / "trials" / name
    trial.mkdir(parents=True)
    (trial / "config.json").write_text(
        json.dumps(dict(config=dict(arch="gptoss", variant=variant, seed=seed), lr=lr, total_steps=total))
    )
    (trial / "summary.json").write_text(json.dumps(dict(steps=steps, final_val_loss=loss)))


def test_best_lrs_averages_seeds_skips_unfinished_trials_and_flags_an_edge(tmp_path):
    from orchestrator.lr_selection import best_lrs

    for i, (variant, lr, seed, loss) in enumerate(
        [
            ("gpt2", 1e-3, 0, 3.0),
            ("gpt2", 2e-3, 0, 2.9),
            ("gpt2", 2e-3, 1, 3.3),
            ("gpt2", 4e-3, 0, 3.05),
            ("+rope", 1e-3, 0, 2.8),
            ("+rope", 2e-3, 0, 2.7),
        ]
    ):
        _fake_trial(tmp_path, f"t{i}", variant, lr, seed, loss)
    _fake_trial(tmp_path, "cut", "gpt2", 8e-3, 0, 1.0, steps=256)  # stopped half way: not a measurement
    found = best_lrs(str(tmp_path))
    assert found["gpt2"]["lr"] == 1e-3 and found["gpt2"]["grid"] == [1e-3, 2e-3, 4e-3]  # 2e-3's mean is 3.1
    rope = {k: found["+rope"][k] for k in ("lr", "val_loss", "grid", "edge", "seeds")}
    assert found["gpt2"]["edge"] is True and rope == dict(
        lr=2e-3, val_loss=2.7, grid=[1e-3, 2e-3], edge=True, seeds=[0]
    )


def test_lr_from_names_missing_models_and_refuses_an_lr_axis(tmp_path, capfd):
    from orchestrator.lr_selection import apply_lr_from

    _fake_trial(tmp_path, "t0", "gpt2", 2e-3, 0, 3.0)
    cfg = _sweep({"arch": ["gptoss"], "variant": ["gpt2", "+rope"]}, max_steps=8)
    cfg.lr_from = str(tmp_path)
    with pytest.raises(ValueError, match=r"has no finished trial of \+rope; it has gpt2"):
        apply_lr_from(cfg, expand_grid(cfg))
    cfg.lr_by_variant = {"+rope": 1e-3}  # an explicit entry fills the gap and wins
    capfd.readouterr()
    assert set(apply_lr_from(cfg, expand_grid(cfg))) == {"gpt2"}
    assert cfg.lr_by_variant == {"+rope": 1e-3, "gpt2": 2e-3}
    assert "edge of its grid" not in capfd.readouterr().out  # one lr: no grid to be at the edge of
    _fake_trial(tmp_path, "t1", "gpt2", 1e-3, 0, 3.2)  # 2e-3 is now the best of two, at the grid's top
    cfg.lr_by_variant = {"+rope": 1e-3}
    apply_lr_from(cfg, expand_grid(cfg))
    assert "the best lr of gpt2 (0.002) is at the edge of its grid" in capfd.readouterr().out
    with pytest.raises(ValueError, match="an lr axis or lr_from"):
        SweepConfig(base=TrainConfig(preset="debug"), grid={"lr": [1e-3]}, lr_from=str(tmp_path))
    with pytest.raises(ValueError, match="no trials/ folder"):
        apply_lr_from(SweepConfig(base=TrainConfig(preset="debug", max_steps=8), lr_from=str(tmp_path / "none")), [])


def test_the_study_files_tune_every_model_then_reuse_its_lr():
    # Issue 16's protocol: one lr grid (factor 2 apart) at a 2M horizon for every ladder and leave-one-out variant,
    # the same schedule shape everywhere; budgets and ladder train each model at its best lr of that grid.
    from conftest import REPO

    from gptoss.variants import expand_variants
    from orchestrator.lr_selection import best_lrs
    from orchestrator.sweep_file import build_sweep_config

    lrs = build_sweep_config(str(REPO / "sweeps" / "study-lr.yaml"), {}, {}, {})
    grid = sorted(lrs.grid["lr"])
    assert len(grid) >= 3 and all(abs(b / a - 2) < 1e-9 for a, b in zip(grid, grid[1:]))
    assert lrs.grid["variant"] == expand_variants(["ladder", "leave-one-out"]) and lrs.base.max_tokens == 2 * 2**20
    budgets = build_sweep_config(str(REPO / "sweeps" / "study-budgets.yaml"), {}, {}, {})
    ladder = build_sweep_config(str(REPO / "sweeps" / "study-ladder.yaml"), {}, {}, {})
    assert budgets.budgets == [2**20, 2**21, 2**22, 2**23] and len(budgets.grid["seed"]) >= 2
    assert set(budgets.lr_by_variant) == set(budgets.grid["variant"]) == {"gpt2", "+untied", "gptoss-no-moe", "gptoss"}
    assert set(ladder.lr_by_variant) == set(ladder.grid["variant"]) == set(lrs.grid["variant"])
    assert len(ladder.grid["seed"]) >= 2 and ladder.base.max_tokens == lrs.base.max_tokens
    for variant, lr in budgets.lr_by_variant.items():
        assert lr in grid and ladder.lr_by_variant[variant] == lr
    if (REPO / "studies" / "study-lr" / "trials").is_dir():  # the lrs are the lr sweep's best, once its results are in
        best = best_lrs(str(REPO / "studies" / "study-lr"))
        assert {v: best[v]["lr"] for v in ladder.lr_by_variant if v in best} == {
            v: lr for v, lr in ladder.lr_by_variant.items() if v in best
        }
    for cfg in (lrs, budgets, ladder):
        assert (cfg.base.schedule, cfg.base.cooldown_frac, cfg.base.preset, cfg.base.batch_size, cfg.base.seq_len) == (
            "wsd",
            0.2,
            "cpu-tiny",
            16,
            256,
        ) and cfg.base.eval_windows == 0


def test_the_seed_scale_files_run_the_same_protocol_on_gpus():
    from conftest import REPO

    from orchestrator.sweep_file import build_sweep_config
    from orchestrator.sweep_plan import plan_trials

    lrs, budgets, ladder = (
        build_sweep_config(str(REPO / "sweeps" / f"seed-scale-{n}.yaml"), {}, {}, {})
        for n in ("lr", "budgets", "ladder")
    )
    assert lrs.grid["variant"] == ladder.grid["variant"] and len(lrs.grid["lr"]) == 4
    assert budgets.lr_from == ladder.lr_from == f"{lrs.base.storage}/{lrs.name}"
    assert len(budgets.grid["seed"]) >= 2 and len(ladder.grid["seed"]) >= 2
    for cfg in (lrs, budgets, ladder):
        assert (cfg.base.preset, cfg.base.schedule, cfg.base.cooldown_frac, cfg.base.gpu) == (
            "seed-8l",
            "wsd",
            0.2,
            True,
        )
    long_runs, branches = plan_trials(budgets, expand_grid(budgets), budgets.base, "s")
    assert len(long_runs) == 8 and len(branches) == 24


def test_sizes_sweep_fits_predicts_before_the_holdout_and_checks_after(prepared_data, tmp_path):
    """A tiny sizes sweep without Ray: 4 widths x 3 wsd budgets x 2 seeds of one family, the widest held out. The
    report has the Size section and its plots, and predictions.json predates the held-out trials' first records."""
    from data_pipeline.ngram import fit_baselines
    from orchestrator.size_report import PLOT_FILES
    from orchestrator.sweep import run_sweep

    fit_baselines(prepared_data)
    base = TrainConfig(
        data=str(prepared_data),
        arch="gpt2",
        preset="debug",
        storage=str(tmp_path),
        seq_len=32,
        batch_size=4,
        schedule="wsd",
        eval_every=1000,
        eval_windows=8,
        sample_tokens=0,
        lr=4e-3,
        tokenizer_dir=str(TIKTOKEN_DIR),
    )
    sizes = [{"d_model": d, "n_layers": 1, "n_heads": d // 16} for d in (16, 32, 48, 64)]
    cfg = SweepConfig(
        base=base,
        grid={"seed": [0, 1]},
        sizes=sizes,
        name="sizes",
        budgets=[1280, 2560, 5120],
        holdout={"size": "L1-d64-h4", "budget": 5120},
    )
    run_sweep(cfg, show_progress=False, local=True)
    sweep_dir = tmp_path / "sizes"
    predictions = json.loads((sweep_dir / "predictions.json").read_text())
    family = predictions["families"]["gpt2"]
    assert family["fitted_on"]["sizes"] and len(family["fitted_on"]["sizes"]) == 3
    assert (
        family["params_non_embedding"]
        == json.loads((sweep_dir / "trials" / "gpt2-L1-d64-h4-s0-D5120" / "config.json").read_text())["params"][
            "non_embedding"
        ]
    )
    # Every budget the held-out size trains is predicted from the same fit, the holdout's own one as `families`.
    assert sorted(predictions["by_budget"], key=float) == ["1280", "2560", "5120"]
    assert predictions["by_budget"]["5120"] == predictions["families"]
    small = predictions["by_budget"]["1280"]["gpt2"]["predicted_loss"]
    assert small > family["predicted_loss"], "a smaller budget should be predicted a higher loss"
    written = (sweep_dir / "predictions.json").stat().st_mtime
    for trial in ("gpt2-L1-d64-h4-s0-D5120", "gpt2-L1-d64-h4-s1-D2560"):
        first = json.loads((sweep_dir / "trials" / trial / "metrics.jsonl").read_text().splitlines()[0])
        assert first["time"] > written, trial
    rows = _rows(sweep_dir / "results.csv")
    assert {r["size"] for r in rows} == {"L1-d16-h1", "L1-d32-h2", "L1-d48-h3", "L1-d64-h4"}
    assert all(float(r["epochs"]) > 0 and r["family"] == "gpt2" and int(r["params_non_embedding"]) > 0 for r in rows)
    report = (sweep_dir / "REPORT.md").read_text()
    assert "## Size" in report and "### Prediction check" in report
    check = [line for line in report.splitlines() if line.startswith("| gpt2 |") and "±" in line]
    assert len(check) == 3, "the check table needs a measured row for gpt2 at each budget"
    for name in PLOT_FILES.values():
        assert (sweep_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="held-out trial .* has started"):
        from orchestrator.holdout import write_predictions

        write_predictions(str(sweep_dir), {"size": "L1-d64-h4", "budget": 5120})
