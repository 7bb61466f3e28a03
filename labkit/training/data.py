"""Each rank's own slice of the training data, in an order that can be saved and resumed.

    stream = load_token_stream(model_dir)            # the corpus as token ids (cached .npy)
    train, val = train_val_split(stream)
    batches = ShardedBatches(train, rank, world_size, batch_size, seq_len, seed)
    x, y = batches.next()                            # int64 [batch, seq_len] each
    state = batches.state_dict()                     # {"epoch": 0, "cursor": 12, ...}

How the data is split (the same idea as torch's DistributedSampler, written out):
- the training stream is cut into `world_size` contiguous shards; rank r only ever reads
  shard r, so ranks never see the same tokens in one epoch;
- a shard is cut into non-overlapping windows of seq_len + 1 tokens (x = first seq_len,
  y = last seq_len: the next token of every position);
- each epoch visits the windows in a permutation drawn from a generator seeded with
  (seed, rank, epoch). The permutation is a pure function of those three numbers, so the
  whole "data position" is two integers: the epoch and how far into it we are (`cursor`).
  Saving them in the checkpoint and restoring them replays exactly the batches an
  uninterrupted run would have drawn - the fault drill depends on it.

The corpus is tokenized once and kept as a .npy next to the model cache, because every
rank of every (re)start would otherwise spend ~8 s re-tokenizing 4 MB of text.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from labkit.errors import UserError
from labkit.models import cache, corpus


def load_token_stream(model_dir: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Tokenize the model's training corpus once; return the path of the cached .npy.

    The cache key is the tokenizer's bytes plus the corpus size the model was built with
    (from its labkit_build.json), so a different tokenizer never reuses stale ids.
    """
    model_dir = Path(model_dir)
    tok_file = model_dir / "tokenizer.json"
    if not tok_file.is_file():
        raise UserError(f"{model_dir} has no tokenizer.json; pass a directory built by "
                        "`labkit model build` (or build_tiny_llama())")
    record = cache.read_marker(model_dir) or {}
    max_bytes = record.get("config", {}).get("corpus_max_bytes", corpus.DEFAULT_MAX_BYTES)
    h = hashlib.sha256(tok_file.read_bytes())
    h.update(json.dumps({"max_bytes": max_bytes, "v": corpus.CORPUS_VERSION}).encode())
    root = Path(cache_dir) if cache_dir is not None else cache.cache_root() / "tokens"
    path = root / f"corpus-{h.hexdigest()[:12]}.npy"
    if not path.is_file():
        ids = corpus.encode_corpus(corpus.load_corpus(max_bytes), model_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:  # temp + rename: a rank never memory-maps half a file
            np.save(f, ids)
        os.replace(tmp, path)
    return path


def train_val_split(ids: np.ndarray, val_fraction: float = 0.1):
    """Same cut as labkit.models.corpus: the tail of the stream is validation."""
    return corpus.train_val_split(ids, val_fraction)


class ShardedBatches:
    """Deterministic, resumable batches from this rank's shard of the token stream."""

    def __init__(self, ids: np.ndarray, rank: int, world_size: int, batch_size: int,
                 seq_len: int, seed: int):
        shard_len = len(ids) // world_size
        self.shard = ids[rank * shard_len:(rank + 1) * shard_len]
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.batch_size, self.seq_len = batch_size, seq_len
        # windows of seq_len + 1 tokens that do not overlap: x and y come from the same window
        self.n_windows = (len(self.shard) - 1) // seq_len
        if self.n_windows < batch_size:
            raise UserError(
                f"rank {rank}'s shard holds {len(self.shard)} tokens = {self.n_windows} "
                f"windows of {seq_len}, fewer than --batch-size {batch_size}; use fewer ranks, "
                "a shorter --seq-len or a smaller --batch-size")
        self.epoch, self.cursor = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        # Seeded by (seed, rank, epoch): no generator state to save, only epoch and cursor.
        return np.random.default_rng([self.seed, self.rank, epoch]).permutation(self.n_windows)

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        """The next batch; when fewer than batch_size windows are left, a new epoch starts
        (the leftover windows are skipped, as DataLoader(drop_last=True) does)."""
        if self.cursor + self.batch_size > self.n_windows:
            self.epoch, self.cursor = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        idx = self._order[self.cursor:self.cursor + self.batch_size]
        self.cursor += self.batch_size
        starts = idx * self.seq_len
        win = np.stack([self.shard[s:s + self.seq_len + 1] for s in starts]).astype(np.int64)
        return win[:, :-1], win[:, 1:]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "rank": self.rank,
                "world_size": self.world_size, "seed": self.seed,
                "batch_size": self.batch_size, "seq_len": self.seq_len}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        for key in ("rank", "world_size", "seed", "batch_size", "seq_len"):
            if state[key] != mine[key]:
                raise UserError(
                    f"checkpoint data position was saved with {key}={state[key]}, this run has "
                    f"{key}={mine[key]}; resume with the same settings or use a new --ckpt-dir")
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self._order = self._permutation(self.epoch)


def val_windows(val_ids: np.ndarray, seq_len: int, n_windows: int, rank: int,
                world_size: int) -> tuple[np.ndarray, np.ndarray]:
    """This rank's share of a fixed validation set: the first n_windows windows of the
    validation stream, dealt round-robin to ranks (all_reduce then sums the losses)."""
    n = min(n_windows, (len(val_ids) - 1) // seq_len)
    mine = np.arange(n)[rank::world_size]
    if len(mine) == 0:
        empty = np.zeros((0, seq_len), dtype=np.int64)
        return empty, empty
    win = np.stack([val_ids[i * seq_len:i * seq_len + seq_len + 1] for i in mine])
    win = win.astype(np.int64)
    return win[:, :-1], win[:, 1:]
