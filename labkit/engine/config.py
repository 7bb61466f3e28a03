"""Every knob of the teaching engine, written once: this dataclass is the config object,
and the server's flags are built from its fields (names, defaults, choices, help; see
`cli_flags` and server.py), as nano-vllm builds its engine from `fields(Config)`. Adding a
setting touches this file plus the code that uses it.

Sizes that matter for throughput and memory:
- max_num_seqs: how many requests may be RUNNING at once (the batch size ceiling).
- max_num_batched_tokens: the token budget of one step. A decode costs 1 token, a prefill
  chunk costs its length; a long prompt is cut into chunks so it never blocks the decodes
  of everyone else for a whole long forward pass (chunked prefill).
- kv_cache_tokens: how many tokens of KV the cache holds, all layers included. When it runs
  out the scheduler preempts the newest request and recomputes it later.
- block_size: tokens per KV block for the paged cache (prefix_cache "hash" or "none");
  "radix" uses SGLang's page size of 1 so prefix hits can end at any token.
- attention: "plain" (lab 20's op, torch matmuls: read this path first) or "fast"
  (labkit/engine/fast/: cascade attention, kept gather buffers, packed matmuls).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from labkit.engine.dtype import DTYPES, resolve_dtype
from labkit.engine.fast.cpu_gemm import CPU_GEMMS
from labkit.errors import UserError
from labkit.kvcache.radix_cache import RadixPrefixCache

PREFIX_CACHES = ("radix", "hash", "none")
RADIX_EVICTIONS = RadixPrefixCache.EVICT_MODES  # ("leaf", "tail"): one list for flag and cache
POLICIES = ("fcfs", "lpm")
ATTENTIONS = ("fast", "plain")


def setting(default, help: str, choices=None, type=None, flag: str | None = None):
    """A config field that is also a server flag: `--name-with-dashes` unless `flag` says."""
    return field(default=default, metadata={"help": help, "choices": choices, "type": type,
                                            "flag": flag})


@dataclass
class EngineConfig:
    model: str = field(metadata={"help": "Hugging Face model directory (config.json, "
                                 "*.safetensors, tokenizer files), e.g. the path `labkit model "
                                 "build` prints", "required": True})
    served_model_name: str | None = setting(
        None, "model name clients send and /v1/models shows (default: the --model path, as "
              "vLLM does)", type=str)
    attention: str = setting(
        "fast", "plain = lab 20's paged attention op and torch matmuls, the path to read; "
                "fast = cascade attention over shared prefixes, gather buffers kept across "
                "steps, oneDNN-packed matmuls (labkit/engine/fast/; default). Same tokens",
        ATTENTIONS)
    prefix_cache: str = setting(
        "radix", "radix: SGLang-style tree, token-granular hits (default); hash: vLLM-style "
                 "chained block hashes, full blocks only; none: no reuse", PREFIX_CACHES)
    radix_evict: str = setting(
        "leaf", "radix cache eviction when KV runs out: leaf = the least recently used leaf "
                "goes whole, as in SGLang (default); tail = only the tokens needed, cut from "
                "that leaf's end (keeps more of a long shared prompt)", RADIX_EVICTIONS)
    policy: str = setting(
        "fcfs", "admission order: fcfs = arrival order (default); lpm = longest cached prefix "
                "first (more cache hits, can starve unlucky requests)", POLICIES)
    in_batch_prefix_caching: bool = setting(
        True, "admit a request even when a prefill running in the same step is computing its "
              "prefix (by default it waits one step and then hits the cache, as in SGLang; "
              "turn off to watch a burst compute one prompt N times)",
        flag="--no-in-batch-prefix-caching")
    max_num_seqs: int = setting(64, "most requests running at once, the batch size ceiling")
    max_num_batched_tokens: int = setting(2048, "token budget of one step")
    block_size: int = setting(16, "tokens per KV block for --prefix-cache hash|none (radix "
                                  "uses 1)")
    kv_cache_tokens: int = setting(32768, "KV cache capacity in tokens")
    device: str = setting("cpu", "cpu (default) or cuda")
    max_model_len: int | None = setting(
        None, "longest prompt + output in tokens (default: the model's "
              "max_position_embeddings)", type=int)
    dtype: str = setting(
        "auto", "weights and KV dtype; auto = bfloat16 where the hardware has native BF16 "
                "(AMX or AVX-512-BF16 CPUs, sm80+ GPUs), float32 on other CPUs, as vLLM "
                "chooses (labkit/engine/dtype.py)", DTYPES)
    num_threads: int | None = setting(
        None, "torch CPU threads for the forward pass (default: all cores; with --cpu-gemm "
              "torch on 2 cores, 1 leaves a core to the HTTP server at no cost)", type=int)
    prefill_threads: int | None = setting(
        None, "torch CPU threads for steps that prefill at least 64 prompt tokens (default: "
              "all cores; big matmuls split well, and the server has nothing to stream until "
              "such a step ends)", type=int)
    cpu_gemm: str = setting(
        "auto", "float32 matmuls on CPU: onednn = each weight packed once into oneDNN's "
                "blocked layout, as vLLM's CPU build does (faster at decode batch sizes; holds "
                "each weight twice); torch = plain x @ W; auto = onednn on --attention fast, "
                "torch on plain", ("auto", *CPU_GEMMS))
    fault_file: str | None = setting(
        None, "alert drills: while PATH holds 'step_delay_ms=N', every engine step sleeps N ms "
              "first (written and removed at run time; see engine/fault.py)", type=str)
    # Decided in __post_init__ from `dtype` (not flags): what the engine really runs.
    resolved_dtype: str = field(default="", init=False)
    dtype_reason: str = field(default="", init=False)

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
        if self.attention not in ATTENTIONS:
            raise UserError(f"--attention must be one of {', '.join(ATTENTIONS)}")
        if self.dtype not in DTYPES:
            raise UserError(f"--dtype must be one of {', '.join(DTYPES)}")
        if self.cpu_gemm == "auto":
            self.cpu_gemm = "onednn" if self.attention == "fast" else "torch"
        if self.cpu_gemm not in CPU_GEMMS:
            raise UserError(f"--cpu-gemm must be one of auto, {', '.join(CPU_GEMMS)}")
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
        checkpoint = self.hf_config.get("dtype") or self.hf_config.get("torch_dtype") or "float32"
        self.resolved_dtype, self.dtype_reason = resolve_dtype(self.dtype, self.device,
                                                               checkpoint)

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


def cli_flags() -> list[tuple[str, dict]]:
    """(flag, argparse keyword arguments) for every settable field, in field order."""
    out = []
    for f in fields(EngineConfig):
        if not f.init:
            continue
        m = f.metadata
        flag = m.get("flag") or "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            kw = {"dest": f.name, "action": "store_false" if f.default else "store_true",
                  "help": m["help"]}
        elif m.get("required"):
            kw = {"dest": f.name, "required": True, "help": m["help"]}
        else:
            kw = {"dest": f.name, "default": f.default, "type": m.get("type") or type(f.default),
                  "help": m["help"] + ("" if f.default is None or "default" in m["help"]
                                       else f" (default {f.default})")}
            if m.get("choices"):
                kw["choices"] = m["choices"]
        if flag == "--fault-file":
            kw["metavar"] = "PATH"
        out.append((flag, kw))
    return out


def from_args(args) -> EngineConfig:
    """The config from parsed flags: one attribute per settable field."""
    return EngineConfig(**{f.name: getattr(args, f.name) for f in fields(EngineConfig) if f.init})
