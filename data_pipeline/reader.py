"""Reading prepared shards for training: memory-mapped (input, target) windows sharded by rank, and a Ray Data dataset
for streaming."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .manifest import load_manifest, read_token_shard


class TokenWindows:
    """Windows of seq_len+1 tokens over a split's token stream (all shards concatenated in order), memory-mapped.

    Window i spans tokens [i*seq_len, i*seq_len + seq_len + 1); num_windows = (total_tokens - 1) // seq_len.
    batch(step) is a pure function of (seed, rank, world_size, step): epoch e = step // batches_per_epoch uses the
    permutation of all windows seeded by seed + e, split into world_size disjoint strided parts (rank r takes
    perm[r::world_size], truncated so every rank has the same count), consumed batch_size windows per step.
    The permutation is computed once per epoch and cached, so resuming at any step is O(batch) after that.
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
        self._perm_epoch, self._perm = None, None

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

    def _xy(self, indices: np.ndarray):
        import torch

        rows = np.stack([self.window(int(i)) for i in indices]).astype(np.int64)
        rows = torch.from_numpy(rows)
        return rows[:, :-1], rows[:, 1:]

    def _check_batch(self, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if self.num_windows < self.world_size * batch_size:
            raise ValueError(
                f"batch larger than the data: {self.split} has {self.num_windows} windows of {self.seq_len}+1 tokens, "
                f"fewer than world_size x batch_size = {self.world_size} x {batch_size}; "
                "lower the batch size or seq_len, or prepare more data"
            )

    def batches_per_epoch(self, batch_size: int) -> int:
        self._check_batch(batch_size)
        return (self.num_windows // self.world_size) // batch_size

    def _permutation(self, epoch: int) -> np.ndarray:
        # One O(num_windows) shuffle per epoch, kept for the steps that follow.
        if self._perm_epoch != epoch:
            self._perm = np.random.default_rng(self.seed + epoch).permutation(self.num_windows)
            self._perm_epoch = epoch
        return self._perm

    def batch_indices(self, step: int, batch_size: int) -> np.ndarray:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        per_epoch = self.batches_per_epoch(batch_size)
        epoch, j = divmod(step, per_epoch)
        positions = self.rank + self.world_size * (j * batch_size + np.arange(batch_size))
        return self._permutation(epoch)[positions]

    def batch(self, step: int, batch_size: int):
        """(x, y) int64 tensors of shape (batch_size, seq_len) for this rank at `step`."""
        return self._xy(self.batch_indices(step, batch_size))

    def eval_batches(self, batch_size: int, max_windows: int | None = None):
        """The first max_windows windows (a fixed set), truncated to a multiple of world_size; this rank takes
        windows rank, rank+world, ... so every rank yields the same number of batches (the last may be smaller)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = self.num_windows if max_windows is None else min(self.num_windows, max_windows)
        n -= n % self.world_size
        if n == 0:
            raise ValueError(
                f"{self.split} has {self.num_windows} windows of {self.seq_len}+1 tokens: "
                f"too few for {self.world_size} rank(s)"
            )
        mine = np.arange(self.rank, n, self.world_size)
        for b in range(0, len(mine), batch_size):
            yield self._xy(mine[b : b + batch_size])


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
