"""Lab 22's readout: every latency under its convention, and the known measurement faults.

A load test is only as good as its instrument. The public tools have shipped five faults
(FIELD_NOTES "Serving metrics"); `fault_table` checks each one against *this* run's own
records, so the lab can say "not present here, and here is the number that shows it".
One function per fault:

    rate_drift           relative sleeps let late wake-ups add up (vLLM #21104)
    hidden_queueing      latency timed from the actual send hides waits inside the client
                         (vLLM #54101: p99 E2E 507 ms from send, 3,330 ms from schedule)
    client_token_counts  counting tokens on the client disagrees with the server's usage
                         (inference-perf #580: > 50 % of requests)
    pool_cap             aiohttp's default pool holds 100 connections; request 101 waits
    negative_ttft        two clocks mixed under overload (GuideLLM #216)
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from labkit.bench.client import RequestRecord
from labkit.bench.request_metrics import CONVENTIONS
from labkit.bench.report import load_records
from labkit.runs import NotMeasured

# (summary key, name as the lab prints it) in reading order
LATENCIES = [
    ("ttft", "TTFT"),
    ("tpot", "TPOT (vLLM/SGLang)"),
    ("per_token_latency", "per-token latency (GuideLLM 'TPOT')"),
    ("itl", "ITL, pooled"),
    ("e2e", "E2E"),
    ("queue_wait", "wait inside the client"),
    ("ttft_from_schedule", "TTFT from schedule"),
    ("e2e_from_schedule", "E2E from schedule"),
]
AIOHTTP_DEFAULT_POOL = 100  # aiohttp.TCPConnector(limit=100) unless told otherwise


def load_average() -> float | None:
    """1-minute load average (runnable processes), None where the OS has none (Windows).

    Above the core count, processes queue for CPU: a benchmark's latencies then include
    waiting for a core, on the client and the server alike. Record it next to the numbers.
    """
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _r(x, digits: int = 2):
    return None if x is None else round(float(x), digits)


def latency_table(summary: dict) -> list[dict]:
    """One row per latency metric: its convention and percentiles in ms."""
    rows = []
    for key, name in LATENCIES:
        st = summary["latency_ms"].get(key, {})
        rows.append({"metric": name, "n": st.get("n", 0), "mean_ms": _r(st.get("mean")),
                     "p50_ms": _r(st.get("p50")), "p90_ms": _r(st.get("p90")),
                     "p99_ms": _r(st.get("p99")), "max_ms": _r(st.get("max")),
                     "convention": CONVENTIONS[key]})
    return rows


def records_of(summary: dict) -> list[RequestRecord]:
    """The per-request records a summary was computed from (its requests.jsonl)."""
    return load_records(Path(summary["run"]["out_dir"]) / "requests.jsonl")


def token_counts(records: list[RequestRecord]) -> dict:
    """How often two client-side counts disagree with the server's `usage`.

    chunks: one streamed chunk = one token (engines may put several tokens in a chunk, or
    hold back a token whose text is an incomplete character). retokenised: the client
    re-encodes the whole answer text (inference-perf's way); BPE need not split the
    decoded text into the tokens the model produced. Only meaningful when the run was
    given a tokenizer; otherwise the client count *is* the chunk count.
    """
    with_usage = [r for r in records if r.ok and r.completion_tokens is not None]
    n = len(with_usage)
    chunk_bad = sum(len(r.chunk_times) != r.completion_tokens for r in with_usage)
    retok_bad = sum(r.client_tokens != r.completion_tokens for r in with_usage)
    return {"with_usage": n,
            "without_usage": sum(r.ok and r.completion_tokens is None for r in records),
            "chunks_mismatch_rate": chunk_bad / n if n else None,
            "retokenised_mismatch_rate": retok_bad / n if n else None,
            "usage_tokens": sum(r.completion_tokens for r in with_usage),
            "chunk_tokens": sum(len(r.chunk_times) for r in with_usage),
            "retokenised_tokens": sum(r.client_tokens for r in with_usage)}


def peak_in_flight(records: list[RequestRecord]) -> int:
    """Most requests open at the same instant (sent, not yet ended)."""
    events = []
    for r in records:
        if r.sent is not None and r.end is not None:
            events += [(r.sent, 1), (r.end, -1)]
    peak = now = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # ends before starts at a tie
        now += step
        peak = max(peak, now)
    return peak


def naive_dispatch_rate(records: list[RequestRecord]) -> float | None:
    """Modelled: the send rate a `sleep(gap)`-after-each-send loop would have reached.

    Our dispatcher aims every request at its absolute time, so a wake-up that is δ late
    delays that one request only (its dispatch lag). A loop of relative sleeps carries each
    δ forward into every later send: the whole schedule stretches by the sum of the lags.
    """
    measured = sorted((r for r in records if not r.warmup and r.dispatched is not None),
                      key=lambda r: r.scheduled)
    if len(measured) < 2:
        return None
    span = measured[-1].scheduled - measured[0].scheduled
    late = sum(max(0.0, r.dispatched - r.scheduled) for r in measured[1:])
    return (len(measured) - 1) / (span + late) if span + late > 0 else None


def ttft_extremes(records: list[RequestRecord]) -> dict:
    ttfts = [r.first_token - r.sent for r in records
             if r.first_token is not None and r.sent is not None]
    return {"n": len(ttfts), "negative": sum(t < 0 for t in ttfts),
            "min_ms": min(ttfts) * 1e3 if ttfts else None}


def _pct(x) -> str:
    return "-" if x is None else f"{x * 100:.1f} %"


def fault_table(sweep: dict, capped: dict | None = None,
                capped_records: list[RequestRecord] | None = None,
                retokenised: bool = True) -> tuple[list[dict], dict]:
    """Check the five known faults on this run: (rows for the lab, scalars to record).

    `sweep`: a run_fresh_sweep result (with `summaries`); `capped`: the summary of the
    same load run behind a concurrency cap, which makes client-side queueing happen.
    `retokenised`: the runs were given a local tokenizer (BenchConfig.tokenizer), so the
    client re-encoded each answer; without one the client only counted chunks.
    Each check returns (its row, its scalars); a scalar that could not be measured is None
    and left out.
    """
    per_point = [records_of(s) for s in sweep["summaries"]]
    everything = [r for recs in per_point for r in recs] + list(capped_records or [])
    checks = [rate_drift(sweep, per_point), hidden_queueing(capped),
              client_token_counts(everything, retokenised),
              pool_cap(per_point + [capped_records or []]), negative_ttft(everything)]
    rows, scalars = [row for row, _ in checks], {}
    for _, found in checks:
        scalars.update(found)
    return rows, {k: v for k, v in scalars.items() if v is not None}


def capacity_scalars(sweep: dict, slo: dict) -> dict:
    """The sweep's capacity at the SLO (a lower bound when even the top rate met it; not
    measured when no rate did) and the top rate's attainment, for rec.scalars."""
    cap, top = sweep["capacity"], sweep["rows"][-1]
    out = {"top_rate_attainment": (round(top["attainment"], 3), "",
                                   f"share of requests meeting the SLO at {top['load']:g} req/s"),
           "top_rate_output_tok_per_s": (round(top["output_tok_per_s"], 2), "tok/s")}
    if not cap:
        why = NotMeasured(f"no tested rate met the SLO (TTFT ≤ {slo['ttft']:g} ms, "
                          f"TPOT ≤ {slo['tpot']:g} ms)")
        return {**dict.fromkeys(("capacity_rate", "capacity_output_tok_per_s",
                                 "capacity_goodput_rps"), why), **out}
    lower_bound = cap["load"] == max(r["load"] for r in sweep["rows"])  # every rate met it
    return {"capacity_is_lower_bound": ("yes" if lower_bound else "no", "",
                                        "yes: even the highest tested rate met the SLO; "
                                        "test higher rates"),
            "capacity_rate": (cap["load"], "req/s", "highest rate meeting the SLO"),
            "capacity_output_tok_per_s": (round(cap["output_tok_per_s"], 2), "tok/s"),
            "capacity_goodput_rps": (round(cap["goodput_rps"], 3), "req/s"), **out}


def fault_scalars(scalars: dict) -> dict:
    """fault_table's scalars for rec.scalars: floats to 4 decimals, `_ms` names in ms, and the
    relative-sleep figure labelled as modelled (it is computed, not run)."""
    return {name: (round(v, 4) if isinstance(v, float) else v, "ms" if name.endswith("_ms") else "",
                   "modelled from this run's wake-up lags" if "modelled" in name else "")
            for name, v in scalars.items()}


def rate_drift(sweep: dict, per_point: list[list[RequestRecord]]) -> tuple[dict, dict]:
    """Fault 1: did the open-loop schedule keep its rate (and would relative sleeps have)?"""
    scalars = {}
    ratios = [s["rate"]["achieved_vs_target"] for s in sweep["summaries"]]
    naive = [naive_dispatch_rate(recs) for recs in per_point]
    targets = [s["rate"]["target"] for s in sweep["summaries"]]
    if all(x is not None for x in ratios):
        worst = min(ratios)
        naive_vs = [n / t for n, t in zip(naive, targets) if n and t and math.isfinite(t)]
        scalars["achieved_vs_target_worst"] = worst
        if naive_vs:
            scalars["modelled_relative_sleep_vs_target_worst"] = min(naive_vs)
        measured = ", ".join(f"{r['load']:g} → {x * 100:.1f} %"
                             for r, x in zip(sweep["rows"], ratios))
        measured = f"achieved/target per rate: {measured}"
        if naive_vs:
            measured += (f"; relative sleeps would have reached {min(naive_vs) * 100:.1f} % "
                         "at worst (modelled from this run's wake-up lags)")
        verdict = "no drift (≥ 99 %)" if worst >= 0.99 else "drift: the client was short of CPU"
    else:
        measured, verdict = "closed loop (concurrency sweep): no target rate", "not applicable"
    return {"fault": "open-loop rate drift",
            "seen in public tools": "vLLM #21104: 183.5 req/s sent for 200 asked",
            "this run": measured, "verdict": verdict}, scalars


def hidden_queueing(capped: dict | None) -> tuple[dict, dict]:
    """Fault 2: a concurrency cap's client-side wait, seen on both clocks?"""
    scalars = {}
    if capped:
        lat = capped["latency_ms"]
        send, sched = lat["e2e"].get("p99"), lat["e2e_from_schedule"].get("p99")
        wait = lat["queue_wait"].get("p99")
        cap = capped["run"]["config"]["concurrency"]
        scalars.update(capped_e2e_p99_from_send_ms=send, capped_e2e_p99_from_schedule_ms=sched,
                       capped_queue_wait_p99_ms=wait)
        measured = (f"cap of {cap} in flight at {capped['rate']['target']:g} req/s: p99 E2E "
                    f"{send:,.0f} ms from send vs {sched:,.0f} ms from schedule "
                    f"(client wait p99 {wait:,.0f} ms)")
        verdict = "visible: both clocks reported, SLO judged on the schedule's"
    else:
        measured, verdict = "no capped run", "not measured"
    return {"fault": "client queueing hidden by timing from the send",
            "seen in public tools": "vLLM #54101: p99 E2E 507 ms from send vs 3,330 ms "
                                    "from schedule",
            "this run": measured, "verdict": verdict}, scalars


def client_token_counts(records: list[RequestRecord], retokenised: bool) -> tuple[dict, dict]:
    """Fault 3: token counts made on the client (chunks, retokenising) vs the server's usage."""
    tc = token_counts(records)
    if not retokenised:
        tc["retokenised_mismatch_rate"] = None
    scalars = dict(chunks_vs_usage_mismatch_rate=tc["chunks_mismatch_rate"],
                   retokenised_vs_usage_mismatch_rate=tc["retokenised_mismatch_rate"])
    retok = (f"retokenising the text {_pct(tc['retokenised_mismatch_rate'])}" if retokenised
             else "retokenising not tried (no local tokenizer)")
    return {"fault": "client-side token counts",
            "seen in public tools": "inference-perf #580: retokenised count ≠ usage on "
                                    "> 50 % of requests",
            "this run": f"client count ≠ server usage: counting chunks "
                        f"{_pct(tc['chunks_mismatch_rate'])}, {retok}, of "
                        f"{tc['with_usage']} requests",
            "verdict": "throughput uses the server's usage" if not tc["without_usage"]
            else f"{tc['without_usage']} requests had no usage: client counts used"}, scalars


def pool_cap(runs: list[list[RequestRecord]]) -> tuple[dict, dict]:
    """Fault 4: would aiohttp's default pool of 100 connections have held requests back?"""
    peak = max((peak_in_flight(recs) for recs in runs), default=0)
    verdict = (f"a default aiohttp pool would have held back {peak - AIOHTTP_DEFAULT_POOL} "
               "requests inside the client" if peak > AIOHTTP_DEFAULT_POOL else
               f"the default cap of {AIOHTTP_DEFAULT_POOL} would not have bound here "
               f"(peak {peak})")
    return {"fault": "connection pool cap",
            "seen in public tools": "aiohttp's default pool: 100 connections",
            "this run": f"peak requests in flight: {peak}; labkit bench has no cap",
            "verdict": verdict}, {"peak_in_flight": peak}


def negative_ttft(records: list[RequestRecord]) -> tuple[dict, dict]:
    """Fault 5: a TTFT below zero, the sign of two clocks mixed."""
    ext = ttft_extremes(records)
    return {"fault": "negative TTFT",
            "seen in public tools": "GuideLLM #216: negative TTFT under overload",
            "this run": f"{ext['negative']} negative of {ext['n']}; smallest TTFT "
                        f"{ext['min_ms']:,.1f} ms" if ext["n"] else "no TTFT measured",
            "verdict": "one monotonic clock for schedule, send and chunks"
            if ext["negative"] == 0 else "BUG: a TTFT below zero"}, \
        {"negative_ttft_count": ext["negative"], "min_ttft_ms": ext["min_ms"]}
