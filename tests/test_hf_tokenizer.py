"""Tests for data_pipeline/hf_tokenizer.py: the written tokenizer.json gives a ModelTokenizer's ids, special tokens
keep their ids, and the byte table is the standard one."""

from __future__ import annotations

import json

import pytest

from data_pipeline.hf_tokenizer import _byte_to_char, write_hf_tokenizer
from data_pipeline.tokenizers import ModelTokenizer, encoding_from_vocab, get_encoding, portable_vocab

transformers = pytest.importorskip("transformers")

ODD = "Der Hund läuft über die Straße. 猫はまどで寝ている。 def f(x): return 1 🙂 <|endoftext|>\n\n\t x  "


def test_byte_table_is_a_bijection_onto_printable_characters():
    table = _byte_to_char()
    assert len(set(table.values())) == 256 and all(c.isprintable() and not c.isspace() for c in table.values())
    assert table[ord("A")] == "A" and table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"


@pytest.mark.parametrize("compacted", [False, True])
def test_written_tokenizer_gives_our_ids(tmp_path, tiktoken_dir, tinystories_dir, compacted):
    enc = get_encoding("gpt2", tiktoken_dir)
    stories = (tinystories_dir / "validation.txt").read_text().split("<|endoftext|>")[:200]
    if compacted:  # from the first 50 stories only: the other 150 hold pieces outside it
        used = sorted({t for s in stories[:50] for t in enc.encode_ordinary(s)} | {enc.eot_token})
        ours = ModelTokenizer(encoding_from_vocab(portable_vocab(enc, used)), used)
    else:
        ours = ModelTokenizer(enc)
    assert write_hf_tokenizer(ours, tmp_path, 1024) == [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ]
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for s in stories + [ODD, ""]:
        ids = hf(s)["input_ids"]
        assert ids == ours.encode(s, on_unknown="extend") and hf.decode(ids) == s
    assert hf.eos_token_id == hf.pad_token_id == ours.eot_id
    assert compacted == any(i >= ours.vocab_size for s in stories for i in hf(s)["input_ids"])
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 1024 and config["clean_up_tokenization_spaces"] is False
