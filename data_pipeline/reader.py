"""Reading prepared shards for training: memory-mapped (input, target) windows sharded by rank, and a Ray Data dataset
for streaming."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .manifest import load_manifest, read_token_shard


class TokenWindows:
    """Windows of seq_len+1 tokens over a split's token stream (all shards concatenated in order), memory-mapped.

    Window i spans tokens [i*seq_len, i*seq_len + seq_len + 1); num_windows = (total_tokens - 1) // seq_len.
    batch(step) is a pure function of (seed, rank, world_size, step): epoch e = step // batches_per_epoch draws from
    its own random stream, SeedSequence([seed, e]) (so no two (seed, epoch) pairs share an order, as seed + e would
    make seed s in epoch e replay seed s+1 in epoch e-1), a permutation of the epoch's windows and, from epoch 1 on,
    a start offset in [0, seq_len): the windows of epoch e >= 1 start at offset + i*seq_len, so a second epoch does
    not replay the first one's windows token for token. Every epoch has train_windows windows (those that fit at the
    largest offset). The permutation is split into world_size disjoint strided parts (rank r takes perm[r::world_size],
    truncated so every rank has the same count), consumed batch_size windows per step. It is computed once per epoch
    and cached, so resuming at any step is O(batch) after that.

    eval_batches cover every target token of the split exactly once: the windows above (offset 0), then one shorter
    last window over the tail they leave out, split among the ranks so that each window is scored by one rank only.
    """

    def __init__(self, data_dir, split: str, seq_len: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if world_size < 1 or not (0 <= rank < world_size):
            raise ValueError(
                f"rank must be in [0, world_size) and world_size >= 1; got rank={rank}, world_size={world_size}"
            )
        self.manifest = load_manifest(data_dir)
        if split not in self.manifest["splits"]:
            raise ValueError(f"split must be one of {', '.join(self.manifest['splits'])}; got {split!r}")
        self.data_dir = Path(data_dir)
        self.split, self.seq_len, self.rank, self.world_size, self.seed = split, seq_len, rank, world_size, seed
        shards = self.manifest["splits"][split]["shards"]
        self._shards = [read_token_shard(self.data_dir / s["file"]) for s in shards]
        lengths = np.array([len(a) for a in self._shards], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(lengths)])
        self.total_tokens = int(self._starts[-1])
        self.num_windows = max(0, (self.total_tokens - 1) // seq_len)
        # Windows that fit at every epoch offset (the largest is seq_len - 1): one fewer than num_windows at most.
        self.train_windows = max(0, (self.total_tokens - seq_len) // seq_len)
        self._perm_epoch, self._perm, self._offset = None, None, 0

    def __len__(self) -> int:
        return self.num_windows

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the concatenated stream (a view inside one shard, a copy across shards)."""
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        local = start - int(self._starts[first])
        shard = self._shards[first]
        if local + (stop - start) <= len(shard):
            return shard[local : local + (stop - start)]
        pieces, need, i = [], stop - start, first
        while need > 0:
            piece = self._shards[i][local : local + need]
            pieces.append(piece)
            need -= len(piece)
            i, local = i + 1, 0
        return np.concatenate(pieces)

    def window(self, i: int) -> np.ndarray:
        start = i * self.seq_len
        return self.tokens(start, start + self.seq_len + 1)

    def _xy(self, indices: np.ndarray, offset: int = 0):
        import torch

        rows = np.stack([self.tokens(offset + s, offset + s + self.seq_len + 1) for s in indices * self.seq_len])
        rows = rows.astype(np.int64)
        rows = torch.from_numpy(rows)
        return rows[:, :-1], rows[:, 1:]

    def _check_batch(self, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if self.train_windows < self.world_size * batch_size:
            raise ValueError(
                f"batch larger than the data: {self.split} has {self.train_windows} windows of "
                f"{self.seq_len}+1 tokens, "
                f"fewer than world_size x batch_size = {self.world_size} x {batch_size}; "
                "lower the batch size or seq_len, or prepare more data"
            )

    def batches_per_epoch(self, batch_size: int) -> int:
        self._check_batch(batch_size)
        return (self.train_windows // self.world_size) // batch_size

    def _permutation(self, epoch: int) -> np.ndarray:
        # One O(train_windows) shuffle per epoch, kept for the steps that follow.
        if self._perm_epoch != epoch:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))
            self._perm = rng.permutation(self.train_windows)
            self._offset = int(rng.integers(self.seq_len)) if epoch > 0 else 0
            self._perm_epoch = epoch
        return self._perm

    def epoch_offset(self, epoch: int) -> int:
        """Where the windows of `epoch` start (0 for epoch 0)."""
        self._permutation(epoch)
        return self._offset

    def batch_indices(self, step: int, batch_size: int) -> np.ndarray:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        per_epoch = self.batches_per_epoch(batch_size)
        epoch, j = divmod(step, per_epoch)
        positions = self.rank + self.world_size * (j * batch_size + np.arange(batch_size))
        return self._permutation(epoch)[positions]

    def batch(self, step: int, batch_size: int):
        """(x, y) int64 tensors of shape (batch_size, seq_len) for this rank at `step`."""
        indices = self.batch_indices(step, batch_size)
        return self._xy(indices, self._offset)

    @property
    def tail_targets(self) -> int:
        """Target tokens that no full window covers: scored by eval_batches' one shorter last window."""
        return max(0, self.total_tokens - 1 - self.num_windows * self.seq_len)

    def eval_plan(self, max_windows: int | None = None) -> dict:
        """What eval_batches(max_windows) scores, summed over all ranks: full windows, the tail window (0 or 1),
        target tokens, and the share of the split's target tokens (total_tokens - 1: the first token is no target)."""
        whole = max_windows is None or max_windows >= self.num_windows + (self.tail_targets > 0)
        n = self.num_windows if whole else min(self.num_windows, max_windows)
        if not whole:
            n -= n % self.world_size
        tail = int(whole and self.tail_targets > 0)
        tokens = n * self.seq_len + tail * self.tail_targets
        targets = max(1, self.total_tokens - 1)
        return dict(windows=n + tail, full_windows=n, tail_window=bool(tail), tokens=tokens, fraction=tokens / targets)

    def sample_windows(self, count: int) -> np.ndarray:
        """`count` full windows spread evenly over the split (at most every window), the same on every rank: a fixed
        sample of a split too large to score whole, such as the training split scored beside validation."""
        if count < 1 or self.num_windows < 1:
            return np.zeros(0, dtype=np.int64)
        count = min(count, self.num_windows)
        return np.unique(np.linspace(0, self.num_windows - 1, count).round().astype(np.int64))

    def sample_batches(self, batch_size: int, count: int):
        """This rank's share (every world_size-th) of sample_windows(count), batch_size windows at a time; the
        sample is truncated to a multiple of world_size so that ranks score equal shares and none scores twice."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        sample = self.sample_windows(count)
        sample = sample[: len(sample) - len(sample) % self.world_size]
        mine = sample[self.rank :: self.world_size]
        for b in range(0, len(mine), batch_size):
            yield self._xy(mine[b : b + batch_size])

    def eval_batches(self, batch_size: int, max_windows: int | None = None):
        """Fixed evaluation windows, this rank's share. max_windows=None (or at least every window): the whole split,
        every target token once: all full windows, rank r taking windows r, r+world, ..., then the shorter tail
        window on the rank whose turn it is (so no rank scores it twice). Otherwise the first max_windows full
        windows, truncated to a multiple of world_size. Every rank yields the same number of batches, give or take
        the tail (a rank with nothing left yields nothing; the totals are summed across ranks)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        plan = self.eval_plan(max_windows)
        n = plan["full_windows"]
        if plan["tokens"] == 0:
            raise ValueError(
                f"{self.split} has {self.num_windows} windows of {self.seq_len}+1 tokens: "
                f"too few for {self.world_size} rank(s)"
            )
        mine = np.arange(self.rank, n, self.world_size)
        for b in range(0, len(mine), batch_size):
            yield self._xy(mine[b : b + batch_size])
        if plan["tail_window"] and n % self.world_size == self.rank:
            import torch

            start = n * self.seq_len
            row = torch.from_numpy(self.tokens(start, self.total_tokens).astype(np.int64))[None]
            yield row[:, :-1], row[:, 1:]


def _shard_datasource(paths: list[str]):
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class TokenShardDatasource(Datasource):
        """One read task per shard; rows are fixed-size token blocks of the shard (zero-copy slices of the mapped
        file)."""

        def estimate_inmemory_data_size(self):
            return int(sum(Path(p).stat().st_size for p in paths))

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            return [
                ReadTask(
                    lambda p=p: _read_shard_rows(p),
                    BlockMetadata(
                        num_rows=None, size_bytes=int(Path(p).stat().st_size), input_files=[p], exec_stats=None
                    ),
                )
                for p in paths
            ]

    return TokenShardDatasource()


def _read_shard_rows(path: str, tokens_per_row: int = 4096, rows_per_block: int = 256):
    """A shard as rows of `tokens_per_row` tokens (the last shorter): column `tokens` (list), plus `start` offset."""
    import pyarrow as pa

    tokens = read_token_shard(path)
    n = len(tokens)
    starts = np.arange(0, n, tokens_per_row, dtype=np.int64)
    for b in range(0, len(starts), rows_per_block):
        block_starts = starts[b : b + rows_per_block]
        lo, hi = int(block_starts[0]), min(n, int(block_starts[-1]) + tokens_per_row)
        offsets = np.append(block_starts - lo, hi - lo).astype(np.int64)
        lists = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(tokens[lo:hi]))
        yield pa.table({"tokens": lists, "start": pa.array(block_starts)})


def ray_dataset(data_dir, split: str):
    """A ray.data.Dataset over a split's shards, in order: rows of up to 4,096 tokens (`tokens`) with their `start`
    offset in the shard."""
    import ray

    manifest = load_manifest(data_dir)
    if split not in manifest["splits"]:
        raise ValueError(f"split must be one of {', '.join(manifest['splits'])}; got {split!r}")
    paths = [str(Path(data_dir).resolve() / s["file"]) for s in manifest["splits"][split]["shards"]]
    if not paths:
        raise ValueError(f"{data_dir} has no {split} shards")
    return ray.data.read_datasource(_shard_datasource(paths), override_num_blocks=len(paths))
