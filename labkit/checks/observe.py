"""Checks for lab 30: a latency quantile from histogram buckets, the way Prometheus does it.

The learner writes

    quantile_from_buckets(q, bounds, counts)

bounds: the buckets' upper bounds in increasing order, the last one float("inf");
counts: cumulative counts (requests with latency <= each bound), as `increase(x_bucket[w])`
gives them. Prometheus's histogram_quantile: rank = q * total; find the first bucket whose
count >= rank; interpolate linearly between that bucket's lower bound (the previous bound,
0 for the first bucket) and its upper bound. If that bucket is +Inf, the answer is the
highest finite bound. No requests at all: NaN.
"""

from __future__ import annotations

import math

from labkit.checks import ExerciseFailed


def reference_quantile(q: float, bounds: list[float], counts: list[float]) -> float:
    total = counts[-1]
    if total == 0:
        return math.nan
    rank = q * total
    i = next(k for k, c in enumerate(counts) if c >= rank)
    if math.isinf(bounds[i]):
        return bounds[-2]
    lower = bounds[i - 1] if i > 0 else 0.0
    below = counts[i - 1] if i > 0 else 0.0
    inside = counts[i] - below
    return lower + (bounds[i] - lower) * ((rank - below) / inside if inside else 0.0)


INF = float("inf")
CASES = [
    (0.5, [0.1, 0.5, 1.0, INF], [10, 30, 40, 40], "rank inside the second bucket"),
    (0.99, [0.1, 0.5, 1.0, INF], [10, 30, 40, 40], "p99 in the last finite bucket"),
    (0.99, [0.1, 0.5, 1.0, INF], [10, 30, 40, 50], "p99 past every finite bound: +Inf bucket"),
    (0.1, [0.1, 0.5, 1.0, INF], [20, 30, 40, 40], "the first bucket starts at 0"),
    (0.5, [0.25, 0.5, INF], [0, 10, 10], "an empty first bucket"),
    (0.5, [0.25, 0.5, INF], [0, 0, 0], "no requests at all: NaN"),
    (0.25, [1.0, 2.0, 4.0, INF], [1, 2, 4, 4], "rank exactly on a bucket's count"),
]


def check_quantile_from_buckets(fn) -> int:
    for q, bounds, counts, what in CASES:
        expected = reference_quantile(q, bounds, counts)
        try:
            got = fn(q, list(bounds), list(counts))
        except NotImplementedError as e:
            raise ExerciseFailed(f"quantile_from_buckets: not implemented yet — {e}") from None
        except Exception as e:  # noqa: BLE001 - report the failing input
            raise ExerciseFailed(f"quantile_from_buckets({q}, {bounds}, {counts}) ({what}) "
                                 f"raised {type(e).__name__}: {e}") from None
        same = (math.isnan(expected) and isinstance(got, float) and math.isnan(got)) or \
            (not math.isnan(expected) and got is not None and math.isclose(got, expected,
                                                                          rel_tol=1e-9))
        if not same:
            raise ExerciseFailed(f"quantile_from_buckets({q}, {bounds}, {counts}) ({what}): "
                                 f"expected {expected!r}, got {got!r}")
    print(f"✔ quantile_from_buckets: passed {len(CASES)} cases (interpolation, +Inf, empty)")
    return len(CASES)
