"""data_pipeline/tokenizers.py: offline tiktoken encodings, hash checks, fast failure offline, the compact-vocab
tokenizer."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from data_pipeline import tokenizers as tk
from data_pipeline.tokenizers import ModelTokenizer, TokenizerError, UnknownTokenError, get_encoding

SAMPLE = 'Once upon a time, a little girl named Lily found a needle.\nShe said, "Wow!" <|endoftext|> 123 café'


def test_rank_file_hashes_match_tiktoken():
    import tiktoken_ext.openai_public as op

    source = Path(op.__file__).read_text()
    for files in tk.RANK_FILES.values():
        for rank in files:
            assert rank.sha256 in source and rank.url in source


@pytest.mark.parametrize(
    "name,n_vocab,eot",
    [
        ("o200k_harmony", 201088, 199999),
        ("o200k_base", 200019, 199999),
        ("cl100k_base", 100277, 100257),
        ("gpt2", 50257, 50256),
    ],
)
def test_offline_encodings(tiktoken_dir, name, n_vocab, eot):
    enc = get_encoding(name, tiktoken_dir)
    assert (enc.name, enc.n_vocab, enc.eot_token) == (name, n_vocab, eot)
    assert enc.decode(enc.encode_ordinary(SAMPLE)) == SAMPLE


def test_encode_to_numpy_equals_encode_ordinary(tiktoken_dir, tinystories_dir):
    # prepare's actors use encode_to_numpy(disallowed_special=()); it must be encode_ordinary exactly.
    enc = get_encoding("o200k_harmony", tiktoken_dir)
    stories = (tinystories_dir / "validation.txt").read_text().split("<|endoftext|>")[:300] + [SAMPLE]
    for s in stories:
        assert enc.encode_to_numpy(s, disallowed_special=()).tolist() == enc.encode_ordinary(s)


def test_gpt2_from_r50k_file_alone(tiktoken_dir, tmp_path):
    shutil.copy(tiktoken_dir / "r50k_base.tiktoken", tmp_path)
    enc = tk.build_encoding("gpt2", tk.load_rank_files("gpt2", tmp_path))
    assert enc.encode_ordinary(SAMPLE) == get_encoding("gpt2", tiktoken_dir).encode_ordinary(SAMPLE)


def test_env_var_dir(tiktoken_dir, monkeypatch):
    monkeypatch.setenv("GPTOSS_TOKENIZER_DIR", str(tiktoken_dir))
    assert get_encoding("cl100k_base").n_vocab == 100277


def test_hash_mismatch(tmp_path):
    (tmp_path / "cl100k_base.tiktoken").write_bytes(b"IQ== 0\n")
    with pytest.raises(TokenizerError, match="sha256"):
        tk.load_rank_files("cl100k_base", tmp_path)


def test_missing_file_names_file_and_flag(tmp_path):
    with pytest.raises(TokenizerError, match=r"o200k_base\.tiktoken.*--tokenizer-dir"):
        tk.load_rank_files("o200k_harmony", tmp_path)


def test_offline_without_files_fails_fast(tmp_path, monkeypatch):
    monkeypatch.delenv("GPTOSS_TOKENIZER_DIR", raising=False)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty cache
    monkeypatch.setattr(tk, "_host_reachable", lambda *a, **k: False)
    t = time.perf_counter()
    with pytest.raises(TokenizerError, match="cl100k_base.tiktoken.*--tokenizer-dir"):
        tk.load_rank_files("cl100k_base")
    assert time.perf_counter() - t < 2


def test_unknown_tokenizer():
    with pytest.raises(ValueError, match="o200k_harmony"):
        get_encoding("bert")


def test_compact_tokenizer_round_trip(tiktoken_dir):
    enc = get_encoding("o200k_harmony", tiktoken_dir)
    ids = sorted(set(enc.encode_ordinary(SAMPLE)) | {enc.eot_token})
    tok = ModelTokenizer(enc, ids)
    assert tok.vocab_size == len(ids) and tok.eot_id == ids.index(enc.eot_token)
    model_ids = tok.encode(SAMPLE)
    assert max(model_ids) < tok.vocab_size and tok.decode(model_ids) == SAMPLE
    lengths = tok.token_byte_lengths()
    assert lengths.shape == (tok.vocab_size,) and lengths[tok.eot_id] == 0
    assert int(lengths[np.asarray(model_ids)].sum()) == len(SAMPLE.encode())
    with pytest.raises(UnknownTokenError, match="never occur"):
        tok.encode("Zebra quantum xylophone")
    assert tok.decode(tok.encode("Zebra Lily", on_unknown="skip")).strip() != ""


def test_full_tokenizer_byte_lengths(tiktoken_dir):
    tok = ModelTokenizer(get_encoding("gpt2", tiktoken_dir))
    lengths = tok.token_byte_lengths()
    assert lengths.shape == (50257,) and lengths[50256] == 0 and lengths[:256].min() == 1


@pytest.mark.parametrize("name", ["o200k_harmony", "gpt2"])
def test_portable_vocab_encodes_and_decodes_like_the_full_tokenizer(tiktoken_dir, tinystories_dir, name):
    # The manifest's vocabulary (the data's tokens plus BPE's intermediate pieces) must tokenize the data exactly as
    # the full rank file does, without the rank file.
    import json

    enc = get_encoding(name, tiktoken_dir)
    stories = (tinystories_dir / "validation.txt").read_text().split("<|endoftext|>")[:400]
    used = sorted({t for s in stories[:300] for t in enc.encode_ordinary(s)} | {enc.eot_token})
    vocab = tk.portable_vocab(enc, used)
    assert len(json.dumps(vocab)) < 400_000 and vocab["count"] < 3 * len(used)
    portable = tk.encoding_from_vocab(json.loads(json.dumps(vocab)))  # what a manifest round trip gives
    assert portable.eot_token == enc.eot_token
    for s in stories[:300]:
        assert portable.encode_ordinary(s) == enc.encode_ordinary(s)
    full, mine = ModelTokenizer(enc, used), ModelTokenizer(portable, used)
    for s in stories[:300]:
        ids = full.encode(s)
        assert mine.encode(s) == ids and mine.decode(ids) == s
    assert mine.token_byte_lengths().tolist() == full.token_byte_lengths().tolist()
    with pytest.raises(UnknownTokenError):
        mine.encode("Zyzzyva quaggas 炎")
    # Held-out stories: whatever encodes maps to ids that decode back to the text.
    for s in stories[300:]:
        ids = mine.encode(s, on_unknown="skip")
        assert all(0 <= i < mine.vocab_size for i in ids)
    with pytest.raises(TokenizerError, match="damaged"):
        tk.encoding_from_vocab({**vocab, "count": vocab["count"] + 1})


def test_load_tokenizer_uses_the_manifests_vocab_without_rank_files(tiktoken_dir, tmp_path, monkeypatch):
    enc = get_encoding("o200k_harmony", tiktoken_dir)
    used = sorted(set(enc.encode_ordinary(SAMPLE)) | {enc.eot_token})
    manifest = dict(
        tokenizer="o200k_harmony", compacted=True, compact_to_original=used, vocab=tk.portable_vocab(enc, used)
    )
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty: nothing cached
    monkeypatch.delenv("GPTOSS_TOKENIZER_DIR", raising=False)
    monkeypatch.setattr(tk, "_host_reachable", lambda *a, **k: False)
    tok = tk.load_tokenizer(manifest, tokenizer_dir=None)
    assert tok.decode(tok.encode(SAMPLE)) == SAMPLE and tok.vocab_size == len(used)
    old = {k: v for k, v in manifest.items() if k != "vocab"}  # data prepared before the vocabulary was carried
    with pytest.raises(TokenizerError, match="--tokenizer-dir"):
        tk.load_tokenizer(old)
    assert tk.load_tokenizer(old, tiktoken_dir).decode(tok.encode(SAMPLE)) == SAMPLE


def test_compact_tokenizer_extends_to_any_text(tiktoken_dir):
    # on_unknown="extend": pieces the data never had get extra ids past vocab_size (what the exported tokenizer
    # gives); the text still decodes exactly, and the same extra ids come from the full encoding or the manifest's.
    enc = get_encoding("o200k_harmony", tiktoken_dir)
    used = sorted(set(enc.encode_ordinary(SAMPLE)) | {enc.eot_token})
    full = ModelTokenizer(enc, used)
    portable = ModelTokenizer(tk.encoding_from_vocab(tk.portable_vocab(enc, used)), used)
    text = "Zebra Lily läuft 炎 🙂\n\tcafé"
    ids = full.encode(text, on_unknown="extend")
    assert ids == portable.encode(text, on_unknown="extend")
    assert full.extra_size == portable.extra_size > 0 and full.extended_size == full.vocab_size + full.extra_size
    assert any(i >= full.vocab_size for i in ids) and max(ids) < full.extended_size
    assert full.decode(ids) == text
    known = [i for i in ids if i < full.vocab_size]
    assert full.encode(text, on_unknown="skip") == known
    assert full.encode(SAMPLE, on_unknown="extend") == full.encode(SAMPLE)  # known text: the model's own ids
    assert full.unknown_words(text) == ["Zebra", "läuft", "炎", "🙂", "café"]  # " café" is known, "café" is not
    assert full.unknown_words(SAMPLE) == []
    line = full.unknown_warning(text)
    assert line.startswith("warning: ") and "'läuft'" in line and "\n" not in line and "\ufffd" not in line
    with pytest.raises(UnknownTokenError, match="'läuft'"):
        full.encode(text)
    with pytest.raises(ValueError, match="on_unknown"):
        full.encode(text, on_unknown="ignore")
