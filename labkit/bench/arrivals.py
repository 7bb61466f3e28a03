"""Open-loop arrival schedules: *when* each request is sent, decided before the run starts.

Why open loop: real users do not wait for each other. If the client only sends the next
request when a previous one finished (closed loop), a slow server slows the load down and
hides its own queueing. So we draw every send time up front; the dispatcher in loadgen.py
then fires each request at its time, whatever the server is doing.

Gaps between requests:
- poisson:  exponential gaps with mean 1/rate (independent users arriving at random).
- gamma:    gamma gaps with shape G and mean 1/rate. The coefficient of variation of the
            gaps is 1/sqrt(G): G < 1 is burstier than Poisson, G > 1 smoother, G = 1 *is*
            Poisson. This is vLLM's and SGLang's `--burstiness`.
- constant: every gap exactly 1/rate.
- rate = inf: every request at t = 0 (a "max throughput" burst).

A schedule is an array of offsets in seconds from the start of the run, non-decreasing,
the first one at 0 (the run starts with a request rather than with an idle gap).
"""

from __future__ import annotations

import math

import numpy as np

KINDS = ("poisson", "gamma", "constant")


def gaps(n: int, rate: float, kind: str = "poisson", burstiness: float = 1.0,
         rng: np.random.Generator | None = None) -> np.ndarray:
    """n inter-arrival gaps in seconds for a target `rate` (requests per second)."""
    if kind not in KINDS:
        raise ValueError(f"unknown arrival kind {kind!r}; choose one of {KINDS}")
    if math.isinf(rate):
        return np.zeros(n)
    if rate <= 0:
        raise ValueError(f"rate must be > 0 (or inf), got {rate}")
    if burstiness <= 0:
        raise ValueError(f"burstiness must be > 0, got {burstiness}")
    rng = rng if rng is not None else np.random.default_rng(0)
    mean_gap = 1.0 / rate
    if kind == "constant":
        return np.full(n, mean_gap)
    if kind == "poisson":
        burstiness = 1.0  # exponential = gamma with shape 1
    # Gamma(shape=G, scale=mean/G) has mean `mean_gap` and CV 1/sqrt(G).
    return rng.gamma(shape=burstiness, scale=mean_gap / burstiness, size=n)


def schedule(rate: float, num_requests: int | None = None, duration: float | None = None,
             kind: str = "poisson", burstiness: float = 1.0, seed: int = 0,
             warmup: float = 0.0) -> np.ndarray:
    """Send offsets (seconds from run start) for one run.

    - `num_requests` N: N requests are *measured*; requests that fall in the first `warmup`
      seconds are extra (sent, but excluded from the statistics by the runner).
    - `duration` S: every arrival in [0, warmup + S).
    - both: whichever ends first. Same seed → same schedule, so runs are comparable.

    With `num_requests` alone, the measured arrivals are stretched to the exact target
    rate (see _exact_rate); with a duration, the count itself is random, as in real life.
    """
    if num_requests is None and duration is None:
        raise ValueError("give num_requests or duration (or both)")
    if math.isinf(rate):
        if num_requests is None:
            raise ValueError("rate=inf sends everything at t=0: it needs num_requests, "
                             "not only a duration")
        if warmup > 0:
            raise ValueError("rate=inf sends everything at t=0, so no request falls in a "
                             "warmup window; use a finite rate with warmup")
        return np.zeros(num_requests)
    if kind == "gamma" and burstiness == 1.0:
        kind = "poisson"  # same distribution; say so in the summary
    rng = np.random.default_rng(seed)
    horizon = warmup + duration if duration is not None else math.inf
    times: list[np.ndarray] = []
    last = 0.0
    measured = 0
    first = True
    # Draw in blocks until we have enough; a duration-only run does not know N in advance.
    while True:
        g = gaps(1024, rate, kind, burstiness, rng)
        if first:
            g[0] = 0.0  # the run starts with a request
            first = False
        t = last + np.cumsum(g)
        last = float(t[-1])
        t = t[t < horizon]
        if num_requests is not None:
            in_window = np.flatnonzero(t >= warmup)
            need = num_requests - measured
            if len(in_window) >= need:
                times.append(t[: in_window[need - 1] + 1] if need > 0 else t[:0])
                break
            measured += len(in_window)
        times.append(t)
        if last >= horizon:
            break
    times = np.concatenate(times) if times else np.zeros(0)
    if duration is None and num_requests and num_requests > 1 and kind != "constant":
        times = _exact_rate(times, rate, warmup)
    return times


def _exact_rate(times: np.ndarray, rate: float, warmup: float) -> np.ndarray:
    """Stretch the measured arrivals so N of them span exactly (N − 1)/rate.

    A random draw of N gaps has its own mean: with N = 100 its rate is the target ±10 %
    (1/√N), and a learner would read "achieved 91 req/s of 100 asked" as a client fault.
    Rescaling to a fixed span is not a fudge: a Poisson process conditioned on having N
    arrivals in a window places them like N sorted uniform draws, which is exactly what
    normalised exponential gaps give. The gaps keep their shape (and gamma its CV).
    """
    idx = np.flatnonzero(times >= warmup)
    first, span = times[idx[0]], times[idx[-1]] - times[idx[0]]
    if span > 0:
        times = times.copy()
        times[idx] = first + (times[idx] - first) * ((len(idx) - 1) / rate / span)
    return times


def describe(rate: float, kind: str, burstiness: float) -> str:
    """A human label for the summary, e.g. 'gamma(G=0.5) at 10 req/s'."""
    if math.isinf(rate):
        return "all at t=0 (rate=inf)"
    if kind == "gamma" and burstiness != 1.0:
        return f"gamma(G={burstiness:g}, CV={1 / math.sqrt(burstiness):.2f}) at {rate:g} req/s"
    if kind == "constant":
        return f"constant at {rate:g} req/s"
    return f"poisson at {rate:g} req/s"
