"""One serving config for every engine, and the launch plan an engine module turns it into.

Engines name the same knob differently (vLLM `--max-num-seqs`, SGLang
`--max-running-requests`, TensorRT-LLM `--max_batch_size`). A lab compares engines by
changing ONE field of `ServeConfig` and letting each engine module (vllm.py, sglang.py,
trtllm.py, mini.py) translate it into that engine's real flags. `None` always means "leave
the engine's own default": we only pass what the learner asked for, so a comparison never
hides a silent difference in defaults behind our launcher.

What each knob trades (the CLI --help repeats this):
  max_num_seqs            more requests decoded per step: higher throughput, higher TPOT,
                          more KV memory in use at once
  max_model_len           longest prompt+output; caps the KV one request may need
  prefix_caching          reuse KV of a shared prefix: lower TTFT on shared-prefix workloads,
                          a little hashing/tree bookkeeping on others
  chunked_prefill         split long prompts into chunks mixed with decodes: smoother TPOT
                          for running requests, slightly higher TTFT for the long prompt
  max_num_batched_tokens  token budget of one step (the chunk size when chunking)
  dtype / quantization    fewer bytes per weight: more room for KV, faster memory-bound
                          decode, some accuracy risk
  tensor_parallel_size    split each layer over N GPUs: fits bigger models, pays all_reduce
  kv_cache_gib / gpu_memory_utilization / kv_cache_tokens
                          how much memory the KV cache gets: more = more concurrent
                          requests before queueing or preemption
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from labkit.errors import UserError

DEFAULT_HOST = "127.0.0.1"  # loopback: a lab server is never reachable from the network
PREFIX_CACHES = ("radix", "hash", "none")
POLICIES = ("fcfs", "lpm")


@dataclass
class ServeConfig:
    model: str  # a local Hugging Face directory or a Hub id (GPU boxes with internet)
    served_model_name: str | None = None  # the name clients put in "model"
    host: str = DEFAULT_HOST
    port: int | None = 8000  # None: pick a free port at start
    max_num_seqs: int | None = None
    max_model_len: int | None = None
    prefix_caching: bool | None = None
    chunked_prefill: bool | None = None
    dtype: str | None = None  # auto, float32, bfloat16, float16 ...
    quantization: str | None = None  # fp8, awq, gptq ... (engine-specific names)
    tensor_parallel_size: int | None = None
    # KV memory, in the unit each engine understands:
    kv_cache_gib: float | None = None  # vLLM CPU: VLLM_CPU_KVCACHE_SPACE; vLLM GPU: bytes
    gpu_memory_utilization: float | None = None  # fraction of GPU memory (vLLM, SGLang, TRT)
    kv_cache_tokens: int | None = None  # teaching engine, SGLang --max-total-tokens
    # Teaching-engine knobs (SGLang maps policy and block_size too):
    prefix_cache: str | None = None  # radix | hash | none
    policy: str | None = None  # fcfs | lpm (longest prefix match first)
    block_size: int | None = None  # tokens per KV block / page
    max_num_batched_tokens: int | None = None
    enforce_eager: bool | None = None  # vLLM: skip torch.compile / CUDA graphs (fast start)
    device: str | None = None  # cpu | cuda; None: what this machine has
    extra_args: list[str] = field(default_factory=list)  # passed through verbatim, last
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.model:
            raise UserError("no model given; pass --model PATH_OR_ID "
                            "(the tiny CPU-tier model: MODEL=$(labkit model build))")
        if self.prefix_cache is not None and self.prefix_cache not in PREFIX_CACHES:
            raise UserError(f"--prefix-cache {self.prefix_cache!r}: choose one of "
                            f"{', '.join(PREFIX_CACHES)}")
        if self.policy is not None and self.policy not in POLICIES:
            raise UserError(f"--policy {self.policy!r}: choose one of {', '.join(POLICIES)}")
        if self.port is not None and not 0 <= int(self.port) < 65536:
            raise UserError(f"--port {self.port}: a TCP port is 1..65535 (0 or None: any free port)")
        if self.prefix_cache is not None and self.prefix_caching is not None:
            if (self.prefix_cache != "none") != self.prefix_caching:
                raise UserError(f"--prefix-cache {self.prefix_cache} contradicts "
                                f"--{'' if self.prefix_caching else 'no-'}prefix-caching; "
                                "give one of them")
        for name in ("kv_cache_gib", "gpu_memory_utilization", "kv_cache_tokens"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise UserError(f"{name} must be positive, got {v}")
        if self.gpu_memory_utilization is not None and self.gpu_memory_utilization > 1:
            raise UserError(f"gpu_memory_utilization is a fraction (0..1], got "
                            f"{self.gpu_memory_utilization}")
        self.extra_args = list(self.extra_args)

    def prefix_caching_wanted(self) -> bool | None:
        """--prefix-cache none|radix|hash and --[no-]prefix-caching say the same thing."""
        if self.prefix_cache is not None:
            return self.prefix_cache != "none"
        return self.prefix_caching

    def with_port(self, port: int) -> "ServeConfig":
        return dataclasses.replace(self, port=port)

    def reject(self, engine: str, why: dict[str, str]) -> None:
        """Refuse knobs an engine has no flag for, instead of silently dropping them."""
        for name, reason in why.items():
            if getattr(self, name) is not None:
                raise UserError(f"{engine} has no equivalent of {name}={getattr(self, name)!r}:"
                                f" {reason}")


@dataclass
class LaunchPlan:
    """Exactly what will run: argv, the environment variables we add, files we write."""

    engine: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added on top of os.environ
    files: dict[str, str] = field(default_factory=dict)  # path -> content, written first
    health_paths: tuple[str, ...] = ("/health", "/v1/models")
    metrics_path: str | None = "/metrics"
    metrics_format: str = "prometheus"  # or "json" (TensorRT-LLM's /metrics)
    notes: list[str] = field(default_factory=list)  # defaults we chose, caveats

    def command_line(self) -> str:
        """A shell line you could paste: env assignments, then the quoted argv."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (env + " " if env else "") + shlex.join(self.argv)


def is_local_path(model: str) -> bool:
    """A model given as a path (must exist) rather than a Hub id like 'org/name'."""
    return model.startswith(("/", "./", "../", "~")) or Path(model).exists()


def resolve_model(model: str) -> str:
    """Absolute path for a local model (so the log and launch.json are reproducible)."""
    if is_local_path(model):
        p = Path(model).expanduser()
        if not p.exists():
            raise UserError(f"model path {model} does not exist; build the tiny model with "
                            "`labkit model build` or pass a Hugging Face directory")
        if p.is_dir() and not (p / "config.json").exists():
            raise UserError(f"{p} has no config.json, so it is not a Hugging Face model "
                            "directory; point --model at the folder that holds config.json")
        return str(p.resolve())
    return model


def common_env(model: str) -> dict[str, str]:
    """No telemetry, and no network look-ups for a model that is already on disk."""
    env = {"DO_NOT_TRACK": "1"}
    if is_local_path(model):
        # Local weights: nothing to download; offline mode also skips slow Hub probes.
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def has_nvidia_gpu() -> bool:
    """Cheap check (no torch import): the NVIDIA driver exposes device nodes."""
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/version").exists()


def opt(argv: list[str], flag: str, value) -> None:
    """Append `flag value` when the knob is set (None = engine default)."""
    if value is not None:
        argv += [flag, str(value)]


def switch(argv: list[str], value: bool | None, on: str | None, off: str | None) -> None:
    """Append the on/off spelling of a boolean knob when it is set."""
    flag = on if value else off
    if value is not None and flag:
        argv.append(flag)
