"""The prepare pipeline: Ray Data reads stories, a tiktoken actor pool tokenizes them, a datasink writes Arrow parts; the driver then compacts the vocabulary, cuts final shards and writes the manifest last."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .config import SPLITS, DataError, PrepareConfig, project_version
from .manifest import (FORMAT, MANIFEST_NAME, SHARD_RE, STAGING_NAME, load_manifest, read_token_shard, shard_name,
                       verify_shards, write_atomic, write_token_shard)
from .sources import SourcePlan, StoryChunk, plan_sources, read_chunk
from .tokenizers import ModelTokenizer, build_encoding, load_rank_files, resolve_tokenizer_dir, token_dtype

SPLIT_CODES = {"train": 0, "validation": 1}
_PART_RE = re.compile(r"^part-(\d{20})-s(\d+)-t(\d+)\.arrow$")
# The settings that change what prepare writes (address, verbose and force do not).
_OUTPUT_SETTINGS = ("tokenizer", "compact_vocab", "limit", "val_fraction", "text_field", "shard_tokens", "errors", "hf_dataset")


# ---------------------------------------------------------------- Ray Data stages


def _seq(chunk_number: int, position) -> np.ndarray:
    # A global order key: the plan's chunk order, then the story's position in its chunk.
    return (np.int64(chunk_number) << np.int64(32)) + np.asarray(position, dtype=np.int64)


def _make_datasource(chunks: list[StoryChunk], val_indices: np.ndarray | None):
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class StoryDatasource(Datasource):
        """One read task per planned chunk; rows are stories: text, split code, global order key."""

        def estimate_inmemory_data_size(self):
            return int(sum(c.end - c.start for c in chunks if c.fmt in ("txt", "jsonl")))

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            tasks = []
            for number, chunk in enumerate(chunks):
                meta = BlockMetadata(num_rows=chunk.n_stories, size_bytes=int(max(chunk.end - chunk.start, 1)), input_files=[chunk.path], exec_stats=None)
                tasks.append(ReadTask(lambda number=number, chunk=chunk: [_read_story_table(number, chunk, val_indices)], meta))
            return tasks

    return StoryDatasource()


def _read_story_table(number: int, chunk: StoryChunk, val_indices: np.ndarray | None):
    import pyarrow as pa

    stories = read_chunk(chunk)
    if chunk.split is not None:
        split = np.full(len(stories), SPLIT_CODES[chunk.split], dtype=np.int8)
    else:
        index = np.arange(chunk.first_index, chunk.first_index + len(stories), dtype=np.int64)
        pos = np.searchsorted(val_indices, index)
        is_val = (pos < len(val_indices)) & (val_indices[np.minimum(pos, len(val_indices) - 1)] == index)
        split = is_val.astype(np.int8)
    return pa.table({
        "text": pa.array(stories, type=pa.large_string()),
        "split": pa.array(split),
        "seq": pa.array(_seq(number, np.arange(len(stories)))),
    })


class TokenizeStories:
    """Ray Data actor: builds the tiktoken encoding once, then turns a batch of stories into token lists ending in end-of-text."""

    def __init__(self, name: str, tokenizer_dir: str | None):
        # Loaded from the same folder (or tiktoken's cache, filled by the driver) and re-verified by sha256.
        self.encoding = build_encoding(name, load_rank_files(name, tokenizer_dir))
        self.eot = np.array([self.encoding.eot_token], dtype=np.uint32)

    def __call__(self, batch):
        import pyarrow as pa
        import pyarrow.compute as pc

        texts = batch.column("text").to_pylist()
        encode = self.encoding.encode_to_numpy
        pieces = []
        lengths = np.empty(len(texts), dtype=np.int64)
        for i, text in enumerate(texts):
            # encode_to_numpy with no special tokens allowed or checked is encode_ordinary, minus the Python int lists.
            ids = encode(text, disallowed_special=())
            pieces.append(ids)
            pieces.append(self.eot)
            lengths[i] = len(ids) + 1
        flat = np.concatenate(pieces) if pieces else np.zeros(0, np.uint32)
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.uint32()))
        return pa.table({
            "tokens": tokens,
            "split": batch.column("split"),
            "seq": batch.column("seq"),
            "utf8_bytes": pc.binary_length(batch.column("text")),
        })


def _make_datasink(staging: str, n_vocab: int):
    from ray.data.datasource import Datasink

    class ArrowPartsDatasink(Datasink):
        """Writes each write task's tokens as one uncompressed Arrow IPC part per split; returns counts and distinct ids."""

        def write(self, blocks, ctx):
            import pyarrow as pa

            per_split: dict[int, list] = {0: [], 1: []}
            stats = {0: [0, 0], 1: [0, 0]}  # stories, utf8 bytes
            first_seq = last_seq = None
            for block in blocks:
                if block.num_rows == 0:
                    continue
                block = block.combine_chunks() if isinstance(block, pa.Table) else block
                seq = block.column("seq").to_numpy()
                first_seq = int(seq[0]) if first_seq is None else first_seq
                last_seq = int(seq[-1])
                lists = block.column("tokens").chunk(0)
                values = lists.values.to_numpy()
                offsets = lists.offsets.to_numpy()
                values = values[offsets[0]: offsets[-1]]
                split = block.column("split").to_numpy()
                utf8 = block.column("utf8_bytes").to_numpy()
                for code in (0, 1):
                    mine = split == code
                    if not mine.any():
                        continue
                    if mine.all():
                        per_split[code].append(values)
                    else:
                        per_split[code].append(values[np.repeat(mine, np.diff(offsets))])
                    stats[code][0] += int(mine.sum())
                    stats[code][1] += int(utf8[mine].sum())
            result = {"first_seq": first_seq, "last_seq": last_seq, "parts": {}, "distinct": np.zeros(0, np.int64)}
            if first_seq is None:
                return result
            distinct = np.zeros(n_vocab, dtype=bool)
            for code, split_name in enumerate(SPLITS):
                if not per_split[code]:
                    continue
                tokens = np.concatenate(per_split[code])
                distinct[tokens] = True
                name = f"part-{first_seq:020d}-s{stats[code][0]}-t{len(tokens)}.arrow"
                path = Path(staging) / split_name / name
                write_token_shard(path, tokens)  # atomic: the driver's progress poll only sees finished parts
                result["parts"][split_name] = dict(file=str(path), stories=stats[code][0], tokens=int(len(tokens)), utf8_bytes=stats[code][1])
            result["distinct"] = np.flatnonzero(distinct)
            return result

        def on_write_complete(self, write_result):
            self.results = [r for r in write_result.write_returns if r and r.get("first_seq") is not None]

    return ArrowPartsDatasink()


# ---------------------------------------------------------------- driver


def _fingerprint(cfg: PrepareConfig, plan: SourcePlan, rank_files: dict[str, bytes]) -> str:
    payload = dict(
        format=FORMAT,
        settings={k: getattr(cfg, k) for k in _OUTPUT_SETTINGS},
        source=plan.fingerprint_items(),
        tokenizer_files=sorted(hashlib.sha256(v).hexdigest() for v in rank_files.values()),
    )
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _check_writable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a directory")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"output directory {out} is not writable ({probe} denies writing)")


def _remove_stale(out: Path) -> None:
    """Remove what a half-written earlier run may have left: staging, temp files, shards without a manifest."""
    shutil.rmtree(out / STAGING_NAME, ignore_errors=True)
    for p in out.iterdir():
        if p.name.startswith(".") and ".tmp." in p.name:
            p.unlink(missing_ok=True)


def _progress(total: int, desc: str, unit: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True, disable=not enabled, file=sys.stderr, leave=False)


def _worker_runtime_env() -> dict:
    """Ray workers import this package by name: when it is neither installed nor under the driver's working
    directory (which Ray puts on workers' path), hand them its location."""
    import importlib.util

    root = str(Path(__file__).resolve().parents[1])
    spec_paths = [str(Path(p).resolve()) for p in sys.path if p and Path(p).is_dir()]
    installed = any("site-packages" in p for p in (importlib.util.find_spec("data_pipeline").origin or "",))
    if installed or root == str(Path.cwd().resolve()) or root not in spec_paths:
        return {}
    pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {"runtime_env": {"env_vars": {"PYTHONPATH": pythonpath}}}


def _run_tokenize(cfg: PrepareConfig, plan: SourcePlan, rank_files: dict[str, bytes], n_vocab: int, staging: Path, show: bool) -> list[dict]:
    """Phase 1 on Ray: read -> tokenize (actor pool) -> Arrow parts in staging. Returns the datasink's per-task results."""
    from orchestrator.runtime import init_ray

    cluster = init_ray(cfg.address, verbose=cfg.verbose)
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = True  # parts must concatenate back in story order (deterministic shards)
    ctx.enable_progress_bars = bool(cfg.verbose)
    if hasattr(ctx, "print_on_execution_start"):
        ctx.print_on_execution_start = False

    actors = max(1, int(cluster.cpus))
    for split in SPLITS:
        (staging / split).mkdir(parents=True, exist_ok=True)
    tokenizer_dir = resolve_tokenizer_dir(cfg.tokenizer_dir)
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):  # Ray Data re-configures its loggers on import
        logging.getLogger(name).setLevel(logging.INFO if cfg.verbose else logging.ERROR)
    remote_env = _worker_runtime_env()
    ds = ray.data.read_datasource(_make_datasource(plan.chunks, plan.val_indices), override_num_blocks=len(plan.chunks),
                                  # Reads are light: no CPU reserved (the actors hold every core; Ray Data does not fuse
                                  # a read into an actor pool here), but few at a time, since each concurrent 0-CPU task
                                  # is another Python worker process to start.
                                  num_cpus=0, concurrency=max(1, actors // 2), **remote_env)
    with warnings.catch_warnings():
        # max_restarts has no named parameter in Ray 2.60's map_batches; passing it the generic way warns of deprecation.
        warnings.simplefilter("ignore")
        ds = ds.map_batches(
            TokenizeStories,
            fn_constructor_args=(cfg.tokenizer, None if tokenizer_dir is None else str(tokenizer_dir.resolve())),
            batch_size=None,  # a whole read chunk (~1-4 MB of text) per call: few calls, little per-call overhead
            batch_format="pyarrow",
            compute=ActorPoolStrategy(size=actors),
            num_cpus=1,
            zero_copy_batch=True,
            max_restarts=0,  # a failed run is simply re-run (idempotent); also keeps Ray's restart warning quiet
            **remote_env,
        )
    sink = _make_datasink(str(staging), n_vocab)
    error: list[BaseException] = []

    def run():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ray_remote_args is the only way to set write tasks' CPUs in 2.60
                ds.write_datasink(sink, ray_remote_args={"num_cpus": 0, **remote_env}, concurrency=max(1, actors // 2))
        except BaseException as exc:  # re-raised on the driver thread
            error.append(exc)

    total = sum(plan.stories.values())
    bar = _progress(total, "tokenize", "story", show)
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    done_stories = 0
    while worker.is_alive():
        worker.join(0.5)
        stories = tokens = 0
        for split in SPLITS:
            for name in os.listdir(staging / split):
                m = _PART_RE.match(name)
                if m:
                    stories += int(m.group(2))
                    tokens += int(m.group(3))
        if stories > done_stories:
            bar.update(stories - done_stories)
            bar.set_postfix(tokens=f"{tokens:,}")
            done_stories = stories
    bar.close()
    if error:
        exc = error[0]
        # Errors raised in a worker arrive wrapped; surface our own one-line ones as they were.
        cause = getattr(exc, "cause", None) or exc.__cause__
        for candidate in (cause, exc):
            if isinstance(candidate, (DataError, ValueError, FileNotFoundError, PermissionError)):
                raise candidate
        text = " ".join(str(exc).split())
        m = re.search(r"(DataError|ValueError|FileNotFoundError|PermissionError): ([^\n]+?)(?: Traceback|$)", str(exc).replace("\n", " "))
        if m:
            raise DataError(m.group(2).strip())
        raise DataError(f"the Ray Data tokenize job failed: {text[:300]}")
    return sorted(sink.results, key=lambda r: r["first_seq"])


def _check_order(results: list[dict], plan: SourcePlan) -> None:
    last = -1
    for r in results:
        if r["first_seq"] <= last:
            raise DataError("internal: Ray Data delivered stories out of order; re-run (preserve_order is required)")
        last = r["last_seq"]
    for split in SPLITS:
        got = sum(r["parts"][split]["stories"] for r in results if split in r["parts"])
        if got != plan.stories[split]:
            raise DataError(f"internal: {split} has {got} tokenized stories, the plan had {plan.stories[split]}")


def _write_final_shards(results: list[dict], split: str, lut: np.ndarray | None, dtype: np.dtype, eot_orig: int,
                        shard_tokens: int, final_dir: Path, bar) -> list[dict]:
    """Concatenate the split's parts in order, remap ids, and cut shards of <= shard_tokens at story ends."""
    shards: list[dict] = []
    pending: list[np.ndarray] = []
    pending_n = 0

    def flush(tokens: np.ndarray) -> None:
        name = shard_name(split, len(shards))
        digest = write_token_shard(final_dir / name, tokens)
        stories = int(np.count_nonzero(tokens == eot_model))
        shards.append(dict(file=name, tokens=int(len(tokens)), stories=stories, sha256=digest, bytes=(final_dir / name).stat().st_size))

    eot_model = int(lut[eot_orig]) if lut is not None else eot_orig
    for r in results:
        part = r["parts"].get(split)
        if part is None:
            continue
        raw = read_token_shard(part["file"])
        tokens = lut[raw] if lut is not None else raw.astype(dtype, copy=False)
        pending.append(tokens)
        pending_n += len(tokens)
        bar.update(len(tokens))
        while pending_n >= shard_tokens:
            joined = np.concatenate(pending)
            ends = np.flatnonzero(joined[:shard_tokens] == eot_model)
            if len(ends):
                cut = int(ends[-1]) + 1
            else:  # a single story longer than a shard: end the shard after it
                after = np.flatnonzero(joined == eot_model)
                cut = int(after[0]) + 1 if len(after) else len(joined)
            flush(joined[:cut])
            pending, pending_n = [joined[cut:]], len(joined) - cut
            if cut == len(joined):
                pending, pending_n = [], 0
                break
    if pending_n:
        flush(np.concatenate(pending))
    return shards


def _install(out: Path, final_dir: Path, manifest: dict) -> None:
    """Swap the new shards in: drop the old manifest first (the directory is then invalid), then shards, then the manifest last."""
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    for p in out.iterdir():
        if SHARD_RE.match(p.name):
            p.unlink()
    for p in sorted(final_dir.iterdir()):
        os.replace(p, out / p.name)
    write_atomic(out / MANIFEST_NAME, (json.dumps(manifest, indent=1) + "\n").encode())


def _param_savings(full: int, compact: int) -> list[str]:
    """Embedding parameters the compact vocabulary saves, per CPU preset (the presets live in gptoss)."""
    try:
        from gptoss.presets import PRESETS, build_config
    except Exception:
        return []
    lines = []
    for arch in ("gptoss", "gpt2"):
        for preset in PRESETS.get(arch, {}):
            if not preset.startswith("cpu"):
                continue
            try:
                c = build_config(arch, preset)
            except Exception:
                continue
            tables = 1 if getattr(c, "tie_embeddings", False) else 2
            lines.append(f"{arch}/{preset} (d_model {c.d_model}, {'tied' if tables == 1 else 'untied'}): {(full - compact) * c.d_model * tables / 1e6:.1f}M params saved")
    return lines


def _summary_from_manifest(manifest: dict, out: Path, noop: bool, seconds: float | None = None) -> dict:
    splits = manifest["splits"]
    total_tokens = sum(s["tokens"] for s in splits.values())
    total_bytes = sum(s["utf8_bytes"] for s in splits.values())
    output_bytes = sum(sh["bytes"] for s in splits.values() for sh in s["shards"])
    summary = dict(
        out=str(out), noop=noop, tokenizer=manifest["tokenizer"], vocab_size=manifest["vocab_size"],
        tokenizer_vocab_size=manifest["tokenizer_vocab_size"], compacted=manifest["compacted"], dtype=manifest["dtype"],
        distinct_tokens=manifest["distinct_tokens"],
        stories={k: v["stories"] for k, v in splits.items()}, tokens={k: v["tokens"] for k, v in splits.items()},
        shards={k: len(v["shards"]) for k, v in splits.items()}, utf8_bytes=total_bytes, output_bytes=output_bytes,
    )
    if seconds is not None:
        summary.update(seconds=seconds, tokens_per_s=total_tokens / seconds, mb_per_s=total_bytes / 1e6 / seconds)
    return summary


def print_summary(summary: dict, echo=print) -> None:
    if summary["noop"]:
        echo(f"up to date: {summary['out']} already holds this data (same sources and settings); pass --force to rebuild")
    for split in SPLITS:
        echo(f"{split:>10}: {summary['stories'][split]:,} stories, {summary['tokens'][split]:,} tokens in {summary['shards'][split]} shard(s)")
    vocab = (f"compact vocab {summary['vocab_size']:,} of {summary['tokenizer_vocab_size']:,}" if summary["compacted"]
             else f"full vocab {summary['vocab_size']:,}")
    echo(f" tokenizer: {summary['tokenizer']}, {summary['distinct_tokens']:,} distinct tokens, {vocab}, {summary['dtype']} shards")
    if summary["compacted"]:
        for line in _param_savings(summary["tokenizer_vocab_size"], summary["vocab_size"]):
            echo(f"            {line}")
    if "seconds" in summary:
        echo(f"     speed: {summary['utf8_bytes'] / 1e6:,.1f} MB of text in {summary['seconds']:.1f} s: "
             f"{summary['mb_per_s']:.2f} MB/s, {summary['tokens_per_s']:,.0f} tokens/s")
    echo(f"    output: {summary['out']} ({summary['output_bytes'] / 1e6:,.1f} MB)")


def prepare(cfg: PrepareConfig, echo=print) -> dict:
    """Tokenize the sources into `cfg.out` (shards + manifest.json) and return (and print) the summary."""
    t_start = time.perf_counter()
    out = Path(cfg.out).expanduser()
    _check_writable(out)
    # Everything checkable without Ray first: clean one-line errors, and no Ray start-up for a typo.
    plan = plan_sources(cfg)
    rank_files = load_rank_files(cfg.tokenizer, cfg.tokenizer_dir)
    encoding = build_encoding(cfg.tokenizer, rank_files)
    fingerprint = _fingerprint(cfg, plan, rank_files)

    if not cfg.force and (out / MANIFEST_NAME).is_file():
        try:
            old = load_manifest(out)
        except ValueError:
            old = None
        if old is not None and old.get("fingerprint") == fingerprint and verify_shards(out, old):
            summary = _summary_from_manifest(old, out, noop=True)
            print_summary(summary, echo)
            return summary

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    staging = out / STAGING_NAME
    show = not cfg.verbose  # verbose shows Ray Data's own bars instead
    try:
        results = _run_tokenize(cfg, plan, rank_files, encoding.n_vocab, staging, show)
        _check_order(results, plan)
        eot_orig = int(encoding.eot_token)
        distinct = np.unique(np.concatenate([r["distinct"] for r in results] + [np.array([eot_orig])]))
        if cfg.compact_vocab:
            compact_to_original = distinct  # sorted by original id: a deterministic map
            vocab_size = int(len(distinct))
            lut_dtype = token_dtype(vocab_size)
            lut = np.zeros(encoding.n_vocab, dtype=lut_dtype)
            lut[compact_to_original] = np.arange(vocab_size, dtype=lut_dtype)
        else:
            compact_to_original, vocab_size, lut = None, int(encoding.n_vocab), None
        dtype = token_dtype(vocab_size)
        final_dir = staging / "final"
        final_dir.mkdir()
        total_tokens = sum(r["parts"][s]["tokens"] for r in results for s in r["parts"])
        bar = _progress(total_tokens, "write shards", "tok", show)
        splits = {}
        for split in SPLITS:
            shards = _write_final_shards(results, split, lut, dtype, eot_orig, cfg.shard_tokens, final_dir, bar)
            parts = [r["parts"][split] for r in results if split in r["parts"]]
            splits[split] = dict(
                tokens=sum(p["tokens"] for p in parts), stories=sum(p["stories"] for p in parts),
                utf8_bytes=sum(p["utf8_bytes"] for p in parts), shards=shards,
            )
        bar.close()
        seconds = time.perf_counter() - t_start
        manifest = dict(
            format=FORMAT,
            project_version=project_version(),
            created_unix=time.time(),
            fingerprint=fingerprint,
            source=dict(kind=plan.kind, description=plan.description, split_mode=plan.split_mode,
                        files=[asdict(f) for f in plan.files]),
            settings={k: getattr(cfg, k) for k in _OUTPUT_SETTINGS},
            tokenizer=cfg.tokenizer,
            tokenizer_vocab_size=int(encoding.n_vocab),
            tokenizer_eot_id=eot_orig,
            compacted=bool(cfg.compact_vocab),
            vocab_size=vocab_size,
            eot_id=int(lut[eot_orig]) if lut is not None else eot_orig,
            dtype=np.dtype(dtype).name,
            distinct_tokens=int(len(distinct)),
            compact_to_original=compact_to_original.tolist() if compact_to_original is not None else None,
            # Bytes per model id, so training reports bits/byte without needing the tokenizer's rank files.
            token_bytes=ModelTokenizer(encoding, compact_to_original).token_byte_lengths().tolist(),
            story_boundaries="every story ends with one eot_id token; no story contains it",
            splits=splits,
            build=dict(seconds=round(seconds, 3)),
        )
        _install(out, final_dir, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created and out.exists() and not any(out.iterdir()):
            out.rmdir()
        raise
    shutil.rmtree(staging, ignore_errors=True)
    summary = _summary_from_manifest(manifest, out, noop=False, seconds=seconds)
    print_summary(summary, echo)
    return summary
