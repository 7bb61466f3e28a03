"""TensorRT-LLM: the common config mapped to `trtllm-serve MODEL ...` (GPU tier only).

trtllm-serve takes the model as a positional argument and spells flags with underscores.
Everything its command line lacks goes into a YAML file of LLM-API options passed with
--extra_llm_api_options (alias --config): here prefix reuse
(`kv_cache_config.enable_block_reuse`), chunked prefill, dtype, and the metrics switches.
A `kv_cache_config` in that YAML REPLACES the one trtllm-serve built from its flags, so the
KV memory fraction is written into the YAML as well as onto the command line.

Metrics, unlike vLLM and SGLang: GET /metrics answers a JSON array of per-iteration stats
(needs `enable_iter_perf_stats`), not Prometheus text. Prometheus text is served at
GET /prometheus/metrics, and only with `return_perf_metrics: true`; names start `trtllm_`.
"""

from __future__ import annotations

from pathlib import Path

from labkit.env import which
from labkit.errors import UserError
from labkit.serve.config import LaunchPlan, ServeConfig, common_env, opt, resolve_model

NAME = "trtllm"
TITLE = "TensorRT-LLM"
REQUIRES_GPU = True
EXECUTABLE = "trtllm-serve"
INSTALL_HINT = ("GPU only: install TensorRT-LLM from NVIDIA's index on a CUDA box "
                "(pip install tensorrt_llm --extra-index-url https://pypi.nvidia.com, or "
                "NVIDIA's TensorRT-LLM container); see README, GPU tier")
OPTIONS_FILE = "trtllm-extra-llm-api-options.yaml"

# Knob -> flag. Source: trtllm-serve command reference,
# https://nvidia.github.io/TensorRT-LLM/commands/trtllm-serve.html (0.18.2 lists MODEL,
# --host, --port, --backend, --max_batch_size, --max_num_tokens, --max_seq_len, --tp_size,
# --kv_cache_free_gpu_memory_fraction, --extra_llm_api_options) and the 1.x click options in
# tensorrt_llm/commands/serve.py (same spellings; --tp_size aliases --tensor_parallel_size,
# --kv_cache_free_gpu_memory_fraction aliases --free_gpu_memory_fraction, --config aliases
# --extra_llm_api_options).
FLAGS = {
    "model": None,  # positional
    "host": "--host",
    "port": "--port",
    "backend": "--backend",  # pytorch: load the HF checkpoint directly, no engine build
    "max_num_seqs": "--max_batch_size",
    "max_model_len": "--max_seq_len",
    "max_num_batched_tokens": "--max_num_tokens",
    "tensor_parallel_size": "--tp_size",
    "gpu_memory_utilization": "--kv_cache_free_gpu_memory_fraction",
    "extra_llm_api_options": "--extra_llm_api_options",
}
DOCUMENTED_FLAGS = {f for f in FLAGS.values() if f}
# Knob -> LLM-API YAML key. Source: LLM API reference, KvCacheConfig
# (https://nvidia.github.io/TensorRT-LLM/llm-api/reference.html: enable_block_reuse=True,
# max_tokens, free_gpu_memory_fraction=0.9, tokens_per_block=32) and LlmArgs (dtype,
# enable_chunked_prefill); metrics keys from NVIDIA AIPerf's server-metrics doc (TRT-LLM).
YAML_KEYS = {
    "prefix_caching": "kv_cache_config.enable_block_reuse",
    "gpu_memory_utilization": "kv_cache_config.free_gpu_memory_fraction",
    "kv_cache_tokens": "kv_cache_config.max_tokens",
    "block_size": "kv_cache_config.tokens_per_block",
    "chunked_prefill": "enable_chunked_prefill",
    "dtype": "dtype",
    "metrics": "return_perf_metrics",  # Prometheus at /prometheus/metrics
    "iteration_stats": "enable_iter_perf_stats",  # JSON at /metrics, queue/KV gauges
}

# Prometheus names (GET /prometheus/metrics), from tensorrt_llm/metrics/collector.py
# (MetricsCollector, prefix "trtllm_"); older releases expose fewer of them.
METRICS_PATH = "/prometheus/metrics"
JSON_METRICS_PATH = "/metrics"
METRICS = {
    "requests_running": "trtllm_num_requests_running",
    "requests_waiting": "trtllm_num_requests_waiting",
    "kv_cache_usage": "trtllm_kv_cache_utilization",
    "prefix_cache_hit_rate": "trtllm_kv_cache_hit_rate",
    "ttft_seconds": "trtllm_time_to_first_token_seconds",
    "tpot_seconds": "trtllm_time_per_output_token_seconds",
    "e2e_seconds": "trtllm_e2e_request_latency_seconds",
    "queue_time_seconds": "trtllm_request_queue_time_seconds",
    "prefill_time_seconds": "trtllm_request_prefill_time_seconds",
    "decode_time_seconds": "trtllm_request_decode_time_seconds",
    "prompt_tokens_total": "trtllm_prompt_tokens_total",
    "generation_tokens_total": "trtllm_generation_tokens_total",
    "request_success_total": "trtllm_request_success_total",
}


def executable() -> str | None:
    return which(EXECUTABLE)


def missing() -> str | None:
    if executable() is None:
        return f"the {EXECUTABLE} command is not installed (TensorRT-LLM)"
    return None


def llm_api_options(cfg: ServeConfig) -> dict:
    """The YAML document passed with --extra_llm_api_options."""
    kv: dict = {}
    if cfg.prefix_caching_wanted() is not None:
        kv["enable_block_reuse"] = cfg.prefix_caching_wanted()
    if cfg.gpu_memory_utilization is not None:
        kv["free_gpu_memory_fraction"] = cfg.gpu_memory_utilization
    if cfg.kv_cache_tokens is not None:
        kv["max_tokens"] = cfg.kv_cache_tokens
    if cfg.block_size is not None:
        kv["tokens_per_block"] = cfg.block_size
    options: dict = {"return_perf_metrics": True, "enable_iter_perf_stats": True}
    if kv:
        options["kv_cache_config"] = kv
    if cfg.chunked_prefill is not None:
        options["enable_chunked_prefill"] = cfg.chunked_prefill
    if cfg.dtype is not None:
        options["dtype"] = cfg.dtype
    return options


def build(cfg: ServeConfig, workdir: Path | None = None) -> LaunchPlan:
    cfg.reject("TensorRT-LLM", {
        "served_model_name": "trtllm-serve serves the model under the MODEL argument's name",
        "quantization": "it reads quantization from the checkpoint: serve a checkpoint "
                        "quantized with TensorRT Model Optimizer (e.g. an -FP8 model id)",
        "kv_cache_gib": "size the KV cache with --gpu-memory-utilization (a fraction of the "
                        "memory left after weights) or --kv-cache-tokens",
        "policy": "its scheduler policies are set in the YAML scheduler_config; pass your "
                  "own file after --",
        "enforce_eager": "CUDA graphs are configured in the YAML (cuda_graph_config)",
    })
    if cfg.prefix_cache == "radix":
        raise UserError("TensorRT-LLM reuses KV blocks (--prefix-cache hash, or "
                        "--prefix-caching); the radix cache is SGLang's and the mini engine's")
    if cfg.device == "cpu":
        raise UserError("TensorRT-LLM is GPU only; on the CPU tier use --engine vllm or mini")
    import yaml  # pyyaml is a core dependency; imported here to keep `labkit --help` fast

    options_path = Path(workdir or ".") / OPTIONS_FILE
    argv = [executable() or EXECUTABLE, resolve_model(cfg.model),
            "--host", cfg.host, "--port", str(cfg.port), "--backend", "pytorch"]
    opt(argv, "--max_batch_size", cfg.max_num_seqs)
    opt(argv, "--max_seq_len", cfg.max_model_len)
    opt(argv, "--max_num_tokens", cfg.max_num_batched_tokens)
    opt(argv, "--tp_size", cfg.tensor_parallel_size)
    opt(argv, "--kv_cache_free_gpu_memory_fraction", cfg.gpu_memory_utilization)
    argv += ["--extra_llm_api_options", str(options_path)]
    argv += cfg.extra_args
    env = {**common_env(cfg.model), **cfg.extra_env}
    return LaunchPlan(
        engine=NAME, argv=argv, env=env,
        files={str(options_path): yaml.safe_dump(llm_api_options(cfg), sort_keys=False)},
        metrics_path=METRICS_PATH,
        notes=[f"metrics: Prometheus text at {METRICS_PATH}; {JSON_METRICS_PATH} is a JSON "
               "array of iteration stats"])
