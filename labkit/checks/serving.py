"""Checks for lab 22: the two "TPOT" conventions, on edge and random requests.

The reference is labkit.bench.request_metrics itself (the functions `labkit bench` reports with),
applied to a request record built from the same numbers.
"""

from __future__ import annotations

import random

from labkit.bench import request_metrics as metrics
from labkit.bench.client import RequestRecord
from labkit.checks import check_cases


def _record(ttft_ms: float, e2e_ms: float, output_tokens: int) -> RequestRecord:
    return RequestRecord(id=0, scheduled=0.0, sent=0.0, first_token=ttft_ms / 1e3,
                         end=e2e_ms / 1e3, completion_tokens=output_tokens)


def _tpot(ttft_ms, e2e_ms, output_tokens):
    t = metrics.tpot(_record(ttft_ms, e2e_ms, output_tokens))
    return None if t is None else t * 1e3


def _per_token(e2e_ms, output_tokens):
    t = metrics.per_token_latency(_record(0.0, e2e_ms, output_tokens))
    return None if t is None else t * 1e3


def _cases(seed: int = 0):
    rng = random.Random(seed)
    # the FIELD_NOTES example (500 ms TTFT, 10 ms/token, 100 tokens), a one-token answer
    # (TPOT undefined: None), two tokens, and random requests
    edge = [(500.0, 1490.0, 100), (120.0, 120.0, 1), (80.0, 95.0, 2), (3000.0, 3050.0, 6)]
    rand = []
    for _ in range(20):
        out = rng.randint(1, 512)
        ttft = rng.uniform(5, 5000)
        rand.append((ttft, ttft + (out - 1) * rng.uniform(1, 200), out))
    return edge + rand


def check_tpot(fn) -> int:
    return check_cases("tpot_vllm", fn, _tpot, _cases(), rel=1e-9, abs_=1e-9)


def check_per_token_latency(fn) -> int:
    return check_cases("per_token_latency", fn, _per_token,
                       [(e2e, out) for _, e2e, out in _cases(1)], rel=1e-9, abs_=1e-9)
