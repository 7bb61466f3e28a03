"""`python -m labkit.engine.server --model PATH` — serve the teaching engine over HTTP.

The flags mirror vLLM's where the knob exists there (--max-num-seqs,
--max-num-batched-tokens, --block-size, --max-model-len, --served-model-name), so a
learner can put the two engines side by side with the same numbers. `labkit serve
--engine mini` starts exactly this module with these flags.

Shutdown: SIGTERM or Ctrl-C stops accepting connections, lets running requests finish
(up to --graceful-shutdown-s seconds), stops the engine thread and exits 0.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys

from labkit.engine.async_engine import AsyncEngine
from labkit.engine.config import RADIX_EVICTIONS, EngineConfig
from labkit.engine.cpu_gemm import CPU_GEMMS
from labkit.engine.prometheus_metrics import EngineMetrics
from labkit.errors import UserError

EPILOG = """\
examples:
  python -m labkit.engine.server --model "$(labkit model build)" --port 8000
  python -m labkit.engine.server --model PATH --prefix-cache hash --block-size 16 --policy lpm
  curl -s localhost:8000/v1/completions -H 'Content-Type: application/json' \\
       -d '{"prompt": "def fib(n):", "max_tokens": 16, "temperature": 0}'
  curl -s localhost:8000/metrics | grep '^vllm:'

what the sizes mean:
  --max-num-batched-tokens  tokens one forward pass may process (decodes cost 1 each;
                            longer prompts are split into chunks of at most this size)
  --kv-cache-tokens         KV memory, in tokens; the tiny Llama needs 4 KiB per token
                            (4 layers x K and V x 2 heads x 64 dims x 4 bytes)
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m labkit.engine.server",
        description="labkit's teaching engine: continuous batching, chunked prefill, paged KV "
                    "cache with radix or hash prefix caching, OpenAI-compatible HTTP API and "
                    "Prometheus metrics under vLLM's names.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="Hugging Face model directory (config.json, "
                   "*.safetensors, tokenizer files), e.g. the path `labkit model build` prints")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--served-model-name", help="model name clients send and /v1/models shows "
                   "(default: the --model path, as vLLM does)")
    p.add_argument("--prefix-cache", choices=("radix", "hash", "none"), default="radix",
                   help="radix: SGLang-style tree, token-granular hits (default); hash: "
                   "vLLM-style chained block hashes, full blocks only; none: no reuse")
    p.add_argument("--radix-evict", choices=RADIX_EVICTIONS, default="leaf",
                   help="radix cache eviction when KV runs out: leaf = the least recently used "
                   "leaf goes whole, as in SGLang (default); tail = only the tokens needed, cut "
                   "from that leaf's end (keeps more of a long shared prompt)")
    p.add_argument("--policy", choices=("fcfs", "lpm"), default="fcfs",
                   help="admission order: fcfs = arrival order (default); lpm = longest "
                   "cached prefix first (more cache hits, can starve unlucky requests)")
    p.add_argument("--no-in-batch-prefix-caching", dest="in_batch_prefix_caching",
                   action="store_false",
                   help="admit a request even when a prefill running in the same step is "
                   "computing its prefix (by default it waits one step and then hits the "
                   "cache, as in SGLang; turn off to watch a burst compute one prompt N times)")
    p.add_argument("--max-num-seqs", type=int, default=64,
                   help="most requests running at once, the batch size ceiling (default 64)")
    p.add_argument("--max-num-batched-tokens", type=int, default=2048,
                   help="token budget of one step (default 2048)")
    p.add_argument("--block-size", type=int, default=16,
                   help="tokens per KV block for --prefix-cache hash|none (radix uses 1)")
    p.add_argument("--kv-cache-tokens", type=int, default=32768,
                   help="KV cache capacity in tokens (default 32768)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--max-model-len", type=int,
                   help="longest prompt + output in tokens (default: the model's "
                   "max_position_embeddings)")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="weights and KV dtype (default auto: the checkpoint's)")
    p.add_argument("--num-threads", type=int,
                   help="torch CPU threads for the forward pass (default: all cores; with "
                   "--cpu-gemm torch on 2 cores, 1 leaves a core to the HTTP server at no cost)")
    p.add_argument("--prefill-threads", type=int,
                   help="torch CPU threads for steps that prefill at least 64 prompt tokens "
                   "(default: all cores; big matmuls split well, and the server has nothing "
                   "to stream until such a step ends)")
    p.add_argument("--cpu-gemm", choices=CPU_GEMMS, default="onednn",
                   help="float32 matmuls on CPU: onednn = each weight packed once into oneDNN's "
                   "blocked layout, as vLLM's CPU build does (default; faster at decode batch "
                   "sizes, more so on several threads; holds each weight twice); torch = plain "
                   "x @ W (MKL repacks the weight on every call; one copy in memory)")
    p.add_argument("--fault-file", metavar="PATH",
                   help="alert drills: while PATH holds 'step_delay_ms=N', every engine step "
                   "sleeps N ms first (written and removed at run time; see engine/fault.py)")
    p.add_argument("--graceful-shutdown-s", type=float, default=10.0,
                   help="on SIGTERM/Ctrl-C, how long running requests may take to finish")
    return p


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before loading the model: a busy port fails in a second, not after the load."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine, LISTEN is not
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is already in use (another server?); stop "
                            f"it (`ss -ltnp 'sport = :{port}'` shows who holds it) or pass "
                            "--port with a free port") from None
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror}; check --host") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def make_engine_config(args):
    return EngineConfig(
        model=args.model, served_model_name=args.served_model_name,
        prefix_cache=args.prefix_cache, radix_evict=args.radix_evict, policy=args.policy,
        in_batch_prefix_caching=args.in_batch_prefix_caching,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens, block_size=args.block_size,
        kv_cache_tokens=args.kv_cache_tokens, device=args.device,
        max_model_len=args.max_model_len, dtype=args.dtype, num_threads=args.num_threads,
        prefill_threads=args.prefill_threads, cpu_gemm=args.cpu_gemm,
        fault_file=args.fault_file)


def serve(args) -> int:
    config = make_engine_config(args)
    sock = bind_socket(args.host, args.port)  # before the slow imports: fail fast

    import uvicorn
    from transformers import AutoTokenizer

    from labkit.engine.api import build_app
    if config.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda but torch sees no CUDA GPU; use --device cpu")
    tokenizer = AutoTokenizer.from_pretrained(config.model, local_files_only=True)
    metrics = EngineMetrics(config.served_model_name)
    engine = AsyncEngine(config, metrics)
    engine.start()  # loads the model in the engine process; raises UserError on failure
    app = build_app(engine, metrics, tokenizer)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            # uvicorn would re-raise the signal after shutting down (exit status 143);
            # a clean, graceful stop is exit status 0. A second Ctrl-C forces it.
            self.force_exit = self.should_exit
            self.should_exit = True

    server = Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                   timeout_graceful_shutdown=args.graceful_shutdown_s))
    kv_mib = engine.info["kv_cache_bytes"] / 2**20
    print(f"labkit engine: serving {config.served_model_name!r} on http://{args.host}:{args.port} "
          f"(prefix cache {config.prefix_cache}, policy {config.policy}, KV {config.kv_cache_tokens} "
          f"tokens = {kv_mib:.0f} MiB, device {config.device})", file=sys.stderr, flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        engine.stop()
    print("labkit engine: shut down", file=sys.stderr, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return serve(args)
    except UserError as e:
        print(f"labkit engine: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
