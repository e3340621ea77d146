"""The prepared directory's manifest.json and shard files: names, atomic writes, loading and verifying."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

MANIFEST_NAME = "manifest.json"
FORMAT = "nano-gpt-oss/arrow-tokens/v1"
STAGING_NAME = ".prepare-staging"
SHARD_RE = re.compile(r"^(train|validation)-\d{5}\.arrow$")
_REQUIRED = ("format", "tokenizer", "vocab_size", "eot_id", "compacted", "dtype", "splits", "fingerprint")


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.arrow"


def _digest(path: str | os.PathLike, h) -> str:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_of(path: str | os.PathLike) -> str:
    return _digest(path, hashlib.sha256())


# Per-shard checksum verified before every run: xxh3_64 hashes at memory speed (about 3 GB/s here, against about
# 0.4 GB/s for sha256 and 0.15 GB/s for blake2b), so checking gigabytes of shards costs seconds. It guards against
# accidental corruption (bytes overwritten in place, truncated copies), not against tampering; sha256 is kept too.
CHECKSUM = "xxh3_64"


def xxh3_of(path: str | os.PathLike) -> str:
    import xxhash

    return _digest(path, xxhash.xxh3_64())


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename: readers see the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_token_shard(path: str | os.PathLike, tokens: np.ndarray, digest: bool = True) -> str | None:
    """One uncompressed Arrow IPC file, one record batch, column `tokens`; written atomically. Returns its sha256
    (None when digest=False: staging parts that nobody verifies)."""
    import pyarrow as pa

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    batch = pa.record_batch([pa.array(tokens)], names=["tokens"])
    try:
        with pa.OSFile(str(tmp), "wb") as sink:
            with pa.ipc.new_file(sink, batch.schema) as writer:
                writer.write_batch(batch)
        digest = sha256_of(tmp) if digest else None
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return digest


def read_token_shard(path: str | os.PathLike) -> np.ndarray:
    """A shard's tokens as a read-only numpy view of the memory-mapped file (zero-copy)."""
    import pyarrow as pa

    source = pa.memory_map(str(path), "r")
    reader = pa.ipc.open_file(source)
    if reader.num_record_batches == 1:
        column = reader.get_batch(0).column("tokens")
        return column.to_numpy(zero_copy_only=True)
    # Not written by us (several batches): one copy to present a contiguous array.
    return np.concatenate([reader.get_batch(i).column("tokens").to_numpy() for i in range(reader.num_record_batches)])


def _invalid(data_dir, why: str) -> ValueError:
    return ValueError(
        f"{data_dir} has no valid {MANIFEST_NAME} ({why}); run `python cli.py prepare --out {data_dir}` first"
    )


def load_manifest(data_dir: str | os.PathLike) -> dict:
    """The manifest of a prepared directory; a one-line ValueError if it is missing, unreadable or incomplete."""
    data_dir = Path(data_dir)
    path = data_dir / MANIFEST_NAME
    if not path.is_file():
        raise _invalid(data_dir, "missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _invalid(data_dir, f"unreadable: {type(exc).__name__}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _invalid(data_dir, "not a manifest of this format")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise _invalid(data_dir, f"lacks {', '.join(missing)}")
    for split, info in manifest["splits"].items():
        for shard in info.get("shards", []):
            file = data_dir / shard["file"]
            if not file.is_file() or file.stat().st_size != shard["bytes"]:
                raise _invalid(data_dir, f"shard {shard['file']} is missing or has the wrong size")
    manifest["data_dir"] = str(data_dir)
    return manifest


def _shard_matches(file: Path, shard: dict) -> bool:
    if not file.is_file() or file.stat().st_size != shard["bytes"]:
        return False
    if CHECKSUM in shard:
        return xxh3_of(file) == shard[CHECKSUM]
    if "sha256" in shard:
        return sha256_of(file) == shard["sha256"]
    return True  # a manifest from before checksums: size only


def verify_shards(data_dir: str | os.PathLike, manifest: dict) -> bool:
    """True if every shard the manifest lists is present with its recorded size and checksum."""
    data_dir = Path(data_dir)
    return all(
        _shard_matches(data_dir / shard["file"], shard)
        for info in manifest["splits"].values()
        for shard in info["shards"]
    )


def check_shards(data_dir: str | os.PathLike, manifest: dict, splits=None) -> int:
    """Raise a one-line DataError naming the first shard whose bytes differ from what prepare recorded (xxh3_64, or
    sha256 in older manifests; manifests with neither are not checked). Returns the bytes checked."""
    from .config import DataError

    data_dir = Path(data_dir)
    checked = 0
    for split, info in manifest["splits"].items():
        if splits is not None and split not in splits:
            continue
        for shard in info["shards"]:
            file = data_dir / shard["file"]
            if not _shard_matches(file, shard):
                raise DataError(
                    f"shard {shard['file']} in {data_dir} does not match the checksum prepare recorded (corrupted or "
                    f"changed since); rebuild it with `python cli.py prepare --out {data_dir} --force` "
                    "(same sources and settings)"
                )
            checked += shard["bytes"]
    return checked


def token_byte_lengths(manifest: dict) -> np.ndarray:
    """UTF-8 bytes of each model id's token (0 for special tokens), as recorded by prepare: for bits per byte."""
    if "token_bytes" not in manifest:
        raise ValueError(
            "this prepared directory predates per-token byte counts; rebuild it with `python cli.py prepare --force`"
        )
    lengths = np.asarray(manifest["token_bytes"], dtype=np.int64)
    if len(lengths) != manifest["vocab_size"]:
        raise ValueError(
            f"manifest token_bytes has {len(lengths)} entries for vocab {manifest['vocab_size']}; rebuild with --force"
        )
    return lengths


def data_identity(manifest: dict, content: bool = False) -> str:
    """A fingerprint of what a model trained on this data depends on: the token space (tokenizer, vocabulary size and
    the compact-to-original map) and, with content=True, also the tokens themselves (every shard's sha256).

    Two directories with the same vocabulary size can map their ids to different tokens; a checkpoint meeting data
    (evaluate, resume, decoding) must compare this, never the size alone. Paths and build times are left out, so a
    copied or moved directory keeps its identity.
    """
    payload: dict = dict(
        tokenizer=manifest.get("tokenizer"),
        vocab_size=manifest.get("vocab_size"),
        compacted=bool(manifest.get("compacted")),
        compact_to_original=manifest.get("compact_to_original"),
    )
    if content:
        payload["shards"] = {
            split: [s.get("sha256") for s in info.get("shards", [])]
            for split, info in sorted(manifest.get("splits", {}).items())
        }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
