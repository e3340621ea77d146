"""Ray Train runs on the shared 2-CPU Ray instance: DDP on two CPU workers, checkpoints, resume, failure recovery."""

from __future__ import annotations

import json
import os

import pytest
from conftest import TIKTOKEN_DIR

from orchestrator.config import TrainConfig


def _cfg(data, storage, name, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        arch="gptoss",
        preset="debug",
        seq_len=64,
        batch_size=8,
        max_steps=30,
        eval_every=10,
        eval_windows=16,
        log_every=5,
        workers=2,
        storage=str(storage),
        name=name,
        sample_tokens=20,
        tokenizer_dir=str(TIKTOKEN_DIR),
    )
    base.update(kw)
    return TrainConfig(**base)


def _records(run_dir) -> list[dict]:
    return [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl")) if line.strip()]


@pytest.fixture(scope="module")
def clean_run(prepared_data, tmp_path_factory, ray_session):
    from orchestrator.trainer import run_training

    storage = tmp_path_factory.mktemp("runs")
    summary = run_training(_cfg(prepared_data, storage, "clean"), show_progress=False)
    return storage, summary


def test_two_worker_run_learns_and_keeps_replicas_identical(clean_run, prepared_data):
    storage, summary = clean_run
    run_dir = storage / "clean"
    records = _records(run_dir)
    evals = [r for r in records if r["kind"] == "eval"]
    steps = [r for r in records if r["kind"] == "step"]
    assert [e["step"] for e in evals] == [10, 20, 30]
    assert sorted({s["step"] for s in steps} | {e["step"] for e in evals}) == list(range(5, 31, 5))  # complete
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.3
    for e in evals:
        assert e["replica_max_diff"] == 0.0, "DDP replicas diverged"
        assert len(e["worker_nodes"]) == 2
        for key in (
            "train_loss",
            "val_bpb",
            "lr",
            "grad_norm",
            "tokens_per_s",
            "gflops",
            "peak_mem_mb",
            "aux_loss",
            "expert_load_max_mean",
            "tokens",
        ):
            assert key in e, key
    assert evals[-1]["tokens"] == 30 * 8 * 64 * 2
    # Two ranks share the whole split in the last eval: every target token once, the tail window on one rank only.
    split = json.loads((prepared_data / "manifest.json").read_text())["splits"]["validation"]["tokens"]
    assert evals[-1]["val_tokens"] == split - 1 and evals[0]["val_tokens"] == 16 * 64
    assert evals[-1]["final_eval"] == evals[-1]["val_scope"] == "whole split" and evals[-1]["val_fraction"] == 1.0
    assert evals[0]["val_scope"].startswith("first ") and "final_eval" not in evals[0]
    ckpts = sorted(d for d in os.listdir(run_dir) if d.startswith("checkpoint_0"))
    assert "checkpoint_0000030" in ckpts and len(ckpts) <= 2
    assert summary["steps"] == 30 and summary["best_checkpoint"]
    assert summary["sample"].startswith("Once upon a time")
    assert json.load(open(run_dir / "summary.json"))["final_val_loss"] == pytest.approx(evals[-1]["val_loss"])


def test_killed_worker_is_survived_and_the_run_matches_the_clean_one(clean_run, prepared_data):
    from orchestrator.trainer import run_training

    storage, _ = clean_run
    summary = run_training(
        _cfg(prepared_data, storage, "crashy", max_failures=1, inject_failure_at=15), show_progress=False
    )
    assert os.path.exists(storage / "crashy" / ".injected_failure"), "the failure was never injected"
    clean = [r for r in _records(storage / "clean") if r["kind"] == "eval"]
    crashy = [r for r in _records(storage / "crashy") if r["kind"] == "eval"]
    assert [e["step"] for e in crashy] == [10, 20, 30]  # the lost attempt's records beyond step 10 are dropped
    # Restarted from the step-10 checkpoint with the same data position and optimizer state: same numbers.
    clean_30 = next(e for e in clean if e["step"] == 30)
    assert crashy[-1]["val_loss"] == pytest.approx(clean_30["val_loss"], abs=1e-4)
    assert summary["steps"] == 30


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(clean_run, prepared_data):
    """Before the rerun test extends `clean`: a copy of it whose step-30 weights were cut short resumes from step 20,
    and reaches the clean run's numbers."""
    import shutil

    from orchestrator.run_dir import DAMAGED_PREFIX
    from orchestrator.trainer import run_training

    storage, _ = clean_run
    shutil.copytree(storage / "clean", storage / "damaged")
    assert sorted(d for d in os.listdir(storage / "damaged") if d.startswith("checkpoint_0")) == [
        "checkpoint_0000020",
        "checkpoint_0000030",
    ]
    weights = storage / "damaged" / "checkpoint_0000030" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    summary = run_training(_cfg(prepared_data, storage, "damaged", sample_tokens=0), show_progress=False)
    run_dir = storage / "damaged"
    assert (run_dir / f"{DAMAGED_PREFIX}checkpoint_0000030").is_dir()
    evals = [r for r in _records(run_dir) if r["kind"] == "eval"]
    assert [e["step"] for e in evals] == [10, 20, 30]
    clean_30 = next(e for e in _records(storage / "clean") if e["kind"] == "eval" and e["step"] == 30)
    assert evals[-1]["val_loss"] == pytest.approx(clean_30["val_loss"], abs=1e-4)  # really restored step 20
    assert summary["steps"] == 30 and os.path.isdir(summary["latest_checkpoint"])


def test_rerun_with_the_same_name_resumes_from_the_latest_checkpoint(clean_run, prepared_data):
    from orchestrator.trainer import run_training

    storage, _ = clean_run
    first = json.load(open(storage / "clean" / "summary.json"))
    summary = run_training(_cfg(prepared_data, storage, "clean", max_steps=40, sample_tokens=0), show_progress=False)
    evals = [r for r in _records(storage / "clean") if r["kind"] == "eval"]
    assert [e["step"] for e in evals] == [10, 20, 30, 40]  # continued, not restarted
    assert evals[-1]["tokens"] == 40 * 8 * 64 * 2
    # The summary tells this invocation (steps 30-40) and the whole run apart, and its tokens/s is the steady state
    # of the training steps, not tokens over wall time.
    inv = summary["invocation"]
    assert (inv["start_step"], inv["end_step"], inv["steps"], inv["tokens"]) == (30, 40, 10, 10 * 8 * 64 * 2)
    assert (summary["steps"], summary["tokens"], summary["invocations"]) == (40, 40 * 8 * 64 * 2, 2)
    assert summary["run_wall_s"] == pytest.approx(first["wall_s"] + summary["wall_s"], rel=0.05)
    assert inv["tokens_per_s_wall"] == pytest.approx(inv["tokens"] / summary["wall_s"])
    windows = [r for r in _records(storage / "clean") if not r["first_window"]]
    assert summary["tokens_per_s"] == pytest.approx(
        sum(r["window_tokens"] for r in windows) / sum(r["window_s"] for r in windows)
    )
    assert summary["tokens_per_s"] > inv["tokens_per_s_wall"]  # wall time includes start-up and evals
    assert summary["train_s"] < summary["run_wall_s"]


def test_throughput_leaves_out_start_up_windows_and_summary_lines_keep_them_apart():
    from orchestrator.run_summary import summary_lines, throughput

    records = [
        dict(kind="step", step=5, window_s=10.0, window_tokens=1000, first_window=True, tokens_per_s=100.0),
        dict(kind="eval", step=10, window_s=1.0, window_tokens=1000, first_window=False, tokens_per_s=1000.0),
        dict(kind="step", step=15, window_s=4.0, window_tokens=1000, first_window=True, tokens_per_s=250.0),  # a resume
        dict(kind="eval", step=20, window_s=1.0, window_tokens=1000, first_window=False, tokens_per_s=1000.0),
    ]
    assert throughput(records) == dict(train_s=16.0, tokens_per_s=1000.0, steady_windows=2)
    assert throughput(records[:1])["tokens_per_s"] == 100.0  # one window: all there is
    assert throughput([dict(step=5, tokens_per_s=50.0), dict(step=10, tokens_per_s=150.0)])["tokens_per_s"] == 100.0
    summary = dict(
        run="r",
        steps=20,
        tokens=4000,
        invocations=2,
        run_wall_s=90.0,
        train_s=16.0,
        tokens_per_s=1000.0,
        invocation=dict(start_step=10, end_step=20, steps=10, tokens=2000, wall_s=30.0),
        final_val_loss=None,
        params=dict(total=1e6, active=1e6, embedding=1e5),
        best_checkpoint="c",
    )
    text = "\n".join(summary_lines(summary))
    assert "20 steps, 4,000 tokens over 2 invocations, 90s wall in all, 16s of it in training steps" in text
    assert "this invocation: steps 10-20, 2,000 tokens in 30s wall" in text
    assert "1,000 tokens/s in steady-state training steps" in text


def test_worker_guard_fails_fast_without_leaving_a_run_dir(prepared_data, tmp_path, ray_session):
    from orchestrator.trainer import run_training
    from raysetup import ClusterError

    with pytest.raises(ClusterError, match="cannot place 3 CPU workers"):
        run_training(_cfg(prepared_data, tmp_path, "toomany", workers=3), show_progress=False)
    assert not (tmp_path / "toomany").exists()


def test_generate_and_evaluate_the_produced_checkpoint(clean_run, prepared_data, tiktoken_dir):
    from typer.testing import CliRunner

    import cli

    storage, summary = clean_run
    runner = CliRunner()
    out = runner.invoke(
        cli.app,
        [
            "generate",
            str(storage / "clean"),
            "--prompt",
            "The cat",
            "--max-tokens",
            "15",
            "--temperature",
            "0",
            "--tokenizer-dir",
            str(tiktoken_dir),
        ],
    )
    assert out.exit_code == 0, out.output
    assert out.output.startswith("The cat") and len(out.output.strip()) > len("The cat")
    again = runner.invoke(
        cli.app,
        [
            "generate",
            str(storage / "clean"),
            "--prompt",
            "The cat",
            "--max-tokens",
            "15",
            "--temperature",
            "0",
            "--tokenizer-dir",
            str(tiktoken_dir),
        ],
    )
    assert again.output == out.output  # greedy is deterministic
    ev = runner.invoke(cli.app, ["evaluate", str(storage / "clean"), "--data", str(prepared_data), "--json"])
    assert ev.exit_code == 0, ev.output
    result = json.loads(ev.output.strip().splitlines()[-1])
    assert 0 < result["loss"] < 10 and result["perplexity"] == pytest.approx(2.718281828 ** result["loss"], rel=1e-6)
    assert 0 < result["bits_per_byte"] < 5
    split = json.loads((prepared_data / "manifest.json").read_text())["splits"]["validation"]["tokens"]
    assert result["tokens"] == split - 1 and result["split_fraction"] == 1.0  # every target token, the tail too


def test_wandb_logging_works_offline_without_an_account(tmp_path, monkeypatch):
    from orchestrator.console import WandbLogger
    from orchestrator.spec import RunSpec
    from orchestrator.trainer import RunPlan

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = TrainConfig(arch="gpt2", preset="debug", wandb=True, name="wb")
    plan = RunPlan(spec=RunSpec(cfg), manifest={}, model_overrides={}, byte_lengths=None, params={"total": 1})
    logger = WandbLogger(cfg, plan, group="g")
    logger.log({"kind": "eval", "step": 10, "val_loss": 2.5, "worker_nodes": ["n0"]})
    logger.finish({"sample": "Once upon a time", "final_val_loss": 2.5})
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_export_of_a_trained_checkpoint_loads_in_transformers(clean_run, tmp_path):
    import torch
    import transformers
    from typer.testing import CliRunner

    import cli
    from orchestrator.inference import open_checkpoint

    storage, _ = clean_run
    out = CliRunner().invoke(cli.app, ["export", str(storage / "clean"), str(tmp_path / "hf")])
    assert out.exit_code == 0, out.output
    assert json.loads((tmp_path / "hf" / "tokenizer_manifest.json").read_text())["compacted"] is True
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), attn_implementation="eager").eval()
    with open_checkpoint(str(storage / "clean")) as bundle:
        ids = torch.randint(0, bundle.model.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ours = bundle.model(ids)
            diff = (hf(ids).logits[..., : ours.shape[-1]] - ours).abs().max().item()
    assert diff < 1e-4
    again = CliRunner().invoke(cli.app, ["export", str(storage / "clean"), str(tmp_path / "hf")])
    assert again.exit_code == 2 and "not empty" in again.output
