"""`labkit prom up|down|status|targets`: a Prometheus for your own experiments.

The labs start and stop their own Prometheus (labkit.observe.prometheus.Prometheus); these
commands keep one running between commands, e.g. next to `labkit serve`:

    labkit serve --engine mini --port 8000 &
    labkit prom up --target engine=127.0.0.1:8000     # http://127.0.0.1:<port>, loopback only
    labkit prom targets add exporter=127.0.0.1:9400
    labkit prom status                                # URL, targets and their health
    labkit prom down                                  # stops it; the TSDB stays in --dir

State (pid, port, data dir) lives in <dir>/state.json, so `down` finds the server.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path

from labkit.errors import UserError


def _state_path(args) -> Path:
    return Path(args.dir) / "state.json"


def _read_state(args) -> dict:
    p = _state_path(args)
    if not p.exists():
        raise UserError(f"no Prometheus started with `labkit prom up --dir {args.dir}`")
    return json.loads(p.read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parse_target(text: str) -> tuple[str, str]:
    job, eq, addr = text.partition("=")
    if not eq or ":" not in addr:
        raise UserError(f"target {text!r}: write JOB=HOST:PORT, e.g. engine=127.0.0.1:8000")
    return job, addr


def _attach(state: dict):
    """A Prometheus object for the running server, to rewrite its targets file."""
    from labkit.observe.prometheus import Prometheus

    prom = Prometheus(state["data_dir"], port=state["port"])
    prom.url = state["url"]
    prom._targets = {(t["job"], t["address"]): {"__job": t["job"], "__metrics_path": "/metrics"}
                     for t in state.get("targets", [])}
    return prom


def cmd_up(args) -> int:
    from labkit.observe.prometheus import Prometheus

    p = _state_path(args)
    if p.exists() and _alive(json.loads(p.read_text())["pid"]):
        raise UserError(f"a Prometheus from {args.dir} is already running: "
                        "`labkit prom status`, or `labkit prom down` first")
    prom = Prometheus(Path(args.dir), port=args.port, scrape_interval=args.interval,
                      evaluation_interval=args.interval, detach=True)
    targets = [_parse_target(t) for t in args.target or []]
    prom.start()
    for job, addr in targets:
        prom.add_target(job, addr)
    state = {"pid": prom.proc.pid, "port": prom.port, "url": prom.url,
             "data_dir": str(Path(args.dir).resolve()),
             "targets": [{"job": j, "address": a} for j, a in targets]}
    p.write_text(json.dumps(state, indent=1) + "\n")
    print(f"Prometheus {prom.url} (pid {prom.proc.pid}, loopback only; data in {args.dir})")
    return 0


def cmd_down(args) -> int:
    state = _read_state(args)
    pid = state["pid"]
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    _state_path(args).unlink()
    print(f"stopped Prometheus (pid {pid}); its data stays in {state['data_dir']}")
    return 0


def cmd_status(args) -> int:
    state = _read_state(args)
    if not _alive(state["pid"]):
        print(f"not running (pid {state['pid']} is gone); `labkit prom up` starts it again")
        return 1
    prom = _attach(state)
    print(f"Prometheus {state['url']} (pid {state['pid']})")
    for t in prom.targets():
        err = f"  ({t['lastError']})" if t.get("lastError") else ""
        print(f"  {t['labels'].get('job', '?'):12s} {t['scrapeUrl']:40s} {t['health']}{err}")
    return 0


def cmd_targets(args) -> int:
    state = _read_state(args)
    prom = _attach(state)
    job, addr = _parse_target(args.target)
    (prom.add_target if args.action == "add" else prom.remove_target)(job, addr)
    state["targets"] = [{"job": j, "address": a} for j, a in sorted(prom._targets)]
    _state_path(args).write_text(json.dumps(state, indent=1) + "\n")
    print(f"{args.action} {job}={addr}: scraped within ~5 s" if args.action == "add"
          else f"removed {job}={addr}")
    return 0


def cmd_exporter(args) -> int:
    from labkit.observe.gpu_exporter import serve

    server, thread = serve(args.port, host=args.host)
    print(f"GPU exporter on http://{args.host}:{server.server_port}/metrics "
          "(dcgm-exporter names; Ctrl-C stops it)", flush=True)
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


def register(sub) -> None:
    from labkit.observe import gpu_exporter  # standard library only at import time

    e = sub.add_parser("exporter", help="GPU metrics for Prometheus, dcgm-exporter's names "
                       "(works without a GPU: host metrics and a 'no GPU' gauge)",
                       description=gpu_exporter.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--port", type=int, default=9400, help="port (dcgm-exporter's 9400; 0 = free)")
    e.add_argument("--host", default="127.0.0.1", help="address (default loopback only)")
    e.set_defaults(func=cmd_exporter)
    p = sub.add_parser("prom", help="a loopback Prometheus for your experiments (up/down/status)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default="runs/prometheus",
                   help="data and state (default runs/prometheus)")
    s = p.add_subparsers(dest="prom_cmd", metavar="ACTION", required=True)
    up = s.add_parser("up", help="start Prometheus on 127.0.0.1 (a free port unless --port)")
    up.add_argument("--port", type=int, default=0)
    up.add_argument("--interval", default="1s", help="scrape and rule interval (default 1s)")
    up.add_argument("--target", action="append", metavar="JOB=HOST:PORT", help="scrape this")
    up.set_defaults(func=cmd_up)
    s.add_parser("down", help="stop it (the data stays)").set_defaults(func=cmd_down)
    s.add_parser("status", help="URL, targets and their health").set_defaults(func=cmd_status)
    t = s.add_parser("targets", help="add or remove a scrape target while it runs")
    t.add_argument("action", choices=["add", "remove"])
    t.add_argument("target", metavar="JOB=HOST:PORT")
    t.set_defaults(func=cmd_targets)
