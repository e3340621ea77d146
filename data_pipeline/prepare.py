"""The prepare pipeline: Ray Data tasks read runs of stories, tokenize them with tiktoken and write them as Arrow parts;
the driver then compacts the vocabulary, cuts final shards and writes the manifest last."""

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
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .config import SPLITS, DataError, PrepareConfig, PrepareInterrupted, project_version
from .manifest import (
    CHECKSUM,
    FORMAT,
    MANIFEST_NAME,
    SHARD_RE,
    STAGING_NAME,
    load_manifest,
    read_token_shard,
    shard_name,
    verify_shards,
    write_atomic,
    write_token_shard,
    xxh3_of,
)
from .sources import SourcePlan, StoryChunk, plan_sources, read_chunk
from .tokenizers import (
    ModelTokenizer,
    build_encoding,
    load_rank_files,
    portable_vocab,
    resolve_tokenizer_dir,
    token_dtype,
)

SPLIT_CODES = {"train": 0, "validation": 1}
_PART_RE = re.compile(r"^part-(\d{20})-s(\d+)-t(\d+)\.arrow$")
# The settings that change what prepare writes (address, verbose and force do not).
_OUTPUT_SETTINGS = (
    "tokenizer",
    "compact_vocab",
    "limit",
    "val_fraction",
    "text_field",
    "shard_tokens",
    "errors",
    "hf_dataset",
)


# ---------------------------------------------------------------- Ray Data stages


def _seq(chunk_number: int, position) -> np.ndarray:
    # A global order key: the plan's chunk order, then the story's position in its chunk.
    return (np.int64(chunk_number) << np.int64(32)) + np.asarray(position, dtype=np.int64)


_DESCRIPTOR_FIELDS = (
    "path",
    "fmt",
    "start",
    "end",
    "n_stories",
    "split",
    "first_index",
    "text_field",
    "errors",
    "first_line",
)


def _task_groups(n_chunks: int, cpus: int) -> list[range]:
    """Consecutive chunks per tokenize task: each task takes half of the remaining chunks' fair share per CPU, so
    tasks are large at first (few task starts) and single chunks at the end (an even finish on every CPU)."""
    groups, start = [], 0
    while start < n_chunks:
        size = -(-(n_chunks - start) // (2 * max(1, cpus)))
        groups.append(range(start, start + size))
        start += size
    return groups


def _make_datasource(chunks: list[StoryChunk], val_indices: np.ndarray | None, groups: list[range]):
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class ChunkDescriptors(Datasource):
        """A read task per group, each a run of consecutive planned chunks as one small row per chunk: the chunk's
        DESCRIPTOR (file, byte/item range, split, order key, and the chunk's validation story indices in fraction
        mode). No text: the tokenize stage reads its chunk's bytes itself from local disk, so no text travels through
        the object store."""

        def estimate_inmemory_data_size(self):
            return 256 * len(chunks)

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            tasks = []
            for numbers in groups:
                meta = BlockMetadata(
                    num_rows=len(numbers), size_bytes=256 * len(numbers), input_files=None, exec_stats=None
                )
                tasks.append(
                    ReadTask(
                        lambda numbers=numbers: (_descriptor_table(n, chunks[n], val_indices) for n in numbers), meta
                    )
                )
            return tasks

    return ChunkDescriptors()


def _descriptor_table(number: int, chunk: StoryChunk, val_indices: np.ndarray | None):
    import pyarrow as pa

    row = {k: [getattr(chunk, k)] for k in _DESCRIPTOR_FIELDS}
    row["split"] = [chunk.split or ""]
    row["number"] = [number]
    vals = b""
    if chunk.split is None and val_indices is not None:
        lo, hi = np.searchsorted(val_indices, [chunk.first_index, chunk.first_index + chunk.n_stories])
        vals = np.ascontiguousarray(val_indices[lo:hi], dtype=np.int64).tobytes()
    row["val_indices"] = pa.array([vals], pa.large_binary())
    return pa.table(row)


def _tokenize_chunks(batch, name: str, tokenizer_dir: str | None, staging: str):
    """Ray Data task: reads each described chunk from disk, tokenizes its stories (each ending in end-of-text) and
    writes each (chunk, split) as one uncompressed Arrow IPC part file in staging, named by its order key and counts,
    as soon as it is done (the driver's progress bar follows those files). Returns one small row per part: order key,
    counts, file, and the distinct token ids (for the vocabulary compaction); the tokens themselves never leave the
    task. The encoding is built once per worker process (get_encoding caches it; the rank files are re-verified by
    sha256)."""
    import pyarrow as pa

    from .tokenizers import get_encoding

    encoding = get_encoding(name, tokenizer_dir)
    cols = {k: [] for k in ("seq", "last_seq", "split", "stories", "utf8_bytes", "tokens", "file", "distinct")}
    encode = encoding.encode_to_numpy
    eot = np.array([encoding.eot_token], dtype=np.uint32)
    seen = np.zeros(encoding.n_vocab, dtype=bool)
    for d in batch.to_pylist():
        chunk = StoryChunk(**{k: (d[k] or None) if k == "split" else d[k] for k in _DESCRIPTOR_FIELDS})
        stories = read_chunk(chunk)
        if chunk.split is not None:
            codes = [SPLIT_CODES[chunk.split]] * len(stories)
        else:
            val = np.frombuffer(d["val_indices"], dtype=np.int64) - chunk.first_index
            flags = np.zeros(len(stories), dtype=np.int8)
            flags[val] = 1
            codes = flags.tolist()
        per_split: dict[int, list] = {0: [], 1: []}
        utf8 = [0, 0]
        for text, code in zip(stories, codes):
            # encode_to_numpy with no special tokens allowed or checked is encode_ordinary, minus the Python int lists.
            pieces = per_split[code]
            pieces.append(encode(text, disallowed_special=()))
            pieces.append(eot)
            utf8[code] += len(text) if text.isascii() else len(text.encode())
        first = int(_seq(d["number"], 0))
        for code in (0, 1):
            if not per_split[code]:
                continue
            tokens = np.concatenate(per_split[code])
            n_stories = len(per_split[code]) // 2
            path = Path(staging) / SPLITS[code] / f"part-{first:020d}-s{n_stories}-t{len(tokens)}.arrow"
            write_token_shard(path, tokens, digest=False)  # atomic: the driver's progress poll only sees finished parts
            seen[:] = False
            seen[tokens] = True
            cols["seq"].append(first)
            cols["last_seq"].append(int(_seq(d["number"], len(stories) - 1)))
            cols["split"].append(code)
            cols["stories"].append(n_stories)
            cols["utf8_bytes"].append(utf8[code])
            cols["tokens"].append(len(tokens))
            cols["file"].append(str(path))
            cols["distinct"].append(np.flatnonzero(seen).astype(np.uint32).tobytes())
    return pa.table(
        {
            "seq": pa.array(cols["seq"], pa.int64()),
            "last_seq": pa.array(cols["last_seq"], pa.int64()),
            "split": pa.array(cols["split"], pa.int8()),
            "stories": pa.array(cols["stories"], pa.int64()),
            "utf8_bytes": pa.array(cols["utf8_bytes"], pa.int64()),
            "tokens": pa.array(cols["tokens"], pa.int64()),
            "file": pa.array(cols["file"], pa.string()),
            "distinct": pa.array(cols["distinct"], pa.large_binary()),
        }
    )


def _chunk_results(rows: list[dict]) -> list[dict]:
    """The task rows (one per part) as one result per chunk, in story order: order keys, its parts' counts per split,
    and the distinct token ids of its parts per split."""
    chunks: dict[int, dict] = {}
    for row in rows:
        r = chunks.setdefault(row["seq"], dict(first_seq=row["seq"], last_seq=row["last_seq"], parts={}, distinct={}))
        split = SPLITS[row["split"]]
        r["parts"][split] = dict(
            file=row["file"], stories=row["stories"], tokens=row["tokens"], utf8_bytes=row["utf8_bytes"]
        )
        r["distinct"][split] = np.frombuffer(row["distinct"], dtype=np.uint32).astype(np.int64)
    return sorted(chunks.values(), key=lambda r: r["first_seq"])


# ---------------------------------------------------------------- driver


def _fingerprint(cfg: PrepareConfig, plan: SourcePlan, rank_files: dict[str, bytes]) -> str:
    payload = dict(
        format=FORMAT,
        settings={k: getattr(cfg, k) for k in _OUTPUT_SETTINGS},
        source=plan.fingerprint_items(),
        compaction="train split + reserved id",  # data compacted over both splits is not up to date
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

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        dynamic_ncols=True,
        disable=not enabled,
        file=sys.stderr,
        leave=False,
    )


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


def _start_helpers(cfg: PrepareConfig) -> None:
    """If Ray is already up (tests, benchmarks, a notebook, a cluster driver), get the tokenize job's processes ready
    beside the driver's planning: one task per CPU warms a worker (imports Ray Data, as deserializing a Ray Data task
    does, and builds the encoding that _tokenize_chunks then finds cached), and Ray Data's two per-cluster helper
    actors (stats, autoscaling coordinator; each a process importing Ray Data, otherwise started lazily when the job
    starts) are created. Only an optimisation: never starts Ray, never fails."""
    try:
        import ray

        if not ray.is_initialized():
            return
        warm = ray.remote(num_cpus=1, max_retries=0, **_worker_runtime_env())(_warm_worker)
        for _ in range(int(ray.cluster_resources().get("CPU", 0))):
            warm.remote(cfg.tokenizer, _tokenizer_dir_arg(cfg))
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator,
        )
        from ray.data._internal.stats import get_or_create_stats_actor

        get_or_create_stats_actor()
        get_or_create_autoscaling_coordinator()
    except Exception:
        pass


def _tokenizer_dir_arg(cfg: PrepareConfig) -> str | None:
    """The tokenizer folder as the workers get it (absolute: their working directory may differ)."""
    tokenizer_dir = resolve_tokenizer_dir(cfg.tokenizer_dir)
    return None if tokenizer_dir is None else str(tokenizer_dir.resolve())


def _warm_worker(name: str, tokenizer_dir: str | None) -> int:
    try:
        import ray.data  # noqa: F401  (what deserializing a Ray Data task imports)

        from .tokenizers import get_encoding

        get_encoding(name, tokenizer_dir)
    except Exception:  # bad input is the driver's to report, in one line
        pass
    return os.getpid()


def _run_tokenize(cfg: PrepareConfig, plan: SourcePlan, staging: Path, show: bool, phases: "_Phases") -> list[dict]:
    """Phase 1 on Ray: chunk descriptors -> tokenize (reads each chunk from disk, writes its Arrow parts in staging),
    fused into one task per run of chunks. Returns the per-chunk results in story order."""
    from raysetup import check_shared_storage, init_ray

    cluster = init_ray(cfg.address, verbose=cfg.verbose)
    # Workers on every node write parts into staging, which the driver then reads: it must be one shared folder.
    check_shared_storage(str(staging), cluster, flag="--out (its staging folder)")
    import ray
    from ray.data import DataContext

    ctx = DataContext.get_current()
    # Every output row carries its chunk's global order key and the driver sorts by it: Ray Data need not keep order.
    ctx.execution_options.preserve_order = False
    ctx.enable_progress_bars = bool(cfg.verbose)
    if hasattr(ctx, "print_on_execution_start"):
        ctx.print_on_execution_start = False

    for split in SPLITS:
        (staging / split).mkdir(parents=True, exist_ok=True)
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):  # Ray Data re-configures its loggers on import
        logging.getLogger(name).setLevel(logging.INFO if cfg.verbose else logging.ERROR)
    remote_env = _worker_runtime_env()
    # Read (descriptor rows) and tokenize share one CPU and the same remote arguments, so Ray Data fuses them into one
    # task: it reads, tokenizes and writes its chunks one after another (parts per chunk, so progress stays per
    # chunk), and neither text nor tokens pass through the object store: only each part's counts and distinct ids
    # reach the driver. Tasks, not an actor pool: they run in the worker processes Ray has already started, which
    # _start_helpers' warm-up tasks prepared while the driver planned (an actor never takes a worker that has run
    # tasks; it would import Ray Data and build the encoding only once the job starts). Runs of chunks per task, not
    # one chunk per task: between two tasks a worker idles ~0.15 s here (the executor polls for finished tasks every
    # 0.1 s, then leases a worker again), which with one 4 MB chunk per task was a fifth of the run.
    task_args = dict(num_cpus=1, **remote_env)
    groups = _task_groups(len(plan.chunks), int(cluster.cpus))
    ds = ray.data.read_datasource(
        _make_datasource(plan.chunks, plan.val_indices, groups), override_num_blocks=len(groups), **task_args
    )
    fn_kwargs = dict(name=cfg.tokenizer, tokenizer_dir=_tokenizer_dir_arg(cfg), staging=str(staging.resolve()))
    ds = ds.map_batches(
        _tokenize_chunks,
        fn_kwargs=fn_kwargs,
        batch_size=None,
        batch_format="pyarrow",
        zero_copy_batch=True,
        **task_args,
    )
    rows: list[dict] = []
    error: list[BaseException] = []

    def run():
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                rows.extend(batch.to_pylist())
        except BaseException as exc:  # re-raised on the driver thread
            error.append(exc)

    total = sum(plan.stories.values())
    bar = _progress(total, "tokenize", "story", show)
    phases.mark("ray data setup")
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        _follow(worker, staging, bar, phases)
    except KeyboardInterrupt:
        # The caller removes staging next, under the job's running writers (the process exits right after, and Ray
        # with it). Their failures would be logged on this console by Ray Data, one traceback each: mute Ray's loggers.
        bar.close()
        for name in [n for n in logging.root.manager.loggerDict if n == "ray" or n.startswith("ray.")]:
            logging.getLogger(name).disabled = True
        raise
    bar.close()
    phases.mark("tokenize (first part to last)")
    if error:
        raise _job_error(error[0])
    return _chunk_results(rows)


def _job_error(exc: BaseException) -> BaseException:
    """The tokenize job's failure as one line: errors raised in a worker arrive wrapped; our own one-line ones are
    surfaced as they were."""
    cause = getattr(exc, "cause", None) or exc.__cause__
    for candidate in (cause, exc):
        if isinstance(candidate, (DataError, ValueError, FileNotFoundError, PermissionError)):
            return candidate
    text = " ".join(str(exc).split())
    m = re.search(
        r"(DataError|ValueError|FileNotFoundError|PermissionError): ([^\n]+?)(?: Traceback|$)",
        str(exc).replace("\n", " "),
    )
    if m:
        return DataError(m.group(2).strip())
    return DataError(f"the Ray Data tokenize job failed: {text[:300]}")


def _follow(worker: threading.Thread, staging: Path, bar, phases: "_Phases") -> None:
    """Advance the progress bar from the finished part files (their names carry the counts) until the job ends."""
    done_stories = 0
    first_part = None
    while worker.is_alive():
        worker.join(0.05 if first_part is None else 0.5)  # a finished part's name carries its counts
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
        if stories and first_part is None:
            first_part = time.perf_counter()
            phases.mark("ray data start (to first part)", first_part)


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


def _write_final_shards(
    results: list[dict],
    split: str,
    lut: np.ndarray | None,
    dtype: np.dtype,
    eot_orig: int,
    shard_tokens: int,
    final_dir: Path,
    bar,
) -> list[dict]:
    """Concatenate the split's parts in order, remap ids, and cut shards of <= shard_tokens at story ends."""
    shards: list[dict] = []
    pending: list[np.ndarray] = []
    pending_n = 0

    def flush(tokens: np.ndarray) -> None:
        name = shard_name(split, len(shards))
        digest = write_token_shard(final_dir / name, tokens)
        stories = int(np.count_nonzero(tokens == eot_model))
        shards.append(
            dict(
                file=name,
                tokens=int(len(tokens)),
                stories=stories,
                sha256=digest,
                **{CHECKSUM: xxh3_of(final_dir / name)},
                bytes=(final_dir / name).stat().st_size,
            )
        )

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
    """Swap the new shards in: drop the old manifest first (the directory is then invalid), then shards, then the
    manifest last."""
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    for p in out.iterdir():
        if SHARD_RE.match(p.name):
            p.unlink()
    for p in sorted(final_dir.iterdir()):
        os.replace(p, out / p.name)
    write_atomic(out / MANIFEST_NAME, (json.dumps(manifest, indent=1) + "\n").encode())


# The CPU presets' embedding shapes, (arch, preset) -> (d_model, tied), as gptoss/presets.py builds them (a test checks
# that they agree): the summary needs only these, and importing gptoss imports torch, some 2.3 s of CPU here.
CPU_PRESET_EMBEDDINGS = {
    ("gptoss", "cpu-tiny"): (128, False),
    ("gptoss", "cpu-small"): (256, False),
    ("gpt2", "cpu-tiny"): (128, True),
    ("gpt2", "cpu-small"): (256, True),
}


UNKNOWN_TEXT = "\ufffd"  # what the reserved id decodes to: the replacement character, the usual mark of "unknown"


def compact_vocabulary(train_ids, validation_ids, encoding) -> dict:
    """The compact vocabulary, built from the training split alone: the distinct ids of train (and end-of-text),
    sorted by original id, then one reserved id (`unk_id`, the last) that every other original id maps to, the
    validation tokens that never occur in train among them. The reserved id is an ordinary target: the model is
    scored on it like on any token, so the loss still counts those tokens (as one class: the model cannot tell them
    apart, which is right, since it never saw them), and no validation text decides the vocabulary the model has.
    It decodes to U+FFFD. Returns compact_to_original, lut (original -> compact id), unk_id, and the validation-only
    ids (count and their mean UTF-8 length, the byte length the reserved id counts for bits/byte)."""
    eot = int(encoding.eot_token)
    kept = np.unique(np.concatenate([np.asarray(train_ids, dtype=np.int64), [eot]]))
    unknown_original = encoding.encode_ordinary(UNKNOWN_TEXT)
    if len(unknown_original) != 1:
        raise DataError(f"the tokenizer {encoding.name} has no single token for U+FFFD to decode the reserved id to")
    compact_to_original = np.concatenate([kept, unknown_original]).astype(np.int64)
    unk_id = len(kept)
    dtype = token_dtype(unk_id + 1)
    lut = np.full(encoding.n_vocab, unk_id, dtype=dtype)
    lut[kept] = np.arange(unk_id, dtype=dtype)
    only_val = np.setdiff1d(np.asarray(validation_ids, dtype=np.int64), kept)
    lengths = [len(encoding.decode_single_token_bytes(int(t))) for t in only_val]
    return dict(
        compact_to_original=compact_to_original,
        lut=lut,
        built_from="train",
        unk_id=int(unk_id),
        validation_only_ids=int(len(only_val)),
        unk_bytes=max(1, round(float(np.mean(lengths)))) if lengths else len(UNKNOWN_TEXT.encode()),
    )


def _token_bytes(encoding, compact_to_original, compaction: dict) -> list[int]:
    lengths = ModelTokenizer(encoding, compact_to_original).token_byte_lengths()
    if compaction:
        lengths[compaction["unk_id"]] = compaction["unk_bytes"]
    return lengths.tolist()


def _param_savings(full: int, compact: int) -> list[str]:
    """Embedding parameters the compact vocabulary saves, per CPU preset."""
    lines = []
    for (arch, preset), (d_model, tied) in CPU_PRESET_EMBEDDINGS.items():
        tables = 1 if tied else 2
        lines.append(
            f"{arch}/{preset} (d_model {d_model}, {'tied' if tied else 'untied'}): "
            f"{(full - compact) * d_model * tables / 1e6:.1f}M fewer embedding parameters than the full vocabulary"
        )
    return lines


def _summary_from_manifest(manifest: dict, out: Path, noop: bool, seconds: float | None = None) -> dict:
    splits = manifest["splits"]
    total_tokens = sum(s["tokens"] for s in splits.values())
    total_bytes = sum(s["utf8_bytes"] for s in splits.values())
    output_bytes = sum(sh["bytes"] for s in splits.values() for sh in s["shards"])
    summary = dict(
        out=str(out),
        noop=noop,
        tokenizer=manifest["tokenizer"],
        vocab_size=manifest["vocab_size"],
        tokenizer_vocab_size=manifest["tokenizer_vocab_size"],
        compacted=manifest["compacted"],
        dtype=manifest["dtype"],
        distinct_tokens=manifest["distinct_tokens"],
        stories={k: v["stories"] for k, v in splits.items()},
        tokens={k: v["tokens"] for k, v in splits.items()},
        shards={k: len(v["shards"]) for k, v in splits.items()},
        utf8_bytes=total_bytes,
        output_bytes=output_bytes,
    )
    if seconds is not None:
        summary.update(seconds=seconds, tokens_per_s=total_tokens / seconds, mb_per_s=total_bytes / 1e6 / seconds)
    return summary


def print_summary(summary: dict, echo=print) -> None:
    if summary["noop"]:
        echo(
            f"up to date: {summary['out']} already holds this data (same sources and settings); pass --force to rebuild"
        )
    for split in SPLITS:
        echo(
            f"{split:>10}: {summary['stories'][split]:,} stories, {summary['tokens'][split]:,} tokens "
            f"in {summary['shards'][split]} shard(s)"
        )
    vocab = (
        f"compact vocab {summary['vocab_size']:,} of {summary['tokenizer_vocab_size']:,}"
        if summary["compacted"]
        else f"full vocab {summary['vocab_size']:,}"
    )
    echo(
        f" tokenizer: {summary['tokenizer']}, {summary['distinct_tokens']:,} distinct tokens, {vocab}, "
        f"{summary['dtype']} shards"
    )
    if summary["compacted"]:
        for line in _param_savings(summary["tokenizer_vocab_size"], summary["vocab_size"]):
            echo(f"            {line}")
    if "seconds" in summary:
        echo(
            f"     speed: {summary['utf8_bytes'] / 1e6:,.1f} MB of text in {summary['seconds']:.1f} s: "
            f"{summary['mb_per_s']:.2f} MB/s, {summary['tokens_per_s']:,.0f} tokens/s"
        )
    echo(f"    output: {summary['out']} ({summary['output_bytes'] / 1e6:,.1f} MB)")


class _Phases:
    """Wall-clock seconds per phase of a prepare run, in order (reported in the summary as `phases`)."""

    def __init__(self):
        self.t0 = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def mark(self, name: str, at: float | None = None) -> None:
        now = time.perf_counter() if at is None else at
        self.seconds[name] = self.seconds.get(name, 0.0) + (now - self.last)
        self.last = now


def prepare(cfg: PrepareConfig, echo=print) -> dict:
    """Tokenize the sources into `cfg.out` (shards + manifest.json) and return (and print) the summary."""
    phases = _Phases()
    out = Path(cfg.out).expanduser()
    _check_writable(out)
    if cfg.force or not (out / MANIFEST_NAME).is_file():  # not for what is most likely an up-to-date no-op
        _start_helpers(cfg)  # only when Ray is already up (never starts Ray)
    phases.mark("ray data helpers (submit)")
    # Everything checkable without Ray first: clean one-line errors, and no Ray start-up for a typo.
    plan = plan_sources(cfg)
    if not plan.stories.get("validation"):
        raise DataError(
            "this would prepare no validation split (--val-fraction 0 and no validation file), and train evaluates "
            "on it; give --val-fraction > 0 (e.g. 0.05) or a validation.* file beside train.*"
        )
    phases.mark("plan sources")
    rank_files = load_rank_files(cfg.tokenizer, cfg.tokenizer_dir)
    phases.mark("rank files")
    encoding = build_encoding(cfg.tokenizer, rank_files)
    phases.mark("build encoding")
    fingerprint = _fingerprint(cfg, plan, rank_files)
    phases.mark("fingerprint")
    if out.is_dir():
        _remove_stale(out)  # a killed run's staging and temporary files, before the up-to-date check can return
    done = None if cfg.force else _up_to_date(out, fingerprint)
    if done is not None:
        print_summary(done, echo)
        return done

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = out / STAGING_NAME
    phases.mark("up-to-date check + cleanup")
    try:
        manifest = _build(cfg, plan, encoding, fingerprint, staging, phases)
        _install(out, staging / "final", manifest)
        phases.mark("manifest + install")
    except BaseException as exc:
        _abandon(out, staging, created, exc)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    phases.mark("cleanup")
    summary = _summary_from_manifest(manifest, out, noop=False, seconds=manifest["build"]["seconds"])
    summary["phases"] = {k: round(v, 3) for k, v in phases.seconds.items()}
    print_summary(summary, echo)
    return summary


def _up_to_date(out: Path, fingerprint: str) -> dict | None:
    """The no-op summary when `out` already holds this very data, verified; None when it must be (re)built. A
    manifest from before the carried vocabulary is rebuilt: its data would still need rank files to decode."""
    if not (out / MANIFEST_NAME).is_file():
        return None
    try:
        old = load_manifest(out)
    except ValueError:
        return None
    if old.get("fingerprint") == fingerprint and old.get("vocab") and verify_shards(out, old):
        return _summary_from_manifest(old, out, noop=True)
    return None


def _build(cfg: PrepareConfig, plan: SourcePlan, encoding, fingerprint: str, staging: Path, phases) -> dict:
    """Tokenize on Ray into staging, compact the vocabulary, write the final shards; returns the manifest."""
    show = not cfg.verbose  # verbose shows Ray Data's own bars instead
    results = _run_tokenize(cfg, plan, staging, show, phases)
    _check_order(results, plan)
    eot_orig = int(encoding.eot_token)
    by_split = {
        split: np.unique(np.concatenate([r["distinct"][split] for r in results if split in r["distinct"]] + [[]]))
        for split in SPLITS
    }
    distinct = np.unique(np.concatenate([*by_split.values(), [eot_orig]])).astype(np.int64)
    compaction: dict = {}
    if cfg.compact_vocab:
        compaction = compact_vocabulary(by_split["train"], by_split["validation"], encoding)
        compact_to_original, lut = compaction.pop("compact_to_original"), compaction.pop("lut")
        vocab_size = int(len(compact_to_original))
    else:
        compact_to_original, vocab_size, lut = None, int(encoding.n_vocab), None
    phases.mark("vocab compaction")
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
            tokens=sum(p["tokens"] for p in parts),
            stories=sum(p["stories"] for p in parts),
            utf8_bytes=sum(p["utf8_bytes"] for p in parts),
            shards=shards,
        )
    bar.close()
    phases.mark("final shards")
    vocabulary = dict(
        compacted=bool(cfg.compact_vocab),
        vocab_size=vocab_size,
        eot_id=int(lut[eot_orig]) if lut is not None else eot_orig,
        dtype=np.dtype(dtype).name,
        distinct_tokens=int(len(distinct)),
        compact_to_original=compact_to_original.tolist() if compact_to_original is not None else None,
        # Bytes per model id, so training reports bits/byte without needing the tokenizer's rank files.
        token_bytes=_token_bytes(encoding, compact_to_original, compaction),
        **({"compaction": compaction} if compaction else {}),
        # The tokens themselves (and what BPE needs to rebuild them), so that generate, evaluate, the end-of-run
        # sample and export never need rank files or network after prepare.
        vocab=portable_vocab(encoding, compact_to_original),
    )
    return _manifest(cfg, plan, encoding, fingerprint, vocabulary, splits, time.perf_counter() - phases.t0)


def _manifest(cfg, plan: SourcePlan, encoding, fingerprint: str, vocabulary: dict, splits: dict, seconds) -> dict:
    return dict(
        format=FORMAT,
        project_version=project_version(),
        created_unix=time.time(),
        fingerprint=fingerprint,
        source=dict(
            kind=plan.kind,
            description=plan.description,
            split_mode=plan.split_mode,
            files=[asdict(f) for f in plan.files],
        ),
        settings={k: getattr(cfg, k) for k in _OUTPUT_SETTINGS},
        tokenizer=cfg.tokenizer,
        tokenizer_vocab_size=int(encoding.n_vocab),
        tokenizer_eot_id=int(encoding.eot_token),
        **vocabulary,
        story_boundaries="every story ends with one eot_id token; no story contains it",
        splits=splits,
        build=dict(seconds=round(seconds, 3)),
    )


def _abandon(out: Path, staging: Path, created: bool, exc: BaseException) -> None:
    """A failed or interrupted build leaves nothing of its own: staging gone, a folder it created removed; Ctrl-C
    becomes one line saying what is there now."""
    for _ in range(3):  # a writer still finishing a part can re-fill a folder being removed
        shutil.rmtree(staging, ignore_errors=True)
        if not staging.exists():
            break
        time.sleep(1)
    if created and out.exists() and not any(out.iterdir()):
        out.rmdir()
    if isinstance(exc, KeyboardInterrupt):
        kept = (
            f"{out} still holds the data prepared before"
            if (out / MANIFEST_NAME).is_file()
            else f"{out} holds no prepared data"
        )
        raise PrepareInterrupted(
            f"interrupted: prepare removed its unfinished work ({STAGING_NAME}); {kept}; "
            f"run the same command again to prepare it"
        ) from None
