"""Model micro-benchmarks: MoE vs dense (same active params) training step, and KV-cache vs recompute generation."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

# The 2-core box is shared (Ray workers, other tests): busy-waiting OpenMP workers slow down 10x or more whenever a
# core is taken, which swamps what we measure. Passive waiting costs little when the machine is idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gptoss import build_model, count_params, generate  # noqa: E402

# cpu-small shapes with a small vocab, so the MLPs (not the unembedding) dominate the step.
SHAPE = dict(vocab_size=8192, n_layers=6, d_model=256, n_heads=8, n_kv_heads=4)
EXPERT_INTERMEDIATE = 336


def median_time(fn, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_step_times(models, batch: int, seq_len: int, iters: int) -> list[float]:
    """Median forward+backward time per model, alternating the models each iteration so they share any noise."""
    idx = torch.randint(0, SHAPE["vocab_size"], (batch, seq_len), generator=torch.Generator().manual_seed(0))

    def step(model):
        model.zero_grad(set_to_none=True)
        _, loss = model(idx, idx)
        loss.backward()

    times = [[] for _ in models]
    for i in range(iters + 2):
        for model, record in zip(models, times):
            start = time.perf_counter()
            step(model)
            if i >= 2:  # the first two are warmup
                record.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def bench_moe(batch: int, seq_len: int, iters: int) -> None:
    torch.manual_seed(0)
    moe = build_model(
        "gptoss", "cpu-small", **SHAPE, num_experts=8, experts_per_token=2, intermediate_size=EXPERT_INTERMEDIATE
    )
    # Dense equivalent: one expert of twice the width, so a token multiplies by the same number of expert weights.
    dense = build_model(
        "gptoss", "cpu-small", **SHAPE, num_experts=1, experts_per_token=1, intermediate_size=2 * EXPERT_INTERMEDIATE
    )
    for name, model in (("moe 8 experts top-2", moe), ("dense 1 expert, 2x wide", dense)):
        c = count_params(model)
        print(f"  {name:26s} total {c['total'] / 1e6:6.2f}M  active {c['active'] / 1e6:6.2f}M")
    t_moe, t_dense = train_step_times([moe, dense], batch, seq_len, iters)
    print(f"  forward+backward, batch {batch} x {seq_len} tokens, median of {iters}:")
    print(f"    moe   {t_moe * 1e3:8.1f} ms")
    print(f"    dense {t_dense * 1e3:8.1f} ms")
    print(f"    ratio moe/dense = {t_moe / t_dense:.2f}x (goal <= 1.5x)")


def bench_generation(new_tokens: int, iters: int) -> None:
    torch.manual_seed(0)
    model = build_model("gptoss", "cpu-small", **SHAPE).eval()
    prompt = list(range(1, 17))
    generate(model, prompt, 8, temperature=0)  # warmup
    t_cached = median_time(lambda: generate(model, prompt, new_tokens, temperature=0), warmup=1, iters=iters)
    t_recompute = median_time(
        lambda: generate(model, prompt, new_tokens, temperature=0, use_cache=False), warmup=0, iters=1
    )
    same = generate(model, prompt, new_tokens, temperature=0) == generate(
        model, prompt, new_tokens, temperature=0, use_cache=False
    )
    print(f"  gptoss cpu-small shapes, prompt {len(prompt)}, {new_tokens} new tokens (greedy), identical: {same}")
    print(f"    kv cache  {t_cached:7.2f} s  ({new_tokens / t_cached:6.1f} tok/s)")
    print(f"    recompute {t_recompute:7.2f} s  ({new_tokens / t_recompute:6.1f} tok/s)")
    print(f"    speedup {t_recompute / t_cached:.1f}x (goal >= 5x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print("MoE vs dense training step:")
    bench_moe(args.batch, args.seq_len, args.iters)
    print("Generation:")
    bench_generation(args.new_tokens, max(1, args.iters // 2))


if __name__ == "__main__":
    main()
