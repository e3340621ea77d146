"""The Hugging Face export end to end (orchestrator/inference.py export_checkpoint with data_pipeline/hf_tokenizer.py):
a stock AutoTokenizer gives our ids, a stock pipeline our greedy text, any text encodes and runs; generate takes
any prompt."""

from __future__ import annotations

import json
import random

import pytest
import torch
from typer.testing import CliRunner

import cli

transformers = pytest.importorskip("transformers")
runner = CliRunner()

# Code, another script, emoji, odd whitespace, a literal special token: none of it may fail.
ODD_TEXTS = [
    "",
    "the cat sat",
    'def f(x):\n\treturn {"k": x ** 2}  # café\r\n',
    "Der Hund läuft über die Straße. Кот спит на окне. 猫はまどで寝ている。 القطة نائمة",
    "🙂🙃👩\u200d👩\u200d👧 \u3000\u00a0 x\n\n\n  ",
    "<|endoftext|>Once<|endoftext|>",
]


def _random_unicode(seed: int, n: int = 60) -> str:
    rng = random.Random(seed)
    # Every plane-0/1 code point except surrogates (which no str encodes to UTF-8).
    return "".join(chr(c) for c in (rng.randrange(1, 0x1FFFF) for _ in range(n)) if not 0xD800 <= c < 0xE000)


def compact_manifest(tiktoken_dir, tinystories_dir, name: str, stories: int = 300) -> dict:
    """What prepare stores for a compacted vocabulary (the data's distinct tokens and their portable vocabulary),
    from few stories: the validation split then holds pieces outside it, the case the export must survive."""
    from data_pipeline.tokenizers import get_encoding, portable_vocab

    enc = get_encoding(name, tiktoken_dir)
    text = (tinystories_dir / "train.txt").read_text().split("<|endoftext|>")[:stories]
    used = sorted({t for s in text for t in enc.encode_ordinary(s.strip())} | {enc.eot_token})
    return dict(
        tokenizer=name,
        compacted=True,
        vocab_size=len(used),
        eot_id=used.index(enc.eot_token),
        compact_to_original=used,
        vocab=portable_vocab(enc, used),
    )


def save_checkpoint_for(ckpt, arch: str, manifest: dict) -> None:
    """A random model in the layout `train` writes; weights well away from the init, so greedy paths are not ties."""
    from gptoss import build_model
    from orchestrator.config import TrainConfig
    from orchestrator.optimizer import build_optimizer
    from orchestrator.train_loop import save_train_checkpoint

    torch.manual_seed(0)
    model = build_model(arch, "debug", vocab_size=manifest["vocab_size"])
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.mul_(5)
    cfg = TrainConfig(data="unused", preset="debug")
    state = dict(
        step=10, tokens=1000, val_loss=5.0, best_val_loss=5.0, config=cfg.to_dict(), scheduler=dict(warmup=1, total=30)
    )
    save_train_checkpoint(str(ckpt), model, build_optimizer(model, cfg, torch.device("cpu")), state, manifest)


@pytest.fixture(scope="module", params=[("gptoss", "o200k_harmony"), ("gpt2", "gpt2")], ids=["gptoss", "gpt2"])
def exported(request, tmp_path_factory, tiktoken_dir, tinystories_dir):
    from data_pipeline import load_tokenizer
    from orchestrator.inference import export_checkpoint

    arch, name = request.param
    root = tmp_path_factory.mktemp(f"export-{arch}")
    manifest = compact_manifest(tiktoken_dir, tinystories_dir, name)
    save_checkpoint_for(root / "ckpt", arch, manifest)
    line = export_checkpoint(str(root / "ckpt"), str(root / "hf"))
    assert "tokenizer.json" in line
    return dict(ckpt=root / "ckpt", out=root / "hf", tokenizer=load_tokenizer(manifest), arch=arch)


def test_autotokenizer_gives_our_ids_on_the_whole_validation_split(exported, tinystories_dir):
    hf = transformers.AutoTokenizer.from_pretrained(exported["out"])
    ours = exported["tokenizer"]
    text = (tinystories_dir / "validation.txt").read_text()
    ids = hf(text)["input_ids"]
    assert ids == ours.encode(text, on_unknown="extend")
    assert hf.decode(ids) == text == ours.decode(ids)
    # The hard case is exercised: pieces outside the compact vocabulary occur, each with an id of its own.
    extra = [i for i in ids if i >= ours.vocab_size]
    assert 0 < len(extra) < 0.2 * len(ids)
    assert max(ids) < ours.extended_size
    eot = "<|endoftext|>"
    assert hf.eos_token == eot and hf.convert_tokens_to_ids(eot) == ours.eot_id
    special_map = json.loads((exported["out"] / "special_tokens_map.json").read_text())
    assert special_map["eos_token"] == eot


def _pipeline_equals_generate(exported, prompts: list[str]) -> None:
    pipe = transformers.pipeline("text-generation", model=str(exported["out"]))
    for prompt in prompts:
        theirs = pipe(prompt, max_new_tokens=40, do_sample=False)[0]["generated_text"]
        args = ["generate", str(exported["ckpt"]), "--prompt", prompt, "--max-tokens", "40", "--temperature", "0"]
        result = runner.invoke(cli.app, args)
        assert result.exit_code == 0, result.output
        assert result.stdout == theirs + "\n"
        assert len(theirs) > len(prompt) + 10 and "\ufffd" not in theirs


def test_pipeline_greedy_equals_our_generate(exported):
    # "the cat sat" holds a piece outside the compact vocabulary: the extra ids and their zero rows take part.
    _pipeline_equals_generate(exported, ["the cat sat"])


@pytest.mark.slow
def test_pipeline_greedy_equals_our_generate_for_other_prompts(exported):
    _pipeline_equals_generate(exported, ["Once upon a time", ODD_TEXTS[3], ""])


def test_any_text_encodes_and_runs_through_the_exported_model(exported):
    hf_tok = transformers.AutoTokenizer.from_pretrained(exported["out"])
    model = transformers.AutoModelForCausalLM.from_pretrained(exported["out"], dtype=torch.float32).eval()
    ours = exported["tokenizer"]
    assert model.config.vocab_size == ours.extended_size
    for text in ODD_TEXTS + [_random_unicode(seed) for seed in range(8)]:
        ids = hf_tok(text)["input_ids"]
        assert ids == ours.encode(text, on_unknown="extend"), text
        assert hf_tok.decode(ids) == text
        if not ids:
            continue
        with torch.no_grad():
            logits = model(torch.tensor([ids[:64]])).logits
        assert torch.isfinite(logits).all()
        # Ids the model never trained on have zero rows: a fixed logit of 0, and generate suppresses them.
        assert (logits[..., ours.vocab_size :] == 0).all()
    generation = json.loads((exported["out"] / "generation_config.json").read_text())
    assert generation["suppress_tokens"] == list(range(ours.vocab_size, ours.extended_size))
    assert generation["eos_token_id"] == generation["pad_token_id"] == ours.eot_id


def test_generate_takes_a_prompt_with_words_outside_the_vocabulary(exported):
    args = ["generate", str(exported["ckpt"]), "--prompt", "the cat sat", "--max-tokens", "8", "--temperature", "0"]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("the cat sat") and len(result.stdout) > len("the cat sat\n")
    warning = result.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning:") and "'the'" in warning[0], result.stderr


def test_export_to_a_file_path_names_the_path(exported, tmp_path):
    target = tmp_path / "model.bin"
    target.write_text("x")
    for out in (target, target / "sub"):
        result = runner.invoke(cli.app, ["export", str(exported["ckpt"]), str(out)])
        assert result.exit_code == 2
        line = result.output.strip()
        assert line.startswith("error: ") and str(target) in line and "is a file" in line and "\n" not in line
    assert target.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


@pytest.mark.slow
def test_export_of_a_really_prepared_checkpoint(prepared_data, tmp_path):
    """The manifest `prepare` writes (3000 stories): AutoTokenizer gives our tokenizer's ids for every validation
    story, and the prepared ids themselves for every story whose tokens all occur in train (the others hold the
    reserved id that stands for tokens the training split never had)."""
    from data_pipeline import TokenWindows, load_tokenizer
    from orchestrator.inference import export_checkpoint

    manifest = json.loads((prepared_data / "manifest.json").read_text())
    save_checkpoint_for(tmp_path / "ckpt", "gptoss", manifest)
    export_checkpoint(str(tmp_path / "ckpt"), str(tmp_path / "hf"))
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    windows = TokenWindows(str(prepared_data), "validation", 64)
    stored = windows.tokens(0, windows.total_tokens)
    ours = load_tokenizer(manifest)
    # Split at the stored end-of-text ids (decoding them would give the same text the stories might contain).
    cuts = [-1] + [i for i, t in enumerate(stored.tolist()) if t == ours.eot_id]
    stories = [ours.decode(stored[a + 1 : b].tolist()) for a, b in zip(cuts, cuts[1:])]
    unk = manifest.get("compaction", {}).get("unk_id")
    stored_stories = [stored[a + 1 : b].tolist() for a, b in zip(cuts, cuts[1:])]
    for text, prepared in zip(stories, stored_stories):
        assert hf(text)["input_ids"] == ours.encode(text, on_unknown="extend")
        if unk not in prepared:
            assert hf(text)["input_ids"] == prepared
    assert sum(unk not in p for p in stored_stories) > len(stories) // 2  # the stored comparison is not vacuous
    result = runner.invoke(
        cli.app, ["generate", str(tmp_path / "ckpt"), "--prompt", "the cat sat", "--max-tokens", "8"]
    )
    assert result.exit_code == 0 and result.stdout.startswith("the cat sat"), result.output
