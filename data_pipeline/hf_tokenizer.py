"""A Hugging Face tokenizer (tokenizer.json, tokenizer_config.json, special_tokens_map.json) that maps text to a
ModelTokenizer's own ids, extra ids included; plain JSON, written without importing transformers or tokenizers."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .manifest import write_atomic
from .tokenizers import ModelTokenizer

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _byte_to_char() -> dict[int, str]:
    """Byte-level BPE's printable stand-in for each byte: printable Latin-1 bytes are themselves, the other 68 are
    mapped in order to the characters from U+0100 on (the table every GPT-2-style tokenizer.json uses)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Every pair tiktoken would merge, in its order: (a, b) with a, b and a+b all tokens, ranked by a+b.

    tiktoken merges the adjacent pair whose concatenation has the lowest rank; the parts are always tokens, so the
    pairs it can ever merge are exactly these, and Hugging Face's BPE, given them in this order, merges the same."""
    pairs = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                pairs.append((rank, cut, left, right))
    pairs.sort(key=lambda p: (p[0], p[1]))
    return [(left, right) for _, _, left, right in pairs]


def hf_tokenizer_files(tokenizer: ModelTokenizer, model_max_length: int) -> dict[str, dict]:
    """File name -> JSON content of the three files; the vocabulary is tokenizer.pieces() with their model ids."""
    chars = _byte_to_char()

    def text(piece: bytes) -> str:
        return "".join(chars[b] for b in piece)

    ranks = dict(tokenizer.encoding._mergeable_ranks)
    vocab = {text(piece): model_id for piece, model_id in tokenizer.pieces() if model_id >= 0}
    if len(vocab) != len(ranks):
        raise ValueError("the tokenizer's pieces do not all have model ids; re-run prepare")
    specials = {name: i for name, i in tokenizer.special_tokens().items() if i >= 0}
    # The tokenizers library gives an added token the id of the same string in the model's vocabulary, else the
    # next free id (the one in added_tokens is not kept): so the specials go into the vocabulary too. The regex
    # never yields them as one word, so BPE never emits them from text.
    vocab.update({text(name.encode()): i for name, i in specials.items()})
    eot_name = next(name for name, i in specials.items() if i == tokenizer.eot_id)
    added = [
        dict(id=i, content=name, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
        for name, i in sorted(specials.items(), key=lambda kv: kv[1])
    ]
    tokenizer_json = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                # tiktoken's own regex splits the text into words; byte-level BPE then works within each word.
                {
                    "type": "Split",
                    "pattern": {"Regex": tokenizer.encoding._pat_str},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            # tiktoken emits a word that is itself a token whole, without merging; ignore_merges does the same.
            "ignore_merges": True,
            "vocab": vocab,
            "merges": [[text(a), text(b)] for a, b in _merges(ranks)],
        },
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": eot_name,
        "eos_token": eot_name,
        "pad_token": eot_name,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "model_max_length": model_max_length,
        # Decoding is byte-exact: no space "clean-up" before punctuation.
        "clean_up_tokenization_spaces": False,
        # Text is text: "<|endoftext|>" typed in a prompt is its characters, as for our own tokenizer and the data.
        "split_special_tokens": True,
        "added_tokens_decoder": {str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in added},
    }
    special_map = {"bos_token": eot_name, "eos_token": eot_name, "pad_token": eot_name}
    return {"tokenizer.json": tokenizer_json, "tokenizer_config.json": config, "special_tokens_map.json": special_map}


def write_hf_tokenizer(tokenizer: ModelTokenizer, out_dir: str | os.PathLike, model_max_length: int) -> list[str]:
    """Write the three files into out_dir (each atomically); returns their names."""
    for name, content in hf_tokenizer_files(tokenizer, model_max_length).items():
        write_atomic(Path(out_dir) / name, json.dumps(content, ensure_ascii=False).encode("utf-8"))
    return list(TOKENIZER_FILES)
