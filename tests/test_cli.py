"""The command line: every command listed, versions, and bad input ending in one line, exit 2 and nothing written."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import cli
from conftest import TIKTOKEN_DIR

runner = CliRunner()


def test_help_lists_every_command():
    out = runner.invoke(cli.app, ["--help"])
    assert out.exit_code == 0
    for command in ("prepare", "train", "generate", "evaluate", "sweep", "report", "export", "cluster", "version"):
        assert command in out.output


def test_version_names_project_torch_and_ray():
    out = runner.invoke(cli.app, ["version"])
    assert out.exit_code == 0
    lines = out.output.splitlines()
    assert [l.split()[0] for l in lines] == ["nano-gpt-oss", "torch", "ray"]


def _one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("args, fragments", [
    (["--workers", "0"], ["--workers must be >= 1"]),
    (["--arch", "llama"], ["arch must be one of", "gptoss"]),
    (["--preset", "huge"], ["preset", "cpu-tiny"]),
    (["--heads", "3"], ["n_heads"]),
    (["--experts", "2", "--top-k", "3"], ["experts_per_token"]),
    (["--seq-len", "100000"], ["--seq-len 100000 is beyond what the model supports"]),
    (["--batch-size", "100000"], ["windows"]),
    (["--max-steps", "5", "--max-tokens", "5"], ["not both"]),
])
def test_train_rejects_bad_input_before_anything_starts(args, fragments, prepared_data, tmp_path):
    result = runner.invoke(cli.app, ["train", "--data", str(prepared_data), "--storage", str(tmp_path / "runs"), *args])
    _one_line_error(result, *fragments)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_train_without_prepared_data_says_how_to_prepare(tmp_path):
    result = runner.invoke(cli.app, ["train", "--data", str(tmp_path / "nothing"), "--storage", str(tmp_path / "runs")])
    _one_line_error(result, "manifest", "prepare")


def test_evaluate_refuses_a_checkpoint_from_other_data(prepared_data, tmp_path):
    from gptoss import build_model, save_checkpoint
    from orchestrator.train_loop import MANIFEST_FILE

    manifest = json.loads((prepared_data / "manifest.json").read_text())
    ckpt = tmp_path / "ckpt"
    save_checkpoint(build_model("gpt2", "debug", vocab_size=manifest["vocab_size"] + 1), str(ckpt))
    other = dict(manifest, vocab_size=manifest["vocab_size"] + 1, tokenizer="gpt2",
                 compact_to_original=manifest["compact_to_original"] + [max(manifest["compact_to_original"]) + 1])
    (ckpt / MANIFEST_FILE).write_text(json.dumps(other))
    result = runner.invoke(cli.app, ["evaluate", str(ckpt), "--data", str(prepared_data)])
    _one_line_error(result, "trained with tokenizer='gpt2'")


def test_sweep_rejects_bad_axes_and_configs(prepared_data, tmp_path):
    base = ["sweep", "--data", str(prepared_data), "--storage", str(tmp_path / "runs"), "--preset", "debug"]
    _one_line_error(runner.invoke(cli.app, [*base, "--layers", "2,,4"]), "--layers", "empty entry")
    _one_line_error(runner.invoke(cli.app, [*base, "--archs", "gptoss,bert"]), "unknown arch 'bert'")
    _one_line_error(runner.invoke(cli.app, [*base, "--heads", "3"]), "grid points make invalid models")
    bad_yaml = tmp_path / "sweep.yaml"
    bad_yaml.write_text("seq_len: 64\ncolour: blue\ngrid:\n  n_layers: [1]\n")
    _one_line_error(runner.invoke(cli.app, [*base, "--config", str(bad_yaml)]), "unknown setting(s) ['colour']")
    _one_line_error(runner.invoke(cli.app, [*base, "--config", str(tmp_path / "missing.yaml")]), "does not exist")
    assert not (tmp_path / "runs").exists()


def test_generate_rejects_a_missing_checkpoint(tmp_path):
    _one_line_error(runner.invoke(cli.app, ["generate", str(tmp_path / "nope")]), "no checkpoint or run directory")


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
    common = ["--data", str(data), "--preset", "debug", "--seq-len", "64", "--batch-size", "8", "--max-steps", "20",
              "--storage", str(tmp_path / "runs"), "--name", "x", "--tokenizer-dir", str(TIKTOKEN_DIR)]
    from orchestrator.config import TrainConfig
    from orchestrator.storage import open_storage
    from orchestrator.trainer import RunDir, plan_run

    # The run as an earlier `train` left it (the settings a resume compares are those of `common`).
    cfg = TrainConfig(data=str(data), preset="debug", seq_len=64, batch_size=8, max_steps=20,
                      storage=str(tmp_path / "runs"), name="x")
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
    args = {"generate": [target], "evaluate": [target, "--data", str(prepared_data)],
            "export": [target, str(tmp_path / "hf")]}[command]
    _one_line_error(runner.invoke(cli.app, [command, *args]), "model.safetensors is damaged or truncated")
    assert not (tmp_path / "hf").exists()


def test_evaluate_refuses_a_zero_batch(tmp_path):
    _one_line_error(runner.invoke(cli.app, ["evaluate", str(tmp_path), "--batch-size", "0"]), "--batch-size must be >= 1")


def test_sweep_yaml_with_a_mistyped_field_is_one_line(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text('seq_len: "sixty"\ngrid:\n  n_layers: [2]\n')
    _one_line_error(runner.invoke(cli.app, ["sweep", "--config", str(path), "--storage", str(tmp_path / "runs")]),
                    "seq_len must be an integer, got 'sixty'")
    path.write_text("grid:\n  n_layers: 2\n")
    _one_line_error(runner.invoke(cli.app, ["sweep", "--config", str(path), "--storage", str(tmp_path / "runs")]),
                    "sweep axis 'n_layers' must be a list")
    assert not (tmp_path / "runs").exists()


def test_generate_refuses_a_checkpoint_whose_token_map_does_not_fit_its_model(tmp_path):
    from gptoss import build_model, save_checkpoint

    ckpt = tmp_path / "ckpt"
    save_checkpoint(build_model("gpt2", "debug", vocab_size=300), str(ckpt))
    # The map decodes the model's ids: one entry short, the last id would decode to nothing (or to a wrong token).
    (ckpt / "manifest.json").write_text(json.dumps(dict(tokenizer="gpt2", vocab_size=300, compacted=True,
                                                        compact_to_original=list(range(299)), eot_id=0)))
    _one_line_error(runner.invoke(cli.app, ["generate", str(ckpt)]), "does not describe this model's 300-token vocabulary")
