"""A real Prometheus server, started and stopped by labkit, that scrapes what labkit starts.

    from labkit.observe.prometheus import Prometheus
    with Prometheus(run_dir / "prometheus", rule_files=[rules]) as prom:
        prom.add_target("engine", "127.0.0.1:8000")      # scraped within one interval
        prom.wait_for_target("engine")
        prom.query('sum(rate(vllm:generation_tokens_total[30s]))')
    # Prometheus is gone here (no process left), its TSDB stays in the run directory

Why these choices:
- loopback only (--web.listen-address 127.0.0.1:PORT) and a free port by default: a
  Prometheus on 0.0.0.0:9090 would publish every metric to the network, and Debian's
  own service may already sit on 9090;
- targets come from a file_sd file labkit rewrites atomically (file_sd_configs with a 1 s
  refresh), so an engine started after Prometheus is scraped without a restart or a reload,
  within about 5 s: Prometheus's discovery manager passes target changes to the scraper in
  5-second batches (measured here: 5.3 s from add_target to the first successful scrape);
- scrape and rule evaluation every 1 s on the CPU tier: a lab lasts minutes, not days;
- --web.enable-lifecycle so reload() can re-read rule files with POST /-/reload.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from labkit.serve import process_tree
from labkit.serve.ports import check_port, pick_free_port
from labkit.errors import UserError
from labkit.observe import query as q

INSTALL_HINT = ("install it: `sudo apt-get install prometheus` (Debian/Ubuntu; then "
                "`sudo systemctl disable --now prometheus` stops the system service on :9090) "
                "or `conda install -c conda-forge prometheus`")


class PrometheusMissing(UserError):
    """No prometheus (or promtool) binary on PATH."""


def find_prometheus() -> str | None:
    return shutil.which("prometheus")


def find_promtool() -> str | None:
    return shutil.which("promtool")


def config_text(scrape_interval: str, evaluation_interval: str, targets_file: Path,
                rule_files=()) -> str:
    """prometheus.yml: one file_sd job list that labkit rewrites, and the rule files."""
    rules = "".join(f"  - {json.dumps(str(Path(r).resolve()))}\n" for r in rule_files) \
        or "  []\n"
    return (f"# written by labkit.observe.prometheus; targets live in {targets_file.name}\n"
            "global:\n"
            f"  scrape_interval: {scrape_interval}\n"
            f"  evaluation_interval: {evaluation_interval}\n"
            f"rule_files:\n{rules}"
            "scrape_configs:\n"
            "  - job_name: labkit\n"
            f"    scrape_timeout: {scrape_interval}\n"
            "    file_sd_configs:\n"
            f"      - files: [{json.dumps(str(targets_file.resolve()))}]\n"
            "        refresh_interval: 1s\n"
            "    relabel_configs:\n"  # the job label comes from the target group's labels
            "      - source_labels: [__job]\n"
            "        target_label: job\n"
            "      - source_labels: [__metrics_path]\n"
            "        regex: (.+)\n"
            "        target_label: __metrics_path__\n")


class Prometheus:
    """One Prometheus server (see the module docstring). A context manager."""

    def __init__(self, data_dir, *, port: int = 0, scrape_interval: str = "1s",
                 evaluation_interval: str = "1s", rule_files=(), binary: str | None = None,
                 startup_timeout: float = 30.0, detach: bool = False):
        self.data_dir = Path(data_dir)
        self.port = port
        self.scrape_interval, self.evaluation_interval = scrape_interval, evaluation_interval
        self.rule_files = [Path(r) for r in rule_files]
        self.binary = binary or find_prometheus()
        self.startup_timeout = startup_timeout
        self.detach = detach  # `labkit prom up`: outlive this process (`prom down` stops it)
        self.targets_file = self.data_dir / "targets.json"
        self.config_file = self.data_dir / "prometheus.yml"
        self.log_path = self.data_dir / "prometheus.log"
        self.proc: subprocess.Popen | None = None
        self._targets: dict[tuple[str, str], dict] = {}
        self.url = ""

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "Prometheus":
        if not self.binary:
            raise PrometheusMissing(f"prometheus is not on PATH: {INSTALL_HINT}")
        self.port = self.port or pick_free_port("127.0.0.1")
        check_port("127.0.0.1", self.port)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_targets()
        self.config_file.write_text(config_text(self.scrape_interval, self.evaluation_interval,
                                                self.targets_file, self.rule_files))
        cmd = [self.binary, f"--config.file={self.config_file}",
               f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
               f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle",
               "--log.level=warn"]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=None if self.detach
                                     else process_tree.die_with_parent())
        log.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-1500:]
                raise UserError(f"prometheus exited with code {self.proc.returncode} "
                                f"(log {self.log_path}):\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise UserError(f"prometheus was not ready after {self.startup_timeout:.0f} s; "
                        f"log: {self.log_path}")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (Prometheus flushes its head block and exits), then SIGKILL if needed."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "Prometheus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- targets -----------------------------------------------------------------------------
    def add_target(self, job: str, address: str, labels: dict | None = None,
                   metrics_path: str = "/metrics") -> None:
        self._targets[(job, address)] = {"__job": job, "__metrics_path": metrics_path,
                                         **(labels or {})}
        self._write_targets()

    def remove_target(self, job: str, address: str) -> None:
        self._targets.pop((job, address), None)
        self._write_targets()

    def _write_targets(self) -> None:
        groups = [{"targets": [addr], "labels": labels}
                  for (_, addr), labels in sorted(self._targets.items())]
        tmp = self.targets_file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(groups, indent=1) + "\n")
        os.replace(tmp, self.targets_file)  # Prometheus never reads a half-written file

    def targets(self) -> list[dict]:
        return self._get("/api/v1/targets")["activeTargets"]

    def wait_for_target(self, job: str, timeout: float = 30.0) -> None:
        """Until every target of `job` has been scraped successfully (up == 1)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mine = [t for t in self.targets() if t["labels"].get("job") == job]
            if mine and all(t["health"] == "up" for t in mine):
                return
            time.sleep(0.25)
        states = [(t["scrapeUrl"], t["health"], t.get("lastError")) for t in self.targets()
                  if t["labels"].get("job") == job]
        raise UserError(f"prometheus could not scrape job {job!r} within {timeout:.0f} s: "
                        f"{states or 'no such target (add_target first)'}")

    # --- queries -----------------------------------------------------------------------------
    def query(self, expr: str, time: float | None = None) -> list[dict]:
        params = {"query": expr, **({"time": time} if time is not None else {})}
        return q.instant_rows(self._get("/api/v1/query", params))

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        data = self._get("/api/v1/query_range",
                         {"query": expr, "start": start, "end": end, "step": step})
        return q.range_rows(data)

    def alerts(self) -> list[dict]:
        return self._get("/api/v1/alerts")["alerts"]

    def rules(self) -> list[dict]:
        return self._get("/api/v1/rules")["groups"]

    def reload(self) -> None:
        req = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def _get(self, path: str, params: dict | None = None) -> dict:
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:  # a bad query: Prometheus says why in the body
            body = json.loads(e.read() or b"{}")
            raise UserError(f"prometheus: {body.get('errorType', e.code)}: "
                            f"{body.get('error', e.reason)} ({params or path})") from None
        if body.get("status") != "success":
            raise UserError(f"prometheus: {body.get('error')} ({params or path})")
        return body["data"]
