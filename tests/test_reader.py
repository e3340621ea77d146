"""data_pipeline/reader.py and manifest.py: memory-mapped windows, rank sharding, determinism, eval batches, manifest
checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_pipeline import TokenWindows, load_manifest
from data_pipeline.manifest import FORMAT, read_token_shard, sha256_of, write_token_shard


def make_prepared(tmp_path, sizes=(1000, 537, 2000), split="train", eot=7):
    """A prepared directory without Ray: shards of consecutive ids (mod 60000) so windows can be checked by value."""
    start, shards = 0, []
    for i, n in enumerate(sizes):
        tokens = (np.arange(start, start + n) % 60000).astype(np.uint16)
        name = f"{split}-{i:05d}.arrow"
        digest = write_token_shard(tmp_path / name, tokens)
        shards.append(dict(file=name, tokens=n, stories=0, sha256=digest, bytes=(tmp_path / name).stat().st_size))
        start += n
    manifest = dict(
        format=FORMAT,
        tokenizer="gpt2",
        vocab_size=60000,
        eot_id=eot,
        compacted=False,
        dtype="uint16",
        fingerprint="x",
        splits={split: dict(tokens=start, stories=0, utf8_bytes=0, shards=shards)},
    )
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path, start


def test_shard_is_zero_copy_memory_map(tmp_path):
    write_token_shard(tmp_path / "a.arrow", np.arange(10, dtype=np.uint32))
    arr = read_token_shard(tmp_path / "a.arrow")
    assert arr.dtype == np.uint32 and arr.tolist() == list(range(10)) and not arr.flags.writeable


def test_windows_span_shards(tmp_path):
    d, total = make_prepared(tmp_path)
    w = TokenWindows(d, "train", seq_len=64)
    assert w.num_windows == (total - 1) // 64
    for i in (0, 15, 16, 23, w.num_windows - 1):  # 15/16 and 23 cross shard borders
        assert w.window(i).tolist() == list(range(i * 64, i * 64 + 65))
    x, y = w.batch(0, 4)
    assert x.dtype.is_floating_point is False and tuple(x.shape) == (4, 64)
    assert (x[:, 1:] == y[:, :-1]).all() and (y - x == 1).all()


def test_ranks_disjoint_and_cover_an_epoch(tmp_path):
    d, _ = make_prepared(tmp_path)
    ranks = [TokenWindows(d, "train", 32, rank=r, world_size=3, seed=5) for r in range(3)]
    bpe = ranks[0].batches_per_epoch(4)
    assert all(r.batches_per_epoch(4) == bpe for r in ranks)
    seen = [set(np.concatenate([r.batch_indices(s, 4) for s in range(bpe)]).tolist()) for r in ranks]
    assert all(len(s) == bpe * 4 for s in seen)
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])
    assert len(set().union(*seen)) >= ranks[0].num_windows - 3 * 4  # only the dropped remainder is missing


def test_deterministic_resume_and_epochs(tmp_path):
    d, _ = make_prepared(tmp_path)
    a = TokenWindows(d, "train", 32, rank=1, world_size=2, seed=3)
    b = TokenWindows(d, "train", 32, rank=1, world_size=2, seed=3)
    bpe = a.batches_per_epoch(5)
    steps = [0, 1, bpe - 1, bpe, 3 * bpe + 2]
    first = [a.batch_indices(s, 5).tolist() for s in steps]
    assert [b.batch_indices(s, 5).tolist() for s in reversed(steps)] == list(
        reversed(first)
    )  # any order: pure function
    assert a.batch_indices(0, 5).tolist() != a.batch_indices(bpe, 5).tolist()  # next epoch: new permutation
    assert TokenWindows(d, "train", 32, 1, 2, seed=4).batch_indices(0, 5).tolist() != first[0]


def test_no_two_seed_epoch_pairs_share_an_order(tmp_path):
    d, _ = make_prepared(tmp_path)
    orders = {}
    for seed in range(10):
        w = TokenWindows(d, "train", 32, seed=seed)
        size = w.num_windows - 1  # one batch per epoch: step e is epoch e, the whole order
        for epoch in range(10):
            orders.setdefault(tuple(w.batch_indices(epoch, size).tolist()), []).append((seed, epoch))
    shared = [pairs for pairs in orders.values() if len(pairs) > 1]
    assert not shared, f"(seed, epoch) pairs with one order: {shared[:3]}"


def test_later_epochs_start_at_a_fresh_offset(tmp_path):
    d, _ = make_prepared(tmp_path)
    offsets = []
    for seed in range(10):
        w = TokenWindows(d, "train", 32, seed=seed)
        bpe = w.batches_per_epoch(4)
        assert w.epoch_offset(0) == 0
        for epoch in (1, 2):
            x, y = w.batch(epoch * bpe, 4)
            offset = w.epoch_offset(epoch)
            assert ((x[:, 0] - offset) % 32 == 0).all() and (y - x == 1).all()
            assert int(x.max()) + 2 <= w.total_tokens  # every window fits at its offset
            offsets.append(offset)
    assert len(set(offsets)) > 5  # 20 draws from [0, 32)


def test_eval_scores_every_target_token_once(tmp_path):
    d, total = make_prepared(tmp_path)  # token value = its position in the stream
    for world in (1, 2, 3, 4):
        targets = []
        for r in range(world):
            w = TokenWindows(d, "train", 32, rank=r, world_size=world)
            for x, y in w.eval_batches(5):
                assert (y - x == 1).all()
                targets += y.flatten().tolist()
        assert sorted(targets) == list(range(1, total)), world  # positions 1 .. total-1, each once
        plan = TokenWindows(d, "train", 32, world_size=world).eval_plan()
        assert plan["tokens"] == total - 1 and plan["fraction"] == 1.0 and plan["tail_window"]
    w = TokenWindows(d, "train", 32, world_size=3)
    part = w.eval_plan(50)
    assert part["windows"] == 48 and part["tokens"] == 48 * 32 and part["fraction"] == 48 * 32 / (total - 1)


def test_batch_larger_than_data(tmp_path):
    d, _ = make_prepared(tmp_path, sizes=(100,))
    with pytest.raises(ValueError, match="batch larger than the data: train has 2 windows"):
        TokenWindows(d, "train", 32, world_size=2).batch(0, 2)


def test_eval_batches_fixed_and_equal_per_rank(tmp_path):
    d, _ = make_prepared(tmp_path)
    per_rank = []
    for r in range(3):
        w = TokenWindows(d, "train", 32, rank=r, world_size=3, seed=r)
        batches = list(w.eval_batches(4, max_windows=50))
        per_rank.append(batches)
        firsts = [int(x[0, 0]) // 32 for x, _ in batches]
        assert firsts[0] == r  # windows r, r+3, ...
    assert len({len(b) for b in per_rank}) == 1
    assert sum(x.shape[0] for b in per_rank for x, _ in b) == 48  # 50 truncated to a multiple of 3
    again = list(TokenWindows(d, "train", 32, rank=0, world_size=3, seed=9).eval_batches(4, max_windows=50))
    assert all((a[0] == b[0]).all() for a, b in zip(per_rank[0], again))


def test_load_manifest_errors(tmp_path):
    with pytest.raises(ValueError, match=r"has no valid manifest.json .*python cli.py prepare --out"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        load_manifest(tmp_path)
    d, _ = make_prepared(tmp_path)
    (d / "train-00001.arrow").unlink()
    with pytest.raises(ValueError, match="train-00001.arrow is missing"):
        load_manifest(d)
    assert sha256_of(d / "train-00000.arrow")


def test_a_split_sample_spreads_over_it_and_ranks_score_disjoint_equal_shares(tmp_path):
    import torch

    d, total = make_prepared(tmp_path, sizes=(1000, 537, 2000))
    w = TokenWindows(d, "train", 64)
    sample = w.sample_windows(10)
    assert len(sample) == 10 and sample[0] == 0 and sample[-1] == w.num_windows - 1
    assert np.all(np.diff(sample) >= (w.num_windows - 1) // 10)  # spread evenly, not the split's head
    assert list(w.sample_windows(10**6)) == list(range(w.num_windows)) and len(w.sample_windows(0)) == 0
    starts = []
    for rank in range(3):
        r = TokenWindows(d, "train", 64, rank=rank, world_size=3)
        for x, y in r.sample_batches(4, 10):
            assert torch.equal(x[:, 1:], y[:, :-1])
            starts += [int(v) for v in x[:, 0]]
    # 10 windows truncated to 9 for 3 ranks; each window once, its first token its start (ids are consecutive).
    assert sorted(starts) == sorted(int(s * 64) % 60000 for s in sample[:9])
