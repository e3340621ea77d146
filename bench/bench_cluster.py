"""Time the two-node flow on this machine: start a head and a second node, `cluster`, `prepare`, a 2-worker `train`
across both nodes, and (unless --no-kill) the same run losing node b after its first checkpoint and getting it back.

    python bench/bench_cluster.py [--steps 100] [--no-kill] [--keep DIR]

Every phase prints its wall time. Nodes are stopped at the end, whatever happens (never with `ray stop`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from local_cluster import LocalRayCluster, live_actors  # noqa: E402

SHARED = Path(os.environ.get("GPTOSS_SHARED_DIR", REPO.parent / "shared")) / "data"
CLI = [sys.executable, str(REPO / "cli.py")]


class Timer:
    def __init__(self):
        self.rows: list[tuple[str, float]] = []

    def phase(self, name: str):
        timer = self

        class _Phase:
            def __enter__(self):
                self.t = time.perf_counter()
                print(f"-- {name} ...", flush=True)

            def __exit__(self, *exc):
                dt = time.perf_counter() - self.t
                timer.rows.append((name, dt))
                print(f"   {name}: {dt:.1f} s", flush=True)

        return _Phase()

    def table(self) -> str:
        width = max(len(n) for n, _ in self.rows)
        return "\n".join(f"{n.ljust(width)}  {dt:7.1f} s" for n, dt in self.rows)


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"`cli.py {' '.join(args[:1])}` failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def train_args(data: Path, storage: Path, name: str, address: str, steps: int) -> list[str]:
    return [
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
        str(steps),
        "--eval-every",
        "10",
        "--seq-len",
        "64",
        "--batch-size",
        "8",
        "--storage",
        str(storage),
        "--name",
        name,
        "--address",
        address,
        "--tokenizer-dir",
        str(SHARED / "tiktoken"),
        "--max-failures",
        "1",
        "--sample-tokens",
        "0",
        "--no-resume",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--no-kill", action="store_true", help="Skip the node-loss run.")
    ap.add_argument("--keep", help="Keep data and runs in this directory (default: a temp dir, removed).")
    args = ap.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-cluster-"))
    work.mkdir(parents=True, exist_ok=True)
    timer = Timer()
    cluster = LocalRayCluster()
    try:
        with timer.phase("start head (ray start --head)"):
            cluster.start_head(num_cpus=1, resources={"head_node": 1})
        with timer.phase("add node b (ray start --address)"):
            cluster.add_node("b", num_cpus=1, resources={"node_b": 1})
        with timer.phase("cli.py cluster --storage (shared check)"):
            print(cli("cluster", "--address", cluster.address, "--storage", str(work / "runs")).stdout, end="")
        with timer.phase("cli.py prepare (2000 stories, own local Ray)"):
            cli(
                "prepare",
                "--source",
                str(SHARED / "tinystories"),
                "--tokenizer-dir",
                str(SHARED / "tiktoken"),
                "--out",
                str(work / "data"),
                "--limit",
                "2000",
                "--force",
            )
        with timer.phase(f"cli.py train, 2 workers on 2 nodes, {args.steps} steps"):
            out = cli(*train_args(work / "data", work / "runs", "bench-2n", cluster.address, args.steps)).stdout
        print("\n".join(line for line in out.splitlines() if line.startswith(("run ", "bench-2n:", "  "))))

        if not args.no_kill:
            env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_AUTH_MODE": "disabled"}
            run_dir = work / "runs" / "bench-2n-kill"
            started = time.perf_counter()
            proc = subprocess.Popen(
                [*CLI, *train_args(work / "data", work / "runs", "bench-2n-kill", cluster.address, args.steps)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=REPO,
                env=env,
            )
            with timer.phase("  launch to first checkpoint"):
                while proc.poll() is None and not (
                    run_dir.is_dir() and any(p.is_dir() and p.name.startswith("checkpoint_") for p in run_dir.iterdir())
                ):
                    time.sleep(0.2)
            workers = {a["node_id"][:8] for a in live_actors(cluster.address, "RayTrainWorker")}
            print(f"   RayTrainWorker actors on nodes: {sorted(workers)}")
            with timer.phase("  kill node b until the GCS marks it dead"):
                cluster.kill_node("b")
                cluster.wait_for_nodes(1, timeout_s=60)
            with timer.phase("  restart node b"):
                cluster.add_node("b", num_cpus=1, resources={"node_b": 1})
            with timer.phase("  node back to run finished"):
                out, err = proc.communicate(timeout=600)
            timer.rows.append(("train with node loss, launch to end", time.perf_counter() - started))
            if proc.returncode != 0:
                raise SystemExit(f"the run with a node loss failed ({proc.returncode}):\n{err[-3000:]}")
            last = sorted(p.name for p in run_dir.iterdir() if p.is_dir() and p.name.startswith("checkpoint_"))[-1]
            print(f"   completed; last checkpoint {last}")
    finally:
        cluster.shutdown()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\ntimings (2-CPU machine, 1 CPU per node):")
    print(timer.table())


if __name__ == "__main__":
    main()
