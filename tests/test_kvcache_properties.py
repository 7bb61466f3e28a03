"""Property tests (hypothesis) for the block pool and both prefix caches.

Invariants: ref counts never go negative and always equal the number of owners; locked
entries are never evicted; every hit is a true prefix of an earlier inserted sequence; no hit
exceeds the optimum (longest common prefix with any earlier sequence; for the hash cache
rounded down to whole blocks); the radix cache reaches the optimum when nothing is evicted,
so it never hits less than the hash cache there.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labkit.kvcache.block_pool import BlockPool, OutOfBlocks
from labkit.kvcache.hash_cache import HashPrefixCache
from labkit.kvcache.radix_cache import RadixPrefixCache
from labkit.kvcache.simulate import output_tokens, simulate, unlimited_capacity
from labkit.kvcache.trace_file import TraceRequest
from labkit.kvcache.traces import generate

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A 3-letter alphabet makes random sequences share prefixes often; sequences glued from a
# few 5-token chunks (two of which start alike) share long prefixes and diverge mid-chunk,
# which is what splits locked radix nodes and exercises block-boundary rounding.
_random = st.lists(st.integers(0, 2), min_size=1, max_size=30)
_chunky = st.tuples(
    st.lists(
        st.sampled_from([(0, 0, 0, 0, 1), (0, 0, 0, 2, 2), (1, 1, 1, 1, 1)]), min_size=1, max_size=6
    ),
    st.lists(st.integers(0, 2), max_size=4),
).map(lambda ct: [t for chunk in ct[0] for t in chunk] + ct[1])
sequences = st.one_of(_random, _chunky)


def lcp(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def optimum(query, inserted) -> int:
    return max((lcp(query, s) for s in inserted), default=0)


# -- block pool ---------------------------------------------------------------------------------
pool_ops = st.lists(
    st.tuples(
        st.sampled_from(["new", "append", "fork", "free"]), st.integers(0, 7), st.integers(0, 9)
    ),
    max_size=40,
)


@SETTINGS
@given(num_blocks=st.integers(1, 12), block_size=st.integers(1, 4), ops=pool_ops)
def test_block_pool_ref_counts_equal_owners_and_never_go_negative(num_blocks, block_size, ops):
    pool = BlockPool(num_blocks, block_size)
    tables = []
    for op, which, n in ops:
        try:
            if op == "new":
                tables.append(pool.new_table(n))
            elif tables and op == "append":
                t = tables[which % len(tables)]
                need = pool.blocks_needed_to_append(t, n)
                free_before = pool.num_free_blocks
                pool.append_tokens(t, n)
                assert free_before - pool.num_free_blocks <= need  # the check was honest
            elif tables and op == "fork":
                tables.append(pool.fork(tables[which % len(tables)]))
            elif tables and op == "free":
                pool.free_table(tables.pop(which % len(tables)))
        except OutOfBlocks:
            pass
        pool.check_invariants()
        owners = [0] * num_blocks
        for t in tables:
            assert len(t.block_ids) == -(-t.num_tokens // block_size)
            for b in t.block_ids:
                owners[b] += 1
        assert owners == pool.ref_cnt


# -- prefix caches under random operations --------------------------------------------------------
cache_ops = st.lists(
    st.tuples(
        st.sampled_from(["insert", "insert", "match", "lock", "unlock", "evict"]),
        sequences,
        st.integers(0, 60),
    ),
    min_size=1,
    max_size=30,
)


def make(kind, capacity, block_size):
    if kind == "hash":
        return HashPrefixCache(capacity, block_size)
    return RadixPrefixCache(capacity, evict="tail" if kind == "radix-tail" else "leaf")


@pytest.mark.parametrize("kind", ["hash", "radix", "radix-tail"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(capacity=st.integers(8, 120), block_size=st.sampled_from([1, 2, 4]), ops=cache_ops)
def test_cache_invariants_under_random_operations(kind, capacity, block_size, ops):
    cache = make(kind, capacity, block_size)
    bs = cache.block_size
    inserted = []  # every sequence ever cached (as the cache stores it)
    held = []  # (match, tokens it covers) for locks still held
    evicted_before = 0
    for op, tokens, n in ops:
        if op == "insert":
            try:
                cache.insert(tokens)
                inserted.append(tokens[: cache.cacheable_len(len(tokens))])
            except OutOfBlocks:
                pass  # locked entries filled the pool: allowed, and nothing may change
        elif op in ("match", "lock"):
            m = cache.match(tokens)
            h, opt = m.hit_len, optimum(tokens, inserted)
            assert h <= opt, "hit longer than any earlier sequence shares"
            assert h == 0 or any(s[:h] == tokens[:h] for s in inserted), "hit is not a true prefix"
            assert h % bs == 0 and h <= opt // bs * bs  # hash: whole blocks only (bs=1 for radix)
            assert len(m.block_ids) == h // bs
            if op == "lock":
                cache.lock(m)
                held.append((m, tokens[:h]))
        elif op == "unlock" and held:
            cache.unlock(held.pop(n % len(held))[0])
        elif op == "evict":
            cache.evict(n)
        # after every operation:
        cache.pool.check_invariants()
        if kind != "hash":
            cache.check_invariants()
        for m, prefix in held:  # locked entries are never evicted
            again = cache.match(prefix, record=False)
            assert again.hit_len == len(prefix)
            if kind == "hash":
                assert again.block_ids == m.block_ids
        assert cache.stats.hits <= cache.stats.queries
        assert cache.stats.evicted_tokens >= evicted_before
        evicted_before = cache.stats.evicted_tokens
        assert 0 <= cache.evictable_tokens <= cache.cached_tokens <= cache.capacity_tokens
    for m, _ in held:
        cache.unlock(m)
    cache.evict(10**9)
    assert cache.cached_tokens == 0 and cache.pool.num_free_blocks == cache.pool.num_blocks


@SETTINGS
@given(seqs=st.lists(sequences, min_size=1, max_size=25), block_size=st.sampled_from([2, 4, 16]))
def test_radix_reaches_the_optimum_and_hash_its_block_rounding_at_unlimited_capacity(
    seqs, block_size
):
    radix, hashc = RadixPrefixCache(10_000), HashPrefixCache(10_000, block_size)
    inserted = []
    for s in seqs:
        opt = optimum(s, inserted)
        r, h = radix.match(s).hit_len, hashc.match(s).hit_len
        assert r == opt
        assert h == opt // block_size * block_size
        radix.insert(s)
        hashc.insert(s)
        inserted.append(s)
    assert radix.stats.hits >= hashc.stats.hits


# -- whole workloads through the simulator ---------------------------------------------------------
def as_requests(rows):
    return [
        TraceRequest(
            r["id"], r["arrival"], r["prompt_token_ids"], r["output_len"], r.get("output_token_ids")
        )
        for r in rows
    ]


@settings(max_examples=25, deadline=None)
@given(
    workload=st.sampled_from(["shared-prompt", "few-shot", "multi-turn", "branching"]),
    seed=st.integers(0, 10_000),
    n=st.integers(2, 24),
    block_size=st.sampled_from([4, 16]),
)
def test_on_generated_workloads_radix_hits_the_optimum_and_never_less_than_hash(
    workload, seed, n, block_size
):
    """One request at a time, nothing evicted: every prompt sees every earlier request's
    prompt + output (minus its last token) in the cache, and the last prompt token is recomputed."""
    reqs = as_requests(generate(workload, n, seed))
    cap = unlimited_capacity(reqs, block_size)
    radix = simulate(reqs, "radix", block_size, cap, max_batch=1)
    hashc = simulate(reqs, "hash", block_size, cap, max_batch=1)
    order = sorted(reqs, key=lambda r: r.arrival)
    by_id = {r["id"]: r for r in radix["requests"]}
    by_id_h = {r["id"]: r for r in hashc["requests"]}
    for i, r in enumerate(order):
        earlier = [e.prompt_token_ids + output_tokens(e)[:-1] for e in order[:i]]
        opt = optimum(r.prompt_token_ids[:-1], earlier)
        assert by_id[r.id]["hit_tokens"] == opt
        assert by_id_h[r.id]["hit_tokens"] == opt // block_size * block_size
    assert radix["summary"]["cached_tokens"] >= hashc["summary"]["cached_tokens"]
    assert radix["summary"]["evicted_tokens"] == hashc["summary"]["evicted_tokens"] == 0


@pytest.mark.parametrize("workload", ["shared-prompt", "few-shot", "multi-turn", "branching"])
def test_radix_at_least_hash_on_default_workloads_down_to_half_capacity(workload):
    """Under memory pressure 'radix >= hash' is a measured tendency, not a law (see
    test_whole_leaf_eviction_can_lose_to_block_lru_under_memory_pressure). Pinned here for the
    default traces at 100 %, 75 % and 50 % of the unlimited capacity."""
    reqs = as_requests(generate(workload, 64, seed=0))
    unlimited = unlimited_capacity(reqs)
    for frac in (1.0, 0.75, 0.5):
        cap = int(unlimited * frac)
        r = simulate(reqs, "radix", capacity_tokens=cap, max_batch=1)["summary"]
        h = simulate(reqs, "hash", capacity_tokens=cap, max_batch=1)["summary"]
        assert r["cached_tokens"] >= h["cached_tokens"], (frac, r, h)


@pytest.mark.parametrize("workload", ["shared-prompt", "few-shot", "multi-turn", "branching"])
def test_tail_eviction_radix_at_least_hash_down_to_a_twentieth_of_the_memory(workload):
    """With tail eviction the radix cache keeps up with the hash cache far deeper into memory
    pressure than SGLang's whole-leaf eviction (benchmarks/radix_vs_hash.py: every one of 768
    cells down to 5 % capacity; benchmarks/README.md has a wider sweep with the few settings
    where the two part ways). Pinned for seeds 0-2 down to 5 %
    (where it failed in 4 cells until a node split stopped refreshing the unmatched half),
    one request at a time and batches of 8, with each chat turn waiting for the one before
    it (as the CLI replays)."""
    for seed in range(3):
        reqs = [TraceRequest(r["id"], r["arrival"], r["prompt_token_ids"], r["output_len"],
                             r.get("output_token_ids"), after=r.get("after"))
                for r in generate(workload, 64, seed=seed)]
        unlimited = unlimited_capacity(reqs)
        for frac in (0.25, 0.1, 0.05):
            cap = int(unlimited * frac)
            for max_batch in (1, 8):
                kw = dict(capacity_tokens=cap, max_batch=max_batch)
                r = simulate(reqs, "radix", radix_evict="tail", **kw)["summary"]
                h = simulate(reqs, "hash", **kw)["summary"]
                assert r["evicted_tokens"] > 0 or frac > 0.1  # at 10 % memory really is short
                assert r["cached_tokens"] >= h["cached_tokens"], (seed, frac, max_batch, r, h)
