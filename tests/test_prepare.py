"""data_pipeline/prepare.py end to end on Ray (few runs, shared): token counts, decode round trip, compaction,
idempotence, ray_dataset."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from data_pipeline import PrepareConfig, TokenWindows, get_encoding, load_manifest, load_tokenizer, prepare, ray_dataset
from data_pipeline.manifest import read_token_shard, sha256_of
from data_pipeline.sources import plan_sources, read_chunk

LIMIT = 3000


def planned_stories(cfg):
    plan = plan_sources(cfg)
    by_split = {"train": [], "validation": []}
    for chunk in plan.chunks:
        for i, story in enumerate(read_chunk(chunk)):
            index = chunk.first_index + i
            split = chunk.split or ("validation" if index in set(plan.val_indices.tolist()) else "train")
            by_split[split].append(story)
    return by_split


def split_tokens(data_dir, manifest, split):
    return np.concatenate([read_token_shard(data_dir / s["file"]) for s in manifest["splits"][split]["shards"]])


@pytest.fixture(scope="module")
def compact_run(ray_session, tinystories_dir, tiktoken_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "ts"
    cfg = PrepareConfig(
        out=str(out), source=str(tinystories_dir), tokenizer_dir=str(tiktoken_dir), limit=LIMIT, shard_tokens=200_000
    )
    summary = prepare(cfg, echo=lambda s: None)
    return cfg, out, summary


def test_counts_decode_and_compaction(compact_run, tiktoken_dir):
    cfg, out, summary = compact_run
    manifest = load_manifest(out)
    enc = get_encoding("o200k_harmony", tiktoken_dir)
    stories = planned_stories(cfg)
    assert manifest["compacted"] and manifest["dtype"] == "uint16" and manifest["tokenizer"] == "o200k_harmony"
    ctoo = np.asarray(manifest["compact_to_original"])
    unk = manifest["compaction"]["unk_id"]
    assert unk == len(ctoo) - 1 and enc.decode([int(ctoo[unk])]) == "\ufffd"  # the reserved id, last
    assert (np.diff(ctoo[:unk]) > 0).all() and ctoo[manifest["eot_id"]] == enc.eot_token == manifest["tokenizer_eot_id"]
    train_ids = np.unique(split_tokens(out, manifest, "train"))
    assert train_ids.tolist() == list(range(unk))  # every id but the reserved one occurs in train: train-only vocab
    val_ids = np.unique(split_tokens(out, manifest, "validation"))
    assert set(val_ids.tolist()) <= set(range(unk + 1))
    assert manifest["vocab_size"] == len(ctoo) < manifest["distinct_tokens"] + 1 < 20000
    assert len(manifest["splits"]["train"]["shards"]) >= 3  # 200k-token shards
    tok = load_tokenizer(out, tiktoken_dir)
    for split in ("train", "validation"):
        info = manifest["splits"][split]
        expected = sum(len(ids) for ids in enc.encode_ordinary_batch(stories[split], num_threads=1)) + len(
            stories[split]
        )
        assert info["tokens"] == expected == summary["tokens"][split]
        assert info["stories"] == len(stories[split]) == sum(s["stories"] for s in info["shards"])
        assert info["utf8_bytes"] == sum(len(s.encode()) for s in stories[split])
        tokens = split_tokens(out, manifest, split)
        assert len(tokens) == expected and tokens[-1] == manifest["eot_id"]
        for shard in info["shards"]:
            assert sha256_of(out / shard["file"]) == shard["sha256"] and shard["tokens"] <= cfg.shard_tokens
            assert read_token_shard(out / shard["file"])[-1] == manifest["eot_id"]  # shards end at story ends
        ends = np.flatnonzero(tokens == manifest["eot_id"])
        starts = np.concatenate([[0], ends[:-1] + 1])
        decoded = [tok.decode(tokens[a:b]) for a, b in zip(starts, ends)]
        clean = [i for i, (a, b) in enumerate(zip(starts, ends)) if not (tokens[a:b] == unk).any()]
        assert [decoded[i] for i in clean] == [stories[split][i] for i in clean]
        assert split == "validation" or len(clean) == len(decoded)  # train never needs the reserved id
    assert sum(stories_ := [len(v) for v in stories.values()]) == LIMIT and stories_[1] > 0
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no staging or temp files left


def test_rerun_is_noop_then_force_rebuilds_identically(compact_run):
    cfg, out, _ = compact_run
    before = {p.name: (p.stat().st_mtime_ns, sha256_of(p)) for p in out.glob("*.arrow")}
    t = time.perf_counter()
    again = prepare(cfg, echo=lambda s: None)
    assert again["noop"] and time.perf_counter() - t < 5
    assert {p.name: (p.stat().st_mtime_ns, sha256_of(p)) for p in out.glob("*.arrow")} == before
    # A killed `prepare --force` leaves its staging beside an intact manifest: the next (no-op) run removes it.
    (out / ".prepare-staging" / "train").mkdir(parents=True)
    (out / ".prepare-staging" / "train" / "part-0.arrow").write_bytes(b"x" * 1000)
    assert prepare(cfg, echo=lambda s: None)["noop"] and not (out / ".prepare-staging").exists()
    # A half-written earlier run (stray staging, temp file, manifest gone) is cleaned up by the rebuild.
    (out / ".prepare-staging").mkdir()
    (out / ".train-00000.arrow.tmp.1").write_bytes(b"junk")
    (out / "manifest.json").unlink()
    with pytest.raises(ValueError, match="no valid manifest"):
        load_manifest(out)
    rebuilt = prepare(cfg, echo=lambda s: None)
    assert not rebuilt["noop"] and sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    assert {p.name: sha256_of(p) for p in out.glob("*.arrow")} == {k: v[1] for k, v in before.items()}  # deterministic


def test_full_vocab_gpt2_jsonl_fraction_and_reader(ray_session, tinystories_dir, tiktoken_dir, tmp_path):
    stories = (tinystories_dir / "validation.txt").read_text().split("<|endoftext|>")
    stories = [s.strip() for s in stories if s.strip()][:400]
    src = tmp_path / "stories.jsonl"
    src.write_text("\n".join(json.dumps({"story": s}) for s in stories))
    out = tmp_path / "out"
    summary = prepare(
        PrepareConfig(
            out=str(out),
            source=str(src),
            tokenizer="gpt2",
            tokenizer_dir=str(tiktoken_dir),
            compact_vocab=False,
            text_field="story",
            val_fraction=0.1,
        ),
        echo=lambda s: None,
    )
    manifest = load_manifest(out)
    assert (
        manifest["vocab_size"] == 50257
        and manifest["eot_id"] == 50256
        and manifest["dtype"] == "uint16"
        and not manifest["compacted"]
    )
    assert summary["stories"] == {"train": 360, "validation": 40}
    enc = get_encoding("gpt2", tiktoken_dir)
    val = [stories[i] for i in range(400) if i % 10 == 5]  # 40 indices spread evenly: 5, 15, ...
    expected = np.concatenate([np.append(enc.encode_ordinary(s), 50256) for s in val])
    assert split_tokens(out, manifest, "validation").tolist() == expected.tolist()
    # Reader over the real output, and the Ray Data view of the same shards.
    w = TokenWindows(out, "train", seq_len=128)
    assert w.num_windows == (manifest["splits"]["train"]["tokens"] - 1) // 128
    x, y = w.batch(0, 8)
    assert tuple(x.shape) == (8, 128) and int(x.max()) < 50257
    ds = ray_dataset(out, "train")
    total = sum(len(row) for batch in ds.iter_batches(batch_format="numpy", batch_size=None) for row in batch["tokens"])
    assert total == manifest["splits"]["train"]["tokens"]


def test_manifest_carries_the_vocabulary_and_shard_checksums(compact_run, tmp_path, monkeypatch):
    import shutil

    import xxhash

    from data_pipeline import DataError
    from data_pipeline import tokenizers as tk
    from data_pipeline.manifest import check_shards

    cfg, out, _ = compact_run
    manifest = load_manifest(out)
    assert len(json.dumps(manifest["vocab"])) < 500_000  # a few hundred KB at most
    for shard in manifest["splits"]["train"]["shards"]:
        assert shard["xxh3_64"] == xxhash.xxh3_64((out / shard["file"]).read_bytes()).hexdigest()
    # Decoding needs neither rank files nor network once prepared.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv("GPTOSS_TOKENIZER_DIR", raising=False)
    monkeypatch.setattr(tk, "_host_reachable", lambda *a, **k: False)
    tok = load_tokenizer(out)
    story = planned_stories(cfg)["validation"][0]
    assert tok.decode(tok.encode(story)) == story
    # A shard overwritten in place with its size kept is caught, by name, with `prepare` as the fix.
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    victim = copy / manifest["splits"]["train"]["shards"][1]["file"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 8] = b"\x07" * 8
    victim.write_bytes(bytes(data))
    assert check_shards(out, manifest) == sum(s["bytes"] for sp in manifest["splits"].values() for s in sp["shards"])
    with pytest.raises(DataError, match=rf"shard {victim.name} in .* prepare"):
        check_shards(copy, load_manifest(copy))
    # Manifests from before checksums (size only) are not refused.
    old = load_manifest(copy)
    for sp in old["splits"].values():
        for s in sp["shards"]:
            s.pop("xxh3_64"), s.pop("sha256")
    check_shards(copy, old)


def test_a_prepare_without_a_validation_split_is_refused_before_anything_is_written(tmp_path, tiktoken_dir):
    from typer.testing import CliRunner

    import cli

    (tmp_path / "stories.txt").write_text("One." + "\n<|endoftext|>\n" + "Two." + "\n<|endoftext|>\n")
    out = CliRunner().invoke(
        cli.app,
        ["prepare", "--source", str(tmp_path / "stories.txt"), "--out", str(tmp_path / "o"), "--val-fraction", "0"]
        + ["--tokenizer-dir", str(tiktoken_dir)],
    )
    assert out.exit_code == 2 and out.output.count("\n") == 1, out.output
    assert "no validation split (--val-fraction 0 and no validation file)" in out.output
    assert not (tmp_path / "o").exists()


def test_summary_embedding_savings_use_the_cpu_presets_shapes():
    # prepare's summary keeps the CPU presets' embedding shapes itself (importing gptoss imports torch): same as
    # gptoss's.
    from data_pipeline.prepare import CPU_PRESET_EMBEDDINGS
    from gptoss.presets import PRESETS, build_config

    built = {
        (arch, name): (build_config(arch, name).d_model, build_config(arch, name).tie_embeddings)
        for arch in ("gptoss", "gpt2")
        for name in PRESETS[arch]
        if name.startswith("cpu")
    }
    assert list(CPU_PRESET_EMBEDDINGS.items()) == list(built.items())


def test_the_compact_vocabulary_comes_from_the_training_split_alone(tiktoken_dir):
    from data_pipeline.prepare import compact_vocabulary

    enc = get_encoding("o200k_harmony", tiktoken_dir)
    a, b, c = enc.encode_ordinary(" cat")[0], enc.encode_ordinary(" dog")[0], enc.encode_ordinary(" Zanzibar")[-1]
    out = compact_vocabulary(np.array([b, a]), np.array([a, c]), enc)
    ctoo, lut, unk = out["compact_to_original"], out["lut"], out["unk_id"]
    assert sorted(ctoo[:unk].tolist()) == sorted([a, b, enc.eot_token]) and unk == 3 and len(ctoo) == 4
    assert enc.decode([int(ctoo[unk])]) == "\ufffd"
    assert lut[c] == unk and lut[a] != unk and ctoo[lut[a]] == a  # validation-only: the reserved id, loss counted
    assert out["validation_only_ids"] == 1 and out["unk_bytes"] == len(enc.decode_single_token_bytes(c))
    assert out["built_from"] == "train"
