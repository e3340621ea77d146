"""How a small machine's cores are best spent on a sweep: one trial at a time with every thread, or one trial per core.

Measured side by side in one run, alternating: (A) one training process with --threads threads, and (B) --threads
processes at once with one thread each (what `sweep` does by default: trials side by side, threads = cores / trials).
Each process trains the same model through its own `model(x, y)` loss path in a plain loop (no Ray: this is the
ceiling both layouts share) on batches of the shared TinyStories text. Prints tokens/s of each layout and B/A.

Usage: python bench/bench_packing.py [--model gptoss/cpu-tiny] [--steps 30] [--threads 2] [--batch 16] [--rounds 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as bench_speed.py: idle OpenMP workers must not spin

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def _train(spec: str, steps: int, warmup: int, threads: int, batch: int, seq_len: int, start, out) -> None:
    """One training process: build, warm up, wait for the others, then time `steps` steps."""
    import bench_speed as bs
    import torch

    from gptoss import build_model
    from orchestrator.config import TrainConfig
    from orchestrator.optimizer import build_optimizer

    torch.set_num_threads(threads)
    batches, _ = bs.text_batches(steps + warmup, batch, seq_len, 10571, 4.0)
    _, arch, preset, overrides = bs.parse_model(spec)
    overrides.setdefault("vocab_size", 10571)
    torch.manual_seed(0)
    model = build_model(arch, preset, **overrides)
    run = bs.Run(
        spec, "now", model, build_optimizer(model, TrainConfig(arch=arch, preset=preset, lr=1e-3), torch.device("cpu"))
    )
    for x, y in batches[:warmup]:
        bs.train_step(run, x, y, 1.0)
    start.wait()
    began = time.perf_counter()
    for x, y in batches[warmup:]:
        bs.train_step(run, x, y, 1.0)
    out.put((began, time.perf_counter(), steps * batch * seq_len))


def layout(spec: str, processes: int, threads: int, args) -> float:
    """Tokens/s of `processes` processes with `threads` threads each, all timed over the same wall-clock window."""
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(target=_train, args=(spec, args.steps, args.warmup, threads, args.batch, args.seq_len, start, out))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            sys.exit(f"bench_packing: a training process failed (exit {p.exitcode})")
    began, ended = min(r[0] for r in results), max(r[1] for r in results)
    return sum(r[2] for r in results) / (ended - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gptoss/cpu-tiny", help="ARCH/PRESET,field=value,... as in bench_speed.py")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="cores to spend (default: all)")
    parser.add_argument("--batch", type=int, default=16, help="sequences per step (the study's 16)")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2, help="A/B alternations (medians are reported)")
    args = parser.parse_args()
    if args.threads < 2:
        sys.exit("bench_packing: needs --threads >= 2 (one process per core against one process with all of them)")
    one, many = [], []
    for _ in range(args.rounds):
        one.append(layout(args.model, 1, args.threads, args))
        many.append(layout(args.model, args.threads, 1, args))
    a, b = statistics.median(one), statistics.median(many)
    print(
        f"{args.model}, batch {args.batch} x {args.seq_len}, {args.steps} timed steps per process, "
        f"{args.rounds} rounds, "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(
        f"A: 1 process x {args.threads} threads     {a:9,.0f} tokens/s   "
        f"(rounds: {', '.join(f'{v:,.0f}' for v in one)})"
    )
    print(
        f"B: {args.threads} processes x 1 thread     {b:9,.0f} tokens/s   "
        f"(rounds: {', '.join(f'{v:,.0f}' for v in many)})"
    )
    print(f"B / A = {b / a:.2f}: {'trials side by side' if b > a else 'one trial at a time'} uses these cores better")


if __name__ == "__main__":
    main()
