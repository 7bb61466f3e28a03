"""Scheduler unit tests: no model, a fake forward pass that 'samples' a fixed token.

Each test drives Scheduler.schedule() the way the engine does (computed tokens advance by
the scheduled amount; a sequence whose tokens are all computed gets one new token) and
checks the policies: token budget, seat limit, preemption, FCFS and LPM order.
"""

import random

import pytest

from labkit.engine.scheduler import Scheduler
from labkit.engine.sequence import SamplingParams, Sequence
from labkit.kvcache.hash_cache import HashPrefixCache
from labkit.kvcache.prefix_cache import NoPrefixCache
from labkit.kvcache.radix_cache import RadixPrefixCache

CACHES = {
    "radix": lambda cap, bs: RadixPrefixCache(cap),
    "radix-tail": lambda cap, bs: RadixPrefixCache(cap, evict="tail"),
    "hash": lambda cap, bs: HashPrefixCache(cap, bs),
    "none": lambda cap, bs: NoPrefixCache(cap, bs),
}


def make_seq(i, prompt, max_tokens=4):
    return Sequence(f"r{i}", prompt, SamplingParams(max_tokens=max_tokens, temperature=0),
                    arrival_time=float(i))


def fake_step(sched: Scheduler, token: int = 7):
    """What the engine does after the model ran: advance, append a token, finish."""
    batch = sched.schedule()
    for seq, n in zip(batch.seqs, batch.num_new_tokens):
        assert n >= 1
        assert len(seq.block_table) * sched.block_size >= seq.num_computed_tokens + n
    sched.update_after_step(batch)
    for seq in batch.seqs:
        if seq.num_computed_tokens == seq.num_tokens:
            seq.output_token_ids.append(token)
            if seq.num_output_tokens >= seq.params.max_tokens:
                sched.finish(seq, "length")
    return batch


def run_to_completion(sched, max_steps=10_000):
    batches = []
    while sched.has_unfinished():
        batches.append(fake_step(sched))
        assert len(batches) < max_steps, "scheduler made no progress"
    return batches


@pytest.mark.parametrize("kind", sorted(CACHES))
def test_token_budget_and_seat_limit_are_respected(kind):
    rng = random.Random(0)
    sched = Scheduler(CACHES[kind](4096, 4), max_num_seqs=5, max_num_batched_tokens=24)
    seqs = [make_seq(i, [rng.randrange(100, 200) for _ in range(rng.randrange(1, 60))],
                     max_tokens=rng.randrange(1, 6)) for i in range(20)]
    for s in seqs:
        sched.add(s)
    batches = run_to_completion(sched)
    assert all(b.num_batched_tokens <= 24 for b in batches)
    assert all(len(b) <= 5 for b in batches)
    # Long prompts really were chunked: some sequence needed several prefill steps.
    assert any(n == 24 for b in batches for n in b.num_new_tokens)
    assert all(s.num_output_tokens == s.params.max_tokens for s in seqs)
    assert sched.prefix_cache_queries == sum(s.num_prompt_tokens for s in seqs)
    sched.cache.pool.check_invariants()


@pytest.mark.parametrize("kind", sorted(CACHES))
def test_preemption_frees_blocks_and_the_request_finishes_later(kind):
    # 64 token slots; three requests that each grow to 10 + 20 = 30 tokens cannot all fit.
    cache = CACHES[kind](64, 4)
    sched = Scheduler(cache, max_num_seqs=8, max_num_batched_tokens=64)
    seqs = [make_seq(i, [10 * i + j for j in range(10)], max_tokens=20) for i in range(3)]
    for s in seqs:
        sched.add(s)
    preempted_seen = []
    while sched.has_unfinished():
        batch = fake_step(sched)
        for victim in batch.preempted:
            preempted_seen.append(victim.request_id)
            # The victim holds nothing now and waits in the queue to be recomputed.
            assert victim.block_table == [] and victim.prefix is None
            assert victim.num_computed_tokens == 0 and victim in sched.waiting
        # No leak: every block in use belongs to a running request (or, for radix, to the
        # tree, which keeps finished and preempted requests' KV).
        in_use = {b for b, r in enumerate(cache.pool.ref_cnt) if r > 0}
        held = {b for s in sched.running for b in s.block_table}
        if kind.startswith("radix"):
            held |= {slot for node in cache._nodes() for slot in node.slots}
        assert in_use == held
    assert sched.num_preemptions == len(preempted_seen) > 0
    assert all(s.num_output_tokens == 20 and s.finish_reason == "length" for s in seqs)
    # Everything is reclaimable at the end: no leaked or still-locked blocks.
    reclaimable = cache.free_tokens + cache.evictable_tokens
    assert reclaimable == cache.capacity_tokens
    cache.pool.check_invariants()


def _run_until_first_preemption(cache):
    """Two 30-token prompts that each grow by 30 tokens in a 64-token cache: one must go."""
    sched = Scheduler(cache, max_num_seqs=8, max_num_batched_tokens=64)
    a, b = make_seq(0, list(range(100, 130)), 30), make_seq(1, list(range(200, 230)), 30)
    sched.add(a)
    sched.add(b)
    while not sched.num_preemptions:
        fake_step(sched)
    assert sched.waiting[0] is b  # the newest running request is preempted first
    return sched, b


def test_preempting_releases_kv_the_victim_can_reuse():
    """With a prefix cache, the victim's computed KV stays cached until the space is needed:
    the block-hash cache hands out the victim's uncached partial block first, so re-admission
    hits most of what it had computed."""
    cache = HashPrefixCache(64, 4)
    _, victim = _run_until_first_preemption(cache)
    assert cache.match_prompt(victim.all_token_ids, record=False).hit_len > 0


def test_tail_eviction_keeps_the_head_of_a_preempted_victims_kv():
    """Radix with tail eviction: making room for the survivor trims the victim's cached KV
    from its end, so re-admission still hits the victim's first tokens; SGLang's whole-leaf
    eviction can throw the victim's whole prompt away for the same room."""
    hits = {}
    for mode in ("leaf", "tail"):
        cache = RadixPrefixCache(64, evict=mode)
        sched, victim = _run_until_first_preemption(cache)
        while sched.running[0].num_output_tokens < 10:  # the survivor grows into the victim's KV
            fake_step(sched)
        hits[mode] = cache.match_prompt(victim.all_token_ids, record=False).hit_len
        run_to_completion(sched)
        cache.check_invariants()
    assert hits["tail"] > hits["leaf"] and hits["tail"] > 0


def _admit_order(policy, cache, prompts, seats=1):
    sched = Scheduler(cache, max_num_seqs=seats, max_num_batched_tokens=1000, policy=policy)
    seqs = [make_seq(i, p, max_tokens=1) for i, p in enumerate(prompts)]
    for s in seqs:
        sched.add(s)
    order = []
    while sched.has_unfinished():
        batch = fake_step(sched)
        order += [s.request_id for s in batch.seqs if s.num_output_tokens == 1 and s.is_finished]
    return order


@pytest.mark.parametrize("kind", ["radix", "hash"])
def test_lpm_admits_the_longest_prefix_match_first_and_fcfs_by_arrival(kind):
    shared = list(range(1000, 1032))  # 32 tokens: whole blocks for the hash cache too
    prompts = [list(range(1, 40)),  # r0: matches nothing, arrived first
               shared[:16] + list(range(50, 70)),  # r1: 16 cached tokens
               shared + list(range(80, 90)),  # r2: 32 cached tokens
               list(range(300, 320))]  # r3: nothing

    def warm_cache():
        cache = CACHES[kind](4096, 16)
        cache.insert(shared)
        return cache

    assert _admit_order("fcfs", warm_cache(), prompts) == ["r0", "r1", "r2", "r3"]
    assert _admit_order("lpm", warm_cache(), prompts) == ["r2", "r1", "r0", "r3"]


def test_lpm_can_starve_a_request_that_matches_nothing():
    """A steady stream of cache-friendly requests keeps overtaking the unmatched one."""
    cache = RadixPrefixCache(4096)
    shared = list(range(1000, 1064))
    cache.insert(shared)
    sched = Scheduler(cache, max_num_seqs=1, max_num_batched_tokens=1000, policy="lpm")
    loner = make_seq(0, list(range(1, 30)), max_tokens=1)
    sched.add(loner)
    for i in range(1, 6):
        sched.add(make_seq(i, shared + [i], max_tokens=1))
    finished_before_loner = 0
    while not loner.is_finished:
        batch = fake_step(sched)
        finished_before_loner += sum(1 for s in batch.seqs if s.is_finished and s is not loner)
    assert finished_before_loner == 5


def test_abort_releases_a_running_request():
    cache = HashPrefixCache(256, 4)
    sched = Scheduler(cache, max_num_seqs=4, max_num_batched_tokens=64)
    seq = make_seq(0, list(range(40)), max_tokens=10)
    sched.add(seq)
    fake_step(sched)
    assert cache.pool.num_used_blocks > 0
    assert sched.abort("r0") is seq and seq.finish_reason == "abort"
    assert not sched.has_unfinished() and cache.pool.num_used_blocks == 0
    assert sched.abort("r0") is None


def _burst(kind, **kw):
    """Three requests with a 64-token system prompt nobody has cached, and one unrelated."""
    system = list(range(100, 164))
    seqs = [make_seq(i, system + [200 + i] * 8) for i in range(3)]
    seqs.append(make_seq(3, list(range(300, 340))))
    sched = Scheduler(CACHES[kind](4096, 16), max_num_seqs=8, max_num_batched_tokens=1000, **kw)
    for s in seqs:
        sched.add(s)
    return sched, seqs


@pytest.mark.parametrize("kind", ["radix", "hash"])
def test_in_batch_prefix_caching_holds_a_request_until_its_prefix_is_cached(kind):
    sched, (a, b, c, loner) = _burst(kind)
    first = fake_step(sched)
    assert first.seqs == [a, loner]  # b and c wait: a computes their 64 shared tokens now
    second = fake_step(sched)
    assert second.seqs[-2:] == [b, c]
    assert b.num_cached_tokens == c.num_cached_tokens == 64  # whole blocks for hash, too
    run_to_completion(sched)
    # The prompt tokens actually computed: 64 + 8 for a, 8 each for b and c, 40 for loner.
    assert sched.prefix_cache_hits == 128


@pytest.mark.parametrize("kind", ["radix", "hash", "none"])
def test_without_in_batch_prefix_caching_a_burst_computes_the_prompt_each_time(kind):
    sched, seqs = _burst(kind, in_batch_prefix_caching=False)
    assert fake_step(sched).seqs == seqs
    run_to_completion(sched)
    assert [s.num_cached_tokens for s in seqs] == [0, 0, 0, 0]


def test_a_short_common_start_does_not_hold_a_request_back():
    """Sharing fewer than IN_BATCH_MIN_SHARED uncached tokens is not worth a step's wait."""
    from labkit.engine.scheduler import IN_BATCH_MIN_SHARED

    start = list(range(100, 100 + IN_BATCH_MIN_SHARED - 1))
    a, b = make_seq(0, start + [1] * 20), make_seq(1, start + [2] * 20)
    sched = Scheduler(RadixPrefixCache(4096), max_num_seqs=8, max_num_batched_tokens=1000)
    sched.add(a)
    sched.add(b)
    assert fake_step(sched).seqs == [a, b]


def test_a_held_request_waits_only_while_the_wait_saves_enough():
    """Chunked prefill, 40 tokens per step: the first request computes the 64 shared tokens
    in two chunks. The second waits for the first chunk (40 of its tokens), not the second
    (24 more: fewer than IN_BATCH_MIN_SHARED, so it computes them itself)."""
    sched, (a, b, c, loner) = _burst("radix")
    sched.max_num_batched_tokens = 40
    assert fake_step(sched).seqs == [a]  # tokens 0-39; b and c held back, no budget for loner
    assert fake_step(sched).seqs == [a, b]  # a: 40-71 (32), b: its first 8 after the hit
    assert b.num_cached_tokens == 40
    run_to_completion(sched)


def test_fault_file_slows_every_step_while_it_exists(tmp_path):
    import time

    from labkit.engine.fault import FaultFile, set_fault

    path = tmp_path / "fault"
    f = FaultFile(str(path))
    assert f.before_step() == 0.0  # no file: no delay
    set_fault(path, 30)
    t0 = time.perf_counter()
    assert f.before_step() == 0.03 and time.perf_counter() - t0 >= 0.03
    set_fault(path, None)
    assert f.before_step() == 0.0 and not path.exists()
    path.write_text("step_delay_ms=oops\n")  # garbage: no delay, no crash
    assert f.before_step() == 0.0
