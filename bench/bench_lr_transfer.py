"""Learning-rate transfer across width: the best lr at two widths under standard and mup, as a printed table.

Usage: python bench/bench_lr_transfer.py --data DIR [--archs gptoss,gpt2] [--widths 64,192] [--steps 300]
       [--lrs 2^-10..2^-4 as a comma list] [--out results.jsonl]
Each run trains n_layers 4, head_dim 32 (heads = width / 32, gptoss kv heads = heads / 2, MLP sized by the
architecture's rule) for --steps steps of --batch-size x --seq-len tokens on a cosine schedule, in this process (no
Ray), and is scored by its final validation loss over the same --eval-windows validation windows. mup's base width is
the first width, where mup computes exactly what standard computes (gptoss/parametrization.py), so those runs are
trained once and listed under both. Finished runs are kept in --out (JSON lines) and skipped when run again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HEAD_DIM = 32


def shape(arch: str, width: int) -> dict:
    heads = width // HEAD_DIM
    shape = dict(n_layers=4, d_model=width, n_heads=heads, intermediate_size=None)
    if arch == "gptoss":
        shape.update(head_dim=HEAD_DIM, n_kv_heads=max(1, heads // 2))
    return shape


def run_one(args, arch: str, width: int, parametrization: str, lr: float, storage: str) -> dict:
    from orchestrator.config import TrainConfig
    from orchestrator.trainer import run_training

    overrides = dict(shape(arch, width), parametrization=parametrization, mup_base_width=args.base_width)
    name = f"{arch}-{parametrization}-w{width}-lr{lr:.3g}"
    cfg = TrainConfig(
        data=args.data,
        arch=arch,
        preset="cpu-tiny",
        model_overrides=overrides,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        max_steps=args.steps,
        lr=lr,
        warmup_steps=args.steps // 10,
        eval_every=args.steps,
        eval_windows=args.eval_windows,
        log_every=max(1, args.steps // 10),
        storage=storage,
        name=name,
        sample_tokens=0,
        threads_per_worker=args.threads,
        cpu=True,
    )
    summary = run_training(cfg, show_progress=False, local=True)
    return dict(
        arch=arch,
        parametrization=parametrization,
        width=width,
        lr=lr,
        val_loss=summary["final_val_loss"],
        tokens=args.steps * args.batch_size * args.seq_len,
        val_tokens=args.eval_windows * args.seq_len,
        tokens_per_s=summary.get("tokens_per_s"),
    )


def best_lr(rows: list[dict]) -> tuple[float, float]:
    """(lr, val loss) of the lowest finite val loss."""
    finite = [r for r in rows if r["val_loss"] is not None and math.isfinite(r["val_loss"])]
    best = min(finite, key=lambda r: r["val_loss"])
    return best["lr"], best["val_loss"]


def table(results: list[dict], widths: list[int], lrs: list[float]) -> str:
    """One row per (arch, parametrization, width): val loss at each lr, the best lr; then the best-lr ratios."""
    lines = ["| arch | param | width | " + " | ".join(f"lr {lr:.3g}" for lr in lrs) + " | best lr |"]
    lines.append("|" + "---|" * (len(lrs) + 4))
    ratios = []
    for arch in dict.fromkeys(r["arch"] for r in results):
        for param in ("standard", "mup"):
            best = {}
            for width in widths:
                rows = [
                    r for r in results if r["arch"] == arch and r["parametrization"] == param and r["width"] == width
                ]
                if not rows:
                    continue
                by_lr = {r["lr"]: r["val_loss"] for r in rows}
                best[width] = best_lr(rows)
                cells = [f"{by_lr[lr]:.4f}" if lr in by_lr else "" for lr in lrs]
                cells = [f"**{c}**" if lr == best[width][0] else c for c, lr in zip(cells, lrs)]
                lines.append(f"| {arch} | {param} | {width} | " + " | ".join(cells) + f" | {best[width][0]:.3g} |")
            if len(best) == len(widths):
                shift = best[widths[0]][0] / best[widths[-1]][0]
                ratios.append(f"{arch} {param}: best lr w{widths[0]} / w{widths[-1]} = {shift:.3g}")
    return "\n".join(lines + [""] + ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="A prepared data directory (cli.py prepare).")
    parser.add_argument("--archs", default="gptoss,gpt2")
    parser.add_argument("--widths", default="64,192")
    parser.add_argument("--lrs", default=",".join(str(2.0**k) for k in range(-10, -3)))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--eval-windows", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="lr_transfer.jsonl", help="JSON lines of finished runs (resumable).")
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    lrs = [float(x) for x in args.lrs.split(",")]
    args.base_width = widths[0]

    done = []
    if os.path.exists(args.out):
        with open(args.out) as f:
            done = [json.loads(line) for line in f if line.strip()]
    key = lambda r: (r["arch"], r["parametrization"], r["width"], r["lr"])  # noqa: E731
    have = {key(r) for r in done}
    with tempfile.TemporaryDirectory(prefix="lr-transfer-") as storage:
        for arch in args.archs.split(","):
            # Interleaved over lrs so that a run cut short still leaves comparable rows at every setting.
            for lr in lrs:
                for width in widths:
                    for param in ("standard", "mup") if width != args.base_width else ("standard",):
                        if (arch, param, width, lr) in have:
                            continue
                        row = run_one(args, arch, width, param, lr, storage)
                        print(json.dumps(row), flush=True)
                        done.append(row)
                        with open(args.out, "a") as f:
                            f.write(json.dumps(row) + "\n")
    # The base width's standard runs are its mup runs too (identical computation).
    rows = done + [dict(r, parametrization="mup") for r in done if r["width"] == args.base_width]
    rows = [r for r in rows if r["arch"] in args.archs.split(",")]
    print(table(rows, widths, sorted(lrs)))


if __name__ == "__main__":
    main()
