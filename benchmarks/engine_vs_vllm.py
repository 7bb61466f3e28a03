"""Teaching engine vs vLLM's CPU build vs a naive transformers loop, same tiny model.

The servers (--engines, any of):

    mini          the teaching engine at its defaults (--attention fast, --dtype auto)
    mini-plain    the teaching engine's plain path (--attention plain): lab 20's op
    vllm          vLLM's CPU build at *its* defaults, as a user starts it: it picks the dtype
                  (bfloat16 on CPUs with AMX / AVX-512-BF16) and compiles the model
    vllm-fp32     vLLM with --dtype float32 --enforce-eager: the like-for-like second row

Every ratio in the table is against `vllm` (its defaults), within the same repetition. The
result file records the CPU model, its flags that decide the dtype (AMX? AVX-512? BF16?) and
the dtype each server chose (teaching engine: /v1/models; vLLM: its start-up log).

This script starts each server on a free port, warms it up, and drives it with labkit's load generator
(`labkit.bench`: streaming OpenAI requests, token counts from the server's `usage`) at
concurrency 1, 8 and 32 — closed loop: C requests in flight, a new one as soon as one
finishes — on two workloads:

- random:        prompts of --input-len random words, --output-len tokens out (ignore_eos)
- shared-prefix: --groups system prompts of --system-len words shared by the requests of
                 each group, plus a --question-len word question; prefix caches shine here

The naive baseline runs transformers' `generate` on the same random prompts one request at
a time, in this process: what you would write without a serving engine.

Output tokens/s = completed output tokens / (last token − first send) per run. Both servers
stay up for the whole run and the measurements interleave (each workload and concurrency:
one engine, then the other), --repeats times; the table shows medians and the engine / vLLM
ratio within each repetition.

    nice -n -20 .venv/bin/python benchmarks/engine_vs_vllm.py       # everything, ~8 min
    .venv/bin/python benchmarks/engine_vs_vllm.py --engines mini --concurrency 32
    .venv/bin/python benchmarks/engine_vs_vllm.py --mini-args "--no-in-batch-prefix-caching"
    .venv/bin/python benchmarks/engine_vs_vllm.py --render runs/bench/engine_vs_vllm.json

The machine is usually shared: the load average (1 min) is sampled before and after each
run and reported with it; compare engines only within one run of this script. On a busy
machine, `nice -n -20` (root) gives this script and its servers the CPU first, and keeps
normal time-sharing between them. (Real-time scheduling, `chrt -f`, does not work here: a
server's spinning compute thread then starves its own HTTP process.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labkit.bench.loadgen import BenchConfig, run_async  # noqa: E402
from labkit.bench.workloads import WorkloadParams, make_requests  # noqa: E402
from labkit.env import cpu_model  # noqa: E402
from labkit.models import build_tiny_llama  # noqa: E402

NAME = "tiny"
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ENGINES = ("mini", "mini-plain", "vllm", "vllm-fp32")
PEER = "vllm"  # every ratio is against vLLM at its defaults
DTYPE_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8")


def server_cmd(engine: str, model: Path, port: int, args) -> list[str]:
    common = ["--model", str(model), "--host", "127.0.0.1", "--port", str(port),
              "--served-model-name", NAME, "--max-model-len", str(args.max_model_len)]
    if engine.startswith("mini"):
        plain = ["--attention", "plain"] if engine == "mini-plain" else []
        return [sys.executable, "-m", "labkit.engine.server", *common,
                "--max-num-seqs", "64", "--kv-cache-tokens", "65536", *plain,
                *shlex.split(args.mini_args)]
    fp32 = ["--dtype", "float32", "--enforce-eager"] if engine == "vllm-fp32" else []
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *common, *fp32,
            *shlex.split(args.vllm_args)]


def served_dtype(srv) -> str:
    """The dtype a server runs: the teaching engine says it in /v1/models, vLLM in its log."""
    import re

    if "labkit.engine.server" in srv.cmd:
        with urllib.request.urlopen(srv.base + "/v1/models", timeout=5) as r:
            card = json.load(r)["data"][0]
        return f"{card.get('dtype')} ({card.get('dtype_reason')})"
    m = re.search(r"dtype=(torch\.)?(\w+)", Path(srv.log.name).read_text(errors="replace"))
    return m.group(2) if m else "unknown (not in vLLM's log)"


class Server:
    """Start a server in its own process group; stop the whole group on exit."""

    def __init__(self, engine, model, args):
        self.port = free_port()
        self.cmd = server_cmd(engine, model, self.port, args)
        self.log = tempfile.NamedTemporaryFile(prefix=f"{engine}-", suffix=".log", delete=False)
        env = {**os.environ, **(VLLM_ENV if engine.startswith("vllm") else {})}
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        self.base = f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout=300) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.cmd[:4]} exited:\n{Path(self.log.name).read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2):
                    return time.monotonic() - t0
            except OSError:
                time.sleep(0.5)
        raise SystemExit(f"server not healthy after {timeout} s; log {self.log.name}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server's whole process tree so far (vLLM: API
        server, EngineCore, Worker; the teaching engine: HTTP server and engine core)."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for proc in procs:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def busy_cores(self, window: float) -> float:
        """Cores the process tree keeps busy over the next `window` seconds."""
        c0, t0 = self.cpu_seconds(), time.monotonic()
        time.sleep(window)
        return (self.cpu_seconds() - c0) / (time.monotonic() - t0)

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def workload_params(workload: str, args) -> WorkloadParams:
    if workload == "random":
        return WorkloadParams(input_len=args.input_len, output_len=args.output_len)
    return WorkloadParams(num_groups=args.groups, system_prompt_len=args.system_len,
                          question_len=args.question_len, output_len=args.shared_output_len)


def bench(base: str, workload: str, concurrency: int, n: int, seed: int, args) -> dict:
    cfg = BenchConfig(base_url=base, model=NAME, workload=workload, concurrency=concurrency,
                      num_requests=n, seed=seed, progress=False, timeout=900,
                      out_dir=tempfile.mkdtemp(prefix="engine-bench-"),
                      params=workload_params(workload, args))
    load_before = os.getloadavg()[0]
    s = asyncio.run(run_async(cfg))
    return {"workload": workload, "concurrency": concurrency, "requests": n,
            "completed": s["requests"]["completed"], "failed": s["requests"]["failed"],
            "output_tokens": s["tokens"]["output_tokens"],
            "input_tokens": s["tokens"]["input_tokens"], "duration_s": s["duration_s"],
            "output_tokens_per_s": s["throughput"]["output_tokens_per_s"],
            "ttft_p50_ms": s["latency_ms"]["ttft"].get("p50"),
            "tpot_p50_ms": s["latency_ms"]["tpot"].get("p50"),
            "load_before": load_before, "load_after": os.getloadavg()[0]}


def prefix_hits(base: str) -> dict:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        for name in ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"):
            if line.startswith(name + "{"):
                out[name] = out.get(name, 0) + float(line.rsplit(" ", 1)[1])
    return out


def wait_quiet(servers, max_cores: float = 0.1, window: float = 0.2, timeout: float = 10.0) -> float:
    """Wait until every server is idle; return the seconds waited.

    vLLM's EngineCore keeps polling for work on a whole core for about a second after its
    last request (measured: 0.95-1.1 cores for 0.9 s, then ~0; the teaching engine: 0).
    Without this wait, that second lands in the next measurement, on the core the next
    engine's second thread needs: a 5-second run loses a tenth of its CPU."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if all(s.busy_cores(window) <= max_cores for s in servers):
            break
    return time.monotonic() - t0


def measure(engine: str, srv: Server, workload: str, c: int, rep: int, args,
            up=()) -> dict:
    """One run on `srv`, after every server that is up (`up`) has gone quiet."""
    n = max(args.min_requests, args.requests_per_slot * c)
    settle = wait_quiet(list(up) or [srv])
    before, cpu_before = prefix_hits(srv.base), srv.cpu_seconds()
    # A new seed per repetition: the shared-prefix system prompts of one repetition must
    # not be in the cache already. Both engines get the very same requests.
    row = bench(srv.base, workload, c, n, seed=1000 + 100 * rep + c, args=args)
    after, cpu_after = prefix_hits(srv.base), srv.cpu_seconds()
    # Cores the server kept busy: CPU seconds of its process tree per second of the run.
    row["server_cores"] = (cpu_after - cpu_before) / row["duration_s"] if row["duration_s"] else None
    q = after.get("vllm:prefix_cache_queries_total", 0) - before.get("vllm:prefix_cache_queries_total", 0)
    h = after.get("vllm:prefix_cache_hits_total", 0) - before.get("vllm:prefix_cache_hits_total", 0)
    row.update(engine=engine, rep=rep, prefix_hit_rate=h / q if q else None, settle_s=settle)
    print(f"[{engine}] {workload:13s} C={c:<3d} rep {rep}  {row['output_tokens_per_s']:8.1f} out tok/s  "
          f"TTFT p50 {row['ttft_p50_ms']:.0f} ms  TPOT p50 {row['tpot_p50_ms']:.1f} ms  "
          f"hit rate {row['prefix_hit_rate'] or 0:.2f}  cores {row['server_cores'] or 0:.2f}  "
          f"waited {settle:.1f} s  load {row['load_before']:.1f}"
          f"→{row['load_after']:.1f}", file=sys.stderr)
    return row


def run_servers(engines: list[str], model: Path, args) -> list[dict]:
    """Start every server, then interleave: for each workload and concurrency, each engine
    in turn, so a neighbour's load that comes and goes hits both alike. Idle servers wait
    on a queue and take no CPU."""
    from contextlib import ExitStack

    rows = []
    with ExitStack() as stack:
        servers = {}
        for engine in engines:
            srv = stack.enter_context(Server(engine, model, args))
            startup = srv.wait_healthy()
            srv.dtype, srv.startup_s = served_dtype(srv), startup
            print(f"[{engine}] healthy after {startup:.1f} s, dtype {srv.dtype}: "
                  f"{' '.join(srv.cmd[2:])}", file=sys.stderr)
            bench(srv.base, "random", 4, 8, 999, args)  # warm-up: first-call costs out of the way
            servers[engine] = srv
        args.served = {e: {"dtype": s.dtype, "startup_s": round(s.startup_s, 1),
                           "cmd": " ".join(s.cmd[2:])} for e, s in servers.items()}
        for rep in range(args.repeats):
            for workload in args.workloads:
                for c in args.concurrency:
                    for engine, srv in servers.items():
                        rows.append(measure(engine, srv, workload, c, rep, args,
                                            up=servers.values()))
    return rows


def run_naive(model: Path, args) -> list[dict]:
    """transformers generate, one request at a time: best of 1 and 2 torch threads."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    hf = AutoModelForCausalLM.from_pretrained(model)
    reqs = make_requests("random", args.naive_requests, workload_params("random", args), seed=1032)
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            ids = tok(reqs[0].prompt, return_tensors="pt")
            hf.generate(**ids, max_new_tokens=8, min_new_tokens=8, do_sample=False)  # warm-up
            load_before, out_tokens, t0 = os.getloadavg()[0], 0, time.perf_counter()
            for r in reqs:
                ids = tok(r.prompt, return_tensors="pt")
                out = hf.generate(**ids, max_new_tokens=r.max_tokens, min_new_tokens=r.max_tokens,
                                  do_sample=False)
                out_tokens += out.shape[1] - ids["input_ids"].shape[1]
            dt = time.perf_counter() - t0
        rows.append({"engine": "naive", "workload": "random", "concurrency": 1, "threads": threads,
                     "requests": len(reqs), "output_tokens": out_tokens, "duration_s": dt,
                     "output_tokens_per_s": out_tokens / dt, "load_before": load_before,
                     "load_after": os.getloadavg()[0]})
        print(f"[naive] {threads} thread(s): {out_tokens / dt:.1f} out tok/s "
              f"({len(reqs)} requests)", file=sys.stderr)
    return rows


def table(rows: list[dict]) -> str:
    """Median over repetitions of output tokens/s (min–max in brackets) per server, and each
    server's ratio to vLLM at its defaults: the ratio of the medians, then the ratio within
    each repetition (the servers ran back to back on the same prompts, so a slow minute on a
    shared machine hits all alike: that spread is the one to trust)."""
    import statistics

    def pick(engine, workload, c, key="output_tokens_per_s"):
        return [r[key] for r in rows if r.get(key) is not None
                and (r["engine"], r["workload"], r["concurrency"]) == (engine, workload, c)]

    def cell(xs):
        if not xs:
            return "—"
        spread = f" ({min(xs):,.0f}–{max(xs):,.0f})" if len(xs) > 1 else ""
        return f"{statistics.median(xs):,.0f}{spread}"

    def med(xs):
        return statistics.median(xs) if xs else None

    def paired(engine, workload, c):  # engine / vLLM defaults within each repetition
        tok = {(r["engine"], r["rep"]): r["output_tokens_per_s"] for r in rows
               if (r["workload"], r["concurrency"]) == (workload, c) and "rep" in r}
        return [tok[engine, k] / tok[PEER, k] for e, k in tok if e == engine and (PEER, k) in tok]

    naive = max((r["output_tokens_per_s"] for r in rows if r["engine"] == "naive"), default=None)
    engines = [e for e in ENGINES if any(r["engine"] == e for r in rows)]
    others = [e for e in engines if e != PEER]
    lines = ["| workload | C | " + " | ".join(f"{e} tok/s" for e in engines) + " | "
             + " | ".join(f"{e} / vllm (per repeat)" for e in others)
             + " | mini / naive |",
             "|---|---|" + "---|" * (len(engines) + len(others) + 1)]
    for workload in dict.fromkeys(r["workload"] for r in rows if r["engine"] != "naive"):
        for c in sorted({r["concurrency"] for r in rows if r["workload"] == workload}):
            peer = pick(PEER, workload, c)
            ratios = []
            for e in others:
                mine, per = pick(e, workload, c), paired(e, workload, c)
                ratio = f"{med(mine) / med(peer):.2f}×" if mine and peer else "—"
                ratios.append(ratio + (f" ({' '.join(f'{x:.2f}' for x in per)})" if per else ""))
            mini = pick("mini", workload, c)
            vs_naive = f"{med(mini) / naive:.1f}×" if mini and naive and workload == "random" \
                else "—"
            lines.append(f"| {workload} | {c} | "
                         + " | ".join(cell(pick(e, workload, c)) for e in engines) + " | "
                         + " | ".join(ratios) + f" | {vs_naive} |")
    if naive:
        lines.append(f"\nnaive transformers `generate`, one request at a time (best of 1 and 2 "
                     f"torch threads): {naive:,.0f} tok/s")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engines", default="mini,mini-plain,vllm,vllm-fp32,naive",
                   help=f"comma-separated: {', '.join(ENGINES)}, naive")
    p.add_argument("--workloads", default="random,shared-prefix")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--input-len", type=int, default=128, help="random: prompt words")
    p.add_argument("--output-len", type=int, default=128, help="random: output tokens")
    p.add_argument("--groups", type=int, default=4, help="shared-prefix: system prompts")
    p.add_argument("--system-len", type=int, default=384, help="shared-prefix: words")
    p.add_argument("--question-len", type=int, default=32, help="shared-prefix: words")
    p.add_argument("--shared-output-len", type=int, default=64, help="shared-prefix: tokens out")
    p.add_argument("--requests-per-slot", type=int, default=3, help="requests = this × C")
    p.add_argument("--min-requests", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2, help="interleaved repetitions (median)")
    p.add_argument("--naive-requests", type=int, default=6)
    p.add_argument("--max-model-len", type=int, default=1024)
    p.add_argument("--mini-args", default="", help="extra flags for the teaching engine")
    p.add_argument("--vllm-args", default="", help="extra flags for vLLM")
    p.add_argument("--out", default="runs/bench/engine_vs_vllm.json")
    p.add_argument("--render", metavar="JSON", help="print the table of an earlier run's results")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.render:
        print(table(json.loads(Path(args.render).read_text())["rows"]))
        return 0
    args.workloads = args.workloads.split(",")
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    engines = args.engines.split(",")
    unknown = set(engines) - set(ENGINES) - {"naive"}
    if unknown:
        raise SystemExit(f"--engines: unknown {sorted(unknown)}; choose from "
                         f"{', '.join(ENGINES)}, naive")

    model = build_tiny_llama(verbose=False)
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    rows = run_servers([e for e in engines if e != "naive"], model, args)
    if "naive" in engines:
        rows += run_naive(model, args)
    from labkit.engine.dtype import cpu_flags

    result = {"started": started, "machine": platform.node(), "cpu": cpu_model(),
              "cpu_flags": sorted(cpu_flags() & set(DTYPE_FLAGS)),
              "cores": os.cpu_count(), "python": platform.python_version(),
              "args": {k: v for k, v in vars(args).items()}, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"CPU: {result['cpu']}, {result['cores']} cores, flags that decide the dtype: "
          f"{', '.join(result['cpu_flags']) or 'none of ' + ', '.join(DTYPE_FLAGS)}")
    for e, info in getattr(args, "served", {}).items():
        print(f"{e}: dtype {info['dtype']}; up in {info['startup_s']} s")
    print(table(rows))
    print(f"\nresults: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
