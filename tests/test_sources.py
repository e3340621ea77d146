"""data_pipeline/sources.py and the prepare command's input checks: formats, splits, --limit, and one-line errors
before Ray starts."""

from __future__ import annotations

import json
import os
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import cli
from data_pipeline import PrepareConfig
from data_pipeline import sources as src
from data_pipeline.config import DataError
from data_pipeline.sources import plan_sources, read_chunk

runner = CliRunner()
SEP = "\n<|endoftext|>\n"


def stories_of(plan):
    return [s for c in plan.chunks for s in read_chunk(c)]


def run_prepare(*args):
    result = runner.invoke(cli.app, ["prepare", *args])
    return result.exit_code, result.output  # stdout and stderr, mixed


@pytest.mark.parametrize("field", ["text", "story"])
def test_formats_agree(tmp_path, field):
    stories = [f"Story {i}.\nLine two {'é' * i}." for i in range(7)]
    (tmp_path / "a.txt").write_text(SEP.join(stories) + SEP)
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({field: s}) for s in stories) + "\n\n")
    (tmp_path / "c.json").write_text(json.dumps([{field: s} for s in stories]))
    pq.write_table(pa.table({field: stories}), tmp_path / "d.parquet", row_group_size=3)
    for name in ("a.txt", "b.jsonl", "c.json", "d.parquet"):
        if name == "a.txt" and field != "text":
            continue
        plan = plan_sources(PrepareConfig(source=str(tmp_path / name), text_field=field, val_fraction=0.2))
        assert stories_of(plan) == stories, name
        assert plan.stories == {"train": 6, "validation": 1}


def test_split_directory_and_limit(tinystories_dir):
    plan = plan_sources(PrepareConfig(source=str(tinystories_dir)))
    assert plan.split_mode == "files" and plan.stories == {"train": 12716, "validation": 650}
    plan = plan_sources(PrepareConfig(source=str(tinystories_dir), limit=1000))
    assert sum(plan.stories.values()) == 1000 and plan.stories["validation"] == 49
    assert [c.split for c in plan.chunks] == ["train", "validation"]


def test_val_fraction_spread_and_deterministic(tinystories_dir):
    cfg = PrepareConfig(source=str(tinystories_dir / "train.txt"), limit=2000, val_fraction=0.05)
    a, b = plan_sources(cfg), plan_sources(cfg)
    assert a.stories == {"train": 1900, "validation": 100}
    assert a.val_indices.tolist() == b.val_indices.tolist() and a.val_indices[0] == 10 and a.val_indices[-1] == 1990


def test_glob_and_replace(tmp_path):
    (tmp_path / "x1.txt").write_bytes(b"Good story." + SEP.encode() + b"Bad \xff byte.")
    (tmp_path / "x2.txt").write_text("Another one.")
    with pytest.raises(DataError, match=r"x1.txt: invalid UTF-8 at byte offset 30"):
        plan_sources(PrepareConfig(source=str(tmp_path / "x*.txt")))
    plan = plan_sources(PrepareConfig(source=str(tmp_path / "x*.txt"), errors="replace", val_fraction=0))
    assert stories_of(plan) == ["Good story.", "Bad \ufffd byte.", "Another one."]


def test_config_validation():
    for kwargs, field in [
        (dict(tokenizer="bert"), "tokenizer"),
        (dict(errors="ignore"), "errors"),
        (dict(limit=0), "limit"),
        (dict(val_fraction=0.7), "val_fraction"),
        (dict(shard_tokens=10), "shard_tokens"),
    ]:
        with pytest.raises(ValueError, match=field):
            PrepareConfig(**kwargs)


def bad(tmp_path, name, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    "name,content,extra,message",
    [
        ("missing.txt", None, [], "does not exist"),
        ("empty.txt", b"", [], "is empty"),
        ("seps.txt", b"\n<|endoftext|>\n  \n<|endoftext|>\n", [], "holds no stories"),
        ("utf.txt", b"ok\n<|endoftext|>\nab\xc3(", [], "utf.txt: invalid UTF-8 at byte offset 19"),
        ("lines.jsonl", b'{"text": "a"}\n{"text": \n', [], "lines.jsonl:2: not valid JSON"),
        ("field.jsonl", b'{"text": "a"}\n{"story": "b"}\n', [], "field.jsonl:2: no field 'text'"),
        ("ok.txt", b"A story.", ["--tokenizer", "bert"], "tokenizer must be one of"),
        ("ok.txt", b"A story.", ["--limit", "0"], "limit must be"),
        ("ok.csv", b"text\nA story.", [], "unsupported file type .csv"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, tiktoken_dir, name, content, extra, message):
    source = str(tmp_path / name) if content is None else bad(tmp_path, name, content)
    out = tmp_path / "out"
    t = time.perf_counter()
    code, output = run_prepare("--source", source, "--out", str(out), "--tokenizer-dir", str(tiktoken_dir), *extra)
    assert code == 2, output
    assert message in output and output.strip().count("\n") == 0 and "Traceback" not in output
    assert not out.exists()  # nothing half-written
    assert time.perf_counter() - t < 5  # validated on the driver, before Ray


def test_bad_tokenizer_hash_cli(tmp_path):
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "o200k_base.tiktoken").write_bytes(b"IQ== 0\n")
    code, output = run_prepare(
        "--source",
        bad(tmp_path, "s.txt", b"A story."),
        "--out",
        str(tmp_path / "o"),
        "--tokenizer-dir",
        str(tmp_path / "tok"),
        "--val-fraction",
        "0",
    )
    assert code == 2 and "sha256" in output and not (tmp_path / "o").exists()


def test_both_train_and_validation(tmp_path, tiktoken_dir):
    d = tmp_path / "src"
    d.mkdir()
    (d / "train.txt").write_text("One." + SEP)
    (d / "validation.txt").write_text("One." + SEP)
    code, output = run_prepare("--source", str(d), "--out", str(tmp_path / "o"), "--tokenizer-dir", str(tiktoken_dir))
    assert code == 2 and "both train and validation" in output
    os.remove(d / "validation.txt")
    (d / "train_validation.txt").write_text("Two.")
    with pytest.raises(DataError, match="both train and validation"):
        plan_sources(PrepareConfig(source=str(d)))


def test_output_not_writable(tmp_path, tiktoken_dir, monkeypatch):
    import importlib

    prep_mod = importlib.import_module("data_pipeline.prepare")

    monkeypatch.setattr(prep_mod.os, "access", lambda *a, **k: False)  # root ignores chmod, so simulate it
    with pytest.raises(PermissionError, match="not writable"):
        prep_mod.prepare(
            PrepareConfig(
                source=bad(tmp_path, "s.txt", b"A story."), out=str(tmp_path / "o"), tokenizer_dir=str(tiktoken_dir)
            )
        )
    file_out = tmp_path / "afile"
    file_out.write_text("x")
    code, output = run_prepare("--source", str(tmp_path / "s.txt"), "--out", str(file_out))
    assert code == 2 and "not a directory" in output


def test_default_source_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(src, "_hub_reachable", lambda *a, **k: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    t = time.perf_counter()
    code, output = run_prepare("--out", str(tmp_path / "o"))
    assert code == 2 and "cannot reach huggingface.co" in output and "--source PATH" in output
    assert time.perf_counter() - t < 5


def test_offline_hub_error_also_names_tokenizer_dir_when_rank_files_are_missing(tmp_path, monkeypatch, tiktoken_dir):
    # Offline, the rank files are the next thing to fail: one error must name both fixes.
    monkeypatch.setattr(src, "_hub_reachable", lambda *a, **k: False)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("GPTOSS_TOKENIZER_DIR", raising=False)
    code, output = run_prepare("--out", str(tmp_path / "o"))
    assert (
        code == 2 and "--source PATH" in output and "--tokenizer-dir DIR" in output and "o200k_base.tiktoken" in output
    )
    code, output = run_prepare("--out", str(tmp_path / "o"), "--tokenizer-dir", str(tiktoken_dir))
    assert code == 2 and "--source PATH" in output and "--tokenizer-dir" not in output


def test_a_validation_file_alone_is_not_silently_trained_on(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    (d / "validation.txt").write_text("One." + SEP + "Two." + SEP + "Three." + SEP)
    code, output = run_prepare("--source", str(d), "--out", str(tmp_path / "o"))
    assert code == 2 and "validation data (validation.txt) but no train.* file" in output, output
    assert output.strip().count("\n") == 0 and not (tmp_path / "o").exists()
    (d / "stories.txt").write_text("Four." + SEP)  # an unnamed file beside it: still no train split named
    with pytest.raises(DataError, match="no train"):
        plan_sources(PrepareConfig(source=str(d)))
    os.remove(d / "validation.txt")  # unnamed files alone are split by --val-fraction, as documented
    assert plan_sources(PrepareConfig(source=str(d), val_fraction=0)).stories == {"train": 1, "validation": 0}


def test_limit_1_is_refused_rather_than_writing_two_stories(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    (d / "train.txt").write_text("One." + SEP + "Two." + SEP)
    (d / "validation.txt").write_text("Three." + SEP)
    code, output = run_prepare("--source", str(d), "--out", str(tmp_path / "o"), "--limit", "1")
    assert code == 2 and "--limit 1 cannot cover both splits" in output, output
    plan = plan_sources(PrepareConfig(source=str(d), limit=2))
    assert plan.stories == {"train": 1, "validation": 1}
