"""Benchmark: `prepare` tokens/s against the machine's tokenizing limit (cores x single-core tiktoken), measured in the same run.

    python bench/bench_prepare.py [--copies 10] [--tokenizer o200k_harmony] [--tokenizer-dir DIR] [--source-dir DIR]

Builds a corpus of >= 100 MB by replicating the shared TinyStories train text into a temporary folder (removed after),
runs single-process tiktoken `encode_ordinary_batch(num_threads=1)` over the same stories, then `prepare` with Ray
already started (its start-up is reported apart), and prints the ratio prepare tokens/s / (cores x single-core tokens/s).
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=10, help="copies of train.txt (10.6 MB each)")
    ap.add_argument("--tokenizer", default="o200k_harmony")
    ap.add_argument("--tokenizer-dir", default=str(SHARED / "data" / "tiktoken"))
    ap.add_argument("--source-dir", default=str(SHARED / "data" / "tinystories"))
    ap.add_argument("--baseline-stories", type=int, default=0, help="stories for the single-core baseline (0: all)")
    args = ap.parse_args()

    from data_pipeline import PrepareConfig, get_encoding, prepare
    from data_pipeline.sources import _txt_stories
    from orchestrator.runtime import init_ray

    train = Path(args.source_dir) / "train.txt"
    work = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        corpus = work / "corpus"
        corpus.mkdir()
        data = train.read_bytes()
        with open(corpus / "stories.txt", "wb") as f:
            for _ in range(args.copies):
                f.write(data)
        size_mb = (corpus / "stories.txt").stat().st_size / 1e6

        enc = get_encoding(args.tokenizer, args.tokenizer_dir)
        stories = _txt_stories((corpus / "stories.txt").read_bytes(), "corpus", "strict")
        sample = stories[: args.baseline_stories] if args.baseline_stories else stories
        t = time.perf_counter()
        ids = enc.encode_ordinary_batch(sample, num_threads=1)
        single_s = time.perf_counter() - t
        single_tokens = sum(map(len, ids)) + len(sample)
        del ids
        single_rate = single_tokens / single_s
        t = time.perf_counter()
        n = sum(len(enc.encode_to_numpy(s, disallowed_special=())) for s in sample) + len(sample)
        numpy_rate = n / (time.perf_counter() - t)

        t = time.perf_counter()
        cluster = init_ray(num_cpus=os.cpu_count())
        ray_s = time.perf_counter() - t
        cores = int(cluster.cpus)

        cfg = PrepareConfig(out=str(work / "out"), source=str(corpus), tokenizer=args.tokenizer, tokenizer_dir=args.tokenizer_dir)
        t = time.perf_counter()
        summary = prepare(cfg, echo=lambda s: None)
        prepare_s = time.perf_counter() - t
        tokens = sum(summary["tokens"].values())
        prepare_rate = tokens / prepare_s
        limit = cores * single_rate
        print(f"corpus: {size_mb:.1f} MB, {len(stories):,} stories, {tokens:,} tokens (end-of-text included); {cores} cores")
        print(f"single-core tiktoken encode_ordinary_batch(num_threads=1): {single_rate / 1e6:.2f}M tokens/s"
              f" (encode_to_numpy, as prepare's actors use it: {numpy_rate / 1e6:.2f}M tokens/s)")
        print(f"prepare (Ray already up; start-up {ray_s:.1f} s not counted): {prepare_s:.1f} s = {prepare_rate / 1e6:.2f}M tokens/s,"
              f" {size_mb / prepare_s:.1f} MB/s")
        print(f"ratio prepare / (cores x single-core) = {prepare_rate / limit:.2f}   (goal >= 0.8)")
        print(f"ratio against the encode_to_numpy single-core rate = {prepare_rate / (cores * numpy_rate):.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
