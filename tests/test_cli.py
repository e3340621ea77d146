"""The command line: every command listed, versions, and bad input ending in one line, exit 2 and nothing written."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import cli

runner = CliRunner()


def test_help_lists_every_command():
    out = runner.invoke(cli.app, ["--help"])
    assert out.exit_code == 0
    for command in ("prepare", "baseline", "train", "generate", "evaluate", "sweep", "report", "export", "cluster", "version"):
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
    (["--schedule", "linear"], ["--schedule must be one of"]),
    (["--schedule", "wsd", "--max-steps", "10", "--warmup-steps", "9"], ["inside the 9-step warmup"]),
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
    other = dict(manifest, vocab_size=manifest["vocab_size"] + 1, tokenizer="gpt2")
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
    _one_line_error(runner.invoke(cli.app, [*base, "--budgets", "1048576,2097152"]), "budgets need --schedule wsd")
    _one_line_error(runner.invoke(cli.app, [*base, "--budgets", "8000,8192", "--schedule", "wsd", "--seq-len", "64",
                                            "--batch-size", "8"]), "the same step count")
    _one_line_error(runner.invoke(cli.app, [*base, "--budgets", "1e6"]), "--budgets", "int")
    assert not (tmp_path / "runs").exists()


def test_generate_rejects_a_missing_checkpoint(tmp_path):
    _one_line_error(runner.invoke(cli.app, ["generate", str(tmp_path / "nope")]), "no checkpoint or run directory")
