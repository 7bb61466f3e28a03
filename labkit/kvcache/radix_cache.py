"""SGLang-style RadixAttention: a radix tree over token ids, token-granular reuse.

The tree stores every cached token sequence by its token ids. Each edge (node) holds a run
of tokens plus the KV slots holding their keys and values; children are keyed by their first
token, so walking a prompt down the tree finds the longest cached prefix in one pass. With
SGLang's default page size of 1 a hit can end at *any* token — where vLLM's block hashes
only ever reuse whole blocks.

Node split: when a prompt matches only the first n tokens of a node, the node is split in
two (first n tokens | the rest), so "the prefix this request uses" is always a whole path
from the root to one node. That path is what gets locked.

lock_ref: a running request increments lock_ref on every node of its matched path; a node
with lock_ref > 0 is never evicted. (The root is never evicted.)

Eviction (LRU over leaves): only leaves can go — an inner node is a prefix of its children
and they would lose their meaning without it. Evict pops the unlocked leaf with the oldest
last access time, frees its slots, and if that leaves its parent childless and unlocked the
parent becomes a candidate (the cascade). Access times come from a counter, not a wall
clock, so runs repeat. A lookup stamps only the nodes it matched: when it splits a node, the
unmatched rest keeps its old time. (SGLang stamps the node before splitting it, so an answer
nobody reused looks as fresh as the system prompt in front of it and outlives older, useful
entries; under tight memory that alone put this cache behind vLLM's block hashes.)

Two eviction granularities (`evict=`):
  "leaf"  whole leaves go, as in SGLang, even when fewer tokens were asked for. Asked for 16
          slots, a 64-token leaf frees all 64 - and the next request for that prefix misses.
  "tail"  only as many tokens as asked for go, cut from the end of the oldest leaf (a prefix
          of a prefix is still a prefix, so the rest stays matchable). This is the radix
          version of what vLLM's free queue does block by block, at token granularity.
"""

from __future__ import annotations

import heapq
import itertools

from labkit.kvcache.block_pool import BlockPool, OutOfBlocks
from labkit.kvcache.prefix_cache import PrefixCache, PrefixMatch


class TreeNode:
    __slots__ = ("children", "ckey", "id", "key", "last_access", "lock_ref", "parent", "slots")
    _ids = itertools.count()

    def __init__(self, key=(), slots=(), parent=None, lock_ref=0, last_access=0):
        self.key: list[int] = list(key)  # the run of token ids on this edge
        self.slots: list[int] = list(slots)  # KV slot of each of those tokens
        self.children: dict = {}  # child key (first token, maybe with extra_key) -> TreeNode
        self.parent: TreeNode | None = parent
        self.lock_ref = lock_ref
        self.last_access = last_access
        self.id = next(TreeNode._ids)  # tie-breaker so eviction order is deterministic
        self.ckey = None  # this node's key in parent.children

    def __repr__(self):
        return f"TreeNode(len={len(self.key)}, key={self.key[:6]}..., lock_ref={self.lock_ref})"


def common_prefix_len(key: list[int], tokens: list[int], start: int) -> int:
    """How many tokens of `key` equal tokens[start:], counted from the front."""
    n = min(len(key), len(tokens) - start)
    if key[:n] == tokens[start : start + n]:  # fast path: whole overlap matches
        return n
    i = 0
    while i < n and key[i] == tokens[start + i]:
        i += 1
    return i


class RadixPrefixCache(PrefixCache):
    """Radix-tree prefix cache over a pool of capacity_tokens single-token slots."""

    name = "radix"

    EVICT_MODES = ("leaf", "tail")

    def __init__(self, capacity_tokens: int, evict: str = "leaf"):
        super().__init__()
        if evict not in self.EVICT_MODES:
            raise ValueError(f"evict must be one of {self.EVICT_MODES}, not {evict!r}")
        self.evict_mode = evict
        # Page size 1: every slot is a one-token "block", so the paged attention op can read
        # a radix hit that ends mid-way through what would have been a 16-token block.
        self.pool = BlockPool(capacity_tokens, block_size=1)
        self.root = TreeNode()
        self.root.lock_ref = 1  # as in SGLang: the root is never evictable
        self._clock = 0
        self._total = 0  # tokens in the tree
        self._evictable = 0  # tokens in nodes with lock_ref == 0

    @staticmethod
    def _child_key(token: int, extra_key):
        # Different extra keys (LoRA id, cache salt) never share nodes (SGLang's RadixKey).
        return token if extra_key is None else (extra_key, token)

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    # -- lookup ----------------------------------------------------------------------------------
    def match(self, tokens, extra_key=None, record=True) -> PrefixMatch:
        tokens, now = list(tokens), self._tick()
        node, pos, slots = self.root, 0, []
        while pos < len(tokens):
            child = node.children.get(self._child_key(tokens[pos], extra_key))
            if child is None:
                break
            n = common_prefix_len(child.key, tokens, pos)
            if n < len(child.key):  # the match ends inside this node: split it there
                child = self._split(child, n, extra_key)
            # Only the matched part counts as used: after a split the remainder keeps its old
            # access time, so an unshared tail does not outlive the prefixes that are reused.
            child.last_access = now
            slots += child.slots
            node, pos = child, pos + n  # after a split the next lookup misses and we stop
        if record:
            self.stats.queries += len(tokens)
            self.stats.hits += pos
        return PrefixMatch(pos, slots, handle=node, extra_key=extra_key)

    def _split(self, child: TreeNode, n: int, extra_key) -> TreeNode:
        """Turn parent -> child into parent -> head (child's first n tokens) -> child (the rest)."""
        head = TreeNode(
            child.key[:n], child.slots[:n], child.parent, child.lock_ref, child.last_access
        )
        # The head inherits lock_ref: every request that locked `child` also locked this prefix.
        head.ckey = child.ckey
        head.parent.children[head.ckey] = head
        child.key, child.slots = child.key[n:], child.slots[n:]
        child.parent = head
        child.ckey = self._child_key(child.key[0], extra_key)
        head.children[child.ckey] = child
        return head

    # -- locking --------------------------------------------------------------------------------
    def lock(self, m: PrefixMatch) -> None:
        node = m.handle or self.root
        while node is not self.root:
            if node.lock_ref == 0:
                self._evictable -= len(node.key)
            node.lock_ref += 1
            node = node.parent

    def unlock(self, m: PrefixMatch) -> None:
        node = m.handle or self.root
        while node is not self.root:
            if node.lock_ref <= 0:
                raise ValueError("unlock without a matching lock (lock_ref would go negative)")
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self._evictable += len(node.key)
            node = node.parent

    # -- storage ---------------------------------------------------------------------------------
    def allocate(self, num_tokens: int) -> list[int]:
        short = num_tokens - self.pool.num_free_blocks
        if short > self._evictable:
            # Check before evicting: a request that cannot fit even with every unlocked entry
            # gone must not flush the cache on its way to waiting. (SGLang's scheduler admits
            # only when available + evictable tokens cover the request; vLLM's free queue
            # fails the same way, before touching a cached block.)
            raise OutOfBlocks(num_tokens, self.pool.num_free_blocks + self._evictable)
        if short > 0:
            self.evict(short)  # SGLang: tree_cache.evict(num_tokens) before alloc
        return self.pool.allocate(num_tokens)

    def release(self, m: PrefixMatch, new_block_ids, tokens) -> int:
        tokens, new = list(tokens), list(new_block_ids)
        slots = list(m.block_ids) + new
        if len(tokens) > len(slots):
            raise ValueError(f"{len(tokens)} tokens but KV slots for only {len(slots)}")
        already = self._insert(tokens, slots[: len(tokens)], m.extra_key) if tokens else 0
        if tokens and already < m.hit_len:
            raise ValueError("tokens do not start with the matched prefix")
        # Slots we computed for tokens the tree already had (another request cached them
        # meanwhile) are duplicates, and slots past len(tokens) were never filled: free both.
        # The rest now belong to the tree.
        start_owned = max(already, m.hit_len) - m.hit_len
        self.pool.free(new[:start_owned] + new[len(tokens) - m.hit_len if tokens else 0 :])
        self.unlock(m)
        return len(tokens) - already if tokens else 0

    def _insert(self, tokens: list[int], slots: list[int], extra_key) -> int:
        """Add tokens (KV in slots) to the tree; returns how many were already there."""
        now = self._tick()
        node, pos = self.root, 0
        while pos < len(tokens):
            child = node.children.get(self._child_key(tokens[pos], extra_key))
            if child is None:
                break
            n = common_prefix_len(child.key, tokens, pos)
            if n < len(child.key):
                child = self._split(child, n, extra_key)
            child.last_access = now  # the matched part only, as in match()
            node, pos = child, pos + n
        if pos < len(tokens):
            leaf = TreeNode(tokens[pos:], slots[pos:], node, 0, now)
            leaf.ckey = self._child_key(tokens[pos], extra_key)
            node.children[leaf.ckey] = leaf
            self._total += len(leaf.key)
            self._evictable += len(leaf.key)
        return pos

    def evict(self, num_tokens: int) -> int:
        leaves = [
            (x.last_access, x.id, x) for x in self._nodes() if not x.children and x.lock_ref == 0
        ]
        heapq.heapify(leaves)
        evicted = 0
        while evicted < num_tokens and leaves:
            _, _, x = heapq.heappop(leaves)
            need = num_tokens - evicted
            if self.evict_mode == "tail" and need < len(x.key):
                # Cut the leaf's last `need` tokens; its head stays cached (and stays a leaf).
                self.pool.free(x.slots[-need:])
                del x.key[-need:], x.slots[-need:]
                self._total -= need
                self._evictable -= need
                evicted += need
                break
            self.pool.free(x.slots)
            evicted += len(x.key)
            parent = x.parent
            del parent.children[x.ckey]
            self._total -= len(x.key)
            self._evictable -= len(x.key)
            if parent is not self.root and not parent.children and parent.lock_ref == 0:
                heapq.heappush(leaves, (parent.last_access, parent.id, parent))  # the cascade
        self.stats.evicted_tokens += evicted
        return evicted

    def _nodes(self):
        stack = list(self.root.children.values())
        while stack:
            x = stack.pop()
            yield x
            stack.extend(x.children.values())

    # -- sizes ------------------------------------------------------------------------------------
    @property
    def cached_tokens(self) -> int:
        return self._total

    @property
    def evictable_tokens(self) -> int:
        return self._evictable

    def check_invariants(self) -> None:
        """Sizes add up, lock refs are non-negative, and the pool agrees (used by the tests)."""
        nodes = list(self._nodes())
        assert sum(len(x.key) for x in nodes) == self._total
        assert sum(len(x.key) for x in nodes if x.lock_ref == 0) == self._evictable
        for x in nodes:
            assert x.lock_ref >= 0 and len(x.key) == len(x.slots) > 0
            assert x.parent.children[x.ckey] is x
            assert x.lock_ref >= max((c.lock_ref for c in x.children.values()), default=0)
            assert all(self.pool.ref_cnt[s] == 1 for s in x.slots)
        self.pool.check_invariants()
