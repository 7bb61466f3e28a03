"""labkit bench vs GuideLLM: which load generator keeps its schedule and its latencies honest
at higher request rates on the same 2 cores?

Starts labkit's fake server (`labkit/bench/fake_server.py`: injected TTFT and per-token
delay; `/stats` reports the medians it really produced). Then, for each arrival kind and
target rate, it runs GuideLLM's CLI and `python -m labkit.bench` (each in its own process,
one after the other, never at once; the order alternates between repeats) with the same
rate, the same seconds of arrivals and the same workload (/v1/completions, 64-word or
64-token prompts, which the server ignores, and 16 streamed output tokens). Both leave the
first `--warmup` seconds of arrivals out of their figures (GuideLLM's worker processes are
still starting then and send late), and the server's /stats is reset at the same point.
For each run:

- achieved send rate, computed the same way for both tools, (n − 1)/span over the send
  instants of the requests scheduled in the measured window (GuideLLM: `request_start`;
  labkit: `sent`), against the target;
- send lag (sent − scheduled; GuideLLM: `request_start − targeted_start`) p50/p99: how
  late the tool fired. Unlike labkit, GuideLLM leaves requests it could not start in time
  unsent at the end of the run, so its achieved rate is the informative figure there;
- TTFT p50 and TPOT p50 as the tool reports them, against the server's own figures.
  TPOT is (E2E − TTFT)/(out − 1) in both, which GuideLLM calls "ITL" (GuideLLM's "TPOT" is
  E2E/out, first token included);
- errors, wall time and the client's CPU time (the tool plus its child processes).

A rate is *sustained* by a tool when one of its runs there had no failed requests, TTFT
and TPOT p50 within 2 ms of the server's own medians, and kept its schedule: with constant
arrivals an achieved send rate ≥ 99 % of the target; with Poisson arrivals (whose drawn
schedule itself differs from the target by a few %) a send lag p99 ≤ 50 ms, the threshold
at which `labkit bench` warns that the client fell behind. A tool's *maximum sustained
rate* is the highest ladder rate that it sustained together with every lower ladder rate.

GuideLLM goes in a venv of its own (it pulls torch, datasets, sanic…), never the project's:

    python3 -m venv /tmp/guidellm-venv && /tmp/guidellm-venv/bin/pip install torch guidellm
    chrt -f 10 .venv/bin/python benchmarks/guidellm_compare.py --repeats 2 --json rows.json
    .venv/bin/python benchmarks/guidellm_compare.py --render rows.json   # tables again
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labkit.bench.fake_server import fake_server  # noqa: E402

MODEL = "fake-model"


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _rate(times) -> float | None:
    """(n − 1) intervals over the span: labkit.bench.request_metrics._rate, for both tools."""
    times = sorted(times)
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0])


def _children_cpu() -> float:
    """CPU seconds of every finished child (and its reaped children): the tool's total."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(cmd: list[str], cwd: Path, env: dict, timeout: float) -> dict:
    cpu, t = _children_cpu(), time.monotonic()
    with open(cwd / "console.log", "w") as log:
        try:
            rc = subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    return {"rc": rc, "wall_s": time.monotonic() - t, "client_cpu_s": _children_cpu() - cpu}


def run_guidellm(exe: str, url: str, arrival: str, rate: float, a, work: Path) -> dict:
    out = work / "guidellm.json"
    cmd = [exe, "run",
           "--backend", f"kind=openai_http,target={url},model={MODEL},"
                        "request_format=/v1/completions",
           "--profile", f"kind={arrival},rate={rate:g},warmup={a.warmup:g}",
           "--constraint", f"kind=max_duration,seconds={a.warmup + a.duration:g}",
           "--data", f"kind=synthetic_text,prompt_tokens={a.input_len},"
                     f"output_tokens={a.output_len}",
           "--tokenizer", f"kind=huggingface_auto,model={a.tokenizer}",
           "--output", f"kind=json,path={out}", "--disable-console-interactive"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if a.guidellm_workers:
        env["GUIDELLM__MAX_WORKER_PROCESSES"] = str(a.guidellm_workers)
    res = _run(cmd, work, env, a.warmup + a.duration + a.timeout)
    if res["rc"] != 0 or not out.exists():
        res["error"] = (work / "console.log").read_text()[-2000:]
        return res
    b = json.loads(out.read_text())["benchmarks"][0]
    m, reqs = b["metrics"], b["requests"]
    # The request lists hold the warmup too (the metrics leave it out): keep the requests
    # scheduled from the measured window's start on, as labkit does.
    since = b["scheduler_metrics"]["measure_start_time"]
    started = [t for kind in ("successful", "errored", "incomplete") for r in reqs[kind]
               if (t := r["info"]["timings"])["request_start"] is not None
               and t["targeted_start"] >= since]
    lag = [(t["request_start"] - t["targeted_start"]) * 1e3 for t in started]
    res.update({
        "sent": len(started), "ok": m["request_totals"]["successful"],
        "failed": m["request_totals"]["errored"],
        "unfinished": m["request_totals"]["incomplete"],  # cut off at the end: not failures
        "ttft_p50": m["time_to_first_token_ms"]["successful"]["percentiles"]["p50"],
        "tpot_p50": m["inter_token_latency_ms"]["successful"]["percentiles"]["p50"],
        "achieved": _rate(t["request_start"] for t in started),
        "lag_p50": float(np.percentile(lag, 50)), "lag_p99": float(np.percentile(lag, 99))})
    return res


def run_labkit(url: str, arrival: str, rate: float, a, work: Path) -> dict:
    cmd = [sys.executable, "-m", "labkit.bench", "--base-url", url, "--model", MODEL,
           "--rate", f"{rate:g}", "--arrival", arrival, "--duration", f"{a.duration:g}",
           "--warmup", f"{a.warmup:g}",
           "--input-len", str(a.input_len), "--output-len", str(a.output_len),
           "--seed", "0", "--out", str(work / "out"), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = _run(cmd, work, env, a.warmup + a.duration + a.timeout)
    summary = work / "out" / "summary.json"
    if res["rc"] != 0 or not summary.exists():
        res["error"] = (work / "console.log").read_text()[-2000:]
        return res
    s = json.loads(summary.read_text())
    recs = [json.loads(line) for line in (work / "out" / "requests.jsonl").open()]
    recs = [r for r in recs if not r["warmup"]]
    sent = [r for r in recs if r["sent"] is not None]
    lag = [(r["sent"] - r["scheduled"]) * 1e3 for r in sent]
    res.update({
        "sent": len(sent), "ok": s["requests"]["completed"], "failed": s["requests"]["failed"],
        "unfinished": 0,
        "ttft_p50": s["latency_ms"]["ttft"]["p50"], "tpot_p50": s["latency_ms"]["tpot"]["p50"],
        "achieved": _rate(r["sent"] for r in sent),
        "lag_p50": float(np.percentile(lag, 50)), "lag_p99": float(np.percentile(lag, 99))})
    return res


def reset_after_warmup(url: str, warmup: float, done: threading.Event) -> None:
    """Make the server's /stats cover the measured window only: wait for the run's first
    request (GuideLLM takes seconds to start), let `warmup` seconds pass, forget what the
    server measured so far. Both tools also leave their first `warmup` seconds out."""
    before = _get(url + "/stats")["requests"]
    while not done.is_set() and _get(url + "/stats")["requests"] == before:
        time.sleep(0.02)
    if not done.wait(warmup):
        _get(url + "/reset")


def one_run(tool: str, url: str, arrival: str, rate: float, a, tmp: str) -> dict:
    _get(url + "/reset")
    server_cpu = _get(url + "/stats")["cpu_s"]
    done = threading.Event()
    watcher = threading.Thread(target=reset_after_warmup, args=(url, a.warmup, done))
    watcher.start()
    with tempfile.TemporaryDirectory(dir=tmp) as work:
        try:
            if tool == "guidellm":
                row = run_guidellm(a.guidellm, url, arrival, rate, a, Path(work))
            else:
                row = run_labkit(url, arrival, rate, a, Path(work))
        finally:
            done.set()
            watcher.join()
        if a.keep:  # the tools' own output files, for a second look
            shutil.copytree(work, Path(a.keep) / f"{arrival}-{rate:g}-{tool}-{time.time():.0f}")
    truth = _get(url + "/stats")
    row.update({"tool": tool, "arrival": arrival, "rate": rate,
                "load_avg_1m": os.getloadavg()[0], "server_cpu_s": truth["cpu_s"] - server_cpu,
                "ttft_server": truth["ttft_ms"], "tpot_server": truth["tpot_ms"],
                "server_max_in_flight": truth["max_in_flight"]})
    if "ttft_p50" in row and truth["ttft_ms"] is not None:
        row["ttft_err"] = row["ttft_p50"] - truth["ttft_ms"]
        row["tpot_err"] = row["tpot_p50"] - truth["tpot_ms"]
        row["vs_target"] = (row["achieved"] or 0.0) / rate
    row["sustained"] = sustained(row)
    return row


def sustained(row: dict, ttft_tol_ms: float = 2.0) -> bool:
    """The definition in the module docstring; `ttft_tol_ms` loosens only the TTFT bound
    (inf: judge the schedule alone), to show how much the verdict hangs on that choice."""
    if "ttft_err" not in row:
        return False
    kept = (row["vs_target"] >= 0.99 if row["arrival"] == "constant"
            else row["lag_p99"] <= 50.0)
    return bool(row["failed"] == 0 and row["ok"] > 0 and kept and
                abs(row["ttft_err"]) <= ttft_tol_ms and abs(row["tpot_err"]) <= 2.0)


def max_sustained(rows: list[dict], tool: str, arrival: str, ttft_tol_ms: float = 2.0) -> float:
    """Highest rate sustained (by any of its runs) with every lower rate sustained too;
    0 when even the lowest rate was not."""
    best = 0.0
    for rate in sorted({r["rate"] for r in rows if r["arrival"] == arrival}):
        if not any(sustained(r, ttft_tol_ms) for r in rows
                   if (r["tool"], r["arrival"], r["rate"]) == (tool, arrival, rate)):
            break
        best = rate
    return best


def markdown(rows: list[dict]) -> str:
    """One line per arrival kind, rate and tool; its runs' figures joined by ' / '."""
    out = ["| arrivals | target req/s | tool | achieved vs target | send lag p99 (ms) | "
           "TTFT p50 error vs server (ms) | server's TTFT p50 (ms) | TPOT p50 error (ms) | "
           "client CPU s (wall s) | load avg | sustained |", "|" + "---|" * 11]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["arrival"], r["rate"], r["tool"]), []).append(r)

    def each(runs, fmt):
        return " / ".join(fmt(r) if "ttft_err" in r else f"failed ({r['rc']})" for r in runs)

    for (arrival, rate, tool), runs in groups.items():
        out.append(
            f"| {arrival} | {rate:g} | {tool} | " + " | ".join([
                each(runs, lambda r: f"{(r['vs_target'] - 1) * 100:+.2f} %"),
                each(runs, lambda r: f"{r['lag_p99']:.0f}"),
                each(runs, lambda r: f"{r['ttft_err']:+.2f}"),
                each(runs, lambda r: f"{r['ttft_server']:.2f}"),
                each(runs, lambda r: f"{r['tpot_err']:+.3f}"),
                " / ".join(f"{r['client_cpu_s']:.0f} ({r['wall_s']:.0f})" for r in runs),
                " / ".join(f"{r['load_avg_1m']:.0f}" for r in runs),
                " / ".join("yes" if r["sustained"] else "no" for r in runs)]) + " |")
    lowest = min(r["rate"] for r in rows)
    out += ["", "| arrivals | TTFT p50 bound | labkit bench max sustained req/s | GuideLLM | "
                "ratio |", "|---|---|---|---|---|"]
    for arrival in dict.fromkeys(r["arrival"] for r in rows):
        for tol, label in ((2.0, "≤ 2 ms (the definition)"), (5.0, "≤ 5 ms"),
                           (float("inf"), "none (schedule only)")):
            lk = max_sustained(rows, "labkit", arrival, tol)
            gl = max_sustained(rows, "guidellm", arrival, tol)
            if not any(r["tool"] == "guidellm" for r in rows):
                shown, ratio = "not run", "n/a"
            elif gl:
                shown, ratio = f"{gl:g}", f"{lk / gl:.1f}×"
            else:  # below the ladder: the ratio is only bounded
                shown = f"< {lowest:g} (not even the lowest rate)"
                ratio = f"> {lk / lowest:g}×" if lk else "n/a"
            out.append(f"| {arrival} | {label} | {lk:g} | {shown} | {ratio} |")
    return "\n".join(out)


def _progress(row: dict) -> None:
    print(f"{row['arrival']} {row['rate']:g} {row['tool']}: "
          + (f"TTFT err {row['ttft_err']:+.2f} ms, achieved {row['vs_target']:.2%} of target, "
             f"lag p99 {row['lag_p99']:.0f} ms, {row['failed']} failed" if "ttft_err" in row
             else f"run failed ({row['rc']}): {row.get('error', '')[-600:]}")
          + f", {row['wall_s']:.0f} s wall, load {row['load_avg_1m']:.1f}",
          file=sys.stderr, flush=True)


def ladder(url: str, arrival: str, rates: list[float], tools: list[str], a, tmp: str,
           rows: list[dict]) -> None:
    """Every rate, low to high; each repeat runs the tools one after the other, in
    alternating order. A tool that sustained none of `a.skip_after` rates in a row stops
    climbing: its maximum cannot change any more, and each run costs shared CPU."""
    misses = dict.fromkeys(tools, 0)
    for rate in rates:
        active = [t for t in tools if misses[t] < a.skip_after]
        for rep in range(a.repeats):
            for tool in (active if rep % 2 == 0 else active[::-1]):
                row = one_run(tool, url, arrival, rate, a, tmp)
                row["repeat"] = rep
                rows.append(row)
                _progress(row)
                if a.json:  # keep what is done so far
                    Path(a.json).write_text(json.dumps(rows, indent=1))
        for tool in active:
            ok = any(r["sustained"] for r in rows
                     if (r["tool"], r["arrival"], r["rate"]) == (tool, arrival, rate))
            misses[tool] = 0 if ok else misses[tool] + 1


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--guidellm", default=os.environ.get("GUIDELLM",
                                                        "/tmp/guidellm-venv/bin/guidellm"),
                   help="GuideLLM's CLI, installed in its own venv (not the project's)")
    p.add_argument("--rates", default="10,25,50,100,200,400,800")
    p.add_argument("--arrivals", default="constant,poisson")
    p.add_argument("--duration", type=float, default=8.0,
                   help="seconds of measured arrivals per run")
    p.add_argument("--warmup", type=float, default=5.0,
                   help="seconds of arrivals sent first and left out, by both tools and "
                        "the server's figures (GuideLLM's workers start during the run)")
    p.add_argument("--repeats", type=int, default=1, help="runs per tool and rate")
    p.add_argument("--tools", default="guidellm,labkit")
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--tpot-ms", type=float, default=10.0)
    p.add_argument("--input-len", type=int, default=64)
    p.add_argument("--output-len", type=int, default=16)
    p.add_argument("--tokenizer", help="tokenizer dir for GuideLLM's synthetic prompts "
                                       "(default: the tiny Llama from labkit.models)")
    p.add_argument("--guidellm-workers", type=int,
                   help="GUIDELLM__MAX_WORKER_PROCESSES (default: GuideLLM's own, 10)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds a run may take beyond its arrivals (startup, drain)")
    p.add_argument("--skip-after", type=int, default=2, metavar="N",
                   help="stop a tool's ladder after N rates in a row it did not sustain")
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--keep", metavar="DIR", help="keep each run's output files here")
    p.add_argument("--render", metavar="FILE", help="print the tables from a --json file of an "
                                                    "earlier run, without running anything")
    a = p.parse_args()
    if a.render:
        print(markdown(json.loads(Path(a.render).read_text())))
        return 0
    if a.tokenizer is None:
        from labkit.models import build_tiny_llama
        a.tokenizer = str(build_tiny_llama())
    rates = [float(x) for x in a.rates.split(",")]
    tools = a.tools.split(",")
    version = subprocess.run([a.guidellm, "--version"], capture_output=True, text=True).stdout
    policy = {os.SCHED_OTHER: "normal", os.SCHED_FIFO: "real-time FIFO (chrt -f)",
              os.SCHED_RR: "real-time RR"}.get(os.sched_getscheduler(0), "other")
    print(f"{version.strip()}; {cpu_name()}, {os.cpu_count()} cores, {policy} scheduling, "
          f"load average {os.getloadavg()[0]:.2f} before; Python {platform.python_version()}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    rows: list[dict] = []
    # The server streams exactly output_len tokens whatever field the client used to ask
    # (GuideLLM's completions body says max_tokens, its chat body max_completion_tokens).
    with fake_server(ttft_ms=a.ttft_ms, tpot_ms=a.tpot_ms, output_tokens=a.output_len) as url, \
            tempfile.TemporaryDirectory() as tmp:
        for arrival in a.arrivals.split(","):
            ladder(url, arrival, rates, tools, a, tmp, rows)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
