"""Every knob of the teaching engine in one dataclass (the server's flags map onto it 1:1).

Sizes that matter for throughput and memory:
- max_num_seqs: how many requests may be RUNNING at once (the batch size ceiling).
- max_num_batched_tokens: the token budget of one step. A decode costs 1 token, a prefill
  chunk costs its length; a long prompt is cut into chunks so it never blocks the decodes
  of everyone else for a whole long forward pass (chunked prefill).
- kv_cache_tokens: how many tokens of KV the cache holds, all layers included. When it runs
  out the scheduler preempts the newest request and recomputes it later.
- block_size: tokens per KV block for the paged cache (prefix_cache "hash" or "none");
  "radix" uses SGLang's page size of 1 so prefix hits can end at any token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from labkit.engine.cpu_gemm import CPU_GEMMS
from labkit.errors import UserError
from labkit.kvcache.radix_cache import RadixPrefixCache

PREFIX_CACHES = ("radix", "hash", "none")
RADIX_EVICTIONS = RadixPrefixCache.EVICT_MODES  # ("leaf", "tail"): one list for flag and cache
POLICIES = ("fcfs", "lpm")


@dataclass
class EngineConfig:
    model: str
    served_model_name: str | None = None  # what /v1/models shows; default: the model path
    prefix_cache: str = "radix"
    radix_evict: str = "leaf"  # radix only: "leaf" (SGLang, whole leaves) or "tail" (tokens needed)
    policy: str = "fcfs"
    in_batch_prefix_caching: bool = True  # a request waits a step for a prefix being prefilled
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    block_size: int = 16
    kv_cache_tokens: int = 32768
    device: str = "cpu"
    max_model_len: int | None = None  # default: the model's max_position_embeddings
    dtype: str = "auto"  # auto = the checkpoint's dtype (float32 for the tiny Llama)
    num_threads: int | None = None  # torch threads on CPU; None = all cores
    prefill_threads: int | None = None  # for steps prefilling 64+ tokens; None = all cores
    cpu_gemm: str = "onednn"  # CPU float32 matmuls: weights packed once for oneDNN, or "torch"
    fault_file: str | None = None  # alert drills: a file that makes every step slow (fault.py)

    def __post_init__(self):
        path = Path(self.model).expanduser()
        if not (path / "config.json").is_file():
            raise UserError(f"--model {self.model}: no config.json there; pass a Hugging Face "
                            "model directory (e.g. the path `labkit model build` prints)")
        self.model = str(path.resolve())
        if self.prefix_cache not in PREFIX_CACHES:
            raise UserError(f"--prefix-cache must be one of {', '.join(PREFIX_CACHES)}")
        if self.radix_evict not in RADIX_EVICTIONS:
            raise UserError(f"--radix-evict must be {' or '.join(RADIX_EVICTIONS)}")
        if self.policy not in POLICIES:
            raise UserError(f"--policy must be one of {', '.join(POLICIES)}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise UserError("--dtype must be auto, float32, bfloat16 or float16")
        if self.cpu_gemm not in CPU_GEMMS:
            raise UserError(f"--cpu-gemm must be one of {', '.join(CPU_GEMMS)}")
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size", "kv_cache_tokens"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("num_threads", "prefill_threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1 (or left out)")
        if self.kv_cache_tokens < self.block_size:
            raise UserError(f"--kv-cache-tokens ({self.kv_cache_tokens}) must hold at least one "
                            f"block of --block-size {self.block_size} tokens")
        limit = self.hf_config.get("max_position_embeddings", 2048)
        if self.max_model_len is None:
            self.max_model_len = limit
        if not 2 <= self.max_model_len <= limit:
            raise UserError(f"--max-model-len {self.max_model_len} must be between 2 and the "
                            f"model's max_position_embeddings ({limit})")
        if self.served_model_name is None:
            self.served_model_name = self.model

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens the KV cache really holds: whole blocks (radix: blocks of one token)."""
        if self.prefix_cache == "radix":
            return self.kv_cache_tokens
        return self.kv_cache_tokens // self.block_size * self.block_size

    @property
    def hf_config(self) -> dict:
        """config.json as a dict: the architecture sizes the model runner builds from."""
        return json.loads((Path(self.model) / "config.json").read_text())
