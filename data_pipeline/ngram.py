"""Count-based reference language models (unigram, interpolated Kneser-Ney bigram and trigram) fitted on prepared
training tokens and scored on the validation split, in vectorised numpy: the `baseline` command's numbers."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .manifest import load_manifest, read_token_shard, token_byte_lengths, write_atomic

BASELINES_NAME = "baselines.json"
BIGRAM_DISCOUNT = 0.75
TRIGRAM_DISCOUNT = 0.8


def _unique_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.unique(keys, return_counts=True)


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values[i] where sorted_keys[i] == query, else 0 (vectorised)."""
    if len(sorted_keys) == 0:
        return np.zeros(len(queries), dtype=np.float64)
    idx = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
    return np.where(sorted_keys[idx] == queries, values[idx], 0).astype(np.float64)


@dataclass
class Unigram:
    """Add-one (Laplace) unigram over the whole vocabulary: ids unseen in training keep a small probability."""

    counts: np.ndarray  # (V,)

    @classmethod
    def fit(cls, tokens: np.ndarray, vocab_size: int) -> "Unigram":
        return cls(np.bincount(tokens, minlength=vocab_size).astype(np.float64))

    def prob(self, w: np.ndarray) -> np.ndarray:
        return (self.counts[w] + 1) / (self.counts.sum() + len(self.counts))


@dataclass
class KneserNeyBigram:
    """Interpolated Kneser-Ney with one absolute discount D at both orders (Chen & Goodman 1998):

    p(w | v) = max(c(vw) - D, 0) / c(v.) + D * N1+(v.) / c(v.) * p_cont(w)         (p_cont(w) alone if c(v.) = 0)
    p_cont(w) = max(N1+(.w) - D, 0) / N1+(..) + D * |{w: N1+(.w) > 0}| / N1+(..) / V

    c: counts of bigram tokens, N1+(v.): distinct followers of v, N1+(.w): distinct predecessors of w,
    N1+(..): distinct bigram types; the continuation unigram is itself interpolated with the uniform 1/V.
    """

    vocab_size: int
    discount: float
    keys: np.ndarray  # sorted bigram types v * V + w
    counts: np.ndarray  # their counts
    context_total: np.ndarray  # (V,) c(v.)
    followers: np.ndarray  # (V,) N1+(v.)
    continuation: np.ndarray  # (V,) p_cont(w)

    @classmethod
    def fit(cls, tokens: np.ndarray, vocab_size: int, discount: float = BIGRAM_DISCOUNT) -> "KneserNeyBigram":
        v = np.int64(vocab_size)
        keys, counts = _unique_counts(tokens[:-1].astype(np.int64) * v + tokens[1:])
        context_total = np.bincount(keys // v, weights=counts, minlength=vocab_size)
        followers = np.bincount(keys // v, minlength=vocab_size).astype(np.float64)
        continuation = continuation_unigram(np.bincount(keys % v, minlength=vocab_size), discount)
        return cls(vocab_size, discount, keys, counts, context_total, followers, continuation)

    def prob(self, prev: np.ndarray, w: np.ndarray) -> np.ndarray:
        return interpolate(
            _lookup(self.keys, self.counts, prev.astype(np.int64) * self.vocab_size + w),
            self.context_total[prev],
            self.followers[prev],
            self.discount,
            self.continuation[w],
        )


def continuation_unigram(predecessors: np.ndarray, discount: float) -> np.ndarray:
    """KN's lowest order from N1+(.w), interpolated with the uniform distribution."""
    predecessors = predecessors.astype(np.float64)
    total, seen = predecessors.sum(), np.count_nonzero(predecessors)
    return np.maximum(predecessors - discount, 0) / total + discount * seen / total / len(predecessors)


def interpolate(count, context_total, followers, discount: float, lower) -> np.ndarray:
    """One interpolated absolute-discounting level; contexts never seen fall through to the lower order."""
    safe = np.maximum(context_total, 1)
    mixed = np.maximum(count - discount, 0) / safe + discount * followers / safe * lower
    return np.where(context_total > 0, mixed, lower)


@dataclass
class KneserNeyTrigram:
    """Interpolated Kneser-Ney trigram, one discount D at every order. The top order uses counts c(uvw); the middle
    order uses continuation counts N1+(.vw) (distinct u before vw) with totals N1+(.v.) and followers
    |{w: N1+(.vw) > 0}|; the lowest order is the continuation unigram of the bigram types, as in KneserNeyBigram."""

    vocab_size: int
    discount: float
    keys: np.ndarray  # sorted trigram types (u * V + v) * V + w
    counts: np.ndarray
    context_keys: np.ndarray  # sorted u * V + v
    context_total: np.ndarray  # c(uv.)
    context_followers: np.ndarray  # N1+(uv.)
    middle_keys: np.ndarray  # sorted v * V + w
    middle_counts: np.ndarray  # N1+(.vw)
    middle_total: np.ndarray  # (V,) N1+(.v.)
    middle_followers: np.ndarray  # (V,)
    continuation: np.ndarray  # (V,)

    @classmethod
    def fit(cls, tokens: np.ndarray, vocab_size: int, discount: float = TRIGRAM_DISCOUNT) -> "KneserNeyTrigram":
        v = np.int64(vocab_size)
        t = tokens.astype(np.int64)
        keys, counts = _unique_counts((t[:-2] * v + t[1:-1]) * v + t[2:])
        prefix = keys // v  # sorted, since keys are
        context_keys, starts, followers = np.unique(prefix, return_index=True, return_counts=True)
        context_total = np.add.reduceat(counts, starts).astype(np.float64)
        middle_keys, middle_counts = _unique_counts(keys % (v * v))
        middle_total = np.bincount(middle_keys // v, weights=middle_counts, minlength=vocab_size)
        middle_followers = np.bincount(middle_keys // v, minlength=vocab_size).astype(np.float64)
        bigram_types = np.unique(t[:-1] * v + t[1:])
        continuation = continuation_unigram(np.bincount(bigram_types % v, minlength=vocab_size), discount)
        return cls(
            vocab_size,
            discount,
            keys,
            counts,
            context_keys,
            context_total,
            followers.astype(np.float64),
            middle_keys,
            middle_counts,
            middle_total,
            middle_followers,
            continuation,
        )

    def prob(self, prev2: np.ndarray, prev: np.ndarray, w: np.ndarray) -> np.ndarray:
        v = self.vocab_size
        prev2, prev, w = prev2.astype(np.int64), prev.astype(np.int64), w.astype(np.int64)
        middle = interpolate(
            _lookup(self.middle_keys, self.middle_counts, prev * v + w),
            self.middle_total[prev],
            self.middle_followers[prev],
            self.discount,
            self.continuation[w],
        )
        ctx = prev2 * v + prev
        return interpolate(
            _lookup(self.keys, self.counts, ctx * v + w),
            _lookup(self.context_keys, self.context_total, ctx),
            _lookup(self.context_keys, self.context_followers, ctx),
            self.discount,
            middle,
        )


def score(
    train: np.ndarray,
    val: np.ndarray,
    vocab_size: int,
    byte_lengths: np.ndarray,
    bigram_discount: float = BIGRAM_DISCOUNT,
    trigram_discount: float = TRIGRAM_DISCOUNT,
) -> dict:
    """Fit the three models on `train` and score every validation token from the third on (each has two tokens of
    context, so the three models are scored on the same tokens): nats/token and bits/byte (bytes of the targets)."""
    if len(train) < 3 or len(val) < 3:
        raise ValueError(
            f"n-gram baselines need at least 3 training and 3 validation tokens, got {len(train)} and {len(val)}"
        )
    train, val = np.asarray(train, dtype=np.int64), np.asarray(val, dtype=np.int64)
    prev2, prev, w = val[:-2], val[1:-1], val[2:]
    nbytes = float(byte_lengths[w].sum())
    probs = {
        "unigram": (Unigram.fit(train, vocab_size).prob(w), None),
        "kn_bigram": (KneserNeyBigram.fit(train, vocab_size, bigram_discount).prob(prev, w), bigram_discount),
        "kn_trigram": (
            KneserNeyTrigram.fit(train, vocab_size, trigram_discount).prob(prev2, prev, w),
            trigram_discount,
        ),
    }
    models = {}
    for name, (p, discount) in probs.items():
        nats = float(-np.log(p).sum())
        models[name] = dict(nats_per_token=nats / len(w), bits_per_byte=nats / max(nbytes, 1) / math.log(2))
        if discount is not None:
            models[name]["discount"] = discount
    return dict(
        train_tokens=int(len(train)), validation_tokens=int(len(w)), validation_bytes=int(nbytes), models=models
    )


def split_tokens(data_dir, split: str, limit: Optional[int] = None) -> np.ndarray:
    """A split's tokens (all shards in order), the first `limit` of them if given."""
    manifest = load_manifest(data_dir)
    if split not in manifest["splits"]:
        raise ValueError(f"{data_dir} has no {split} split")
    parts, have = [], 0
    for shard in manifest["splits"][split]["shards"]:
        if limit is not None and have >= limit:
            break
        part = read_token_shard(Path(data_dir) / shard["file"])
        parts.append(part if limit is None else part[: limit - have])
        have += len(parts[-1])
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def fit_baselines(data_dir, train_tokens: Optional[int] = None) -> dict:
    """Fit on the prepared training tokens (the first `train_tokens` if given), score on validation, and merge the
    result into DATA_DIR/baselines.json (one entry per number of training tokens), written atomically."""
    if train_tokens is not None and train_tokens < 3:
        raise ValueError(f"--train-tokens must be >= 3, got {train_tokens}")
    manifest = load_manifest(data_dir)
    byte_lengths = token_byte_lengths(manifest)
    started = time.perf_counter()
    train = split_tokens(data_dir, "train", train_tokens)
    if train_tokens is not None and len(train) < train_tokens:
        raise ValueError(f"--train-tokens {train_tokens} exceeds the {len(train):,} training tokens in {data_dir}")
    result = score(train, split_tokens(data_dir, "validation"), int(manifest["vocab_size"]), byte_lengths)
    result["seconds"] = time.perf_counter() - started
    result["all_train_tokens"] = train_tokens is None
    path = Path(data_dir) / BASELINES_NAME
    fits = load_baselines(data_dir)
    fits = [f for f in fits if f["train_tokens"] != result["train_tokens"]] + [result]
    fits.sort(key=lambda f: f["train_tokens"])
    write_atomic(
        path,
        json.dumps(
            dict(tokenizer=manifest.get("tokenizer"), vocab_size=manifest["vocab_size"], fits=fits), indent=1
        ).encode(),
    )
    return result


def load_baselines(data_dir) -> list[dict]:
    """The fits recorded in DATA_DIR/baselines.json (empty when there is none or it is unreadable)."""
    path = Path(data_dir) / BASELINES_NAME
    try:
        return list(json.loads(path.read_text())["fits"])
    except (OSError, ValueError, KeyError, TypeError):
        return []
