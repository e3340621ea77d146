"""The CLI against a real two-node Ray cluster on this machine (tests/local_cluster.py).

The product is driven only through subprocesses (`python cli.py ... --address`): a pytest process can be a driver
of one Ray cluster only, and the session's `ray_session` instance may be that one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from local_cluster import LocalRayCluster, can_make_private_dirs, free_port

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, str(REPO / "cli.py")]


def run_cli(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    # Like the nodes (local_cluster.FAST_HEALTH_CHECK_ENV): no token auth, whatever an earlier ray.init set here.
    full_env = {**os.environ, "RAY_AUTH_MODE": "disabled", **(env or {})}
    full_env.pop("RAY_ADDRESS", None)
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=full_env)


@pytest.fixture(scope="module")
def two_nodes():
    """Head (1 CPU) plus node "b" (1 CPU). On node b, `private` is a node-local directory when the machine allows
    mount namespaces (root); otherwise the node-local refusal test is skipped."""
    cluster = LocalRayCluster()
    private = os.path.join(cluster.root, "private")
    cluster.private = private if can_make_private_dirs() else None
    try:
        cluster.start_head(num_cpus=1, resources={"head_node": 1})
        cluster.add_node("b", num_cpus=1, resources={"node_b": 1}, private_dir=cluster.private)
        yield cluster
    finally:
        cluster.shutdown()


def test_cluster_command_lists_both_nodes(two_nodes):
    alive = two_nodes.alive_nodes()
    assert len(alive) == 2
    proc = run_cli("cluster", "--address", two_nodes.address)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "total: 2 nodes, 2 CPUs, 0 GPUs" in out
    for node in alive:
        assert node["node_id"][:8] in out
    # The same through RAY_ADDRESS, as `ray job submit` sets it for the driver.
    proc = run_cli("cluster", env={})
    assert "1 node" in proc.stdout  # without an address: a local instance, not the cluster
    env_proc = subprocess.run(
        [*CLI, "cluster"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": two_nodes.address},
    )
    assert env_proc.returncode == 0 and "total: 2 nodes" in env_proc.stdout, env_proc.stderr


@pytest.mark.slow
def test_unreachable_or_wrong_address_fails_fast_in_one_line():
    # Nothing listening.
    started = time.monotonic()
    proc = run_cli("cluster", "--address", f"127.0.0.1:{free_port()}", timeout=60)
    assert proc.returncode == 2 and time.monotonic() - started < 15
    assert proc.stderr.strip().count("\n") == 0 and "cannot reach a Ray cluster" in proc.stderr

    # Something listening that is not a Ray GCS and never answers: Ray itself would retry for 40 s.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        threading.Thread(target=lambda: [server.accept() for _ in range(8)], daemon=True).start()
        started = time.monotonic()
        proc = run_cli("cluster", "--address", f"127.0.0.1:{port}", timeout=60)
        elapsed = time.monotonic() - started
    assert proc.returncode == 2 and elapsed < 15, (elapsed, proc.stderr)
    assert proc.stderr.strip().count("\n") == 0 and "not a Ray cluster's GCS" in proc.stderr, proc.stderr


def test_shared_storage_passes_and_uris_are_not_checked(two_nodes, tmp_path):
    shared = tmp_path / "runs"
    proc = run_cli("cluster", "--address", two_nodes.address, "--storage", str(shared))
    assert proc.returncode == 0, proc.stderr
    assert "is visible from all 2 nodes" in proc.stdout
    assert not [p for p in shared.iterdir() if p.name.startswith(".shared-storage-check")]  # marker removed

    proc = run_cli("cluster", "--address", two_nodes.address, "--storage", "s3://some-bucket/runs")
    assert proc.returncode == 0 and "not checked" in proc.stdout, proc.stderr


def test_node_local_storage_is_refused(two_nodes):
    if not two_nodes.private:
        pytest.skip("no mount namespaces here (needs root and unshare), so no node-local directory to test with")
    local_only = os.path.join(two_nodes.private, "runs")  # on node b, this path is its own empty tmpfs
    proc = run_cli("cluster", "--address", two_nodes.address, "--storage", local_only)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line
    assert f"--storage {local_only} is local to this node but the cluster has 2 nodes" in line
    assert "use a shared mount (NFS) or a URI such as s3://bucket/runs" in line
    assert not [p for p in os.listdir(local_only) if p.startswith(".shared-storage-check")]  # marker removed


# ---------------------------------------------------------------------------------------------------------------
# The proof with training: two workers on two nodes, checkpoints on shared storage, and a node lost mid-run.
# About 60-90 s here (prepare about 10 s, the run about 20 s, the restart after the node loss the rest).

MAX_STEPS = 100


def _train_cmd(data: Path, storage: Path, address: str, tiktoken_dir: Path) -> list[str]:
    return [
        *CLI,
        "train",
        "--data",
        str(data),
        "--arch",
        "gptoss",
        "--preset",
        "debug",
        "--workers",
        "2",
        "--max-steps",
        str(MAX_STEPS),
        "--eval-every",
        "10",
        "--seq-len",
        "64",
        "--batch-size",
        "8",
        "--storage",
        str(storage),
        "--name",
        "two-nodes",
        "--address",
        address,
        "--tokenizer-dir",
        str(tiktoken_dir),
        "--max-failures",
        "1",
        "--sample-tokens",
        "0",
        "--no-resume",
    ]


def test_training_spans_two_nodes_and_survives_losing_one(two_nodes, tmp_path, tinystories_dir, tiktoken_dir):
    from local_cluster import live_actors

    data = tmp_path / "data"
    prep = run_cli(
        "prepare",
        "--source",
        str(tinystories_dir),
        "--tokenizer-dir",
        str(tiktoken_dir),
        "--out",
        str(data),
        "--limit",
        "2000",
        timeout=300,
    )
    assert prep.returncode == 0, prep.stderr[-2000:]

    storage = tmp_path / "runs"  # on this machine every node sees tmp_path: a shared mount, in effect
    run_dir = storage / "two-nodes"
    node_ids = {n["node_id"] for n in two_nodes.alive_nodes() if not n["head"]}
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(
        _train_cmd(data, storage, two_nodes.address, tiktoken_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    try:
        # Until the first checkpoint: note where Ray Train's workers live.
        worker_nodes: set[str] = set()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            worker_nodes |= {a["node_id"] for a in live_actors(two_nodes.address, "RayTrainWorker")}
            if run_dir.is_dir() and any(p.is_dir() and p.name.startswith("checkpoint_") for p in run_dir.iterdir()):
                break
            time.sleep(0.3)
        assert proc.poll() is None, "the run ended before its first checkpoint:\n" + proc.communicate()[1][-2000:]
        assert len(worker_nodes) == 2, f"expected workers on 2 nodes, saw {worker_nodes}"
        assert worker_nodes & node_ids, "no worker on the second node"

        # Lose node b as a crash would (every process of it killed), then bring a node back.
        assert two_nodes.kill_node("b") > 0
        two_nodes.wait_for_nodes(1, timeout_s=30)
        two_nodes.add_node("b", num_cpus=1, resources={"node_b": 1}, private_dir=two_nodes.private)
        new_node = {n["node_id"] for n in two_nodes.alive_nodes() if not n["head"]} - node_ids
        assert len(new_node) == 1

        seen_on_new = False
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            seen_on_new |= bool({a["node_id"] for a in live_actors(two_nodes.address, "RayTrainWorker")} & new_node)
            time.sleep(0.5)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, f"stdout:\n{out[-2000:]}\nstderr:\n{err[-3000:]}"
    assert seen_on_new, "the restarted worker group never used the node that came back"
    # Checkpoints went to the shared storage path, up to the last step.
    checkpoints = sorted(p.name for p in run_dir.iterdir() if p.is_dir() and p.name.startswith("checkpoint_"))
    assert checkpoints and checkpoints[-1] == f"checkpoint_{MAX_STEPS:07d}", checkpoints
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["latest_checkpoint"] == str(run_dir / f"checkpoint_{MAX_STEPS:07d}")
    assert summary["workers"] == 2
    assert summary["steps"] == MAX_STEPS  # the progress queue lives on the driver node, so no record was lost
