"""SGLang: the common config mapped to `python -m sglang.launch_server` flags (GPU tier only).

SGLang 0.5.x ships no CPU kernels on PyPI, so this module is exercised here by its flag
mapping, not by a running server. Two differences from vLLM worth teaching:
- prefix caching is a radix tree over token ids (RadixAttention), on by default; the only
  switch is --disable-radix-cache.
- memory is one fraction, --mem-fraction-static, for weights AND the KV pool together
  (vLLM's --gpu-memory-utilization also covers both); --max-total-tokens caps the pool in
  tokens instead.
Prometheus metrics exist only with --enable-metrics, which we always pass: a lab that
compares engines needs the server-side view of every one of them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from labkit.serve.config import LaunchPlan, ServeConfig, common_env, opt, resolve_model
from labkit.errors import UserError

NAME = "sglang"
TITLE = "SGLang"
REQUIRES_GPU = True
PYTHON_MODULE = "sglang"
INSTALL_HINT = "pip install -e '.[sglang]' (sglang[all]>=0.5) on a CUDA box"
ENTRYPOINT = "sglang.launch_server"

# Knob -> flag. Source: SGLang "Server Arguments" doc,
# https://docs.sglang.ai/advanced_features/server_arguments.html (sgl-project/sglang
# docs/advanced_features/server_arguments.md, SGLang 0.5.x): sections "Model and tokenizer",
# "HTTP server", "Quantization and data type", "Memory and scheduling", "Runtime options",
# "Logging", "API related", "Optimization/debug options".
FLAGS = {
    "model": "--model-path",
    "host": "--host",
    "port": "--port",
    "served_model_name": "--served-model-name",
    "max_num_seqs": "--max-running-requests",
    "max_model_len": "--context-length",
    "prefix_caching": (None, "--disable-radix-cache"),  # on by default; no "enable" flag
    "chunked_prefill": "--chunked-prefill-size",  # N tokens per chunk; -1 disables
    "max_num_batched_tokens": "--max-prefill-tokens",  # only when chunking is off
    "dtype": "--dtype",
    "quantization": "--quantization",
    "tensor_parallel_size": "--tp-size",
    "gpu_memory_utilization": "--mem-fraction-static",
    "kv_cache_tokens": "--max-total-tokens",
    "block_size": "--page-size",
    "policy": "--schedule-policy",  # lpm, random, fcfs, dfs-weight, lof, priority
    "enforce_eager": ("--disable-cuda-graph", None),
    "metrics": "--enable-metrics",
}
DOCUMENTED_FLAGS = {f for v in FLAGS.values() for f in (v if isinstance(v, tuple) else (v,))
                    if f}

# Prometheus names at GET /metrics with --enable-metrics (FIELD_NOTES "Engine metrics";
# the same set in NVIDIA AIPerf's server-metrics doc, which adds sglang:gen_throughput).
METRICS_PATH = "/metrics"
METRICS = {
    "requests_running": "sglang:num_running_reqs",
    "requests_waiting": "sglang:num_queue_reqs",
    "kv_cache_usage": "sglang:token_usage",  # fraction of the KV pool's tokens in use
    "prefix_cache_hit_rate": "sglang:cache_hit_rate",  # a gauge, not hits/queries counters
    "prefix_cache_hits_total": "sglang:cached_tokens_total",  # prompt tokens served cached
    "ttft_seconds": "sglang:time_to_first_token_seconds",
    "itl_seconds": "sglang:inter_token_latency_seconds",
    "e2e_seconds": "sglang:e2e_request_latency_seconds",
    "queue_time_seconds": "sglang:queue_time_seconds",
    "prompt_tokens_total": "sglang:prompt_tokens_total",
    "generation_tokens_total": "sglang:generation_tokens_total",
    "generation_throughput": "sglang:gen_throughput",  # tokens/s gauge from the scheduler
}


def missing() -> str | None:
    if importlib.util.find_spec(PYTHON_MODULE) is None:
        return f"the Python module {PYTHON_MODULE!r} is not installed"
    return None


def build(cfg: ServeConfig, workdir: Path | None = None) -> LaunchPlan:
    cfg.reject("SGLang", {
        "kv_cache_gib": "size the KV pool with --gpu-memory-utilization (maps to "
                        "--mem-fraction-static) or --kv-cache-tokens (--max-total-tokens)",
    })
    if cfg.prefix_cache == "hash":
        raise UserError("SGLang's prefix cache is a radix tree (--prefix-cache radix); "
                        "block hashing is vLLM's")
    if cfg.device == "cpu":
        raise UserError("SGLang is GPU only here (no CPU kernels on PyPI); on the CPU tier "
                        "use --engine vllm or --engine mini")
    argv = [sys.executable, "-m", ENTRYPOINT, "--model-path", resolve_model(cfg.model),
            "--host", cfg.host, "--port", str(cfg.port), "--enable-metrics"]
    opt(argv, "--served-model-name", cfg.served_model_name)
    opt(argv, "--max-running-requests", cfg.max_num_seqs)
    opt(argv, "--context-length", cfg.max_model_len)
    if cfg.prefix_caching_wanted() is False:
        argv.append("--disable-radix-cache")
    if cfg.chunked_prefill is False:
        argv += ["--chunked-prefill-size", "-1"]
        opt(argv, "--max-prefill-tokens", cfg.max_num_batched_tokens)
    else:  # chunking is SGLang's default; a token budget sets the chunk size
        opt(argv, "--chunked-prefill-size", cfg.max_num_batched_tokens)
    opt(argv, "--dtype", cfg.dtype)
    opt(argv, "--quantization", cfg.quantization)
    opt(argv, "--tp-size", cfg.tensor_parallel_size)
    opt(argv, "--mem-fraction-static", cfg.gpu_memory_utilization)
    opt(argv, "--max-total-tokens", cfg.kv_cache_tokens)
    opt(argv, "--page-size", cfg.block_size)
    opt(argv, "--schedule-policy", cfg.policy)
    if cfg.enforce_eager:
        argv.append("--disable-cuda-graph")
    argv += cfg.extra_args
    env = {**common_env(cfg.model), **cfg.extra_env}
    return LaunchPlan(engine=NAME, argv=argv, env=env, metrics_path=METRICS_PATH)
