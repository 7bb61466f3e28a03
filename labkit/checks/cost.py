"""Checks for lab 23: dollars per 1M output tokens from a price and a throughput."""

from __future__ import annotations

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
