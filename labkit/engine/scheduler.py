"""Continuous batching: decide, every step, which sequences run and how many tokens each.

One step's plan (vLLM v1's scheduler, simplified):

1. RUNNING sequences first, oldest first. Each asks for all its uncomputed tokens — 1 for
   a decode, the rest of the prompt for a prefill — capped by what is left of the step's
   token budget (`max_num_batched_tokens`). A capped prefill continues next step: that
   is *chunked prefill*, and it is why a 4,000-token prompt cannot freeze everyone
   else's decoding for one long forward pass.
   If the KV cache has no block for a sequence's new tokens, the newest running sequence
   is *preempted*: its blocks go back (its computed KV stays findable in the prefix cache,
   if one is on) and it returns to the front of the queue, to be recomputed later
   ("preemption by recompute": cheaper than swapping KV out when prefill is fast).
2. WAITING sequences next, if nobody was preempted this step and there is budget and a
   free seat (`max_num_seqs`). Order: FCFS (arrival order) or LPM (longest prefix match
   first: the request with the most cached tokens goes first, SGLang's policy — better
   cache reuse, but a request that matches nothing can wait a long time: starvation).
   Admission looks the prompt up in the prefix cache, locks the hit (so it cannot be
   evicted while we read it) and allocates blocks only for the tokens to compute now.
   In-batch prefix caching (SGLang's name): a request whose prompt shares at least
   IN_BATCH_MIN_SHARED uncached tokens with a prefill chunk of this very step waits one
   step. Admitted now, it would compute those tokens a second time in parallel; one step
   later they are in the cache. A burst of requests with a new system prompt then
   computes that prompt once, not once per request.

When a sequence finishes, its KV is released into the prefix cache: the next request with
the same prefix skips recomputing it.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from labkit.engine.sequence import Sequence, SequenceStatus, common_prefix_len
from labkit.kvcache.block_pool import OutOfBlocks, blocks_for
from labkit.kvcache.prefix_cache import PrefixCache

LPM_MAX_QUEUE = 128  # SGLang: with longer queues, sorting by prefix match costs too much: FCFS
# SGLang's IN_BATCH_PREFIX_CACHING_DEPRIORITIZE_THRESHOLD: sharing fewer uncached tokens than
# this with a request being prefilled is not worth a step of waiting.
IN_BATCH_MIN_SHARED = 32


@dataclass
class ScheduledBatch:
    """This step's work: seqs[i] computes its next num_new_tokens[i] tokens."""

    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_batched_tokens(self) -> int:
        return sum(self.num_new_tokens)

    def __len__(self):
        return len(self.seqs)


class Scheduler:
    def __init__(self, cache: PrefixCache, max_num_seqs: int, max_num_batched_tokens: int,
                 policy: str = "fcfs", in_batch_prefix_caching: bool = True):
        assert policy in ("fcfs", "lpm"), policy
        self.cache = cache
        self.in_batch_prefix_caching = in_batch_prefix_caching and cache.name != "none"
        self.block_size = cache.pool.block_size
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.policy = policy
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        # Counters with vLLM's meanings (prometheus_metrics.py exports them).
        self.num_preemptions = 0
        self.prefix_cache_queries = 0  # prompt tokens looked up (first admission only)
        self.prefix_cache_hits = 0  # of those, tokens found in the cache

    # -- the queue ----------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        seq.queued_time = time.monotonic()
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def abort(self, request_id: str) -> Sequence | None:
        """Drop a request wherever it is (client went away); returns it, or None if unknown."""
        for seq in self.waiting:
            if seq.request_id == request_id:
                self.waiting.remove(seq)
                seq.status, seq.finish_reason = SequenceStatus.FINISHED, "abort"
                return seq
        for seq in self.running:
            if seq.request_id == request_id:
                self.finish(seq, "abort")
                return seq
        return None

    # -- one step -------------------------------------------------------------------------
    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens

        # 1. Running sequences keep going, oldest first.
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.num_uncomputed_tokens, budget)
            while not self._grow(seq, n):  # no free block: preempt the newest
                victim = self.running.pop()
                self._preempt(victim)
                batch.preempted.append(victim)
                if victim is seq:
                    break
            else:
                batch.seqs.append(seq)
                batch.num_new_tokens.append(n)
                budget -= n
                i += 1

        # 2. Admit waiting sequences (not in a step that had to preempt: memory is tight).
        if not batch.preempted:
            for seq in self._waiting_in_policy_order():
                if budget <= 0 or len(self.running) >= self.max_num_seqs:
                    break
                m = self.cache.match_prompt(seq.all_token_ids, record=False)
                if self.in_batch_prefix_caching and self._shares_a_prefill(seq, m.hit_len, batch):
                    continue  # next step its prefix is in the cache; others may go first
                n = self._admit(seq, m, budget)
                if n == 0:
                    break  # the KV cache is full: later requests wait too (no overtaking)
                self.waiting.remove(seq)
                self.running.append(seq)
                batch.seqs.append(seq)
                batch.num_new_tokens.append(n)
                budget -= n
        return batch

    def _waiting_in_policy_order(self) -> list[Sequence]:
        if self.policy == "fcfs" or len(self.waiting) > LPM_MAX_QUEUE:
            return list(self.waiting)
        # LPM: most cached prefix tokens first; ties keep queue order (sorted() is stable).
        hits = {id(s): self.cache.match_prompt(s.all_token_ids, record=False).hit_len
                for s in self.waiting}
        return sorted(self.waiting, key=lambda s: -hits[id(s)])

    def _shares_a_prefill(self, seq: Sequence, hit: int, batch: ScheduledBatch) -> bool:
        """True if a prefill chunk scheduled in this step computes at least
        IN_BATCH_MIN_SHARED tokens of seq's prompt beyond the `hit` the cache gives it now.
        update_after_step publishes those chunks, so the next step's lookup finds them."""
        chunks = [(other, other.num_computed_tokens + n)  # n > 1: a prefill chunk, cached after
                  for other, n in zip(batch.seqs, batch.num_new_tokens) if n > 1]
        if not chunks:
            return False
        tokens = seq.all_token_ids
        for other, end in chunks:
            # What other will have computed of seq's prefix after this step (never seq's
            # last token: the model must run on it anyway, match_prompt never returns it).
            shared = min(common_prefix_len(tokens, other.all_token_ids), end, len(tokens) - 1)
            if self.cache.cacheable_len(shared) - hit >= IN_BATCH_MIN_SHARED:
                return True
        return False

    def _admit(self, seq: Sequence, m, budget: int) -> int:
        """Lock m (seq's prefix match), allocate for the first chunk. Returns tokens to
        compute this step, or 0 (and changes nothing) if the KV cache has no room."""
        self.cache.lock(m)
        seq.prefix, seq.block_table = m, list(m.block_ids)
        seq.num_computed_tokens = m.hit_len
        n = min(seq.num_uncomputed_tokens, budget)
        if not self._grow(seq, n):
            self.cache.unlock(m)
            seq.prefix, seq.block_table, seq.num_computed_tokens = None, [], 0
            return 0
        if seq.num_preemptions == 0:  # vLLM counts a request's first lookup only
            seq.num_cached_tokens = m.hit_len
            self.prefix_cache_queries += seq.num_prompt_tokens
            self.prefix_cache_hits += m.hit_len
        if seq.scheduled_time is None:
            seq.scheduled_time = time.monotonic()
        seq.status = SequenceStatus.RUNNING
        return n

    def _grow(self, seq: Sequence, n: int) -> bool:
        """Make seq's block table cover n more tokens. False if the cache is out of blocks."""
        need = blocks_for(seq.num_computed_tokens + n, self.block_size) - len(seq.block_table)
        if need > 0:
            try:
                # allocate() counts tokens; whole blocks keep the arithmetic one-to-one.
                seq.block_table += self.cache.allocate(need * self.block_size)
            except OutOfBlocks:
                return False
        return True

    # -- after the forward pass ---------------------------------------------------------
    def update_after_step(self, batch: ScheduledBatch) -> None:
        """The model computed the scheduled tokens. A prefill chunk's KV becomes findable in
        the prefix cache right away (SGLang's cache_unfinished_req), not only when the
        request finishes: requests that arrive meanwhile with the same prefix hit it."""
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            seq.num_computed_tokens += n
            if n > 1 and self.cache.name != "none":
                self._cache_computed(seq)

    def _cache_computed(self, seq: Sequence) -> None:
        n = self.cache.cacheable_len(seq.num_computed_tokens)  # hash: whole blocks only
        if n <= seq.prefix.hit_len:
            return
        tokens = seq.token_ids(0, n)
        k = n // self.block_size  # blocks holding exactly those n tokens
        # Hand the computed blocks to the cache, then look them up again and lock the
        # result: where another request cached the same tokens first, we now share its
        # copy and our duplicate goes back to the pool.
        self.cache.release(seq.prefix, seq.block_table[len(seq.prefix.block_ids):k], tokens)
        m = self.cache.match(tokens, record=False)
        self.cache.lock(m)
        assert m.hit_len == n, (m.hit_len, n)
        seq.prefix, seq.block_table = m, list(m.block_ids) + seq.block_table[k:]

    # -- leaving the running set ------------------------------------------------------
    def _release(self, seq: Sequence) -> None:
        """Hand seq's KV to the prefix cache (computed tokens become reusable) and unlock."""
        own_blocks = seq.block_table[len(seq.prefix.block_ids):]
        self.cache.release(seq.prefix, own_blocks, seq.all_token_ids[: seq.num_computed_tokens])
        seq.prefix, seq.block_table = None, []

    def _preempt(self, seq: Sequence) -> None:
        self._release(seq)
        seq.num_computed_tokens = 0  # recompute everything (much of it may hit the cache)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)  # first in line when memory frees up

    def finish(self, seq: Sequence, reason: str) -> None:
        self._release(seq)
        self.running.remove(seq)
        seq.status, seq.finish_reason = SequenceStatus.FINISHED, reason

    # -- for metrics ----------------------------------------------------------------------
    def kv_cache_usage(self) -> float:
        """Fraction of KV capacity holding tokens that running requests need. Cached KV
        that nobody uses counts as free, as in vLLM: it can be evicted at once."""
        reclaimable = self.cache.free_tokens + self.cache.evictable_tokens
        return 1.0 - reclaimable / self.cache.capacity_tokens
