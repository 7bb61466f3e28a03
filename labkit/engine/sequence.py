"""One request's state as it moves WAITING → RUNNING (→ WAITING if preempted) → FINISHED.

The single counter that drives everything is `num_computed_tokens`: how many of the
request's tokens already have their K and V in the cache. Each step the scheduler gives a
sequence some of its uncomputed tokens:

    prefill:  num_tokens = 300, computed = 0    → compute 300 (or a chunk of them)
    decode:   num_tokens = 301, computed = 300  → compute 1: the token sampled last step

Prefill and decode are the same operation with different lengths (vLLM v1's view), which
is what lets one forward pass mix both. When a step computes up to the last token, the
model's output at that position is the next token's distribution: we sample and append.

Timestamps (time.monotonic seconds) feed the vLLM-named metrics in prometheus_metrics.py.
`common_prefix_len` compares two token lists; the scheduler (in-batch prefix caching) and
the fast attention path (shared prefixes) both use it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # in the queue: not admitted yet, or preempted
    RUNNING = "running"  # holds KV blocks; scheduled every step it fits the budget
    FINISHED = "finished"


@dataclass
class SamplingParams:
    """What the user asked for. temperature 0 = greedy (argmax), the deterministic mode."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None  # same seed + same prompt → same sampled text
    stop: list[str] = field(default_factory=list)  # stop strings (not part of the output)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False  # benchmarks: always generate max_tokens tokens

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class Sequence:
    def __init__(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                 arrival_time: float):
        self.request_id = request_id
        self.prompt_token_ids = list(prompt_token_ids)
        self.output_token_ids: list[int] = []
        self.params = params
        self.status = SequenceStatus.WAITING

        # KV cache state, owned by the scheduler.
        self.block_table: list[int] = []  # physical blocks (or radix slots), in order
        self.prefix = None  # the locked PrefixMatch (labkit.kvcache) while RUNNING
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0  # prompt tokens the prefix cache supplied at admission

        # Output text, built incrementally by the engine's detokenizer.
        self.output_text = ""
        self.num_text_sent = 0  # characters already streamed to the client
        self.decoder = None  # a tokenizers.decoders.DecodeStream
        self.generator = None  # torch.Generator for sampling (sampler.py), made on first use
        self.finish_reason: str | None = None  # "stop" | "length" | "abort"
        self.stop_reason: str | int | None = None  # which stop string / token ended it

        # Timestamps for metrics (vLLM meanings: see prometheus_metrics.py).
        self.arrival_time = arrival_time  # the server received it
        self.queued_time: float | None = None  # the engine put it in the waiting queue
        self.scheduled_time: float | None = None  # first admitted (preemptions don't reset it)
        self.first_token_time: float | None = None
        self.last_token_time: float | None = None
        self.num_preemptions = 0

    # -- sizes ----------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    def token_at(self, i: int) -> int:
        p = len(self.prompt_token_ids)
        return self.prompt_token_ids[i] if i < p else self.output_token_ids[i - p]

    def token_ids(self, start: int, end: int) -> list[int]:
        if end <= len(self.prompt_token_ids):  # a prompt chunk: no concatenation needed
            return self.prompt_token_ids[start:end]
        return self.all_token_ids[start:end]

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status == SequenceStatus.FINISHED

    def __repr__(self):
        return (f"Sequence({self.request_id!r}, {self.status.value}, prompt={self.num_prompt_tokens}, "
                f"out={self.num_output_tokens}, computed={self.num_computed_tokens})")


def common_prefix_len(a: list, b: list) -> int:
    """Length of the common prefix of two lists: binary search with C-speed slice compares."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
