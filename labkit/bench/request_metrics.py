"""Serving metrics from request records, each named with the convention it follows.

The public tools disagree on what "TPOT" and "ITL" mean (see FIELD_NOTES "Serving
metrics"), so we report both conventions side by side under different names:

    tpot               (E2E − TTFT) / (out − 1)   vLLM / SGLang "TPOT"; AIPerf calls it "ITL"
    per_token_latency   E2E / out                  GuideLLM "TPOT", inference-perf "NTPOT"

With a 500 ms TTFT and 10 ms per decoded token over 100 tokens, tpot = 10 ms but
per_token_latency = 1490/100 = 14.9 ms: the same run, two "TPOTs". Always say which one.

Two clocks for the same latency:
    ttft, e2e                          from the actual send (what the server did)
    ttft_from_schedule, e2e_from_sched from the time the arrival schedule asked for: adds
                                       any wait inside the client (concurrency cap, a busy
                                       event loop). vLLM #54101: p99 E2E 507 ms from send,
                                       3,330 ms from schedule, in the same run.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable

import numpy as np

from labkit.bench.client import RequestRecord
from labkit.errors import UserError

PERCENTILES = (50, 90, 95, 99)

CONVENTIONS = {
    "ttft": "send → first non-empty chunk (all tools agree)",
    "ttft_from_schedule": "scheduled send → first non-empty chunk; includes client queueing",
    "queue_wait": "scheduled send → actual send: time spent waiting inside the client",
    "tpot": "(E2E−TTFT)/(out−1) per request, first token excluded: vLLM/SGLang TPOT",
    "per_token_latency": "E2E/out per request, first token included: GuideLLM TPOT, "
                         "inference-perf NTPOT",
    "itl": "every gap between consecutive chunks, pooled over requests: vLLM/SGLang ITL "
           "(AIPerf averages per request instead)",
    "e2e": "send → last chunk",
    "e2e_from_schedule": "scheduled send → last chunk; includes client queueing",
}


def stats(values: Iterable[float], scale: float = 1e3) -> dict:
    """mean, p50/p90/p95/p99, max (numpy's linear interpolation, as vLLM uses); ms by default."""
    v = np.asarray([x for x in values if x is not None], dtype=float) * scale
    if v.size == 0:
        return {"n": 0}
    out = {"n": int(v.size), "mean": float(v.mean())}
    for p in PERCENTILES:
        out[f"p{p}"] = float(np.percentile(v, p))
    out["max"] = float(v.max())
    return out


def ttft(r: RequestRecord) -> float | None:
    return None if r.first_token is None else r.first_token - r.sent


def e2e(r: RequestRecord) -> float:
    return r.end - r.sent


def tpot(r: RequestRecord) -> float | None:
    """vLLM/SGLang: decode time per token after the first; undefined for a 1-token answer."""
    out = r.output_tokens
    if r.first_token is None or out < 2:
        return None
    return (r.end - r.first_token) / (out - 1)


def per_token_latency(r: RequestRecord) -> float | None:
    """GuideLLM/inference-perf: whole request time spread over every token, first included."""
    out = r.output_tokens
    return None if out < 1 else e2e(r) / out


def itl(r: RequestRecord) -> list[float]:
    """Gaps between consecutive chunks of one request (a chunk may carry several tokens)."""
    t = r.chunk_times
    return [b - a for a, b in zip(t, t[1:])]


def meets_slo(r: RequestRecord, slo: dict, clock: str = "schedule") -> bool:
    """All given limits (ms) met. A failed request never meets the SLO."""
    if not r.ok or r.first_token is None:
        return False
    start = r.scheduled if clock == "schedule" else r.sent
    checks = {"ttft": r.first_token - start, "e2e": r.end - start, "tpot": tpot(r)}
    for name, limit_ms in slo.items():
        value = checks[name]
        if value is not None and value * 1e3 > limit_ms:
            return False
    return True


def _rate(times: list[float]) -> float | None:
    """Requests per second over a series of instants: (n − 1) intervals over the span."""
    if len(times) < 2:
        return None
    span = max(times) - min(times)
    return (len(times) - 1) / span if span > 0 else math.inf


# The client itself is overloaded when it fires requests this late (ms): its latencies
# then include its own delays. A warning, not a failure: the numbers are kept.
DISPATCH_LAG_WARN_P50_MS = 5.0
DISPATCH_LAG_WARN_P99_MS = 50.0


def summarize(records: list[RequestRecord], target_rate: float | None = None,
              slo: dict | None = None, slo_clock: str = "schedule",
              capped: bool = False) -> dict:
    """The run's summary: every figure the report prints, as plain JSON-able values.

    `capped`: a concurrency cap was set, so a lower achieved rate is the cap's doing.
    """
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.ok]
    failed = [r for r in measured if not r.ok]
    if measured:
        start = min(r.scheduled for r in measured)
        if capped and len(measured) < len(records):
            # A closed loop schedules everything at 0; with its first requests left out as
            # warm-up, the measured window opens when the first measured request was sent.
            start = max(start, min((r.sent for r in measured if r.sent is not None),
                                   default=start))
        end = max(r.end for r in measured if r.end is not None)
        duration = max(end - start, 1e-9)
    else:
        duration = 0.0

    sent = sorted(r.sent for r in measured if r.sent is not None)
    scheduled = sorted(r.scheduled for r in measured)
    achieved, sched_rate = _rate(sent), _rate(scheduled)
    rate = {"target": target_rate, "scheduled": sched_rate, "achieved": achieved,
            "achieved_vs_target": (achieved / target_rate if achieved and target_rate
                                   and math.isfinite(target_rate) else None),
            "achieved_vs_scheduled": (achieved / sched_rate if achieved and sched_rate
                                      and math.isfinite(sched_rate) else None),
            "dispatch_lag_ms": stats(r.dispatched - r.scheduled for r in measured
                                     if r.dispatched is not None)}
    warnings = []
    lag = rate["dispatch_lag_ms"]
    if lag.get("n") and (lag["p50"] > DISPATCH_LAG_WARN_P50_MS
                         or lag["p99"] > DISPATCH_LAG_WARN_P99_MS):
        warnings.append(
            f"the client fell behind its own schedule (dispatch lag p50 {lag['p50']:.1f} ms, "
            f"p99 {lag['p99']:.1f} ms): it is short of CPU, so its latencies include its own "
            "delays. Lower the rate, or run the client on a less busy machine.")
    vs = rate["achieved_vs_scheduled"]
    if vs is not None and vs < 0.99 and not capped:
        warnings.append(f"achieved send rate is {vs:.1%} of the schedule's")

    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_tokens if r.prompt_tokens is not None else r.prompt_len
                    for r in ok)
    per_s = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)
    latency = {
        "ttft": stats(ttft(r) for r in ok),
        "ttft_from_schedule": stats(r.first_token - r.scheduled for r in ok
                                    if r.first_token is not None),
        "queue_wait": stats(r.sent - r.scheduled for r in ok),
        "tpot": stats(tpot(r) for r in ok),
        "per_token_latency": stats(per_token_latency(r) for r in ok),
        "itl": stats(g for r in ok for g in itl(r)),
        "e2e": stats(e2e(r) for r in ok),
        "e2e_from_schedule": stats(r.end - r.scheduled for r in ok),
    }

    with_usage = [r for r in ok if r.completion_tokens is not None]
    mismatched = [r for r in with_usage if r.completion_tokens != r.client_tokens]
    tokens = {
        "output_tokens": out_tokens, "input_tokens": in_tokens,
        "usage_missing": len(ok) - len(with_usage),
        "client_vs_usage_mismatched": len(mismatched),
        "client_vs_usage_mismatch_rate": (len(mismatched) / len(with_usage)
                                          if with_usage else None),
        "source": "server usage" if len(with_usage) == len(ok) else
                  "server usage where given, else client count",
    }

    summary = {
        "requests": {"measured": len(measured), "completed": len(ok), "failed": len(failed),
                     "warmup_excluded": len(records) - len(measured)},
        "errors": dict(Counter(r.error for r in failed).most_common()),
        "duration_s": duration,
        "rate": rate,
        "throughput": {"requests_per_s": per_s(len(ok)),
                       "output_tokens_per_s": per_s(out_tokens),
                       "total_tokens_per_s": per_s(out_tokens + in_tokens)},
        "latency_ms": latency,
        "tokens": tokens,
        "warnings": warnings,
        "conventions": CONVENTIONS,
    }
    if slo:
        good = [r for r in measured if meets_slo(r, slo, slo_clock)]
        summary["goodput"] = {
            "slo_ms": dict(slo), "clock": f"latencies measured from the {slo_clock}",
            "good_requests": len(good), "requests_per_s": per_s(len(good)),
            "attainment": len(good) / len(measured) if measured else None}
    return summary


def parse_slo(text: str | None) -> dict:
    """'ttft=500,tpot=50,e2e=10000' (milliseconds) → {'ttft': 500.0, ...}."""
    if not text:
        return {}
    slo = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip().lower()
        if name not in ("ttft", "tpot", "e2e") or not value:
            raise UserError(f"bad --slo part {part!r}: use ttft=MS,tpot=MS,e2e=MS "
                            "(any subset), e.g. --slo ttft=500,tpot=50")
        slo[name] = float(value)
    return slo
