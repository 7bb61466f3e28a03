"""Replay a request trace against a prefix cache and count what it saves.

No model runs: each request only *uses memory* the way an engine would. It looks up its
prompt (the last prompt token is always recomputed), locks the hit, allocates KV for every
token it will compute (prompt + output, minus the hit, minus the final sampled token whose KV
is never written), and when it finishes its prompt + output become cached. When the KV pool
is full, new KV evicts unlocked cached entries; when even that is not enough the request
waits. So capacity, eviction and scheduling order all show up in the hit counts.

The queue: requests that have arrived wait; the scheduler forms a batch of up to max_batch
of them, in FCFS order (arrival) or LPM order (longest cached prefix first, SGLang's
`--schedule-policy lpm`, with its in-batch prefix-caching rule and its FCFS fallback for
queues over 128), stopping at the first one whose KV does not fit. Requests in one
batch run together, so they cannot hit on each other's KV — only on what finished earlier.
A toy clock (prefill_s_per_token per computed prompt token + decode_s_per_token per step of
the longest output) moves time forward so that requests pile up; it is not a latency model,
it only makes the queue (and so LPM's reordering, and its starvation of unlucky requests) real.
A request with `after` (the next chat turn, a child thought) joins the queue only once that
request has finished; wait_s counts from when it joined.
"""

from __future__ import annotations

import random
import zlib

from labkit.errors import UserError
from labkit.kvcache.block_pool import OutOfBlocks, blocks_for
from labkit.kvcache.hash_cache import HashPrefixCache
from labkit.kvcache.prefix_cache import NoPrefixCache, PrefixCache
from labkit.kvcache.radix_cache import RadixPrefixCache
from labkit.kvcache.trace_file import TraceRequest

CACHES = ("none", "hash", "radix")
POLICIES = ("fcfs", "lpm")


def make_cache(kind: str, capacity_tokens: int, block_size: int = 16,
               radix_evict: str = "leaf") -> PrefixCache:
    if kind == "none":
        return NoPrefixCache(capacity_tokens, block_size)
    if kind == "hash":
        return HashPrefixCache(capacity_tokens, block_size)
    if kind == "radix":
        # token-granular: block_size does not apply
        return RadixPrefixCache(capacity_tokens, evict=radix_evict)
    raise UserError(f"unknown cache {kind!r}; choose one of {', '.join(CACHES)}")


def unlimited_capacity(requests: list[TraceRequest], block_size: int = 16) -> int:
    """Enough KV for every token of every request at once: nothing is ever evicted."""
    return (
        sum(blocks_for(len(r.prompt_token_ids) + r.output_len, block_size) for r in requests)
        * block_size
    )


def output_tokens(r: TraceRequest) -> list[int]:
    """The answer's token ids: from the trace, or made-up ids (>= 2**31, so they never collide
    with real ones) derived from the request id so runs repeat."""
    if r.output_token_ids is not None:
        return r.output_token_ids
    rng = random.Random(zlib.crc32(r.id.encode()))
    return [rng.randrange(1 << 31, 1 << 32) for _ in range(r.output_len)]


def simulate(
    requests: list[TraceRequest],
    cache: str = "radix",
    block_size: int = 16,
    capacity_tokens: int | None = None,
    policy: str = "fcfs",
    max_batch: int = 8,
    prefill_s_per_token: float = 1e-4,
    decode_s_per_token: float = 0.01,
    radix_evict: str = "leaf",
) -> dict:
    """Replay `requests`; returns {"summary": {...}, "requests": [per-request rows]}."""
    if policy not in POLICIES:
        raise UserError(f"unknown policy {policy!r}; choose fcfs or lpm")
    if radix_evict not in RadixPrefixCache.EVICT_MODES:
        raise UserError(f"unknown radix eviction {radix_evict!r}; choose leaf or tail")
    if max_batch < 1 or block_size < 1:
        raise UserError("--max-batch and --block-size must be >= 1")
    capacity = capacity_tokens or unlimited_capacity(requests, block_size)
    try:
        kv = make_cache(cache, capacity, block_size, radix_evict)
    except ValueError as e:
        raise UserError(f"{e}; raise --capacity-tokens") from None

    known = {r.id for r in requests}
    for r in requests:
        if r.after is not None and r.after not in known:
            raise UserError(f"request {r.id} waits for {r.after!r}, which is not in the trace")
    pending = sorted(
        requests, key=lambda r: r.arrival
    )  # not in the queue yet; ties keep file order
    waiting: list[TraceRequest] = []  # in queue order (the order they became ready)
    rows: dict[str, dict] = {}
    finished: dict[str, float] = {}  # id -> finish time
    ready_at: dict[str, float] = {}
    clock, batches = 0.0, 0

    def ready_time(r):  # joins the queue at arrival, but never before the request it needs
        if r.after is None:
            return r.arrival
        return max(r.arrival, finished[r.after]) if r.after in finished else None

    while pending or waiting:
        if not waiting:  # idle until the next request can be sent
            times = [t for t in map(ready_time, pending) if t is not None]
            if not times:
                raise UserError(
                    "the remaining requests wait for each other (an `after` cycle); fix the trace"
                )
            clock = max(clock, min(times))
        newly = sorted(
            (r for r in pending if (ready_time(r) or 0) <= clock and ready_time(r) is not None),
            key=ready_time,
        )
        for r in newly:
            ready_at[r.id] = ready_time(r)
        pending = [r for r in pending if r.id not in ready_at]
        waiting += newly
        if policy == "lpm":
            _lpm_sort(kv, waiting)
        batch = _admit(kv, waiting, max_batch)
        for r, _, _ in batch:
            waiting.remove(r)
        if policy == "lpm":  # back to queue order for the next round
            waiting.sort(key=lambda r: ready_at[r.id])
        batches += 1
        prefill = sum(len(r.prompt_token_ids) - m.hit_len for r, m, _ in batch)
        start = clock
        clock += (
            prefill * prefill_s_per_token
            + max(r.output_len for r, _, _ in batch) * decode_s_per_token
        )
        for r, m, new in batch:  # finished: prompt + output (minus the last token) become cached
            kv.release(m, new, r.prompt_token_ids + output_tokens(r)[:-1])
            finished[r.id] = clock
            rows[r.id] = {
                "id": r.id,
                "arrival": r.arrival,
                "ready": round(ready_at[r.id], 6),
                "start": round(start, 6),
                "wait_s": round(start - ready_at[r.id], 6),
                "prompt_tokens": len(r.prompt_token_ids),
                "hit_tokens": m.hit_len,
                "computed_tokens": len(r.prompt_token_ids) - m.hit_len,
            }
    per_request = [rows[r.id] for r in requests]
    return {
        "summary": _summary(
            kv, per_request, capacity, cache, block_size, policy, max_batch, batches
        ),
        "requests": per_request,
    }


# SGLang's schedule_policy.py: LPM costs one tree match per waiting request, so a long queue
# falls back to FCFS; and "in-batch prefix caching" (thresholds 32 and 32, see below).
LPM_MAX_QUEUE = 128
IN_BATCH_CHECK_THRESHOLD = 32
IN_BATCH_DEPRIORITIZE_THRESHOLD = 32


def _lpm_sort(kv: PrefixCache, waiting: list[TraceRequest]) -> None:
    """Longest cached prefix first. A request with (almost) nothing cached whose first 32
    tokens equal those of an earlier *waiting* request goes to the back: running the two
    together would compute their shared prefix twice, running them one after the other
    lets the second hit what the first computed. Ties keep arrival order."""
    if len(waiting) > LPM_MAX_QUEUE:
        return  # waiting is already in arrival order
    hit, deprioritized, queued_prefixes = {}, set(), set()
    for r in waiting:
        hit[r.id] = kv.match_prompt(r.prompt_token_ids, record=False).hit_len
        if (
            hit[r.id] <= IN_BATCH_CHECK_THRESHOLD
            and len(r.prompt_token_ids) >= IN_BATCH_DEPRIORITIZE_THRESHOLD
        ):
            head = tuple(r.prompt_token_ids[:IN_BATCH_DEPRIORITIZE_THRESHOLD])
            if head in queued_prefixes:
                deprioritized.add(r.id)
            else:
                queued_prefixes.add(head)
    waiting.sort(key=lambda r: (r.id in deprioritized, -hit[r.id]))  # stable: ties keep queue order


def _admit(kv: PrefixCache, waiting: list[TraceRequest], max_batch: int):
    batch = []
    for r in waiting[:max_batch]:
        m = kv.match_prompt(r.prompt_token_ids, record=False)
        kv.lock(m)  # before allocating, or our own allocation could evict our hit
        need = len(r.prompt_token_ids) + r.output_len - 1 - m.hit_len
        try:
            new = kv.allocate(need)
        except OutOfBlocks:
            kv.unlock(m)
            if batch:
                break  # wait for this batch to free memory (no skipping ahead)
            raise UserError(
                f"request {r.id} needs {len(r.prompt_token_ids) + r.output_len - 1} tokens "
                "of KV but the "
                f"cache holds only {kv.capacity_tokens}; raise --capacity-tokens"
            ) from None
        kv.stats.queries += len(r.prompt_token_ids)  # count only admitted lookups
        kv.stats.hits += m.hit_len
        batch.append((r, m, new))
    return batch


def _summary(kv, rows, capacity, cache, block_size, policy, max_batch, batches) -> dict:
    prompt = sum(r["prompt_tokens"] for r in rows)
    hits = sum(r["hit_tokens"] for r in rows)
    waits = sorted(r["wait_s"] for r in rows)
    return {
        "cache": cache,
        "policy": policy,
        "block_size": block_size if cache != "radix" else 1,
        "radix_evict": kv.evict_mode if cache == "radix" else None,
        "capacity_tokens": capacity,
        "max_batch": max_batch,
        "requests": len(rows),
        "batches": batches,
        "prompt_tokens": prompt,
        "cached_tokens": hits,
        "hit_rate": round(hits / prompt, 4) if prompt else 0.0,
        "prefill_tokens_computed": prompt - hits,
        "evicted_tokens": kv.stats.evicted_tokens,
        "mean_wait_s": round(sum(waits) / len(waits), 4),
        "p99_wait_s": round(waits[min(len(waits) - 1, int(0.99 * len(waits)))], 4),
    }
