"""`labkit serve` with the real vLLM CPU build: two starts, the most this area affords.

1. The Python API: health, a completion under the served name, every metric name of our
   vLLM table present at /metrics, listening on loopback only, and after stop() no process
   of the tree (API server, engine core) survives.
2. The CLI in a child process, killed with SIGKILL (a crashed notebook kernel): the kernel's
   parent-death signal and the watchdog must take the whole tree down with no Python
   cleanup code running.
Each start is ~30-60 s and ~4.5 GB RAM on 2 cores (float32, --enforce-eager, 1 GiB KV).
"""

from __future__ import annotations

import importlib.util
import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import psutil
import pytest

from labkit.serve import serve, vllm
from labkit.serve.ports import pick_free_port, port_is_free
from labkit.models import build_tiny_llama

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed"),
]

STARTUP_TIMEOUT_S = 300  # ~30-60 s alone; slack for a machine shared with other test runs


def _gone(pids, timeout=30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    left.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def _kill(pids) -> None:
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass


def _non_loopback_ipv4() -> str | None:
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    return None


@pytest.fixture(scope="module")
def tiny():
    return str(build_tiny_llama(verbose=False))


def test_vllm_serves_on_loopback_and_stop_leaves_nothing(tiny, tmp_path):
    server = serve("vllm", model=tiny, port=None, served_model_name="tiny",
                   dtype="float32", enforce_eager=True, max_model_len=512, kv_cache_gib=1,
                   max_num_seqs=4, prefix_caching=True, chunked_prefill=True,
                   max_num_batched_tokens=512, log_dir=tmp_path, timeout=STARTUP_TIMEOUT_S)
    pids: list[int] = []
    try:
        print(f"\nvLLM healthy after {server.startup_s:.1f} s on {server.base_url}")
        pids = server.pids()
        assert len(pids) >= 2, pids  # the API server and at least the engine core
        assert server.model == "tiny"
        with urllib.request.urlopen(server.url("/health"), timeout=10) as r:
            assert r.status == 200
        req = urllib.request.Request(
            server.url("/v1/completions"), headers={"Content-Type": "application/json"},
            data=json.dumps({"model": "tiny", "prompt": "def fibonacci(n):", "max_tokens": 8,
                             "temperature": 0}).encode())
        with urllib.request.urlopen(req, timeout=60) as r:
            body = json.loads(r.read())
        assert 1 <= body["usage"]["completion_tokens"] <= 8
        assert isinstance(body["choices"][0]["text"], str)

        with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
            exposition = r.read().decode()
        names = {line.split("{")[0].split(" ")[0] for line in exposition.splitlines()
                 if line and not line.startswith("#")}
        for concept, name in vllm.METRICS.items():
            assert name in names or f"{name}_bucket" in names, (concept, name)
        _every_dashboard_panel_has_data(server, tmp_path)

        # Every listening TCP socket of the tree is on loopback...
        listening = [c for pid in pids for c in psutil.Process(pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN]
        assert any(c.laddr.port == server.port for c in listening)
        assert all(c.laddr.ip in ("127.0.0.1", "::1") for c in listening), listening
        # ...so the port cannot be reached through the machine's network address.
        ip = _non_loopback_ipv4()
        if ip:
            with pytest.raises(OSError):
                socket.create_connection((ip, server.port), timeout=2).close()
    finally:
        server.stop()
    try:
        assert _gone(pids) == []
        assert port_is_free("127.0.0.1", server.port)
    finally:
        _kill(pids)


def _every_dashboard_panel_has_data(server, tmp_path):
    """The serving dashboard's panels against vLLM CPU itself, scraped by a real Prometheus
    under a little load: a renamed vLLM metric breaks this, not a dashboard at 3 a.m."""
    import time

    from labkit.bench.loadgen import BenchConfig, run_bench
    from labkit.bench.workloads import WorkloadParams
    from labkit.observe import dashboards as dash
    from labkit.observe.prometheus import Prometheus, find_prometheus

    if find_prometheus() is None:  # the rest of the vLLM test still runs
        print("prometheus is not installed: dashboard panels not checked on vLLM")
        return
    with Prometheus(tmp_path / "prom") as prom:
        prom.add_target("vllm", server.base_url.split("//")[1])
        prom.wait_for_target("vllm", timeout=20)
        start = time.time()
        run_bench(BenchConfig(base_url=server.base_url, model=server.model,
                              workload="shared-prefix", rate=4.0, num_requests=12,
                              params=WorkloadParams(num_groups=1, system_prompt_len=48,
                                                    question_len=8, output_len=6),
                              out_dir=str(tmp_path / "bench"), progress=False))
        time.sleep(3)  # the last requests' samples land in the next scrapes
        data = dash.panel_data(prom, start - 2, time.time())
    engine = [d for d in data if any("vllm:" in expr for _, expr in d["panel"].targets)]
    assert len(engine) >= 10  # latency, batch, KV cache, hit rate, tokens, preemptions, reasons
    empty = [d["panel"].title for d in engine if not d["has_data"]]
    assert not empty, f"dashboard panels without data on vLLM CPU: {empty}"


CLI_RUNNER = textwrap.dedent("""
    import argparse, sys
    from labkit.serve import cli
    ap = argparse.ArgumentParser(prog="labkit")
    cli.register(ap.add_subparsers())
    args = ap.parse_args(sys.argv[1:])
    sys.exit(args.func(args))
""")


def test_vllm_cli_killed_with_sigkill_takes_the_server_with_it(tiny, tmp_path):
    port = pick_free_port()
    err = open(tmp_path / "cli.stderr", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI_RUNNER, "serve", "--engine", "vllm", "--model", tiny,
         "--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-model-len", "256",
         "--no-prefix-caching", "--no-chunked-prefill", "--kv-cache-gib", "1",
         "--log-dir", str(tmp_path), "--timeout", str(STARTUP_TIMEOUT_S)],
        stdout=subprocess.PIPE, stderr=err, text=True)
    pids: list[int] = []
    try:
        out = []
        while not any(line.startswith("Ctrl-C") for line in out):
            line = proc.stdout.readline()
            if not line:
                err.seek(0)
                pytest.fail(f"labkit serve exited early:\n{''.join(out)}\n{err.read()}")
            out.append(line)
        assert f"base URL:    http://127.0.0.1:{port}" in "".join(out)
        pids = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        assert len(pids) >= 3, pids  # API server, engine core, watchdog
        t0 = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert _gone(pids, timeout=60) == []
        print(f"\nwhole tree gone {time.monotonic() - t0:.1f} s after SIGKILL of the CLI")
        assert port_is_free("127.0.0.1", port)
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill(pids)
        err.close()
