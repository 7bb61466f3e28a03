"""One vocabulary for engine metrics, so dashboards and the load generator can compare engines.

Each engine names the same quantity differently (vLLM `vllm:num_requests_waiting`, SGLang
`sglang:num_queue_reqs`, TensorRT-LLM `trtllm_num_requests_waiting`). The per-engine tables
live next to each engine's flags (METRICS in vllm.py, sglang.py, trtllm.py, mini.py); this
module looks them up by concept. A concept an engine does not export maps to None: compute
it client-side (labkit bench) instead of pretending.

Caveats a dashboard must respect:
- prefix cache: vLLM exports token counters (hits/queries, a rate you compute), SGLang and
  TensorRT-LLM a hit-rate gauge.
- TPOT: vLLM and TensorRT-LLM export a per-request time-per-output-token histogram; SGLang
  exports only inter-token latency (ITL).
- TensorRT-LLM serves Prometheus text at /prometheus/metrics, not /metrics.
"""

from __future__ import annotations

from labkit.serve.registry import ENGINES, engine_module

CONCEPTS = {
    "requests_running": "gauge: requests in the running batch",
    "requests_waiting": "gauge: requests queued in the server, not yet scheduled",
    "kv_cache_usage": "gauge: fraction 0..1 of the KV cache in use",
    "prefix_cache_hit_rate": "gauge: share of prompt tokens found in the prefix cache",
    "prefix_cache_queries_total": "counter: prompt tokens looked up in the prefix cache",
    "prefix_cache_hits_total": "counter: prompt tokens served from the prefix cache",
    "ttft_seconds": "histogram: time to first token",
    "itl_seconds": "histogram: gap between consecutive output tokens (pooled)",
    "tpot_seconds": "histogram: per request (e2e - ttft) / (output tokens - 1)",
    "e2e_seconds": "histogram: request latency, arrival to last token",
    "queue_time_seconds": "histogram: time waiting before the first schedule",
    "prefill_time_seconds": "histogram: time in prefill",
    "decode_time_seconds": "histogram: time in decode",
    "prompt_tokens_total": "counter: prompt tokens processed",
    "generation_tokens_total": "counter: output tokens generated",
    "preemptions_total": "counter: requests preempted (KV memory ran out)",
    "request_success_total": "counter: finished requests",
    "generation_throughput": "gauge: output tokens/s measured by the server",
}


def metric_names(engine: str) -> dict[str, str]:
    """concept -> Prometheus metric name, for the concepts this engine exports."""
    return dict(engine_module(engine).METRICS)


def metric_name(engine: str, concept: str) -> str | None:
    if concept not in CONCEPTS:
        raise KeyError(f"unknown metric concept {concept!r}; known: {', '.join(CONCEPTS)}")
    return metric_names(engine).get(concept)


def metrics_path(engine: str) -> str:
    """Where the engine serves Prometheus text."""
    return engine_module(engine).METRICS_PATH


def metrics_table() -> dict[str, dict[str, str | None]]:
    """concept -> {engine: name or None}: the cross-engine mapping in one table."""
    return {c: {e: metric_names(e).get(c) for e in ENGINES} for c in CONCEPTS}
