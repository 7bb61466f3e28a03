"""Load-generator fidelity: does `labkit bench` report what a server really did?

Points `labkit.bench` at labkit's fake server, whose TTFT and per-token delay are injected
(known), at several request rates, and reports:

- TTFT and TPOT p50 as reported by the benchmark, against the injected values and against
  what the server measured it actually did (its sleeps wake up to ~1 ms late). The
  difference to the server's own figure is the load generator's error; goal ≤ 2 ms.
- the achieved send rate against the target (and against the drawn Poisson schedule's own
  rate, which differs from the target by sampling noise); goal within 1 %.
- dispatch lag (fired − scheduled) p50/p99: how late the dispatcher fired.

Server and client run as separate processes on the same machine, as a learner would run
them; both share its cores, which is the hard case for a 2-core laptop. On a machine that
other people load, each process wake-up can wait milliseconds for a core and that lands in
every latency; `chrt -f 10 python benchmarks/bench_fidelity.py` (real-time scheduling for
both processes, root only) measures the load generator itself, free of the neighbours.

    .venv/bin/python benchmarks/bench_fidelity.py                 # 10,50,100,200 req/s
    .venv/bin/python benchmarks/bench_fidelity.py --rates 300,400 --duration 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labkit.bench.fake_server import fake_server  # noqa: E402
from labkit.bench.loadgen import BenchConfig, run_bench  # noqa: E402
from labkit.bench.workloads import WorkloadParams  # noqa: E402


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def cpu_name() -> str:
    from labkit.env import cpu_model  # one definition of "which CPU is this" for the kit

    return cpu_model()


def run(rates: list[float], duration: float, ttft_ms: float, tpot_ms: float, out_len: int,
        arrival: str, seed: int) -> list[dict]:
    rows = []
    with fake_server(ttft_ms=ttft_ms, tpot_ms=tpot_ms) as url, \
            tempfile.TemporaryDirectory() as tmp:
        for rate in rates:
            _get(url + "/reset")
            server_cpu = _get(url + "/stats")["cpu_s"]
            n = max(50, int(rate * duration))
            t = time.monotonic()
            client_cpu = time.process_time()
            s = run_bench(BenchConfig(
                base_url=url, model="fake-model", rate=rate, num_requests=n, arrival=arrival,
                seed=seed, out_dir=os.path.join(tmp, f"r{rate:g}"), progress=False,
                params=WorkloadParams(input_len=64, output_len=out_len)))
            wall = time.monotonic() - t
            client_cpu = time.process_time() - client_cpu
            truth = _get(url + "/stats")
            server_cpu = truth["cpu_s"] - server_cpu
            lat, r = s["latency_ms"], s["rate"]
            rows.append({
                "rate": rate, "requests": n, "failed": s["requests"]["failed"],
                "wall_s": wall, "load_avg_1m": os.getloadavg()[0],
                # CPU per request and cores busy while it ran, client and server apart
                "client_cpu_ms_per_req": client_cpu / n * 1e3,
                "server_cpu_ms_per_req": server_cpu / n * 1e3,
                "client_cores": client_cpu / wall, "server_cores": server_cpu / wall,
                "ttft_p50": lat["ttft"]["p50"], "ttft_server_p50": truth["ttft_ms"],
                "tpot_p50": lat["tpot"]["p50"], "tpot_server_p50": truth["tpot_ms"],
                "ttft_err_vs_server": lat["ttft"]["p50"] - truth["ttft_ms"],
                "tpot_err_vs_server": lat["tpot"]["p50"] - truth["tpot_ms"],
                "ttft_err_vs_injected": lat["ttft"]["p50"] - ttft_ms,
                "tpot_err_vs_injected": lat["tpot"]["p50"] - tpot_ms,
                "achieved": r["achieved"], "scheduled": r["scheduled"],
                "achieved_vs_target": r["achieved_vs_target"],
                "achieved_vs_scheduled": r["achieved_vs_scheduled"],
                "lag_p50": r["dispatch_lag_ms"]["p50"], "lag_p99": r["dispatch_lag_ms"]["p99"],
            })
            print(f"rate {rate:g}: done in {wall:.1f} s", file=sys.stderr)
    return rows


def markdown(rows: list[dict], args) -> str:
    out = [f"Fake server: injected TTFT {args.ttft_ms:g} ms, {args.tpot_ms:g} ms per token, "
           f"{args.output_len} output tokens; {args.arrival} arrivals, "
           f"{args.duration:g} s per rate (≥ 50 requests), seed {args.seed}.", "",
           "| target req/s | requests | TTFT p50 reported / server / injected (ms) | "
           "error vs server | TPOT p50 reported / server / injected (ms) | error vs server | "
           "achieved req/s | vs target | vs schedule | dispatch lag p50 / p99 (ms) | "
           "CPU cores client / server | load avg |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(
            f"| {r['rate']:g} | {r['requests']} ({r['failed']} failed) | "
            f"{r['ttft_p50']:.2f} / {r['ttft_server_p50']:.2f} / {args.ttft_ms:g} | "
            f"{r['ttft_err_vs_server']:+.2f} | "
            f"{r['tpot_p50']:.3f} / {r['tpot_server_p50']:.3f} / {args.tpot_ms:g} | "
            f"{r['tpot_err_vs_server']:+.3f} | {r['achieved']:.2f} | "
            f"{(r['achieved_vs_target'] - 1) * 100:+.2f} % | "
            f"{(r['achieved_vs_scheduled'] - 1) * 100:+.2f} % | "
            f"{r['lag_p50']:.2f} / {r['lag_p99']:.2f} | "
            f"{r['client_cores']:.2f} / {r['server_cores']:.2f} | {r['load_avg_1m']:.1f} |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", default="10,50,100,200")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of arrivals per rate")
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--tpot-ms", type=float, default=10.0)
    p.add_argument("--output-len", type=int, default=16)
    p.add_argument("--arrival", default="poisson", choices=["poisson", "constant"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    load_before = os.getloadavg()[0]
    rows = run([float(x) for x in args.rates.split(",")], args.duration, args.ttft_ms,
               args.tpot_ms, args.output_len, args.arrival, args.seed)
    policy = {os.SCHED_OTHER: "normal", os.SCHED_FIFO: "real-time FIFO (chrt -f)",
              os.SCHED_RR: "real-time RR"}.get(os.sched_getscheduler(0), "other")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {policy} scheduling, "
          f"load average before the run "
          f"{load_before:.2f}, after {os.getloadavg()[0]:.2f}; Python {platform.python_version()}")
    print(markdown(rows, args))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
