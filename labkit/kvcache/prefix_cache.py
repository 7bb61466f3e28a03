"""One interface for prefix caches, so the engine and the simulator can swap them.

A prefix cache keeps the KV of tokens that finished requests computed, so a new request whose
prompt starts with the same tokens skips recomputing them (a "hit"). Two designs implement it:
- HashPrefixCache (hash_cache.py): vLLM v1's automatic prefix caching — full blocks found by
  chained block hashes, LRU through the free block queue.
- RadixPrefixCache (radix_cache.py): SGLang's RadixAttention — a radix tree over token ids,
  token-granular hits, lock refs, LRU eviction of unlocked leaves.
NoPrefixCache below is the baseline: same memory accounting, never a hit.

Both caches own the KV *storage* (a BlockPool), because a cached entry is simply KV that
nobody is using right now but that we have not overwritten yet. A request's life:

    m = cache.match_prompt(prompt)          # longest cached prefix (hit = m.hit_len tokens)
    cache.lock(m)                           # running requests' prefixes must not be evicted
    new = cache.allocate(n)                 # room for the n tokens it will compute (may evict)
    ... prefill + decode, writing KV into m.block_ids + new ...
    cache.release(m, new, prompt + output[:-1])   # make that KV reusable, unlock the prefix

(The last output token's KV is never computed: it was sampled, not fed back.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from labkit.kvcache.block_pool import BlockPool, blocks_for


@dataclass
class PrefixMatch:
    """Result of a lookup: the first hit_len tokens are cached in `block_ids`."""

    hit_len: int
    block_ids: list[int] = field(default_factory=list)  # hash: blocks; radix: token slots
    handle: Any = None  # what lock/unlock need (radix: the tree node where the match ended)
    extra_key: Any = None


@dataclass
class CacheStats:
    """Counters with vLLM's meaning: queries and hits count *tokens*."""

    queries: int = 0  # tokens looked up (a prompt counts all its tokens)
    hits: int = 0  # tokens found in the cache
    evicted_tokens: int = 0  # cached tokens thrown away to make room

    @property
    def hit_rate(self) -> float:
        return self.hits / self.queries if self.queries else 0.0


class PrefixCache(ABC):
    """Common interface. Capacity is counted in tokens (block-aligned for the hash cache)."""

    name = "base"
    pool: BlockPool

    def __init__(self):
        self.stats = CacheStats()

    # -- what every cache implements ---------------------------------------------------------
    @abstractmethod
    def match(self, tokens: Sequence[int], extra_key=None, record: bool = True) -> PrefixMatch:
        """Longest cached prefix of `tokens`. Lock it before allocating anything else."""

    @abstractmethod
    def lock(self, m: PrefixMatch) -> None:
        """Protect the matched prefix from eviction while a request uses it."""

    @abstractmethod
    def unlock(self, m: PrefixMatch) -> None:
        """Undo one lock(m)."""

    @abstractmethod
    def allocate(self, num_tokens: int) -> list[int]:
        """Storage for num_tokens new tokens, evicting unlocked cached entries if needed.
        Raises OutOfBlocks (block_pool.py) when even eviction cannot make room."""

    @abstractmethod
    def release(self, m: PrefixMatch, new_block_ids: list[int], tokens: Sequence[int]) -> int:
        """The request is done: `tokens` (whose KV sits in m.block_ids + new_block_ids) become
        cached, the new blocks pass to the cache, and m is unlocked. Returns tokens newly cached.
        Pass tokens=[] to give the blocks back without caching anything."""

    @abstractmethod
    def evict(self, num_tokens: int) -> int:
        """Throw away at least num_tokens unlocked cached tokens if possible; returns how many."""

    @property
    @abstractmethod
    def cached_tokens(self) -> int:
        """Tokens currently findable by match()."""

    @property
    @abstractmethod
    def evictable_tokens(self) -> int:
        """Cached tokens no running request has locked."""

    # -- shared helpers -----------------------------------------------------------------------
    @property
    def block_size(self) -> int:
        return self.pool.block_size

    @property
    def capacity_tokens(self) -> int:
        return self.pool.num_blocks * self.pool.block_size

    @property
    def free_tokens(self) -> int:
        """Token slots allocate() can hand out without evicting anything."""
        return self.pool.num_free_blocks * self.pool.block_size - self._free_cached_tokens()

    def _free_cached_tokens(self) -> int:
        return 0  # the hash cache keeps cached blocks inside the free queue

    def match_prompt(
        self, prompt: Sequence[int], extra_key=None, record: bool = True
    ) -> PrefixMatch:
        """The engine's lookup. The last prompt token is always recomputed — the model must run
        on it to produce the first output token's logits — so only prompt[:-1] can hit (vLLM:
        max_cache_hit_length = num_tokens - 1; SGLang: max_prefix_len = input_len - 1).
        The query counts the whole prompt, as vLLM's prefix_cache_queries does."""
        m = self.match(list(prompt)[:-1], extra_key=extra_key, record=False)
        if record:
            self.stats.queries += len(prompt)
            self.stats.hits += m.hit_len
        return m

    def insert(self, tokens: Sequence[int], extra_key=None) -> int:
        """Cache `tokens` outright (tests, notebooks): match, lock, allocate, release.
        Returns tokens newly cached; raises OutOfBlocks if they cannot fit."""
        tokens = list(tokens)[: self.cacheable_len(len(tokens))]
        m = self.match(tokens, extra_key=extra_key, record=False)
        self.lock(m)
        try:
            new = self.allocate(len(tokens) - m.hit_len)
        except Exception:
            self.unlock(m)
            raise
        return self.release(m, new, tokens)

    def cacheable_len(self, num_tokens: int) -> int:
        """How many of num_tokens tokens this cache can hold (the hash cache: full blocks only)."""
        return num_tokens

    def blocks_needed(self, m: PrefixMatch, total_tokens: int) -> int:
        """Blocks allocate() will take for a request with total_tokens tokens of KV."""
        return blocks_for(total_tokens, self.block_size) - blocks_for(m.hit_len, self.block_size)


class NoPrefixCache(PrefixCache):
    """Prefix caching off: paged allocation only, every lookup misses."""

    name = "none"

    def __init__(self, capacity_tokens: int, block_size: int = 16):
        super().__init__()
        self.pool = BlockPool(max(1, capacity_tokens // block_size), block_size)

    def match(self, tokens, extra_key=None, record=True) -> PrefixMatch:
        if record:
            self.stats.queries += len(tokens)
        return PrefixMatch(0, extra_key=extra_key)

    def lock(self, m):
        pass

    def unlock(self, m):
        pass

    def allocate(self, num_tokens):
        return self.pool.allocate(blocks_for(num_tokens, self.block_size))

    def release(self, m, new_block_ids, tokens):
        self.pool.free(reversed(new_block_ids))
        return 0

    def evict(self, num_tokens):
        return 0

    @property
    def cached_tokens(self):
        return 0

    @property
    def evictable_tokens(self):
        return 0
