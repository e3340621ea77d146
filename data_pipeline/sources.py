"""Finding, validating and splitting story sources (.txt, .jsonl/.json, .parquet, the Hugging Face dataset) into read
chunks, all on the driver before Ray starts."""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import DataError, PrepareConfig

STORY_SEPARATOR = "<|endoftext|>"
_SEP_BYTES = STORY_SEPARATOR.encode()
FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".arrow": "arrow"}
CHUNK_BYTES = 4 << 20  # text per read task: big enough to amortise a task, small enough to keep 2+ actors busy
_HF_HOST = "huggingface.co"


@dataclass(frozen=True)
class StoryChunk:
    """A run of consecutive stories of one file: what one read task reads."""

    path: str
    fmt: str
    start: int  # txt/jsonl: byte offset; json: item index; parquet: row group; arrow: record batch
    end: int
    n_stories: int
    split: str | None  # None: decided per story by the validation fraction
    first_index: int  # index of the chunk's first story in its split's (or the single) stream
    text_field: str = "text"
    errors: str = "strict"
    first_line: int = 1  # jsonl: line number of `start`, for error messages


@dataclass
class SourceFile:
    path: str
    fmt: str
    split: str | None
    size: int
    sha256: str
    stories: int = 0  # stories taken from this file (after --limit)


@dataclass
class SourcePlan:
    kind: str  # "files" or "huggingface"
    description: str
    split_mode: str  # "files": train/validation come from different files; "fraction": held out by index
    files: list[SourceFile]
    chunks: list[StoryChunk]
    stories: dict[str, int]
    val_indices: np.ndarray | None = None  # fraction mode: sorted indices of the validation stories
    extra: dict = field(default_factory=dict)

    def fingerprint_items(self) -> list:
        return [self.kind, self.description, self.split_mode] + [
            [f.path, f.fmt, f.split, f.size, f.sha256] for f in self.files
        ]


# ---------------------------------------------------------------- reading one chunk (driver and Ray read tasks)


def _decode(data: bytes, path: str, errors: str, base_offset: int = 0) -> str:
    try:
        return data.decode("utf-8", errors="replace" if errors == "replace" else "strict")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: invalid UTF-8 at byte offset {base_offset + exc.start}; fix the file or pass --errors replace"
        ) from None


def _read_range(path: str, start: int, end: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start)


def _json_text(obj, path: str, lineno: int | None, text_field: str):
    where = f"{path}:{lineno}" if lineno is not None else path
    if isinstance(obj, str) and lineno is None:
        return obj
    if not isinstance(obj, dict) or text_field not in obj:
        raise DataError(f"{where}: no field {text_field!r} (pass --text-field NAME for another field)")
    value = obj[text_field]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field {text_field!r} is {type(value).__name__}, not a string")
    return value


def _json_items(data: bytes, path: str, errors: str, text_field: str) -> list[str] | None:
    """A .json file's stories, or None when it is really JSON lines (as Hugging Face writes .json)."""
    text = _decode(data, path, errors)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            return None
        raise DataError(f"{path}: not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})") from None
    if isinstance(doc, dict) and isinstance(doc.get(text_field), list):
        doc = doc[text_field]
    if not isinstance(doc, list):
        raise DataError(f"{path}: expected a JSON list of objects with field {text_field!r} (or JSON lines)")
    return [_json_text(item, path, None, text_field) for item in doc]


def _txt_stories(data: bytes, path: str, errors: str, base_offset: int = 0) -> list[str]:
    stories = []
    offset = base_offset
    for piece in data.split(_SEP_BYTES):
        story = _decode(piece, path, errors, offset).strip()
        offset += len(piece) + len(_SEP_BYTES)
        if story:
            stories.append(story)
    return stories


def _jsonl_stories(
    data: bytes, path: str, errors: str, text_field: str, first_line: int, base_offset: int = 0
) -> list[str]:
    stories = []
    offset = base_offset
    for lineno, line in enumerate(data.split(b"\n"), start=first_line):
        text = _decode(line, path, errors, offset)
        offset += len(line) + 1
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        story = _json_text(obj, path, lineno, text_field).strip()
        if story:
            stories.append(story)
    return stories


def _column_stories(column) -> list[str]:
    return [s.strip() for s in column.to_pylist() if s is not None and s.strip()]


def _parquet_column(path: str, row_groups: list[int], text_field: str):
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).read_row_groups(row_groups, columns=[text_field]).column(text_field)


def _arrow_stream_batches(path: str):
    import pyarrow as pa

    with pa.memory_map(path) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
            return
        yield from reader


def read_chunk(chunk: StoryChunk) -> list[str]:
    """The chunk's stories, stripped, exactly chunk.n_stories of them (the planner counted the same way)."""
    if chunk.fmt == "txt":
        stories = _txt_stories(_read_range(chunk.path, chunk.start, chunk.end), chunk.path, chunk.errors, chunk.start)
    elif chunk.fmt == "jsonl":
        stories = _jsonl_stories(
            _read_range(chunk.path, chunk.start, chunk.end),
            chunk.path,
            chunk.errors,
            chunk.text_field,
            chunk.first_line,
            chunk.start,
        )
    elif chunk.fmt == "json":
        items = _json_items(Path(chunk.path).read_bytes(), chunk.path, chunk.errors, chunk.text_field)
        stories = [s.strip() for s in items[chunk.start : chunk.end] if s and s.strip()]
    elif chunk.fmt == "parquet":
        stories = _column_stories(_parquet_column(chunk.path, list(range(chunk.start, chunk.end)), chunk.text_field))
    elif chunk.fmt == "arrow":
        stories = []
        for i, batch in enumerate(_arrow_stream_batches(chunk.path)):
            if chunk.start <= i < chunk.end:
                stories.extend(_column_stories(batch.column(chunk.text_field)))
    else:
        raise DataError(f"{chunk.path}: unsupported format {chunk.fmt}")
    if len(stories) < chunk.n_stories:
        raise DataError(
            f"{chunk.path} changed while being prepared "
            f"(expected {chunk.n_stories} stories in a chunk, found {len(stories)}); re-run"
        )
    return stories[: chunk.n_stories]


# ---------------------------------------------------------------- planning (driver only)


def _split_of_name(path: Path) -> str | None:
    parts = set(re.split(r"[-_.\s]+", path.name.lower()))
    is_train = "train" in parts
    is_val = bool(parts & {"validation", "valid", "val"})
    if is_train and is_val:
        raise DataError(f"{path} is named as both train and validation; rename it or pass it alone with --val-fraction")
    return "train" if is_train else "validation" if is_val else None


def _format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None or fmt == "arrow":
        raise DataError(f"{path}: unsupported file type {path.suffix or '(none)'}; use .txt, .jsonl, .json or .parquet")
    return fmt


def find_source_files(source: str) -> tuple[list[Path], str]:
    """The files a --source names (file, directory, or glob), sorted, and a description of it."""
    has_glob = any(ch in source for ch in "*?[")
    if has_glob:
        paths = sorted(Path(p) for p in globlib.glob(os.path.expanduser(source), recursive=True) if Path(p).is_file())
        paths = [p for p in paths if p.suffix.lower() in FORMATS and p.suffix.lower() != ".arrow"]
        if not paths:
            raise FileNotFoundError(f"--source {source!r} matches no .txt, .jsonl, .json or .parquet file")
        return paths, source
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--source {source} does not exist")
    if path.is_dir():
        paths = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
            and p.suffix.lower() in FORMATS
            and p.suffix.lower() != ".arrow"
        )
        if not paths:
            raise FileNotFoundError(f"--source directory {path} holds no .txt, .jsonl, .json or .parquet file")
        return paths, str(path)
    _format_of(path)
    return [path], str(path)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class _Scanned:
    """One file's stories as units a chunk can start/end at: (start, end, line) per story."""

    file: SourceFile
    starts: np.ndarray
    ends: np.ndarray
    lines: np.ndarray | None = None
    per_unit: bool = True  # False: units are row groups/batches holding several stories (counts below)
    unit_counts: np.ndarray | None = None


def _utf8_valid(data: bytes) -> bool:
    """Whether `data` is valid UTF-8: Arrow's SIMD validator, ~25x faster than decoding to a str (which is only done to
    find the offending byte's offset when this says no)."""
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover
        return False
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64))
    try:
        pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(data)]).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _scan_txt(path: Path, data: bytes, errors: str) -> tuple[np.ndarray, np.ndarray]:
    if errors == "strict" and not _utf8_valid(data):
        _decode(data, str(path), "strict")  # raises, naming the first bad byte's offset
    starts, ends = [], []
    pos = 0
    n = len(data)
    while pos <= n:
        nxt = data.find(_SEP_BYTES, pos)
        end = n if nxt < 0 else nxt
        piece = data[pos:end]
        stripped = piece.strip()
        # Only a short piece can be all Unicode whitespace; decoding every piece would double the scan's cost.
        if stripped and (len(stripped) > 16 or stripped.decode("utf-8", "replace").strip()):
            starts.append(pos)
            ends.append(end)
        if nxt < 0:
            break
        pos = nxt + len(_SEP_BYTES)
    return np.asarray(starts, np.int64), np.asarray(ends, np.int64)


def _scan_jsonl(path: Path, data: bytes, errors: str, text_field: str):
    starts, ends, lines = [], [], []
    pos = 0
    lineno = 0
    n = len(data)
    while pos < n:
        nxt = data.find(b"\n", pos)
        end = n if nxt < 0 else nxt
        lineno += 1
        if data[pos:end].strip():
            if _jsonl_stories(data[pos:end], str(path), errors, text_field, lineno, pos):
                starts.append(pos)
                ends.append(end)
                lines.append(lineno)
        pos = end + 1
    return np.asarray(starts, np.int64), np.asarray(ends, np.int64), np.asarray(lines, np.int64)


def _scan_file(path: Path, split: str | None, cfg: PrepareConfig) -> _Scanned:
    fmt = _format_of(path)
    try:
        size = path.stat().st_size
    except PermissionError:
        raise PermissionError(f"cannot read {path}: permission denied") from None
    if size == 0:
        raise DataError(f"{path} is empty")
    sf = SourceFile(str(path.resolve()), fmt, split, size, "")
    if fmt in ("txt", "jsonl", "json"):
        data = path.read_bytes()
        sf.sha256 = hashlib.sha256(data).hexdigest()
        if fmt == "txt":
            starts, ends = _scan_txt(path, data, cfg.errors)
            scanned = _Scanned(sf, starts, ends)
        else:
            items = _json_items(data, str(path), cfg.errors, cfg.text_field) if fmt == "json" else None
            if items is None:  # JSON lines
                sf.fmt = fmt = "jsonl"
                starts, ends, lines = _scan_jsonl(path, data, cfg.errors, cfg.text_field)
                scanned = _Scanned(sf, starts, ends, lines)
            else:
                keep = np.asarray([i for i, s in enumerate(items) if s and s.strip()], np.int64)
                scanned = _Scanned(sf, keep, keep + 1)
    else:
        import pyarrow.parquet as pq

        sf.sha256 = _sha256_file(path)
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:
            raise DataError(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())})") from None
        if cfg.text_field not in pf.schema_arrow.names:
            raise DataError(
                f"{path}: no column {cfg.text_field!r} (columns: {', '.join(pf.schema_arrow.names)}); "
                "pass --text-field NAME"
            )
        counts = np.asarray(
            [len(_column_stories(_parquet_column(str(path), [g], cfg.text_field))) for g in range(pf.num_row_groups)],
            np.int64,
        )
        groups = np.arange(pf.num_row_groups, dtype=np.int64)
        scanned = _Scanned(sf, groups, groups + 1, per_unit=False, unit_counts=counts)
    n = int(scanned.unit_counts.sum()) if scanned.unit_counts is not None else len(scanned.starts)
    if n == 0:
        what = {
            "txt": f"expected stories separated by lines {STORY_SEPARATOR!r}",
            "parquet": f"column {cfg.text_field!r} is empty",
        }.get(fmt, f"no non-empty {cfg.text_field!r} values")
        raise DataError(f"{path} holds no stories ({what})")
    return scanned


def _take(scanned: _Scanned, budget: int | None) -> _Scanned:
    """The first `budget` stories of a scanned file."""
    if budget is None:
        return scanned
    if scanned.per_unit:
        k = min(budget, len(scanned.starts))
        return _Scanned(
            scanned.file, scanned.starts[:k], scanned.ends[:k], None if scanned.lines is None else scanned.lines[:k]
        )
    counts = scanned.unit_counts.copy()
    cum = np.cumsum(counts)
    keep_units = int(np.searchsorted(cum, budget, side="left")) + 1
    counts = counts[:keep_units]
    if counts.sum() > budget:
        counts[-1] -= counts.sum() - budget
    return _Scanned(
        scanned.file, scanned.starts[:keep_units], scanned.ends[:keep_units], per_unit=False, unit_counts=counts
    )


def _count(scanned: _Scanned) -> int:
    return int(scanned.unit_counts.sum()) if scanned.unit_counts is not None else len(scanned.starts)


def _chunks(scanned: _Scanned, split: str | None, first_index: int, cfg: PrepareConfig) -> list[StoryChunk]:
    f = scanned.file
    out: list[StoryChunk] = []
    if not scanned.per_unit:  # one chunk per row group / record batch
        for unit, count in zip(scanned.starts.tolist(), scanned.unit_counts.tolist()):
            if count:
                out.append(
                    StoryChunk(f.path, f.fmt, unit, unit + 1, count, split, first_index, cfg.text_field, cfg.errors)
                )
                first_index += count
        return out
    if f.fmt == "json":  # re-parsed whole by its read task, so one chunk
        n = len(scanned.starts)
        return [StoryChunk(f.path, "json", 0, int(scanned.ends[-1]), n, split, first_index, cfg.text_field, cfg.errors)]
    # Byte-range formats: cut every ~CHUNK_BYTES at a story boundary.
    starts, ends = scanned.starts, scanned.ends
    i = 0
    n = len(starts)
    while i < n:
        j = int(np.searchsorted(ends, starts[i] + CHUNK_BYTES, side="right"))
        j = max(j, i + 1)
        line = int(scanned.lines[i]) if scanned.lines is not None else 1
        out.append(
            StoryChunk(
                f.path,
                f.fmt,
                int(starts[i]),
                int(ends[j - 1]),
                j - i,
                split,
                first_index,
                cfg.text_field,
                cfg.errors,
                line,
            )
        )
        first_index += j - i
        i = j
    return out


def _spread_indices(n: int, k: int) -> np.ndarray:
    """k indices spread evenly over range(n): a deterministic hold-out that samples the whole corpus."""
    return ((np.arange(k, dtype=np.float64) + 0.5) * n / k).astype(np.int64)


def _take_stories(scanned: list, budget: int | None, split: str | None, cfg, plan_chunks: list) -> int:
    """Take stories from the scanned files in order, at most `budget` (None: all); append their chunks; return the
    count."""
    index = 0
    for s in scanned:
        if budget is not None and index >= budget:
            break
        taken = _take(s, None if budget is None else budget - index)
        s.file.stories = _count(taken)
        plan_chunks += _chunks(taken, split, index, cfg)
        index += s.file.stories
    return index


def _check_limit_covers_both_splits(limit: int | None) -> None:
    if limit is not None and limit < 2:
        raise DataError(
            f"--limit {limit} cannot cover both splits: train and validation need at least one story each; "
            f"use --limit 2 or more"
        )


def plan_files(cfg: PrepareConfig) -> SourcePlan:
    paths, description = find_source_files(str(cfg.source))
    splits = {p: _split_of_name(p) for p in paths}
    named = set(splits.values())
    split_mode = "files" if {"train", "validation"} <= named else "fraction"
    if "validation" in named and "train" not in named:
        val = next(p for p, sp in splits.items() if sp == "validation")
        raise DataError(
            f"--source {description} has validation data ({val.name}) but no train.* file; training on it "
            f"would score the model on text it learned. Add a train.* file beside it, or rename the file if "
            f"it is meant to be split into both"
        )
    if split_mode == "files":
        _check_limit_covers_both_splits(cfg.limit)
        strays = [p for p, s in splits.items() if s is None]
        if strays:
            raise DataError(
                f"{strays[0]} is neither train.* nor validation.* beside files that are; move it or name it"
            )
    seen: dict[str, Path] = {}
    scanned = []
    for p in paths:
        real = os.path.realpath(p)
        if real in seen:
            raise DataError(f"{p} and {seen[real]} are the same file; a source cannot be both train and validation")
        seen[real] = p
        scanned.append(_scan_file(p, splits[p] if split_mode == "files" else None, cfg))
    if split_mode == "files":
        by_hash: dict[str, _Scanned] = {}
        for s in scanned:
            other = by_hash.get(s.file.sha256)
            if other is not None and other.file.split != s.file.split:
                raise DataError(
                    f"{s.file.path} and {other.file.path} have the same content; "
                    "a source cannot be both train and validation"
                )
            by_hash[s.file.sha256] = s

    plan_chunks: list[StoryChunk] = []
    stories = {"train": 0, "validation": 0}
    val_indices = None
    if split_mode == "files":
        totals = {sp: sum(_count(s) for s in scanned if s.file.split == sp) for sp in ("train", "validation")}
        budgets: dict[str, int | None] = {"train": None, "validation": None}
        if cfg.limit is not None and cfg.limit < totals["train"] + totals["validation"]:
            # --limit shares the story budget between the splits in proportion, at least one each.
            val_budget = min(
                totals["validation"],
                max(1, round(cfg.limit * totals["validation"] / (totals["train"] + totals["validation"]))),
            )
            budgets = {"validation": val_budget, "train": max(1, cfg.limit - val_budget)}
        for sp in ("train", "validation"):
            stories[sp] = _take_stories([s for s in scanned if s.file.split == sp], budgets[sp], sp, cfg, plan_chunks)
    else:
        index = _take_stories(scanned, cfg.limit, None, cfg, plan_chunks)
        n_val = int(round(index * cfg.val_fraction)) if cfg.val_fraction > 0 else 0
        if cfg.val_fraction > 0:
            n_val = max(1, n_val)
            if n_val >= index:
                raise DataError(
                    f"only {index} stories: too few to hold out a validation fraction of {cfg.val_fraction}; "
                    "pass more data or a smaller --val-fraction"
                )
        val_indices = _spread_indices(index, n_val)
        stories = {"train": index - n_val, "validation": n_val}
    return SourcePlan("files", description, split_mode, [s.file for s in scanned], plan_chunks, stories, val_indices)


# ---------------------------------------------------------------- Hugging Face


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    try:
        with socket.create_connection((_HF_HOST, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _offline_tokenizer_hint(cfg: PrepareConfig) -> str:
    """Offline, the tokenizer's rank files are the next thing to fail: name --tokenizer-dir in the same line."""
    from .tokenizers import RANK_FILES, load_rank_files

    try:
        load_rank_files(cfg.tokenizer, cfg.tokenizer_dir, allow_download=False)
        return ""
    except Exception:
        files = " and ".join(r.filename for r in RANK_FILES[cfg.tokenizer])
        return f", and --tokenizer-dir DIR (a folder holding {files}) for the tokenizer {cfg.tokenizer!r}"


def plan_huggingface(cfg: PrepareConfig) -> SourcePlan:
    """The default source: load (download or reuse the cache of) the Hub dataset, then plan over its Arrow cache
    files."""
    _check_limit_covers_both_splits(cfg.limit)
    offline = any(
        os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )
    if not offline and not _hub_reachable():
        raise DataError(
            f"cannot reach {_HF_HOST} to download {cfg.hf_dataset}; pass local files with --source PATH "
            f"(a .txt/.jsonl/.parquet file, a directory holding train.* and validation.*, or a glob)"
            + _offline_tokenizer_hint(cfg)
        )
    try:
        import datasets

        datasets.logging.set_verbosity_error()
        dsd = datasets.load_dataset(cfg.hf_dataset)
    except Exception as exc:
        raise DataError(
            f"loading {cfg.hf_dataset} from the Hugging Face Hub failed "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); pass local files with --source PATH"
        ) from None
    split_names = {
        "train": "train",
        "validation": "validation" if "validation" in dsd else "test" if "test" in dsd else None,
    }
    if split_names["validation"] is None or "train" not in dsd:
        raise DataError(f"{cfg.hf_dataset} has splits {list(dsd)}, not train and validation")
    files: list[SourceFile] = []
    chunks: list[StoryChunk] = []
    stories = {}
    for sp, hf_split in split_names.items():
        ds = dsd[hf_split]
        if cfg.text_field not in ds.column_names:
            raise DataError(
                f"{cfg.hf_dataset}[{hf_split}] has no field {cfg.text_field!r} (fields: {', '.join(ds.column_names)})"
            )
        budget = None
        if cfg.limit is not None:
            budget = (
                max(1, round(cfg.limit * 0.05))
                if sp == "validation"
                else max(1, cfg.limit - max(1, round(cfg.limit * 0.05)))
            )
        index = 0
        for cache in ds.cache_files:
            path = cache["filename"]
            counts = np.asarray(
                [len(_column_stories(b.column(cfg.text_field))) for b in _arrow_stream_batches(path)], np.int64
            )
            sf = SourceFile(
                path, "arrow", sp, os.path.getsize(path), getattr(ds, "_fingerprint", "") or _sha256_file(Path(path))
            )
            units = np.arange(len(counts), dtype=np.int64)
            taken = _take(
                _Scanned(sf, units, units + 1, per_unit=False, unit_counts=counts),
                None if budget is None else budget - index,
            )
            sf.stories = _count(taken)
            files.append(sf)
            chunks += _chunks(taken, sp, index, cfg)
            index += sf.stories
            if budget is not None and index >= budget:
                break
        stories[sp] = index
    return SourcePlan("huggingface", cfg.hf_dataset, "files", files, chunks, stories)


def plan_sources(cfg: PrepareConfig) -> SourcePlan:
    """Validate every source and cut it into read chunks; raises one-line errors before any Ray work."""
    return plan_huggingface(cfg) if cfg.source is None else plan_files(cfg)
