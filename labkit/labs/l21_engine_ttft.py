"""Measure what a prefix cache does to time-to-first-token on a real server (lab 21).

    row = measure_prefix_cache_ttft(model_path, "radix", num_requests=32, ...)

starts the teaching engine (labkit/engine) through the launcher with one prefix cache,
sends a shared-prefix workload with labkit's load generator (labkit/bench), reads the
server's own prefix-cache counters from /metrics, and stops the server. One call, one
configuration; call it once per cache and compare the rows. What the lab records from the
rows, one rec.scalars call each: ttft_scalars (one cache), failed_scalars (a cache whose
server did not run), speedup_scalars (every cache against none).

Why a concurrency cap and not an open-loop rate: with a fixed number in flight the
comparison isolates what the cache saves in prefill, not how a growing queue behaves.
Requests of one group that arrive together still share: the engine publishes a prefill
chunk's KV as soon as it is computed, and a request whose prefix is being prefilled in
the same step waits one step for it (in-batch prefix caching, labkit/engine/scheduler.py).
"""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path

import numpy as np

from labkit.bench.loadgen import BenchConfig, run_bench
from labkit.bench.workloads import WorkloadParams
from labkit.runs import NotMeasured
from labkit.serve import metric_name, serve

PREFIX_COUNTERS = ("prefix_cache_queries_total", "prefix_cache_hits_total")


def parse_counters(text: str, engine: str = "mini") -> dict:
    """Sum each prefix-cache counter over its label sets, from Prometheus text; None when
    the server does not export it."""
    out = {}
    for concept in PREFIX_COUNTERS:
        name = metric_name(engine, concept)
        values = [float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                  if name and (ln.startswith(name + "{") or ln.startswith(name + " "))]
        out[concept] = sum(values) if values else None
    return out


def read_counters(metrics_url: str, engine: str = "mini") -> dict:
    with urllib.request.urlopen(metrics_url, timeout=10) as r:
        return parse_counters(r.read().decode(), engine)


def measure_prefix_cache_ttft(model_path, prefix_cache: str, *, policy: str = "fcfs",
                              num_requests: int = 32, num_groups: int = 4,
                              system_prompt_len: int = 300, question_len: int = 16,
                              output_len: int = 8, concurrency: int = 2,
                              device: str | None = None,
                              out_dir: str | Path = "runs/engine_ttft", seed: int = 0,
                              startup_timeout: float = 300.0) -> dict:
    """Serve model_path with the teaching engine and `prefix_cache`, bench it, return a row."""
    out_dir = Path(out_dir) / prefix_cache
    t0 = time.monotonic()
    with serve("mini", model=str(model_path), port=None, prefix_cache=prefix_cache,
               policy=policy, device=device, log_dir=out_dir / "server",
               timeout=startup_timeout) as server:
        startup_s = time.monotonic() - t0
        # Warm-up: two short unrelated prompts pay the first-call costs (allocations, lazy
        # init) outside the measurement, and share nothing with the workload's prefixes.
        run_bench(BenchConfig(
            base_url=server.base_url, model=server.model, workload="random", num_requests=2,
            concurrency=1, out_dir=str(out_dir / "warmup"), progress=False, seed=seed + 1,
            params=WorkloadParams(input_len=16, output_len=2)))
        before = read_counters(server.metrics_url)
        summary = run_bench(BenchConfig(
            base_url=server.base_url, model=server.model, workload="shared-prefix",
            num_requests=num_requests, concurrency=concurrency, out_dir=str(out_dir / "bench"),
            progress=False, seed=seed,
            params=WorkloadParams(num_groups=num_groups, system_prompt_len=system_prompt_len,
                                  question_len=question_len, output_len=output_len)))
        after = read_counters(server.metrics_url)
    ttft = summary["latency_ms"]["ttft"]
    # Differences: the warm-up's lookups are not the workload's. None: not exported.
    queries, hits = (None if after[k] is None or before[k] is None else int(after[k] - before[k])
                     for k in PREFIX_COUNTERS)
    return {"prefix_cache": prefix_cache, "policy": policy, "device": device or "default",
            "requests_ok": summary["requests"]["completed"],
            "requests_failed": summary["requests"]["failed"],
            "ttft_p50_ms": round(ttft["p50"], 1), "ttft_p99_ms": round(ttft["p99"], 1),
            "ttft_mean_ms": round(ttft["mean"], 1),
            "e2e_p50_ms": round(summary["latency_ms"]["e2e"]["p50"], 1),
            "prompt_tokens": summary["tokens"]["input_tokens"],
            "prefix_cache_queries": queries, "prefix_cache_hits": hits,
            "hit_rate": round(hits / queries, 4) if queries and hits is not None else None,
            "startup_s": round(startup_s, 1),
            # A busy machine stretches both startup and the TTFT tail: keep its load in view.
            "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "bench_dir": str(out_dir / "bench")}


def ttft_scalars(row: dict, note: str) -> dict:
    """One cache's TTFT percentiles and the engine's own hit rate, for rec.scalars."""
    kind = row["prefix_cache"]
    hit = NotMeasured("the engine's /metrics has no prefix-cache counters") \
        if row["hit_rate"] is None else \
        (row["hit_rate"], "", "the engine's /metrics: prefix_cache_hits / prefix_cache_queries")
    return {f"ttft_p50_ms_{kind}": (row["ttft_p50_ms"], "ms", note),
            f"ttft_p99_ms_{kind}": (row["ttft_p99_ms"], "ms", note),
            f"engine_hit_rate_{kind}": hit}


def failed_scalars(cache_kind: str, why: str) -> dict:
    """What a cache whose server did not run leaves unmeasured, for rec.scalars."""
    return dict.fromkeys((f"{k}_{cache_kind}" for k in ("ttft_p50_ms", "ttft_p99_ms",
                                                         "engine_hit_rate")),
                         NotMeasured(why[:500]))


def speedup_scalars(rows: list[dict]) -> dict:
    """TTFT p50 without a prefix cache / with each cache, for rec.scalars."""
    base = next((r for r in rows if r["prefix_cache"] == "none"), None)
    out = {}
    for r in rows:
        name = f"ttft_p50_speedup_{r['prefix_cache']}"
        if base and r is not base and r["ttft_p50_ms"] > 0:
            out[name] = (round(base["ttft_p50_ms"] / r["ttft_p50_ms"], 2), "x",
                         f"TTFT p50 without prefix cache / with {r['prefix_cache']}")
        elif not base:
            out[name] = NotMeasured("no run without a prefix cache to compare with")
    return out


def plot_ttft(rows: list[dict], ax=None):
    """Grouped bars: TTFT p50 and p99 per prefix-cache setting."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.4))
    x = np.arange(len(rows))
    for i, (key, colour) in enumerate((("ttft_p50_ms", "tab:blue"), ("ttft_p99_ms", "tab:red"))):
        bars = ax.bar(x + (i - 0.5) * 0.38, [r[key] for r in rows], 0.38, color=colour,
                      label=key.split("_")[1])
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(x, [r["prefix_cache"] + (f"\nhit {100 * r['hit_rate']:.0f}%"
                                           if r["hit_rate"] is not None else "") for r in rows])
    ax.set_ylabel("TTFT (ms, send → first token)")
    ax.legend(fontsize=8)
    return ax

