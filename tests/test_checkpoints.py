"""Checkpoint health without Ray: verification, the resume decision (damaged checkpoints, other data), and data
identity."""

from __future__ import annotations

import json
import os

import pytest
from conftest import TIKTOKEN_DIR

from orchestrator.config import TrainConfig
from orchestrator.storage import open_storage

RAY_SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # what Ray Train left in run directories written before


def _permuted(manifest: dict) -> dict:
    """The same vocabulary size, every id mapped to another token: what re-preparing other text can give."""
    mapping = manifest["compact_to_original"]
    return dict(manifest, compact_to_original=mapping[1:] + mapping[:1])


def _save(ckpt_dir, manifest: dict, step: int, val_loss: float) -> None:
    import torch

    from gptoss import build_model
    from orchestrator.optimizer import build_optimizer
    from orchestrator.train_loop import save_train_checkpoint

    cfg = TrainConfig(data="unused", preset="debug")
    model = build_model("gptoss", "debug", vocab_size=manifest["vocab_size"])
    optimizer = build_optimizer(model, cfg, torch.device("cpu"))
    state = dict(
        step=step,
        tokens=step * 100,
        val_loss=val_loss,
        best_val_loss=val_loss,
        config=cfg.to_dict(),
        scheduler=dict(warmup=1, total=30, lr=1e-3, min_lr=1e-4),
    )
    save_train_checkpoint(str(ckpt_dir), model, optimizer, state, manifest)


def _snapshot(names: list[str], latest: str) -> dict:
    """Ray Train's bookkeeping as older versions of this project left it in a run directory."""
    entry = lambda n: dict(version=0, checkpoint_dir_name=n, metrics={"step": int(n.split("_")[1])})  # noqa: E731
    return dict(checkpoint_results=[entry(n) for n in names], latest_checkpoint_result=entry(latest))


@pytest.fixture()
def existing_run(prepared_data, tmp_path):
    """A run directory as a finished run leaves it: config.json, metrics, checkpoints at 10 and 20 (and the Ray
    snapshot an older version left, which nothing reads any more)."""
    from orchestrator.run_dir import RunDir
    from orchestrator.trainer import plan_run

    cfg = TrainConfig(
        data=str(prepared_data),
        preset="debug",
        seq_len=64,
        batch_size=8,
        max_steps=20,
        eval_every=10,
        storage=str(tmp_path / "runs"),
        name="r",
        tokenizer_dir=str(TIKTOKEN_DIR),
    )
    plan = plan_run(cfg)
    run = RunDir(open_storage(cfg.storage), "r")
    run.prepare(plan, lambda s: None)
    run_dir = tmp_path / "runs" / "r"
    for step, loss in ((10, 5.0), (20, 4.0)):
        _save(run_dir / f"checkpoint_{step:07d}", plan.manifest, step, loss)
    run.records = [dict(kind="eval", step=10, val_loss=5.0), dict(kind="eval", step=20, val_loss=4.0)]
    run.flush()
    (run_dir / RAY_SNAPSHOT_FILE).write_text(
        json.dumps(_snapshot(["checkpoint_0000010", "checkpoint_0000020"], "checkpoint_0000020"))
    )
    return cfg, run_dir


def test_a_truncated_checkpoint_is_named_and_the_newest_valid_one_chosen(existing_run):
    from orchestrator.checkpoints import scan_checkpoints, verify_checkpoint

    cfg, run_dir = existing_run
    storage = open_storage(cfg.storage)
    weights = run_dir / "checkpoint_0000020" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (run_dir / "checkpoint_0000010" / "optimizer.pt").write_bytes(b"")
    assert verify_checkpoint(storage, str(run_dir / "checkpoint_0000020")).startswith("model.safetensors is damaged")
    assert verify_checkpoint(storage, str(run_dir / "checkpoint_0000010")).startswith("optimizer.pt is damaged")
    scan = scan_checkpoints(storage, [str(run_dir / "checkpoint_0000010"), str(run_dir / "checkpoint_0000020")])
    assert scan.latest is None and len(scan.damaged) == 2


def test_resume_falls_back_to_the_newest_valid_checkpoint(existing_run):
    from orchestrator.run_dir import DAMAGED_PREFIX, RunDir
    from orchestrator.trainer import plan_run

    cfg, run_dir = existing_run
    config_before = (run_dir / "config.json").read_text()
    weights = run_dir / "checkpoint_0000020" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    cfg2 = TrainConfig(**{**cfg.to_dict(), "max_steps": 30})
    plan = plan_run(cfg2)
    run = RunDir(open_storage(cfg2.storage), "r")
    decision = run.decide(plan)
    assert decision.resume and decision.checkpoint.endswith("checkpoint_0000010")
    assert (run_dir / "config.json").read_text() == config_before  # deciding writes nothing
    said: list[str] = []
    run.prepare(plan, said.append, decision)
    assert sorted(os.listdir(run_dir)) == sorted(
        ["checkpoint_0000010", f"{DAMAGED_PREFIX}checkpoint_0000020", "config.json", "metrics.jsonl", RAY_SNAPSHOT_FILE]
    )
    assert said[0].startswith(
        "warning: checkpoint checkpoint_0000020 of run r is unusable (model.safetensors is damaged"
    )
    assert said[-1] == "resuming run r from its checkpoint at step 10"
    assert run.latest_checkpoint().endswith("checkpoint_0000010")  # what the workers restore
    assert json.loads((run_dir / "config.json").read_text())["total_steps"] == 30


def test_ray_train_bookkeeping_is_fresh_per_invocation_so_ray_never_restores_a_stale_snapshot(tmp_path):
    """Ray Train V2 restores its checkpoint list from a snapshot under RunConfig(storage_path, name) and fails on
    entries whose directories are gone; each invocation gets a name of its own, so only this project's run
    directory decides what a run resumes from."""
    from ray.train.v2._internal.constants import CHECKPOINT_MANAGER_SNAPSHOT_FILENAME

    from orchestrator.run_dir import RunDir

    assert CHECKPOINT_MANAGER_SNAPSHOT_FILENAME == RAY_SNAPSHOT_FILE
    run = RunDir(open_storage(str(tmp_path)), "r")
    first, second = run.ray_train_location(0), run.ray_train_location(1)
    assert first != second and first[0].startswith(run.uri + "/")
    assert first[0] + "/" + first[1] != run.uri  # never the run directory, where old snapshots lie


def test_best_checkpoint_and_pruning_keep_the_latest_and_the_best(tmp_path):
    from orchestrator.run_dir import RunDir, checkpoint_name

    run = RunDir(open_storage(str(tmp_path)), "r")
    assert run.best_checkpoint() is None and run.latest_checkpoint() is None
    for step, loss in ((10, 5.0), (20, 3.0), (30, 4.0), (40, 4.5)):
        d = tmp_path / "src"
        d.mkdir()
        (d / "train_state.json").write_text(json.dumps(dict(step=step, tokens=step, val_loss=loss)))
        run.write_checkpoint(str(d), step, keep=2)
        (d / "train_state.json").unlink()
        d.rmdir()
    assert [os.path.basename(p) for p in run.checkpoints()] == [checkpoint_name(20), checkpoint_name(40)]
    assert run.best_checkpoint().endswith(checkpoint_name(20)) and run.latest_checkpoint().endswith("0000040")
    (tmp_path / "r" / "checkpoint_0000050.tmp-abcd").mkdir()  # an unfinished copy is not a checkpoint
    assert len(run.checkpoints()) == 2


def test_checkpoint_directory_names_are_spelled_in_one_module():
    """The run layout has one owner: no other module writes or parses the checkpoint directory name."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    literal = re.compile(r"checkpoint_(?:[{*\d]|[\"'])")  # checkpoint_{step}, checkpoint_*, "checkpoint_"
    spelled = [
        str(p.relative_to(repo))
        for p in [repo / "cli.py", *repo.glob("orchestrator/*.py"), *repo.glob("gptoss/*.py")]
        + [*repo.glob("data_pipeline/*.py"), *repo.glob("raysetup/*.py")]
        if literal.search(p.read_text())
    ]
    assert spelled == ["orchestrator/run_dir.py"]


def test_no_valid_checkpoint_starts_over_and_keeps_the_old_run(existing_run):
    from orchestrator.run_dir import RunDir
    from orchestrator.trainer import plan_run

    cfg, run_dir = existing_run
    for step in (10, 20):
        (run_dir / f"checkpoint_{step:07d}" / "train_state.json").write_text("{")
    plan = plan_run(cfg)
    run = RunDir(open_storage(cfg.storage), "r")
    said: list[str] = []
    run.prepare(plan, said.append)
    assert said[-1].startswith("no checkpoint of it can be restored, starting r over; the previous run was moved to")
    assert sorted(os.listdir(run_dir)) == ["config.json"]
    assert any(".old-" in n for n in os.listdir(run_dir.parent))


def test_resume_on_re_prepared_data_is_refused_with_how_to_start_over(existing_run):
    from orchestrator.run_dir import RunDir
    from orchestrator.trainer import plan_run

    cfg, run_dir = existing_run
    # The data directory was prepared again in place: same path, same vocabulary size, another map.
    for step in (10, 20):
        path = run_dir / f"checkpoint_{step:07d}" / "manifest.json"
        path.write_text(json.dumps(_permuted(json.loads(path.read_text()))))
    before = {n: os.path.getmtime(run_dir / n) for n in os.listdir(run_dir)}
    with pytest.raises(ValueError, match="cannot resume run 'r'.*different token map.*--no-resume"):
        RunDir(open_storage(cfg.storage), "r").decide(plan_run(cfg))
    assert {n: os.path.getmtime(run_dir / n) for n in os.listdir(run_dir)} == before
    # Same map, different tokens: refused too.
    for step in (10, 20):
        path = run_dir / f"checkpoint_{step:07d}" / "manifest.json"
        manifest = dict(plan_run(cfg).manifest)
        manifest["splits"] = {
            k: dict(v, shards=[dict(s, sha256="0" * 64) for s in v["shards"]]) for k, v in manifest["splits"].items()
        }
        path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="same token map but different tokens"):
        RunDir(open_storage(cfg.storage), "r").decide(plan_run(cfg))
    # --no-resume starts over.
    decision = RunDir(open_storage(cfg.storage), "r").decide(
        plan_run(TrainConfig(**{**cfg.to_dict(), "resume": False}))
    )
    assert not decision.resume


def test_data_identity_sees_the_map_not_only_its_size(prepared_data):
    from data_pipeline import data_identity, load_manifest

    manifest = load_manifest(prepared_data)
    moved = dict(manifest, data_dir="/elsewhere", created_unix=0)
    assert data_identity(moved) == data_identity(manifest)
    assert data_identity(moved, content=True) == data_identity(manifest, content=True)
    assert data_identity(_permuted(manifest)) != data_identity(manifest)
    assert data_identity(dict(manifest, tokenizer="gpt2")) != data_identity(manifest)
