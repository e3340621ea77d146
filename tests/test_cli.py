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
    (["--variant", "llama"], ["unknown variant 'llama'"]),
    (["--arch", "gpt2", "--variant", "gpt2"], ["use it with --arch gptoss"]),
    (["--positions", "alibi"], ["positions must be one of learned, rope, yarn"]),
    (["--variant", "+swiglu", "--mlp", "relu"], ["mlp must be one of"]),
    (["--sinks", "--window", "-1"], ["sliding_window must be a positive number"]),
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
    _one_line_error(runner.invoke(cli.app, [*base, "--variants", "ladder,llama"]), "unknown variant 'llama'")
    _one_line_error(runner.invoke(cli.app, [*base, "--variants", "gpt2", "--lr-by-variant", "gpt2"]),
                    "--lr-by-variant 'gpt2' must look like gpt2=1.5e-3,+rope=2e-3")
    bad_yaml = tmp_path / "sweep.yaml"
    bad_yaml.write_text("seq_len: 64\ncolour: blue\ngrid:\n  n_layers: [1]\n")
    _one_line_error(runner.invoke(cli.app, [*base, "--config", str(bad_yaml)]), "unknown setting(s) ['colour']")
    _one_line_error(runner.invoke(cli.app, [*base, "--config", str(tmp_path / "missing.yaml")]), "does not exist")
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


def test_every_user_setting_of_train_config_and_every_model_override_has_a_flag():
    from orchestrator.config import MODEL_OVERRIDES, TrainConfig

    internal = {"model_overrides", "beta1", "beta2", "log_every", "wandb_group", "name"}
    dests = {o.dest for o in cli.TRAIN_OPTIONS}
    assert set(TrainConfig.__dataclass_fields__) - internal <= dests
    model = {o.dest for o in cli.TRAIN_OPTIONS if o.model}
    assert model == set(MODEL_OVERRIDES)


def test_sweep_flags_reach_every_trial(monkeypatch, tmp_path):
    import orchestrator.sweep as sweep_mod

    seen = {}
    monkeypatch.setattr(sweep_mod, "run_sweep", lambda cfg: seen.setdefault("cfg", cfg))
    args = ["sweep", "--data", str(tmp_path), "--storage", str(tmp_path / "runs"), "--archs", "gpt2,gptoss",
            "--seeds", "0,1", "--dropout", "0.1", "--window", "64", "--grad-clip", "0.5", "--weight-decay", "0.05",
            "--min-lr", "1e-5", "--workers", "2", "--max-tokens", "4096", "--compile", "--no-resume", "--keep", "3",
            "--max-failures", "1", "--prompt", "Hi", "--sample-tokens", "0", "--wandb-project", "p"]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert cfg.grid["arch"] == ["gpt2", "gptoss"] and cfg.grid["seed"] == [0, 1]
    assert cfg.grid["dropout"] == [0.1] and cfg.grid["sliding_window"] == [64]
    assert cfg.workers_per_trial == 2
    b = cfg.base
    assert (b.grad_clip, b.weight_decay, b.min_lr, b.max_tokens, b.keep, b.max_failures) == (0.5, 0.05, 1e-5, 4096, 3, 1)
    assert b.compile and not b.resume and b.prompt == "Hi" and b.sample_tokens == 0 and b.wandb_project == "p"
    # ... and through the trial's own TrainConfig (an arch-specific axis lands only on its arch).
    points = {p.arch: p for p in sweep_mod.expand_grid(cfg)}  # (the seed's default depth/expert axes too)
    gpt2 = points["gpt2"].train_config(b, "s", cfg.workers_per_trial, cfg.name)
    oss = points["gptoss"].train_config(b, "s", cfg.workers_per_trial, cfg.name)
    assert gpt2.model_overrides["dropout"] == 0.1 and "sliding_window" not in gpt2.model_overrides
    assert oss.model_overrides["sliding_window"] == 64 and "dropout" not in oss.model_overrides
    assert not gpt2.resume and gpt2.grad_clip == 0.5 and gpt2.workers == 2
