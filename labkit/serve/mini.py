"""The teaching engine (labkit/engine/): the common config mapped to its server's flags.

It runs on the CPU tier next to vLLM's CPU build, with the same OpenAI API and vLLM's metric
names, so a lab can compare a radix prefix cache with a block-hash one, or fcfs with
longest-prefix-match scheduling, on one machine. Its KV cache is sized in tokens
(--kv-cache-tokens), the unit the KV-cache lab reasons in. It always chunks long prompts
(chunks of --max-num-batched-tokens), so chunked prefill can be asked for but not turned off.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from labkit.serve import vllm
from labkit.serve.config import LaunchPlan, ServeConfig, common_env, opt, resolve_model
from labkit.errors import UserError

NAME = "mini"
TITLE = "the teaching engine"
REQUIRES_GPU = False
PYTHON_MODULE = "labkit.engine.server"
INSTALL_HINT = ("the teaching engine ships with labkit (labkit/engine/, built by the KV-cache "
                "issue); this checkout does not have it yet — update labkit, or use "
                "--engine vllm meanwhile")

# Knob -> flag. Source: the server's own argparse (labkit/engine/server.py build_parser(),
# `python -m labkit.engine.server --help`); tests parse our argv with that very parser.
FLAGS = {
    "model": "--model",
    "host": "--host",
    "port": "--port",
    "served_model_name": "--served-model-name",
    "prefix_cache": "--prefix-cache",  # radix | hash | none
    "policy": "--policy",  # fcfs | lpm
    "max_num_seqs": "--max-num-seqs",
    "max_num_batched_tokens": "--max-num-batched-tokens",
    "block_size": "--block-size",
    "kv_cache_tokens": "--kv-cache-tokens",
    "max_model_len": "--max-model-len",
    "dtype": "--dtype",  # auto, float32, bfloat16, float16
    "device": "--device",
}
DOCUMENTED_FLAGS = set(FLAGS.values())

# It exports vLLM's names and meanings (labkit/engine/prometheus_metrics.py), on purpose: one dashboard
# and one bench read both engines.
METRICS_PATH = "/metrics"
METRICS = dict(vllm.METRICS)


def missing() -> str | None:
    try:
        found = importlib.util.find_spec(PYTHON_MODULE) is not None
    except ModuleNotFoundError:  # the parent package labkit.engine itself is absent
        found = False
    return None if found else f"the module {PYTHON_MODULE} is not in this labkit checkout"


def build(cfg: ServeConfig, workdir: Path | None = None) -> LaunchPlan:
    cfg.reject("the teaching engine", {
        "quantization": "it has no quantized kernels",
        "tensor_parallel_size": "it runs on one device",
        "kv_cache_gib": "size its KV cache in tokens with --kv-cache-tokens",
        "gpu_memory_utilization": "size its KV cache in tokens with --kv-cache-tokens",
        "enforce_eager": "it is always eager",
    })
    if cfg.chunked_prefill is False:
        raise UserError("the teaching engine always prefills long prompts in chunks of "
                        "--max-num-batched-tokens; raise that instead of turning chunking off")
    prefix_cache = cfg.prefix_cache
    if prefix_cache is None and cfg.prefix_caching is not None:
        prefix_cache = "radix" if cfg.prefix_caching else "none"
    argv = [sys.executable, "-m", PYTHON_MODULE, "--model", resolve_model(cfg.model),
            "--host", cfg.host, "--port", str(cfg.port)]
    opt(argv, "--served-model-name", cfg.served_model_name)
    opt(argv, "--prefix-cache", prefix_cache)
    opt(argv, "--policy", cfg.policy)
    opt(argv, "--max-num-seqs", cfg.max_num_seqs)
    opt(argv, "--max-num-batched-tokens", cfg.max_num_batched_tokens)
    opt(argv, "--block-size", cfg.block_size)
    opt(argv, "--kv-cache-tokens", cfg.kv_cache_tokens)
    opt(argv, "--max-model-len", cfg.max_model_len)
    opt(argv, "--dtype", cfg.dtype)
    opt(argv, "--device", cfg.device)
    argv += cfg.extra_args
    env = {**common_env(cfg.model), **cfg.extra_env}
    return LaunchPlan(engine=NAME, argv=argv, env=env, metrics_path=METRICS_PATH)
