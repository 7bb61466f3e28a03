"""Behaviour that distinguishes the vLLM-style hash cache from the SGLang-style radix cache."""

import pytest

from labkit.kvcache.block_pool import OutOfBlocks
from labkit.kvcache.hash_cache import HashPrefixCache, block_hashes
from labkit.kvcache.prefix_cache import NoPrefixCache
from labkit.kvcache.radix_cache import RadixPrefixCache


def test_block_hashes_chain_the_whole_prefix_and_skip_partial_blocks():
    a = block_hashes([1, 2, 3, 4, 5, 6, 7, 8, 9], 4)
    b = block_hashes([0, 2, 3, 4, 5, 6, 7, 8], 4)
    assert len(a) == 2 and len(b) == 2  # the 9th token is a partial block: no hash
    assert a[1] != b[1]  # same second block, different first block -> different hash
    assert block_hashes([1, 2, 3, 4], 4, extra_key="lora-1") != block_hashes([1, 2, 3, 4], 4)


def test_hash_hits_are_whole_blocks_radix_hits_are_tokens():
    seq = list(range(40))
    query = seq[:37] + [999]
    h, r = HashPrefixCache(256, 16), RadixPrefixCache(256)
    h.insert(seq)
    r.insert(seq)
    assert h.match(query).hit_len == 32  # floor(37 / 16) * 16
    assert r.match(query).hit_len == 37


def test_last_prompt_token_is_always_recomputed_and_queries_count_the_whole_prompt():
    prompt = list(range(32))
    for cache in (HashPrefixCache(256, 16), RadixPrefixCache(256)):
        cache.insert(prompt)
        m = cache.match_prompt(prompt)
        # radix: 31 tokens; hash: the 31 lookable tokens hold one full block
        assert m.hit_len == (31 if cache.name == "radix" else 16)
        assert (cache.stats.queries, cache.stats.hits) == (32, m.hit_len)


def test_extra_keys_separate_namespaces():
    for cache in (HashPrefixCache(256, 4), RadixPrefixCache(256)):
        cache.insert(list(range(12)), extra_key="lora-a")
        assert cache.match(list(range(12))).hit_len == 0
        assert cache.match(list(range(12)), extra_key="lora-b").hit_len == 0
        assert cache.match(list(range(12)), extra_key="lora-a").hit_len == 12


def test_hash_eviction_is_lru_and_takes_a_prefix_deepest_block_first():
    cache = HashPrefixCache(capacity_tokens=16, block_size=4)  # 4 blocks
    a, b = [1] * 8, [2] * 8
    cache.insert(a)
    cache.insert(b)  # pool full: a's 2 blocks, then b's 2 blocks in the free queue
    assert cache.match(a + [0]).hit_len == 8
    cache.insert([3] * 4)  # needs 1 block: evicts a's *second* block (freed first)
    assert cache.match(a + [0]).hit_len == 4
    assert cache.match(b + [0]).hit_len == 8
    assert cache.stats.evicted_tokens == 4


def test_hash_hit_moves_blocks_to_the_back_of_the_eviction_queue():
    cache = HashPrefixCache(16, 4)
    a, b = [1] * 8, [2] * 8
    cache.insert(a)
    cache.insert(b)
    m = cache.match(a)
    cache.lock(m)
    cache.unlock(m)  # a was used again: it is now the most recently freed
    cache.insert([3] * 8)
    assert cache.match(a).hit_len == 8 and cache.match(b).hit_len == 0


def test_radix_match_splits_node_and_lock_protects_only_the_matched_path():
    cache = RadixPrefixCache(64)
    cache.insert([1, 2, 3, 4, 5, 6])
    m = cache.match([1, 2, 3, 9])
    assert m.hit_len == 3 and m.handle.key == [1, 2, 3]  # split at the match boundary
    assert [c.key for c in m.handle.children.values()] == [[4, 5, 6]]
    cache.lock(m)
    assert cache.evictable_tokens == 3
    assert cache.evict(100) == 3  # only the unlocked tail [4, 5, 6]
    assert cache.match([1, 2, 3, 4]).hit_len == 3
    cache.unlock(m)
    assert cache.evict(100) == 3 and cache.cached_tokens == 0
    cache.check_invariants()
    with pytest.raises(ValueError, match="negative"):
        cache.unlock(m)


def test_radix_split_inside_a_locked_node_keeps_both_halves_locked():
    cache = RadixPrefixCache(64)
    cache.insert([1, 2, 3, 4, 5, 6])
    m = cache.match([1, 2, 3, 4, 5, 6])
    cache.lock(m)
    cache.insert([1, 2, 9, 9])  # diverges inside the locked node: it splits at [1, 2]
    cache.check_invariants()
    assert cache.evictable_tokens == 2  # only the new [9, 9] leaf
    cache.evict(100)
    assert cache.match([1, 2, 3, 4, 5, 6]).hit_len == 6
    cache.unlock(m)  # walks up through the new split node too
    cache.check_invariants()
    assert cache.evictable_tokens == 6


def test_radix_eviction_is_lru_over_leaves_and_cascades_to_parents():
    cache = RadixPrefixCache(100)
    cache.insert([1, 1, 1, 2, 2])
    cache.insert([1, 1, 1, 3, 3])  # splits: shared [1,1,1] -> leaves [2,2] and [3,3]
    cache.insert([7, 7])
    cache.match([1, 1, 1, 3, 3])  # [3,3] and the shared node are now the most recent
    assert cache.evict(1) == 2  # the oldest leaf, [2, 2], goes whole
    assert cache.match([1, 1, 1, 2]).hit_len == 3
    assert cache.match([7, 7]).hit_len == 2  # now [7,7] is recent and [3,3] the oldest leaf
    assert cache.evict(1) == 2
    assert cache.match([1, 1, 1, 3, 3]).hit_len == 3 and cache.match([7, 7]).hit_len == 2
    # [1,1,1] became a leaf when its last child went; older than [7,7], so it goes first
    cache.match([7, 7])
    assert cache.evict(3) == 3 and cache.match([1, 1, 1]).hit_len == 0
    assert cache.cached_tokens == 2
    cache.check_invariants()


@pytest.mark.parametrize("evict", ["leaf", "tail"])
def test_a_split_leaves_the_unmatched_rest_with_its_old_access_time(evict):
    """A hit on [system prompt] splits [system prompt + first answer]; only the prompt was
    used. The answer keeps its old time, so it is evicted before a newer entry. (Stamping
    the node before splitting made the never-reused answer look as fresh as the prompt:
    the radix cache then kept dead tails and fell behind the hash cache at 5 % memory.)"""
    cache = RadixPrefixCache(100, evict=evict)
    prompt, answer, other = [1] * 40, [2] * 20, [3] * 20
    cache.insert(prompt + answer)  # t1: one node
    cache.insert(other)  # t2
    assert cache.match(prompt + [4]).hit_len == 40  # t3: split into prompt | answer
    assert cache.evict(20) == 20
    assert cache.match(other).hit_len == 20  # the newer entry stayed ...
    assert cache.match(prompt + answer).hit_len == 40  # ... the old answer went
    cache.check_invariants()


def test_radix_evicts_whole_leaves_like_sglang_even_when_fewer_tokens_are_asked():
    cache = RadixPrefixCache(100)
    cache.insert(list(range(50)))
    assert cache.evict(1) == 50 and cache.cached_tokens == 0


def test_whole_leaf_eviction_can_lose_to_block_lru_under_memory_pressure():
    """Why 'radix >= hash' is not an invariant at every capacity: the hash cache drops one
    16-token block of an old prefix; the radix cache drops the whole leaf holding it."""
    old = list(range(100, 164))  # 64 tokens, 4 blocks
    results = {}
    for cache in (HashPrefixCache(64, 16), RadixPrefixCache(64)):  # room for 64 tokens
        cache.insert(old)
        cache.insert([7] * 16)  # needs room: one block / one leaf must go
        results[cache.name] = cache.match(old).hit_len
    assert results == {"hash": 48, "radix": 0}


def test_tail_eviction_frees_only_what_is_asked_and_keeps_the_head_matchable():
    cache = RadixPrefixCache(100, evict="tail")
    cache.insert(list(range(50)))
    assert cache.evict(1) == 1 and cache.cached_tokens == 49
    assert cache.match(list(range(50))).hit_len == 49
    assert cache.pool.num_free_blocks == 100 - 49
    cache.check_invariants()
    # more than one leaf holds: the oldest goes first, the next one is only trimmed
    cache.insert([7] * 30)
    assert cache.evict(60) == 60
    assert cache.cached_tokens == 19 and cache.match([7] * 30).hit_len == 19
    assert cache.match(list(range(50))).hit_len == 0
    cache.check_invariants()


def test_tail_eviction_removes_the_block_lru_advantage_in_the_counterexample():
    old = list(range(100, 164))
    for cache in (HashPrefixCache(64, 16), RadixPrefixCache(64, evict="tail")):
        cache.insert(old)
        cache.insert([7] * 16)
        assert cache.match(old).hit_len == 48, cache.name


def test_tail_eviction_never_trims_a_locked_leaf():
    cache = RadixPrefixCache(40, evict="tail")
    cache.insert(list(range(20)))
    cache.insert([9] * 20)
    m = cache.match(list(range(20)))  # the older leaf is now the newest *and* locked
    cache.lock(m)
    assert cache.evict(25) == 20  # only the unlocked leaf can go
    assert cache.match(list(range(20))).hit_len == 20
    cache.check_invariants()


@pytest.mark.parametrize("evict", ["leaf", "tail"])
def test_an_allocation_that_cannot_fit_fails_without_evicting_anything(evict):
    """Found by the lab-21 sweep: a request too big for the pool used to flush the whole
    cache (evict, then fail) while it waited, where the hash cache fails untouched."""
    for cache in (HashPrefixCache(64, 16), RadixPrefixCache(64, evict=evict)):
        cache.insert(list(range(32)))
        locked = cache.match(list(range(100, 116)))  # nothing: lock an empty match
        cache.lock(locked)
        with pytest.raises(OutOfBlocks):
            cache.allocate(65)  # more than the pool holds even with every entry evicted
        assert cache.match(list(range(32))).hit_len == 32, cache.name
        assert cache.stats.evicted_tokens == 0


def test_unknown_eviction_mode_is_refused():
    with pytest.raises(ValueError, match="leaf"):
        RadixPrefixCache(10, evict="lru")


def test_release_hands_duplicate_slots_back_and_keeps_the_pool_consistent():
    cache = RadixPrefixCache(64)
    tokens = list(range(10))
    m1, m2 = cache.match(tokens), cache.match(tokens)  # two concurrent requests, both miss
    for m in (m1, m2):
        cache.lock(m)
    n1, n2 = cache.allocate(10), cache.allocate(10)
    assert cache.release(m1, n1, tokens) == 10
    assert cache.release(m2, n2, tokens) == 0  # already cached by the first: slots freed
    assert cache.pool.num_free_blocks == 64 - 10
    cache.check_invariants()


def test_allocate_evicts_unlocked_entries_and_raises_when_everything_is_locked():
    for cache in (HashPrefixCache(32, 4), RadixPrefixCache(32)):
        cache.insert(list(range(32)))
        m = cache.match(list(range(16)))
        cache.lock(m)
        assert len(cache.allocate(16)) == (
            16 if cache.name == "radix" else 4
        )  # evicts the other half
        with pytest.raises(OutOfBlocks):
            cache.allocate(4)
        assert cache.match(list(range(16))).hit_len == 16  # the locked part survived


def test_no_cache_never_hits_but_still_allocates_blocks():
    cache = NoPrefixCache(64, 16)
    cache.insert(list(range(40)))
    assert cache.match(list(range(40))).hit_len == 0
    assert cache.pool.num_free_blocks == 4
    blocks = cache.allocate(33)
    assert len(blocks) == 3


def test_free_tokens_excludes_cached_entries_and_evictable_counts_them():
    for cache in (HashPrefixCache(64, 4), RadixPrefixCache(64)):
        cache.insert(list(range(32)))
        assert cache.cached_tokens == cache.evictable_tokens == 32
        assert cache.free_tokens == 32  # allocating more than this evicts
        m = cache.match(list(range(20)))
        cache.lock(m)
        assert cache.evictable_tokens == 32 - m.hit_len and cache.free_tokens == 32
        cache.allocate(40)  # 8 tokens more than free: eviction of unlocked entries
        # hash drops exactly 2 blocks; radix drops the whole unlocked leaf [20..31] (12 tokens)
        assert cache.cached_tokens == {"hash": 24, "radix": 20}[cache.name]
        assert cache.free_tokens == {"hash": 0, "radix": 4}[cache.name]
        assert cache.match(list(range(20))).hit_len == 20
