"""Training throughput: Ray Train (1 worker) vs the same loop in a plain process, and 2 Ray workers vs 1, side by side.

Usage: python bench/bench_train.py [--data DIR] [--arch gptoss] [--preset cpu-tiny] [--steps 40]
Without --data it prepares the shared TinyStories text (../shared/data/tinystories) into a temporary folder first.
Tokens/s is the median of the logged windows after the first (steady state); start-up is reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def steady_tokens_per_s(records: list[dict]) -> float:
    windows = [r["tokens_per_s"] for r in records if r.get("kind") == "step"][1:]
    return statistics.median(windows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--arch", default="gptoss")
    parser.add_argument("--preset", default="cpu-tiny")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args()

    from orchestrator.config import TrainConfig
    from orchestrator.trainer import run_training
    from raysetup import init_ray

    cpus = os.cpu_count() or 1
    t0 = time.perf_counter()
    init_ray()
    ray_start_s = time.perf_counter() - t0
    tmp = tempfile.mkdtemp(prefix="bench-train-")
    data = args.data
    if data is None:
        from data_pipeline import PrepareConfig, prepare

        shared = REPO.parent / "shared" / "data"
        data = os.path.join(tmp, "data")
        prepare(
            PrepareConfig(out=data, source=str(shared / "tinystories"), tokenizer_dir=str(shared / "tiktoken")),
            echo=lambda *a: None,
        )

    def cfg(name: str, workers: int, threads: int) -> TrainConfig:
        return TrainConfig(
            data=data,
            arch=args.arch,
            preset=args.preset,
            seq_len=args.seq_len,
            batch_size=args.batch_size,
            max_steps=args.steps,
            eval_every=args.steps,
            eval_windows=8,
            log_every=5,
            workers=workers,
            threads_per_worker=threads,
            storage=os.path.join(tmp, "runs"),
            name=name,
            sample_tokens=0,
        )

    print(
        f"model {args.arch}/{args.preset}, batch {args.batch_size} x seq {args.seq_len} per worker, "
        f"{args.steps} steps, "
        f"{cpus} CPUs; Ray start-up {ray_start_s:.1f}s"
    )

    run_training(cfg("plain", 1, cpus), show_progress=False, local=True)
    with open(os.path.join(tmp, "runs", "plain", "metrics.jsonl")) as f:
        plain_tps = steady_tokens_per_s([json.loads(line) for line in f if line.strip()])

    def ray_run(name: str, workers: int, threads: int) -> tuple[float, float]:
        start = time.time()
        run_training(cfg(name, workers, threads), show_progress=False)
        records = [json.loads(line) for line in open(os.path.join(tmp, "runs", name, "metrics.jsonl")) if line.strip()]
        steps = [r for r in records if r["kind"] == "step"]
        # Time to the first logged window, less the window's own training time: launch and set-up of the worker group.
        startup = steps[0]["time"] - start - steps[0]["tokens"] / steps[0]["tokens_per_s"]
        return steady_tokens_per_s(records), startup

    ray1_tps, ray1_start = ray_run("ray1", 1, cpus)
    ray2_tps, ray2_start = ray_run("ray2", min(2, cpus), max(1, cpus // 2))

    print(f"plain single process ({cpus} threads):   {plain_tps:8,.0f} tokens/s")
    print(f"Ray Train, 1 worker x {cpus} threads:     {ray1_tps:8,.0f} tokens/s   (start-up {ray1_start:.1f}s)")
    print(
        f"Ray Train, 2 workers x {max(1, cpus // 2)} thread(s):   {ray2_tps:8,.0f} tokens/s   "
        f"(start-up {ray2_start:.1f}s)"
    )
    print(f"overhead ratio  Ray 1 worker / plain   = {ray1_tps / plain_tps:.2f}   (goal >= 0.9)")
    print(f"scaling ratio   Ray 2 workers / 1      = {ray2_tps / ray1_tps:.2f}")


if __name__ == "__main__":
    main()
