"""Checks for lab 23: dollars per 1M output tokens from a price and a throughput."""

from __future__ import annotations

import math
import random

from labkit.checks import check_cases
from labkit.cost.per_token import cost_per_million_tokens


def _reference(price_per_hour, gpus, output_tok_per_s):
    return cost_per_million_tokens(price_per_hour, output_tok_per_s, gpus)


def check_cost_per_million(fn) -> int:
    rng = random.Random(0)
    # one H100 at $6.88/h making 2,000 tok/s → $0.956; 8 GPUs; a slow CPU; a cheap L4
    cases = [(6.88, 1, 2000.0), (55.04 / 8, 8, 2000.0), (6.88, 1, 35.5), (0.9776, 1, 400.0)]
    cases += [(round(rng.uniform(0.2, 12), 4), rng.choice([1, 2, 4, 8]),
               rng.uniform(1, 20000)) for _ in range(20)]
    return check_cases("cost_per_million", fn, _reference, cases, rel=1e-9)


def _reference_replicas(peak_output_tok_s, capacity_tok_s, headroom):
    return max(1, math.ceil(peak_output_tok_s * (1 + headroom) / capacity_tok_s - 1e-9))


def check_replicas(fn) -> int:
    """replicas(peak_output_tok_s, capacity_tok_s, headroom): whole replicas, never 0."""
    cases = [(2000.0, 500.0, 0.25), (2000.0, 500.0, 0.0), (10.0, 500.0, 0.2),
             (1000.0, 333.3, 0.1), (4999.0, 1000.0, 0.0), (5001.0, 1000.0, 0.0),
             (1.0, 1e6, 0.5)]
    return check_cases("replicas", fn, _reference_replicas, cases)


def check_saving_pct(fn) -> int:
    """saving_pct(old, new): (1 − new/old) × 100, negative when the bill grew."""
    cases = [(100.0, 60.0), (100.0, 100.0), (100.0, 130.0), (45_552.0, 27_331.2), (1.0, 0.0)]
    return check_cases("saving_pct", fn, lambda old, new: (1 - new / old) * 100, cases,
                       rel=1e-9, abs_=1e-9)
