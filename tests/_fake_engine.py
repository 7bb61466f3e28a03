"""A stand-in inference engine for the launcher tests: starts in milliseconds, not a minute.

As a module it is an engine spec (the interface of labkit/serve/vllm.py: NAME, build()...),
so tests can register it as engine "fake". As a script it is the server: /health and
/v1/models over HTTP, optionally with child processes, to check that the whole tree stops.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from labkit.serve.config import LaunchPlan, ServeConfig

NAME = "fake"
TITLE = "the fake engine"
REQUIRES_GPU = False
INSTALL_HINT = "nothing to install"
FLAGS = {"host": "--host", "port": "--port"}
DOCUMENTED_FLAGS = set(FLAGS.values())
METRICS = {"requests_running": "fake:running"}
METRICS_PATH = "/metrics"


def missing() -> str | None:
    return None


def build(cfg: ServeConfig, workdir: Path | None = None) -> LaunchPlan:
    return LaunchPlan(engine=NAME, argv=[sys.executable, __file__, "--host", cfg.host,
                                         "--port", str(cfg.port), *cfg.extra_args])


def plan(port: int, *extra: str, host: str = "127.0.0.1") -> LaunchPlan:
    return build(ServeConfig(model="fake-model", host=host, port=port, extra_args=list(extra)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--children", type=int, default=0, help="sleeping children in our group")
    ap.add_argument("--escaped-child", action="store_true",
                    help="a child that leaves our process group (setsid)")
    ap.add_argument("--ignore-sigterm", action="store_true")
    ap.add_argument("--never-healthy", action="store_true", help="/health answers 503")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before listening")
    a = ap.parse_args()
    if a.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sleeper = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
               "signal.SIG_IGN) if %r else None; time.sleep(600)" % a.ignore_sigterm]
    kids = [subprocess.Popen(sleeper) for _ in range(a.children)]
    if a.escaped_child:
        kids.append(subprocess.Popen(sleeper, start_new_session=True))
    print(f"fake engine pid {os.getpid()} children {[k.pid for k in kids]}", flush=True)
    time.sleep(a.delay)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                self._send(503 if a.never_healthy else 200, b"")
            elif self.path == "/v1/models":
                self._send(200, json.dumps({"object": "list", "data": [
                    {"id": "fake-model", "object": "model"}]}).encode())
            else:
                self._send(404, b"")

        def _send(self, code, body):
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer((a.host, a.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
