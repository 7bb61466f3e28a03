"""The server's own view, read from its Prometheus endpoint around a benchmark.

A load generator measures from outside; the engine measures from inside. Reading both over
the same requests is a cross-check: the server's TTFT starts when the request reached the
engine, the client's when it was sent, so client − server ≈ HTTP, JSON and API-server
time. Counters and histograms are cumulative, so we take the difference of two scrapes
(before and after the requests of interest).

Names come from labkit.serve.metric_vocabulary (one concept, each engine's own name).
"""

from __future__ import annotations

import urllib.request

from labkit.serve.metric_vocabulary import metric_name


def scrape(metrics_url: str | None) -> dict[str, float]:
    """Prometheus text → {sample name: value summed over label sets}; {} if unreachable."""
    if not metrics_url:
        return {}
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(metrics_url, timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def histogram_mean(engine: str, concept: str, before: dict, after: dict) -> float | None:
    """Mean of a server histogram (e.g. "ttft_seconds") over the requests between scrapes."""
    name = metric_name(engine, concept)
    if not name or f"{name}_count" not in after:
        return None
    n = after[f"{name}_count"] - before.get(f"{name}_count", 0.0)
    total = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
    return total / n if n > 0 else None


def counter_delta(engine: str, concept: str, before: dict, after: dict) -> float | None:
    name = metric_name(engine, concept)
    if not name or name not in after:
        return None
    return after[name] - before.get(name, 0.0)


def prefix_hit_rate(engine: str, before: dict, after: dict) -> float | None:
    """Share of prompt tokens served from the prefix cache between two scrapes.

    vLLM and the teaching engine export token counters (hits / queries); SGLang and
    TensorRT-LLM a hit-rate gauge, read as it stands after the run.
    """
    queries = counter_delta(engine, "prefix_cache_queries_total", before, after)
    hits = counter_delta(engine, "prefix_cache_hits_total", before, after)
    if queries is not None and hits is not None:
        return hits / queries if queries > 0 else None
    gauge = metric_name(engine, "prefix_cache_hit_rate")
    return after.get(gauge) if gauge else None
