"""Benchmark: `prepare` tokens/s against the machine's tokenizing limit (cores x single-core tiktoken), \
measured in the same run.

    python bench/bench_prepare.py [--copies 10] [--large-copies 40] [--tokenizer o200k_harmony]
        [--tokenizer-dir DIR] [--source-dir DIR]

Builds a corpus of >= 100 MB by replicating the shared TinyStories train text into a temporary folder (removed after),
runs single-process tiktoken `encode_ordinary_batch(num_threads=1)` over the same stories, then `prepare` with Ray
already started (its start-up is reported apart), and prints the ratio prepare tokens/s / (cores x single-core tokens/s)
with prepare's phase timings. Then the same for a larger corpus (--large-copies, default 40: ~425 MB), baseline
re-measured on its stories, to show how the ratio approaches the limit as prepare's fixed start-up cost amortises
(on that second run Ray Data's per-cluster helper actors are already up; see the phases).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("GPTOSS_SHARED_DIR", REPO.parent / "shared"))
BASELINE_BATCH = 32768


def measure(copies: int, args, work: Path, cores: int, ray_s: float) -> float:
    """Build a corpus of `copies` x train.txt, measure the single-core baselines on its stories, then `prepare` it."""
    from data_pipeline import PrepareConfig, get_encoding, prepare
    from data_pipeline.sources import _txt_stories

    corpus = work / f"corpus-{copies}"
    corpus.mkdir()
    data = (Path(args.source_dir) / "train.txt").read_bytes()
    with open(corpus / "stories.txt", "wb") as f:
        for _ in range(copies):
            f.write(data)
    del data
    size_mb = (corpus / "stories.txt").stat().st_size / 1e6

    enc = get_encoding(args.tokenizer, args.tokenizer_dir)
    stories = _txt_stories((corpus / "stories.txt").read_bytes(), "corpus", "strict")
    sample = stories[: args.baseline_stories] if args.baseline_stories else stories
    # In batches of BASELINE_BATCH stories, each batch's id lists freed before the next: the same work on the same
    # stories, without ~100M live Python ints on the large corpus slowing (and so flattering) the baseline.
    single_s = 0.0
    single_tokens = len(sample)
    for i in range(0, len(sample), BASELINE_BATCH):
        t = time.perf_counter()
        ids = enc.encode_ordinary_batch(sample[i : i + BASELINE_BATCH], num_threads=1)
        single_s += time.perf_counter() - t
        single_tokens += sum(map(len, ids))
        del ids
    single_rate = single_tokens / single_s
    t = time.perf_counter()
    n = sum(len(enc.encode_to_numpy(s, disallowed_special=())) for s in sample) + len(sample)
    numpy_rate = n / (time.perf_counter() - t)
    n_stories = len(stories)
    del stories, sample

    cfg = PrepareConfig(
        out=str(work / f"out-{copies}"), source=str(corpus), tokenizer=args.tokenizer, tokenizer_dir=args.tokenizer_dir
    )
    load = os.getloadavg()[0]
    t = time.perf_counter()
    summary = prepare(cfg, echo=lambda s: None)
    prepare_s = time.perf_counter() - t
    shutil.rmtree(work / f"out-{copies}", ignore_errors=True)
    shutil.rmtree(corpus, ignore_errors=True)
    tokens = sum(summary["tokens"].values())
    prepare_rate = tokens / prepare_s
    limit = cores * single_rate
    ratio = prepare_rate / limit
    print(
        f"corpus: {size_mb:.1f} MB ({copies} x train.txt), {n_stories:,} stories, "
        f"{tokens:,} tokens (end-of-text included); {cores} cores;"
        f" load average before prepare {load:.2f}"
    )
    print(
        f"single-core tiktoken encode_ordinary_batch(num_threads=1): {single_rate / 1e6:.2f}M tokens/s"
        f" (encode_to_numpy, as prepare's workers use it: {numpy_rate / 1e6:.2f}M tokens/s)"
    )
    print(
        f"prepare (Ray already up; start-up {ray_s:.1f} s not counted): "
        f"{prepare_s:.1f} s = {prepare_rate / 1e6:.2f}M tokens/s,"
        f" {size_mb / prepare_s:.1f} MB/s"
    )
    print("prepare phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in summary.get("phases", {}).items()))
    print(f"ratio prepare / (cores x single-core) = {ratio:.2f}   (goal >= 0.8)")
    print(f"ratio against the encode_to_numpy single-core rate = {prepare_rate / (cores * numpy_rate):.2f}")
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=10, help="copies of train.txt (10.6 MB each)")
    ap.add_argument(
        "--large-copies",
        type=int,
        default=40,
        help="a second, larger corpus, to show the fixed start-up cost amortising (0: skip)",
    )
    ap.add_argument("--tokenizer", default="o200k_harmony")
    ap.add_argument("--tokenizer-dir", default=str(SHARED / "data" / "tiktoken"))
    ap.add_argument("--source-dir", default=str(SHARED / "data" / "tinystories"))
    ap.add_argument("--baseline-stories", type=int, default=0, help="stories for the single-core baseline (0: all)")
    args = ap.parse_args()

    from raysetup import init_ray

    work = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        t = time.perf_counter()
        cluster = init_ray(num_cpus=os.cpu_count())
        ray_s = time.perf_counter() - t
        cores = int(cluster.cpus)
        ratios = {}
        for copies in [args.copies] + ([args.large_copies] if args.large_copies > 0 else []):
            ratios[copies] = measure(copies, args, work, cores, ray_s)
            ray_s = 0.0
            print()
        print("summary: " + ", ".join(f"{c} copies ({c * 10.6:.0f} MB): ratio {r:.2f}" for c, r in ratios.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
