"""`labkit serve`: start an inference engine in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time

DESCRIPTION = """\
Start vLLM, SGLang, TensorRT-LLM or the teaching engine with ONE set of knobs, mapped to
each engine's own flags (--dry-run shows them). The server listens on 127.0.0.1 only; the
launcher waits until /health and /v1/models answer, prints the base URL and a smoke test,
and stays in the foreground: Ctrl-C stops the whole process tree (API server, engine core,
workers). If this command dies, even by kill -9, the server follows it.

Engines: vllm (CPU tier: vLLM's CPU build; GPU tier: vLLM), mini (the teaching engine,
CPU), sglang and trtllm (GPU only). A knob left unset keeps the engine's own default.
"""

EPILOG = """\
examples:
  MODEL=$(labkit model build)
  labkit serve --engine vllm --model "$MODEL" --dtype float32 --max-model-len 512 --enforce-eager
  labkit serve --engine vllm --model "$MODEL" --no-prefix-caching --max-num-seqs 8 --dry-run
  labkit serve --engine mini --model "$MODEL" --prefix-cache radix --policy lpm \
      --kv-cache-tokens 8192
  labkit serve --engine sglang --model meta-llama/Llama-3.1-8B-Instruct --tp 2 --dry-run
  labkit serve --engine vllm --model "$MODEL" -- --seed 0 --uvicorn-log-level warning

then, in another terminal:  labkit bench --base-url http://127.0.0.1:8000 --model "$MODEL" ...

Logs: <runs>/serve/<time>-<engine>-<port>/<engine>.log (or --log-dir), with launch.json
recording the exact command and environment. A failed start prints the likely cause (port in
use, out of memory, package missing, model not found, CUDA required) and the log's tail.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="start vLLM / SGLang / TensorRT-LLM / the teaching engine on one config",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from labkit.serve.registry import ENGINES  # stdlib-only module: --help stays fast

    p.add_argument("--engine", default="vllm", choices=list(ENGINES),
                   help="which engine (default vllm)")
    p.add_argument("--model", required=True, metavar="PATH_OR_ID",
                   help="local Hugging Face directory (CPU tier: MODEL=$(labkit model build)) "
                        "or a Hub id on a GPU box with internet")
    p.add_argument("--served-model-name", metavar="NAME",
                   help="the name clients send as \"model\" (default: the --model value)")
    net = p.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1",
                     help="interface to listen on (default 127.0.0.1: this machine only; "
                          "0.0.0.0 exposes an unauthenticated server to the network)")
    net.add_argument("--port", type=int, default=8000,
                     help="TCP port (default 8000; 0 picks a free one). A busy port is "
                          "reported before the engine starts loading")
    batch = p.add_argument_group("batching and scheduling")
    batch.add_argument("--max-num-seqs", type=int, metavar="N",
                       help="most requests decoded together per step. Higher: more "
                            "throughput until memory or compute saturates, but each "
                            "request's TPOT grows and more KV cache is in use at once")
    batch.add_argument("--max-num-batched-tokens", type=int, metavar="N",
                       help="token budget of one engine step (prefill + decode tokens); "
                            "with chunked prefill it is the chunk size. Larger: faster "
                            "prefill of long prompts, longer stalls for running decodes")
    batch.add_argument("--chunked-prefill", action=argparse.BooleanOptionalAction,
                       help="split long prompts into chunks interleaved with decode steps: "
                            "steadier TPOT for running requests, slightly later first token "
                            "for the long prompt")
    batch.add_argument("--policy", choices=["fcfs", "lpm"],
                       help="queue order: fcfs (arrival order, fair) or lpm (longest prefix "
                            "match first: more cache hits, can starve unshared prompts); "
                            "sglang and mini")
    mem = p.add_argument_group("model and memory")
    mem.add_argument("--max-model-len", type=int, metavar="TOKENS",
                     help="longest prompt + output a request may have; smaller means less "
                          "KV reserved per request and a startup check that fits the cache")
    mem.add_argument("--dtype", metavar="TYPE",
                     help="weights/activations type: auto, float32, bfloat16, float16. "
                          "Half the bytes of float32: twice the KV room, faster decode")
    mem.add_argument("--quantization", metavar="METHOD",
                     help="weight quantization (vLLM/SGLang names: fp8, awq, gptq...): fewer "
                          "bytes per weight, memory-bound decode gets faster, small accuracy "
                          "loss; FP8 needs a GPU of compute capability >= 8.9")
    mem.add_argument("--tp", dest="tensor_parallel_size", type=int, metavar="N",
                     help="tensor parallel size: split every layer over N GPUs. Fits bigger "
                          "models and adds memory bandwidth, pays an all_reduce per layer")
    kv = mem.add_mutually_exclusive_group()
    kv.add_argument("--kv-cache-gib", type=float, metavar="GIB",
                    help="KV cache size in GiB (vLLM CPU: VLLM_CPU_KVCACHE_SPACE, default 1). "
                         "More KV = more requests in flight before queueing/preemption")
    kv.add_argument("--kv-cache-tokens", type=int, metavar="TOKENS",
                    help="KV cache size in tokens (mini --kv-cache-tokens, SGLang "
                         "--max-total-tokens, TensorRT-LLM kv_cache_config.max_tokens)")
    mem.add_argument("--gpu-memory-utilization", type=float, metavar="FRACTION",
                     help="share of GPU memory the engine may take (weights + KV; "
                          "TensorRT-LLM: share of what is free after weights, for KV)")
    mem.add_argument("--block-size", type=int, metavar="TOKENS",
                     help="tokens per KV block/page: small blocks waste less memory and share "
                          "prefixes at finer grain, large ones mean fewer table entries")
    cache = p.add_argument_group("prefix cache")
    cache.add_argument("--prefix-caching", action=argparse.BooleanOptionalAction,
                       help="reuse the KV of a prompt prefix seen before: big TTFT and "
                            "throughput gains on shared-prefix workloads (system prompts, "
                            "multi-turn), small bookkeeping cost otherwise")
    cache.add_argument("--prefix-cache", choices=["radix", "hash", "none"],
                       help="which prefix cache: radix (SGLang, mini), hash (vLLM's block "
                            "hashing, mini, TensorRT-LLM block reuse) or none")
    run = p.add_argument_group("launcher")
    run.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction,
                     help="vLLM: skip torch.compile/CUDA graphs. Starts in ~30 s instead of "
                          "~90 s on the CPU tier; decode may be slower")
    run.add_argument("--device", choices=["cpu", "cuda"],
                     help="override the detected device (vLLM tier, mini)")
    run.add_argument("--log-dir", metavar="DIR", help="where the log and launch.json go")
    run.add_argument("--timeout", type=float, default=600, metavar="S",
                     help="seconds to wait for /health before giving up (default 600)")
    run.add_argument("--dry-run", action="store_true",
                     help="print the command, environment and files; start nothing")
    p.add_argument("extra", nargs="*", metavar="-- EXTRA",
                   help="flags after -- go to the engine verbatim, after ours")
    p.set_defaults(func=cmd_serve)


def config_from_args(args):
    from labkit.serve.config import ServeConfig

    return ServeConfig(
        model=args.model, served_model_name=args.served_model_name, host=args.host,
        port=args.port or None, max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len, prefix_caching=args.prefix_caching,
        chunked_prefill=args.chunked_prefill, dtype=args.dtype, quantization=args.quantization,
        tensor_parallel_size=args.tensor_parallel_size, kv_cache_gib=args.kv_cache_gib,
        gpu_memory_utilization=args.gpu_memory_utilization,
        kv_cache_tokens=args.kv_cache_tokens, prefix_cache=args.prefix_cache,
        policy=args.policy, block_size=args.block_size,
        max_num_batched_tokens=args.max_num_batched_tokens, enforce_eager=args.enforce_eager,
        device=args.device, extra_args=list(args.extra or []))


def print_dry_run(engine: str, cfg, log_dir) -> None:
    from labkit.serve.launcher import check_can_run, plan
    from labkit.serve.records import default_log_dir
    from labkit.errors import UserError

    if cfg.port is None:
        from labkit.serve.ports import pick_free_port

        cfg = cfg.with_port(pick_free_port(cfg.host))
    log_dir = log_dir or default_log_dir(engine, cfg.port)
    p = plan(engine, cfg, log_dir)
    print("command:")
    print("  " + shlex.join(p.argv))
    print("environment added:")
    for k, v in p.env.items():
        print(f"  {k}={shlex.quote(v)}")
    for path, text in p.files.items():
        print(f"file {path}:")
        print("".join(f"  {line}\n" for line in text.splitlines()), end="")
    for note in p.notes:
        print(f"note: {note}")
    print(f"health: {', '.join(p.health_paths)}   metrics: {p.metrics_path}   "
          f"log dir: {log_dir}")
    try:
        check_can_run(engine)
    except UserError as e:
        print(f"warning: {e}")


def smoke_test_lines(base_url: str, model: str) -> list[str]:
    body = json.dumps({"model": model, "prompt": "def fibonacci(n):", "max_tokens": 16,
                       "temperature": 0})
    py = ("from openai import OpenAI; c = OpenAI(base_url='{u}/v1', api_key='none'); "
          "print(c.completions.create(model={m!r}, prompt='def fibonacci(n):', "
          "max_tokens=16, temperature=0).choices[0].text)").format(u=base_url, m=model)
    return [f"curl -s {base_url}/v1/completions -H 'Content-Type: application/json' "
            f"-d {shlex.quote(body)}",
            f"python -c {shlex.quote(py)}"]


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM/SIGHUP to this command: stop the server like Ctrl-C


def cmd_serve(args) -> int:
    from labkit.serve.launcher import check_can_run, plan, serve
    from labkit.serve.records import default_log_dir
    from labkit.serve.ports import pick_free_port

    cfg = config_from_args(args)
    if args.dry_run:
        print_dry_run(args.engine, cfg, args.log_dir)
        return 0
    check_can_run(args.engine)
    if cfg.port is None:
        cfg = cfg.with_port(pick_free_port(cfg.host))
    log_dir = args.log_dir or default_log_dir(args.engine, cfg.port)
    plan(args.engine, cfg, log_dir)  # a bad model path or knob fails now, before "starting"
    print(f"starting {args.engine} on {cfg.host}:{cfg.port}; log: {log_dir}/"
          f"{args.engine}.log (waiting up to {args.timeout:.0f} s for /health)",
          file=sys.stderr, flush=True)
    old = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    server = None
    try:
        server = serve(args.engine, config=cfg, log_dir=log_dir, timeout=args.timeout)
        model = server.model or cfg.served_model_name or cfg.model
        print(f"{args.engine} is up after {server.startup_s:.1f} s")
        print(f"base URL:    {server.base_url}      (OpenAI clients: {server.base_url}/v1)")
        print(f"model:       {model}")
        print(f"metrics:     {server.metrics_url}")
        print(f"log:         {server.log_path}")
        print("smoke test:")
        for line in smoke_test_lines(server.base_url, model):
            print(f"  {line}")
        print("Ctrl-C stops the server and all its processes.", flush=True)
        while server.alive():
            time.sleep(1)
        from labkit.serve.diagnose import likely_cause

        log = server.log_path.read_text(errors="replace")
        rc = server.proc.returncode
        print(f"{args.engine} exited on its own (code {rc}).\nlikely cause: "
              f"{likely_cause(log, rc, engine=args.engine, port=cfg.port)}\n"
              f"--- last lines of {server.log_path} ---\n{server.log_tail(30)}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping the server...", file=sys.stderr, flush=True)
        return 0
    finally:
        if server is not None:
            server.stop()
        for s, h in old.items():
            signal.signal(s, h)
