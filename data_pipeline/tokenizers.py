"""tiktoken encodings that work offline (rank files from a local folder, verified by tiktoken's own sha256), the
portable vocabulary prepare stores in the manifest, and the model-side tokenizer that applies a compact vocabulary."""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from .config import SUPPORTED_TOKENIZERS, DataError

TOKENIZER_DIR_ENV = "GPTOSS_TOKENIZER_DIR"
_WORD = re.compile(r"\S+")
_BLOB_HOST = "openaipublic.blob.core.windows.net"
_BLOB = f"https://{_BLOB_HOST}/"


class TokenizerError(DataError):
    """A tokenizer cannot be loaded (missing or corrupt rank files, no network); one line for the user."""


@dataclass(frozen=True)
class RankFile:
    filename: str  # the name looked for in --tokenizer-dir
    url: str  # where tiktoken downloads it from (and its cache key)
    sha256: str  # the hash tiktoken requires (tiktoken_ext/openai_public.py)


_O200K = RankFile(
    "o200k_base.tiktoken",
    _BLOB + "encodings/o200k_base.tiktoken",
    "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
)
_CL100K = RankFile(
    "cl100k_base.tiktoken",
    _BLOB + "encodings/cl100k_base.tiktoken",
    "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
)
_GPT2_BPE = RankFile(
    "gpt2_vocab.bpe",
    _BLOB + "gpt-2/encodings/main/vocab.bpe",
    "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
)
_GPT2_JSON = RankFile(
    "gpt2_encoder.json",
    _BLOB + "gpt-2/encodings/main/encoder.json",
    "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
)
_R50K = RankFile(
    "r50k_base.tiktoken",
    _BLOB + "encodings/r50k_base.tiktoken",
    "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
)

RANK_FILES: dict[str, tuple[RankFile, ...]] = {
    "o200k_harmony": (_O200K,),
    "o200k_base": (_O200K,),
    "cl100k_base": (_CL100K,),
    "gpt2": (_GPT2_BPE, _GPT2_JSON),
}
# gpt2's merge ranks are identical to r50k_base's, so a folder holding only r50k_base.tiktoken serves gpt2 too.
_GPT2_ALTERNATIVE = _R50K


def resolve_tokenizer_dir(tokenizer_dir: str | os.PathLike | None) -> Path | None:
    value = tokenizer_dir if tokenizer_dir not in (None, "") else os.environ.get(TOKENIZER_DIR_ENV) or None
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"tokenizer directory {path} does not exist or is not a directory (--tokenizer-dir / ${TOKENIZER_DIR_ENV})"
        )
    return path


def _read_verified(path: Path, rank: RankFile) -> bytes:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != rank.sha256:
        raise TokenizerError(
            f"{path} has sha256 {digest[:16]}…, not the {rank.sha256[:16]}… tiktoken requires for {rank.filename}; "
            "replace it with the official file"
        )
    return data


def _tiktoken_cache_path(url: str) -> Path | None:
    # tiktoken's own cache layout (tiktoken/load.py: read_file_cached).
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        import tempfile

        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not cache_dir:
        return None
    return Path(cache_dir) / hashlib.sha1(url.encode()).hexdigest()


def _host_reachable(host: str, port: int = 443, timeout_s: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def load_rank_files(
    name: str, tokenizer_dir: str | os.PathLike | None = None, allow_download: bool = True
) -> dict[str, bytes]:
    """The verified bytes of every rank file `name` needs, keyed by tiktoken's download URL.

    Looks in tokenizer_dir (or $GPTOSS_TOKENIZER_DIR), then tiktoken's cache, then downloads (unless allow_download is
    False: then a file that is not local is a TokenizerError at once, without touching the network); never hangs
    offline.
    """
    if name not in SUPPORTED_TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; choose one of {', '.join(SUPPORTED_TOKENIZERS)}")
    needed = RANK_FILES[name]
    folder = resolve_tokenizer_dir(tokenizer_dir)
    if folder is not None:
        if (
            name == "gpt2"
            and not all((folder / r.filename).is_file() for r in needed)
            and (folder / _GPT2_ALTERNATIVE.filename).is_file()
        ):
            return {_GPT2_ALTERNATIVE.url: _read_verified(folder / _GPT2_ALTERNATIVE.filename, _GPT2_ALTERNATIVE)}
        missing = [r.filename for r in needed if not (folder / r.filename).is_file()]
        if missing:
            raise TokenizerError(
                f"tokenizer {name!r} needs {' and '.join(missing)} in {folder} "
                f"(--tokenizer-dir / ${TOKENIZER_DIR_ENV}); it is not there"
            )
        return {r.url: _read_verified(folder / r.filename, r) for r in needed}

    out: dict[str, bytes] = {}
    for rank in needed:
        cached = _tiktoken_cache_path(rank.url)
        if cached is not None and cached.is_file():
            data = cached.read_bytes()
            if hashlib.sha256(data).hexdigest() == rank.sha256:
                out[rank.url] = data
                continue
        # tiktoken would retry a dead host for a long time; a short TCP probe answers in seconds.
        if not allow_download or not _host_reachable(_BLOB_HOST):
            raise TokenizerError(
                f"tokenizer {name!r} needs {rank.filename}, which is not cached and cannot be downloaded "
                f"({_BLOB_HOST} unreachable); "
                f"pass --tokenizer-dir DIR (or set ${TOKENIZER_DIR_ENV}) to a folder holding {rank.filename}"
            )
        import tiktoken.load

        try:
            out[rank.url] = tiktoken.load.read_file_cached(rank.url, rank.sha256)
        except Exception as exc:  # network errors of every kind: one line
            raise TokenizerError(
                f"downloading {rank.filename} for tokenizer {name!r} failed ({type(exc).__name__}: {exc}); "
                "pass --tokenizer-dir DIR"
            ) from None
    return out


_PATCH_LOCK = threading.Lock()


def build_encoding(name: str, rank_files: dict[str, bytes]):
    """A tiktoken.Encoding for `name` from already verified rank-file bytes (keyed by URL); no file or network
    access."""
    import tiktoken
    import tiktoken.load
    from tiktoken_ext import openai_public

    files = dict(rank_files)
    original = tiktoken.load.read_file_cached

    def from_memory(blobpath: str, expected_hash: str | None = None) -> bytes:
        return files[blobpath]

    # Reuse tiktoken's own definitions (regex, special tokens) so they never drift from upstream;
    # only the file access is redirected to the verified bytes we already hold.
    with _PATCH_LOCK:
        tiktoken.load.read_file_cached = from_memory
        try:
            if name == "gpt2" and _GPT2_ALTERNATIVE.url in files:
                spec = openai_public.r50k_base()
                spec["name"] = "gpt2"
            else:
                spec = openai_public.ENCODING_CONSTRUCTORS[name]()
        finally:
            tiktoken.load.read_file_cached = original
    return tiktoken.Encoding(**spec)


@functools.lru_cache(maxsize=8)
def _cached_encoding(name: str, tokenizer_dir: str | None, env_dir: str | None):
    return build_encoding(name, load_rank_files(name, tokenizer_dir))


def get_encoding(name: str, tokenizer_dir: str | os.PathLike | None = None):
    """tiktoken.Encoding `name`, offline-capable: rank files from tokenizer_dir / $GPTOSS_TOKENIZER_DIR when given."""
    if name not in SUPPORTED_TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; choose one of {', '.join(SUPPORTED_TOKENIZERS)}")
    return _cached_encoding(
        name, None if tokenizer_dir is None else str(tokenizer_dir), os.environ.get(TOKENIZER_DIR_ENV)
    )


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


class UnknownTokenError(DataError, ValueError):
    """Text encodes to tokens that the compact vocabulary does not hold (they never occurred in the data)."""


ON_UNKNOWN = ("raise", "skip", "extend")


class ModelTokenizer:
    """Text <-> model ids: a tiktoken encoding plus, when the data was compacted, the map to dense model ids.

    A compacted tokenizer encodes with the portable subset of its encoding (the data's tokens, the pieces BPE builds
    them through and all 256 bytes; see portable_vocab), so any text encodes, and the data's text exactly as the full
    encoding does. Ids 0..vocab_size-1 are the model's own; the subset's other pieces (never seen in training) get the
    extra ids vocab_size..extended_size-1, in rank order. encode()'s on_unknown says what happens to those pieces:
    "raise" (UnknownTokenError naming the words), "skip" (dropped) or "extend" (their extra ids, which the exported
    Hugging Face tokenizer gives too; the model reads them through zero rows, gptoss.add_vocab_rows).
    """

    def __init__(self, encoding, compact_to_original: Iterable[int] | None = None):
        self.name = encoding.name
        self.compacted = compact_to_original is not None
        if self.compacted:
            self.compact_to_original = np.asarray(compact_to_original, dtype=np.int64)
            ranks, specials = _subset(encoding, self.compact_to_original)
            if len(ranks) < len(encoding._mergeable_ranks) or specials != encoding._special_tokens:
                encoding = _encoding(encoding.name, encoding._pat_str, ranks, specials)
            self.vocab_size = int(len(self.compact_to_original))
            known = np.zeros(encoding.n_vocab, dtype=bool)
            known[self.compact_to_original] = True
            present = np.fromiter(encoding._mergeable_ranks.values(), dtype=np.int64)
            self.extra_to_original = np.sort(present[~known[present]])
            self.original_to_compact = np.full(encoding.n_vocab, -1, dtype=np.int64)
            # Reversed, so that an original id listed twice (the reserved id's stand-in, data/prepare's unk_id) encodes
            # to its first, trained id.
            self.original_to_compact[self.compact_to_original[::-1]] = np.arange(self.vocab_size)[::-1]
            self.original_to_compact[self.extra_to_original] = self.vocab_size + np.arange(len(self.extra_to_original))
            self.model_to_original = np.concatenate([self.compact_to_original, self.extra_to_original])
            eot = int(self.original_to_compact[encoding.eot_token])
            if not 0 <= eot < self.vocab_size:
                raise DataError("the compact vocabulary lacks the end-of-text token; re-run prepare")
            self.eot_id = eot
        else:
            self.compact_to_original = self.original_to_compact = self.model_to_original = None
            self.extra_to_original = np.zeros(0, dtype=np.int64)
            self.vocab_size = int(encoding.n_vocab)
            self.eot_id = int(encoding.eot_token)
        self.encoding = encoding
        self.extra_size = int(len(self.extra_to_original))
        self.extended_size = self.vocab_size + self.extra_size

    def __repr__(self) -> str:
        return (
            f"ModelTokenizer({self.name}, vocab_size={self.vocab_size}, compacted={self.compacted}, "
            f"extra={self.extra_size})"
        )

    def _original_ids(self, text: str) -> list[int]:
        # Text is text: "<|endoftext|>" typed in a prompt is its characters, as in the data (stories are split on it)
        # and in the exported tokenizer (split_special_tokens).
        return self.encoding.encode_ordinary(text)

    def encode(self, text: str, on_unknown: str = "raise") -> list[int]:
        if on_unknown not in ON_UNKNOWN:
            raise ValueError(f"on_unknown must be one of {', '.join(ON_UNKNOWN)}, got {on_unknown!r}")
        ids = self._original_ids(text)
        if not self.compacted:
            return ids
        mapped = self.original_to_compact[np.asarray(ids, dtype=np.int64)] if ids else np.zeros(0, np.int64)
        unknown = mapped >= self.vocab_size
        if unknown.any() and on_unknown == "skip":
            return mapped[~unknown].tolist()
        if unknown.any() and on_unknown == "raise":
            words = self.unknown_words(text)
            words = ", ".join(repr(w) for w in words[:5]) + (" …" if len(words) > 5 else "")
            raise UnknownTokenError(
                f"{int(unknown.sum())} token(s) of this text never occur in the training data, so the compact "
                f"vocabulary has no id for them (in {words}); rephrase, or prepare with --full-vocab"
            )
        return mapped.tolist()

    def unknown_words(self, text: str) -> list[str]:
        """The words (whitespace-separated runs) of `text` holding a piece the model never saw, once each, in order."""
        if not self.compacted or not text:
            return []
        ids = self._original_ids(text)
        spans, at = [], 0
        for t in ids:
            n = len(self.encoding.decode_single_token_bytes(t))
            if self.original_to_compact[t] >= self.vocab_size:
                spans.append((at, at + n))
            at += n
        if not spans:
            return []
        words, byte_at, char_at = [], 0, 0
        for match in _WORD.finditer(text):
            byte_at += len(text[char_at : match.start()].encode())
            start, end = byte_at, byte_at + len(match.group().encode())
            byte_at, char_at = end, match.end()
            if any(a < end and start < b for a, b in spans) and match.group() not in words:
                words.append(match.group())
        return words or [text]  # unknown pieces of whitespace alone

    def unknown_warning(self, text: str) -> str:
        """One line for a user whose text holds pieces the model never saw (what encode "extend" does with them)."""
        words = self.unknown_words(text)
        named = ", ".join(repr(w) for w in words[:8]) + (f" and {len(words) - 8} more" if len(words) > 8 else "")
        return (
            f"warning: the training data never had parts of {named}; the model reads those pieces as blanks "
            f"(zero embeddings), so expect it to follow them less well"
        )

    def to_original(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if not self.compacted:
            return ids
        if ids.size and (ids.min() < 0 or ids.max() >= self.extended_size):
            raise ValueError(f"token id out of range 0..{self.extended_size - 1}")
        return self.model_to_original[ids]

    def pieces(self) -> list[tuple[bytes, int]]:
        """(bytes, model id) of every ordinary token this tokenizer can emit, extra ids included."""
        if not self.compacted:
            return list(self.encoding._mergeable_ranks.items())
        return [(b, int(self.original_to_compact[r])) for b, r in self.encoding._mergeable_ranks.items()]

    def special_tokens(self) -> dict[str, int]:
        """Special token text -> model id (the end-of-text token always among them)."""
        specials = self.encoding._special_tokens
        if not self.compacted:
            return dict(specials)
        return {name: int(self.original_to_compact[i]) for name, i in specials.items()}

    def decode(self, ids) -> str:
        return self.encoding.decode(self.to_original(ids).tolist())

    def token_byte_lengths(self) -> np.ndarray:
        """UTF-8 byte length of each model id's token (special tokens, end-of-text included, count 0): for bits per
        byte."""
        originals = self.compact_to_original if self.compacted else np.arange(self.encoding.n_vocab)
        special = set(self.encoding._special_tokens.values())
        lengths = np.zeros(len(originals), dtype=np.int64)
        for i, t in enumerate(originals.tolist()):
            if t in special:
                continue
            try:
                lengths[i] = len(self.encoding.decode_single_token_bytes(t))
            except KeyError:  # holes in the id range (e.g. o200k's unused 199998..)
                lengths[i] = 0
        return lengths


# ---------------------------------------------------------------- the vocabulary carried in the manifest

VOCAB_FORMAT = "tiktoken-subset/v1"


def _merge_pieces(token: bytes, ranks: dict[bytes, int]) -> list[bytes]:
    """Every piece byte-pair encoding passes through while it builds `token` from its bytes (token included)."""
    parts = [token[i : i + 1] for i in range(len(token))]
    pieces = list(parts)
    while len(parts) > 1:
        best, at = None, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (best is None or rank < best):
                best, at = rank, i
        if best is None:
            break
        parts[at : at + 2] = [parts[at] + parts[at + 1]]
        pieces.append(parts[at])
    return pieces


def _subset(encoding, compact_to_original: Iterable[int] | None) -> tuple[dict[bytes, int], dict[str, int]]:
    """The (bytes -> rank) and special tokens that portable_vocab keeps."""
    ranks: dict[bytes, int] = encoding._mergeable_ranks
    specials: dict[str, int] = dict(encoding._special_tokens)
    if compact_to_original is None:
        return dict(ranks), specials
    by_rank = {r: b for b, r in ranks.items()}
    kept = {bytes([i]): ranks[bytes([i])] for i in range(256)}
    wanted = {int(t) for t in compact_to_original}
    for rank in wanted:
        token = by_rank.get(rank)
        if token is not None:
            for piece in _merge_pieces(token, ranks):
                kept[piece] = ranks[piece]
    eot = encoding.eot_token
    return kept, {name: i for name, i in specials.items() if i in wanted or i == eot}


def _encoding(name: str, pat_str: str, ranks: dict[bytes, int], specials: dict[str, int]):
    import tiktoken

    return tiktoken.Encoding(name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=specials)


def portable_vocab(encoding, compact_to_original: Iterable[int] | None) -> dict:
    """What encoding and decoding the prepared data's tokens need, without rank files or network: the regex, the
    special tokens, and the (bytes, rank) of every token the data uses plus every intermediate piece byte-pair
    encoding builds them through and all 256 single bytes.

    Why the intermediates make the subset exact: BPE merges, within a piece of text, the adjacent pair of lowest
    rank. Each merge that builds one of the data's tokens joins two pieces inside that token, in the order BPE of the
    token alone would, so with those pieces (and no others) ranked the same, the subset merges exactly as the full
    table does on any text whose full encoding uses only the data's tokens. Other text still encodes, to pieces of
    the subset; pieces outside the compact vocabulary get ModelTokenizer's extra ids.
    """
    kept, specials = _subset(encoding, compact_to_original)
    order = sorted(kept.items(), key=lambda kv: kv[1])
    blob = b"".join(b for b, _ in order)
    return dict(
        format=VOCAB_FORMAT,
        name=encoding.name,
        pat_str=encoding._pat_str,
        special_tokens=specials,
        n_vocab=int(encoding.n_vocab),
        count=len(order),
        ranks=base64.b64encode(np.asarray([r for _, r in order], dtype="<u4").tobytes()).decode("ascii"),
        lengths=base64.b64encode(np.asarray([len(b) for b, _ in order], dtype="<u2").tobytes()).decode("ascii"),
        bytes=base64.b64encode(blob).decode("ascii"),
    )


def encoding_from_vocab(vocab: dict):
    """A tiktoken.Encoding from portable_vocab's record (no files, no network)."""
    if not isinstance(vocab, dict) or vocab.get("format") != VOCAB_FORMAT:
        raise TokenizerError(
            f"the manifest's vocabulary is not in the {VOCAB_FORMAT} format; re-run `python cli.py prepare --force`"
        )
    try:
        ranks = np.frombuffer(base64.b64decode(vocab["ranks"]), dtype="<u4")
        lengths = np.frombuffer(base64.b64decode(vocab["lengths"]), dtype="<u2")
        blob = base64.b64decode(vocab["bytes"])
        if not (len(ranks) == len(lengths) == vocab["count"]) or int(lengths.sum()) != len(blob):
            raise ValueError("sizes disagree")
    except (KeyError, ValueError, TypeError) as exc:
        raise TokenizerError(
            f"the manifest's vocabulary is damaged ({exc}); re-run `python cli.py prepare --force`"
        ) from None
    ends = np.cumsum(lengths, dtype=np.int64)
    starts = ends - lengths
    mergeable = {blob[a:b]: int(r) for a, b, r in zip(starts.tolist(), ends.tolist(), ranks.tolist())}
    return _encoding(
        vocab["name"], vocab["pat_str"], mergeable, {k: int(v) for k, v in vocab["special_tokens"].items()}
    )


def load_tokenizer(manifest_or_data_dir, tokenizer_dir: str | os.PathLike | None = None) -> ModelTokenizer:
    """The model-side tokenizer of a prepared directory (or of a manifest dict loaded from it, e.g. a checkpoint's).

    From the vocabulary the manifest carries when it has one (prepare writes it): no rank files, no network.
    Older manifests fall back to the tiktoken rank files (tokenizer_dir, $GPTOSS_TOKENIZER_DIR, cache, download).
    """
    from .manifest import load_manifest

    manifest = manifest_or_data_dir if isinstance(manifest_or_data_dir, dict) else load_manifest(manifest_or_data_dir)
    if manifest.get("vocab"):
        encoding = encoding_from_vocab(manifest["vocab"])
    else:
        encoding = get_encoding(manifest["tokenizer"], tokenizer_dir)
    return ModelTokenizer(encoding, manifest.get("compact_to_original") if manifest.get("compacted") else None)
