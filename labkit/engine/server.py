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
from labkit.engine.config import EngineConfig, cli_flags, from_args
from labkit.engine.prometheus_metrics import EngineMetrics
from labkit.errors import UserError

EPILOG = """\
examples:
  python -m labkit.engine.server --model "$(labkit model build)" --port 8000
  python -m labkit.engine.server --model PATH --prefix-cache hash --block-size 16 --policy lpm
  python -m labkit.engine.server --model PATH --attention plain   # lab 20's op, to read
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
    # Every engine setting comes from EngineConfig's fields (config.py): written once there.
    # Only what the HTTP server itself needs is declared here.
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    for flag, kw in cli_flags():
        p.add_argument(flag, **kw)
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


def make_engine_config(args) -> EngineConfig:
    return from_args(args)


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
          f"tokens = {kv_mib:.0f} MiB, device {config.device}, attention {config.attention}, "
          f"dtype {config.resolved_dtype}: {config.dtype_reason})", file=sys.stderr, flush=True)
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
