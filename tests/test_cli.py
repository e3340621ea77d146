"""The command line: every command listed, versions, and bad input ending in one line, exit 2 and nothing written."""

from __future__ import annotations

import json

import pytest
from conftest import TIKTOKEN_DIR
from typer.testing import CliRunner

import cli

runner = CliRunner()


def test_help_lists_every_command():
    out = runner.invoke(cli.app, ["--help"])
    assert out.exit_code == 0
    for command in (
        "prepare",
        "baseline",
        "train",
        "generate",
        "evaluate",
        "sweep",
        "report",
        "export",
        "cluster",
        "version",
    ):
        assert command in out.output


def test_version_names_project_torch_and_ray():
    out = runner.invoke(cli.app, ["version"])
    assert out.exit_code == 0
    lines = out.output.splitlines()
    assert [line.split()[0] for line in lines] == ["nano-gpt-oss", "torch", "ray"]


def _one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--workers", "0"], ["--workers must be >= 1"]),
        (["--arch", "llama"], ["arch must be one of", "gptoss"]),
        (["--preset", "huge"], ["preset", "cpu-tiny"]),
        (["--heads", "3"], ["n_heads"]),
        (["--experts", "2", "--top-k", "3"], ["experts_per_token"]),
        (["--seq-len", "100000"], ["--seq-len 100000 is beyond what the model supports"]),
        (["--batch-size", "100000"], ["windows"]),
        (["--max-steps", "5", "--max-tokens", "5"], ["not both"]),
        (["--variant", "llama"], ["unknown variant 'llama'"]),
        (["--arch", "gpt2", "--variant", "gpt2"], ["use it with --arch gptoss"]),
        (["--positions", "alibi"], ["positions must be one of learned, rope, yarn"]),
        (["--variant", "+swiglu", "--mlp", "relu"], ["mlp must be one of"]),
        (["--sinks", "--window", "-1"], ["sliding_window must be a positive number"]),
        (["--schedule", "linear"], ["--schedule must be one of"]),
        (["--parametrization", "mu"], ["parametrization must be one of standard, mup, got 'mu'"]),
        (["--parametrization", "mup", "--mup-base-width", "0"], ["mup_base_width must be a positive integer"]),
        (["--schedule", "wsd", "--max-steps", "10", "--warmup-steps", "9"], ["inside the 9-step warmup"]),
    ],
)
def test_train_rejects_bad_input_before_anything_starts(args, fragments, prepared_data, tmp_path):
    result = runner.invoke(cli.app, ["train", "--data", str(prepared_data), "--storage", str(tmp_path / "runs"), *args])
    _one_line_error(result, *fragments)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_train_without_prepared_data_says_how_to_prepare(tmp_path):
    result = runner.invoke(cli.app, ["train", "--data", str(tmp_path / "nothing"), "--storage", str(tmp_path / "runs")])
    _one_line_error(result, "manifest", "prepare")


def test_evaluate_refuses_a_checkpoint_from_other_data(prepared_data, tmp_path):
    from gptoss import build_model, save_checkpoint
    from orchestrator.run_dir import MANIFEST_FILE

    manifest = json.loads((prepared_data / "manifest.json").read_text())
    ckpt = tmp_path / "ckpt"
    save_checkpoint(build_model("gpt2", "debug", vocab_size=manifest["vocab_size"] + 1), str(ckpt))
    other = dict(
        manifest,
        vocab_size=manifest["vocab_size"] + 1,
        tokenizer="gpt2",
        compact_to_original=manifest["compact_to_original"] + [max(manifest["compact_to_original"]) + 1],
    )
    (ckpt / MANIFEST_FILE).write_text(json.dumps(other))
    result = runner.invoke(cli.app, ["evaluate", str(ckpt), "--data", str(prepared_data)])
    _one_line_error(result, "trained with tokenizer='gpt2'")


def test_sweep_rejects_bad_axes_and_configs(prepared_data, tmp_path):
    base = ["sweep", "--data", str(prepared_data), "--storage", str(tmp_path / "runs"), "--preset", "debug"]
    _one_line_error(runner.invoke(cli.app, [*base, "--layers", "2,,4"]), "--layers", "empty entry")
    _one_line_error(runner.invoke(cli.app, [*base, "--archs", "gptoss,bert"]), "unknown arch 'bert'")
    _one_line_error(runner.invoke(cli.app, [*base, "--heads", "3"]), "grid points make invalid models")
    _one_line_error(runner.invoke(cli.app, [*base, "--variants", "ladder,llama"]), "unknown variant 'llama'")
    _one_line_error(
        runner.invoke(cli.app, [*base, "--variants", "gpt2", "--lr-by-variant", "gpt2"]),
        "--lr-by-variant 'gpt2' must look like gpt2=1.5e-3,+rope=2e-3",
    )
    bad_yaml = tmp_path / "sweep.yaml"
    bad_yaml.write_text("seq_len: 64\ncolour: blue\ngrid:\n  n_layers: [1]\n")
    _one_line_error(runner.invoke(cli.app, [*base, "--config", str(bad_yaml)]), "unknown setting(s) ['colour']")
    _one_line_error(runner.invoke(cli.app, [*base, "--config", str(tmp_path / "missing.yaml")]), "does not exist")
    _one_line_error(runner.invoke(cli.app, [*base, "--budgets", "1048576,2097152"]), "budgets need --schedule wsd")
    _one_line_error(
        runner.invoke(
            cli.app, [*base, "--budgets", "8000,8192", "--schedule", "wsd", "--seq-len", "64", "--batch-size", "8"]
        ),
        "the same step count",
    )
    _one_line_error(runner.invoke(cli.app, [*base, "--budgets", "1e6"]), "--budgets", "int")
    assert not (tmp_path / "runs").exists()


def test_generate_rejects_a_missing_checkpoint(tmp_path):
    _one_line_error(runner.invoke(cli.app, ["generate", str(tmp_path / "nope")]), "no checkpoint or run directory")


# ----------------------------------------------------------------------------------------------
# One definition of the training options serves `train` and `sweep`.


def _flags(command: str) -> set[str]:
    import typer.main

    click_cmd = typer.main.get_command(cli.app).commands[command]
    return {name for p in click_cmd.params for name in (*p.opts, *p.secondary_opts)}


def test_every_train_flag_is_a_sweep_flag():
    train, sweep = _flags("train"), _flags("sweep")
    assert train - {"--name"} <= sweep, sorted(train - sweep)


def test_every_user_setting_of_train_config_has_a_flag_and_model_flags_name_real_model_fields():
    from orchestrator.config import TrainConfig, model_fields, model_overrides_allowed

    internal = {"model_overrides", "beta1", "beta2", "log_every", "name"}
    dests = {o.dest for o in cli.TRAIN_OPTIONS}
    assert set(TrainConfig.__dataclass_fields__) - internal <= dests
    model = {o.dest for o in cli.TRAIN_OPTIONS if o.model}
    assert model <= set(model_overrides_allowed())
    # The overrides are the model configs' own fields (all of them but the vocabulary, which the data sets).
    assert set(model_overrides_allowed()) == set().union(*map(set, model_fields().values())) - {"vocab_size"}
    assert {"n_layers", "num_experts", "dropout", "rope_theta"} <= set(model_overrides_allowed())


def test_config_errors_name_fields_and_the_cli_shows_them_as_flags(tmp_path):
    from typer.testing import CliRunner

    from orchestrator.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match="^seq_len must be >= 1, got 0$"):
        TrainConfig(seq_len=0)
    out = CliRunner().invoke(cli.app, ["train", "--data", str(tmp_path), "--seq-len", "0"])
    assert out.exit_code == 2 and "error: --seq-len must be >= 1, got 0" in out.output
    out = CliRunner().invoke(cli.app, ["train", "--data", str(tmp_path), "--cooldown-frac", "0"])
    assert "error: --cooldown-frac must be in (0, 1], got 0" in out.output


def test_sweep_flags_reach_every_trial(monkeypatch, tmp_path):
    import orchestrator.sweep as sweep_mod

    seen = {}
    monkeypatch.setattr(sweep_mod, "run_sweep", lambda cfg, local=False: seen.update(cfg=cfg, local=local))
    args = [
        "sweep",
        "--local",
        "--lr-from",
        str(tmp_path / "lrs"),
        "--data",
        str(tmp_path),
        "--storage",
        str(tmp_path / "runs"),
        "--archs",
        "gpt2,gptoss",
        "--seeds",
        "0,1",
        "--dropout",
        "0.1",
        "--window",
        "64",
        "--grad-clip",
        "0.5",
        "--weight-decay",
        "0.05",
        "--min-lr",
        "1e-5",
        "--workers",
        "2",
        "--max-tokens",
        "4096",
        "--compile",
        "--no-resume",
        "--keep",
        "3",
        "--max-failures",
        "1",
        "--prompt",
        "Hi",
        "--sample-tokens",
        "0",
        "--wandb-project",
        "p",
    ]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert seen["local"] is True and cfg.lr_from == str(tmp_path / "lrs")
    assert cfg.grid["arch"] == ["gpt2", "gptoss"] and cfg.grid["seed"] == [0, 1]
    assert cfg.grid["dropout"] == [0.1] and cfg.grid["sliding_window"] == [64]
    assert cfg.workers_per_trial == 2
    b = cfg.base
    assert (b.grad_clip, b.weight_decay, b.min_lr, b.max_tokens, b.keep, b.max_failures) == (
        0.5,
        0.05,
        1e-5,
        4096,
        3,
        1,
    )
    assert b.compile and not b.resume and b.prompt == "Hi" and b.sample_tokens == 0 and b.wandb_project == "p"
    # ... and through the trial's own TrainConfig (an arch-specific axis lands only on its arch).
    from orchestrator.sweep_plan import expand_grid

    points = {p.arch: p for p in expand_grid(cfg)}  # (the seed's default depth/expert axes too)
    gpt2 = points["gpt2"].train_config(b, "s", cfg.workers_per_trial)
    oss = points["gptoss"].train_config(b, "s", cfg.workers_per_trial)
    assert gpt2.model_overrides["dropout"] == 0.1 and "sliding_window" not in gpt2.model_overrides
    assert oss.model_overrides["sliding_window"] == 64 and "dropout" not in oss.model_overrides
    assert not gpt2.resume and gpt2.grad_clip == 0.5 and gpt2.workers == 2


def _copy_data(prepared_data, tmp_path, edit=None):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(prepared_data, copy)
    if edit:
        manifest = json.loads((copy / "manifest.json").read_text())
        edit(copy, manifest)
        (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def _train_args(data, tmp_path, *extra):
    return [
        "train",
        "--data",
        str(data),
        "--storage",
        str(tmp_path / "runs"),
        "--preset",
        "debug",
        "--seq-len",
        "32",
        "--batch-size",
        "2",
        "--max-steps",
        "1",
        "--eval-every",
        "1",
        "--eval-windows",
        "1",
        *extra,
    ]


def test_train_refuses_before_step_1_what_would_fail_at_its_end(prepared_data, tmp_path, monkeypatch):
    # Data prepared before the manifest carried its vocabulary, and no rank files reachable: the end-of-run sample
    # would fail after all the training; it must fail first, in one line, with nothing written.
    def drop_vocab(_, manifest):
        manifest.pop("vocab")

    old = _copy_data(prepared_data, tmp_path, drop_vocab)
    monkeypatch.delenv("GPTOSS_TOKENIZER_DIR", raising=False)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    _one_line_error(
        runner.invoke(cli.app, _train_args(old, tmp_path, "--tokenizer-dir", str(tmp_path / "nonexistent"))),
        "tokenizer directory",
        "does not exist",
    )
    from data_pipeline import tokenizers

    monkeypatch.setattr(tokenizers, "_host_reachable", lambda *a, **k: False)
    _one_line_error(runner.invoke(cli.app, _train_args(old, tmp_path)), "o200k_base.tiktoken", "--tokenizer-dir")
    # A prompt too long for the model is refused up front too; one with words the training data never had is not
    # (it encodes through pieces, as `generate` and the exported tokenizer encode it).
    from data_pipeline import load_manifest
    from orchestrator.config import TrainConfig
    from orchestrator.trainer import check_sample

    cfg = TrainConfig(data=str(prepared_data), prompt="Zyzzyva 炎", tokenizer_dir=str(TIKTOKEN_DIR))
    check_sample(cfg, load_manifest(prepared_data), max_seq_len=256)
    _one_line_error(
        runner.invoke(cli.app, _train_args(prepared_data, tmp_path, "--sample-tokens", "100000")), "max_seq_len"
    )
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_train_and_evaluate_refuse_a_shard_corrupted_in_place(prepared_data, tmp_path):
    def corrupt(copy, manifest):
        shard = copy / manifest["splits"]["validation"]["shards"][0]["file"]
        data = bytearray(shard.read_bytes())
        data[-64:-56] = b"\xff" * 8  # same size, different bytes
        shard.write_bytes(bytes(data))

    bad = _copy_data(prepared_data, tmp_path, corrupt)
    result = runner.invoke(cli.app, _train_args(bad, tmp_path))
    _one_line_error(result, "shard validation-00000.arrow", "prepare")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    _one_line_error(
        runner.invoke(cli.app, ["evaluate", str(tmp_path / "no-such-ckpt"), "--data", str(bad)]),
        "shard validation-00000.arrow",
        "prepare",
    )


def _cli(args, cwd, env, timeout=600):
    import subprocess
    import sys

    from conftest import REPO

    proc = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _offline_env(tmp_path):
    import os

    from conftest import REPO

    env = {k: v for k, v in os.environ.items() if k not in ("GPTOSS_TOKENIZER_DIR", "RAY_ADDRESS")}
    (tmp_path / "empty-tiktoken-cache").mkdir(exist_ok=True)
    # No rank file cached, none downloadable (the data_gym cache too): after prepare, nothing may need them.
    env.update(
        TIKTOKEN_CACHE_DIR=str(tmp_path / "empty-tiktoken-cache"),
        DATA_GYM_CACHE_DIR=str(tmp_path / "empty-tiktoken-cache"),
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
    )
    return env


@pytest.mark.slow
def test_the_readme_offline_path_end_to_end(tmp_path, tinystories_dir, tiktoken_dir):
    """prepare with --tokenizer-dir, then train, generate, evaluate, export, a 2-trial sweep and report, each a fresh
    `python cli.py` process with no tokenizer flag, no rank files reachable and no network."""
    import stat

    env = _offline_env(tmp_path)
    tiny = [
        "--preset",
        "debug",
        "--seq-len",
        "64",
        "--batch-size",
        "4",
        "--eval-every",
        "2",
        "--eval-windows",
        "4",
        "--storage",
        "runs",
    ]

    def clean(output: str) -> None:
        assert "Traceback" not in output and "(raylet)" not in output, output

    code, out = _cli(
        ["prepare", "--source", tinystories_dir, "--tokenizer-dir", tiktoken_dir, "--limit", "400", "--out", "data"],
        tmp_path,
        env,
    )
    assert code == 0, out
    clean(out)
    code, out = _cli(
        ["train", "--data", "data", "--max-steps", "4", "--sample-tokens", "12", "--name", "e2e", *tiny], tmp_path, env
    )
    assert code == 0, out
    clean(out)
    summary = json.loads((tmp_path / "runs" / "e2e" / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["sample"].startswith("Once upon a time") and "sample:" in out
    assert "this invocation: steps 0-4" in out and "steady-state" in out

    code, out = _cli(
        ["generate", "runs/e2e", "--prompt", "The dog", "--max-tokens", "8", "--temperature", "0"], tmp_path, env
    )
    assert code == 0 and out.startswith("The dog") and len(out.strip()) > len("The dog"), out
    code, out = _cli(["evaluate", "runs/e2e", "--data", "data", "--json"], tmp_path, env)
    assert code == 0, out
    assert 0 < json.loads(out.strip().splitlines()[-1])["loss"] < 20
    code, out = _cli(["export", "runs/e2e", "hf"], tmp_path, env)
    assert code == 0, out
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "hf").iterdir()}
    assert set(files) == {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer_manifest.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    }
    assert len(set(files.values())) == 1, files  # the weights as readable as the rest
    assert json.loads((tmp_path / "hf" / "tokenizer_manifest.json").read_text())["vocab"]["count"] > 0

    code, out = _cli(
        [
            "sweep",
            "--data",
            "data",
            "--archs",
            "gpt2",
            "--layers",
            "1,2",
            "--max-steps",
            "2",
            "--name",
            "s",
            "--preset",
            "debug",
            "--seq-len",
            "64",
            "--batch-size",
            "4",
            "--eval-every",
            "2",
            "--eval-windows",
            "4",
            "--storage",
            "runs",
        ],
        tmp_path,
        env,
    )
    assert code == 0, out
    clean(out)
    assert "[done 2/2]" in out and "WARNING" not in out, out
    code, out = _cli(["report", "runs/s"], tmp_path, env)
    assert code == 0 and out.startswith("2 trials"), out
    assert (tmp_path / "runs" / "s" / "REPORT.md").is_file()


def _interrupt_when(args, cwd, env, ready, timeout=400):
    """Run `python cli.py ARGS`, press Ctrl-C (SIGINT to its process group, as a terminal does) once ready() holds."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    proc = subprocess.Popen(
        [sys.executable, str(REPO / "cli.py"), *map(str, args)],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0]
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out


@pytest.mark.slow
def test_ctrl_c_in_prepare_and_train_ends_in_one_line_saying_what_was_kept(tmp_path, tinystories_dir, tiktoken_dir):
    env = _offline_env(tmp_path)
    staging = tmp_path / "data" / ".prepare-staging" / "train"
    code, out = _interrupt_when(
        ["prepare", "--source", tinystories_dir, "--tokenizer-dir", tiktoken_dir, "--out", "data"],
        tmp_path,
        env,
        staging.exists,
    )
    last = out.strip().splitlines()[-1]
    assert code == 130 and "Traceback" not in out, out
    assert last.startswith("interrupted: prepare removed its unfinished work") and "same command again" in last, out
    assert not (tmp_path / "data").exists()  # nothing half-written is left

    code, out = _cli(
        ["prepare", "--source", tinystories_dir, "--tokenizer-dir", tiktoken_dir, "--out", "data", "--limit", "300"],
        tmp_path,
        env,
    )
    assert code == 0, out
    ckpt = tmp_path / "runs" / "t" / "checkpoint_0000002"
    code, out = _interrupt_when(
        [
            "train",
            "--data",
            "data",
            "--preset",
            "debug",
            "--seq-len",
            "64",
            "--batch-size",
            "4",
            "--eval-every",
            "2",
            "--eval-windows",
            "4",
            "--max-steps",
            "100000",
            "--storage",
            "runs",
            "--name",
            "t",
        ],
        tmp_path,
        env,
        ckpt.exists,
    )
    last = out.strip().splitlines()[-1]
    assert code == 130 and "Traceback" not in out and "(raylet)" not in out, out
    assert last.startswith("interrupted: run t keeps its checkpoint at step") and "same command again" in last, out
    invocations = json.loads((tmp_path / "runs" / "t" / "invocations.json").read_text())
    assert [i["outcome"] for i in invocations] == ["interrupted"]


def _train_checkpoint(ckpt, manifest: dict) -> None:
    from test_checkpoints import _save

    _save(ckpt, manifest, 10, 5.0)


def test_evaluate_refuses_data_whose_token_map_differs_at_the_same_vocab_size(prepared_data, tmp_path):
    from test_checkpoints import _permuted

    manifest = json.loads((prepared_data / "manifest.json").read_text())
    ckpt = tmp_path / "ckpt"
    _train_checkpoint(ckpt, _permuted(manifest))  # trained on other text that compacted to as many ids
    result = runner.invoke(cli.app, ["evaluate", str(ckpt), "--data", str(prepared_data)])
    _one_line_error(result, "map token ids to different tokens")


def test_train_refuses_to_resume_on_data_prepared_again_in_place(prepared_data, tmp_path):
    import shutil

    from test_checkpoints import _permuted

    data = tmp_path / "data"
    shutil.copytree(prepared_data, data)
    common = [
        "--data",
        str(data),
        "--preset",
        "debug",
        "--seq-len",
        "64",
        "--batch-size",
        "8",
        "--max-steps",
        "20",
        "--storage",
        str(tmp_path / "runs"),
        "--name",
        "x",
        "--tokenizer-dir",
        str(TIKTOKEN_DIR),
    ]
    from orchestrator.config import TrainConfig
    from orchestrator.storage import open_storage
    from orchestrator.trainer import RunDir, plan_run

    # The run as an earlier `train` left it (the settings a resume compares are those of `common`).
    cfg = TrainConfig(
        data=str(data), preset="debug", seq_len=64, batch_size=8, max_steps=20, storage=str(tmp_path / "runs"), name="x"
    )
    plan = plan_run(cfg)
    RunDir(open_storage(cfg.storage), "x").prepare(plan, lambda s: None)
    _train_checkpoint(tmp_path / "runs" / "x" / "checkpoint_0000010", _permuted(plan.manifest))
    config_before = (tmp_path / "runs" / "x" / "config.json").read_text()
    result = runner.invoke(cli.app, ["train", *common, "--max-steps", "30"])
    _one_line_error(result, "cannot resume run 'x'", "--no-resume")
    assert (tmp_path / "runs" / "x" / "config.json").read_text() == config_before


@pytest.mark.parametrize("command", ["generate", "evaluate", "export"])
@pytest.mark.parametrize("via_run_dir", [False, True])
def test_a_truncated_checkpoint_is_one_line_and_exit_2(command, via_run_dir, prepared_data, tmp_path):
    manifest = json.loads((prepared_data / "manifest.json").read_text())
    ckpt = tmp_path / "run" / "checkpoint_0000010"
    _train_checkpoint(ckpt, manifest)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size - 1000])
    target = str(ckpt.parent if via_run_dir else ckpt)
    args = {
        "generate": [target],
        "evaluate": [target, "--data", str(prepared_data)],
        "export": [target, str(tmp_path / "hf")],
    }[command]
    _one_line_error(runner.invoke(cli.app, [command, *args]), "model.safetensors is damaged or truncated")
    assert not (tmp_path / "hf").exists()


def test_evaluate_refuses_a_zero_batch(tmp_path):
    _one_line_error(
        runner.invoke(cli.app, ["evaluate", str(tmp_path), "--batch-size", "0"]), "--batch-size must be >= 1"
    )


def test_sweep_yaml_with_a_mistyped_field_is_one_line(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text('seq_len: "sixty"\ngrid:\n  n_layers: [2]\n')
    _one_line_error(
        runner.invoke(cli.app, ["sweep", "--config", str(path), "--storage", str(tmp_path / "runs")]),
        "seq_len must be an integer, got 'sixty'",
    )
    path.write_text("grid:\n  n_layers: 2\n")
    _one_line_error(
        runner.invoke(cli.app, ["sweep", "--config", str(path), "--storage", str(tmp_path / "runs")]),
        "sweep axis 'n_layers' must be a list",
    )
    assert not (tmp_path / "runs").exists()


def test_generate_refuses_a_checkpoint_whose_token_map_does_not_fit_its_model(tmp_path):
    from gptoss import build_model, save_checkpoint

    ckpt = tmp_path / "ckpt"
    save_checkpoint(build_model("gpt2", "debug", vocab_size=300), str(ckpt))
    # The map decodes the model's ids: one entry short, the last id would decode to nothing (or to a wrong token).
    (ckpt / "manifest.json").write_text(
        json.dumps(
            dict(tokenizer="gpt2", vocab_size=300, compacted=True, compact_to_original=list(range(299)), eot_id=0)
        )
    )
    _one_line_error(
        runner.invoke(cli.app, ["generate", str(ckpt)]), "does not describe this model's 300-token vocabulary"
    )
