"""Start an inference server, wait until it answers, and stop its whole process tree.

From a notebook:

    from labkit.serve import serve
    with serve("vllm", model=path, port=None, max_model_len=512) as server:
        print(server.base_url)          # http://127.0.0.1:<free port>
        ...                              # openai.OpenAI(base_url=server.base_url + "/v1")
    # the server, its engine core and its workers are gone here

or `server = serve(...)`, later `server.stop()` (`stop_all()` stops every server this
kernel started). A server that fails to start raises
ServerStartError with the likely cause and the tail of its log; nothing is left running.
Nothing is left running either when the kernel dies: see process_tree.py.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import labkit
from labkit.errors import UserError
from labkit.serve import process_tree
from labkit.serve.config import LaunchPlan, ServeConfig, has_nvidia_gpu
from labkit.serve.diagnose import likely_cause
from labkit.serve.ports import check_port, pick_free_port
from labkit.serve.records import default_log_dir, write_launch_record
from labkit.serve.registry import engine_module

DEFAULT_STARTUP_TIMEOUT_S = 600.0  # vLLM CPU: ~30 s eager, ~90 s compiled; big GPU models more
_LIVE: set["Server"] = set()  # stopped at interpreter exit


class ServerStartError(UserError):
    """The server exited or never became healthy; `cause` says why, `log_path` has it all."""

    def __init__(self, message: str, *, cause: str, log_path: Path, returncode: int | None):
        super().__init__(message)
        self.cause, self.log_path, self.returncode = cause, log_path, returncode


class Server:
    """One running server. Use as a context manager, or call stop()."""

    def __init__(self, plan: LaunchPlan, *, host: str, port: int, log_dir: Path,
                 title: str = "", gpu_only: bool = False, config: ServeConfig | None = None):
        self.plan, self.host, self.port = plan, host, port
        self.title = title or plan.engine
        self.gpu_only, self.config = gpu_only, config
        self.log_dir = Path(log_dir)
        self.log_path = self.log_dir / f"{plan.engine}.log"
        self.base_url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        self.proc: subprocess.Popen | None = None
        self.watchdog: subprocess.Popen | None = None
        self.models: list[str] = []  # ids from /v1/models once healthy
        self.startup_s: float | None = None
        self._seen: dict = {}  # pid -> psutil.Process of every tree member we observed
        self._stopped = False

    # --- what a notebook uses --------------------------------------------------------------
    @property
    def model(self) -> str | None:
        """The name to put in a request's "model" field."""
        return self.models[0] if self.models else None

    @property
    def metrics_url(self) -> str | None:
        return self.base_url + self.plan.metrics_path if self.plan.metrics_path else None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def url(self, path: str) -> str:
        return self.base_url + path

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        """PIDs of the live server tree (API server, engine core, workers...)."""
        return [p.pid for p in self._observe()]

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-n:])

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, timeout: float = DEFAULT_STARTUP_TIMEOUT_S) -> "Server":
        check_port(self.host, self.port)  # before minutes of model loading, not after
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for path, text in self.plan.files.items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        env = {**os.environ, **self.plan.env}
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    self.plan.argv, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                    preexec_fn=process_tree.die_with_parent())
            except FileNotFoundError as e:
                raise UserError(f"cannot run {self.plan.argv[0]!r}: {e.strerror}; "
                                f"is {self.title} installed?") from None
        _LIVE.add(self)
        self._start_watchdog()
        self._write_launch_record()
        try:
            self._wait_healthy(timeout)
        except BaseException:  # failure, timeout, or Ctrl-C while waiting: leave nothing
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        self._observe()
        return self

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the whole tree, wait `grace` s for a clean exit, SIGKILL what is left."""
        if self.proc is None or self._stopped:
            return
        self._stopped = True
        procs = self._observe()
        process_tree.terminate(self.proc.pid, procs + list(self._seen.values()), grace=grace)
        try:
            self.proc.wait(timeout=10)  # reap it, so no zombie lingers
        except subprocess.TimeoutExpired:
            pass
        if self.watchdog is not None and self.watchdog.poll() is None:
            self.watchdog.terminate()
            try:
                self.watchdog.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.watchdog.kill()
        _LIVE.discard(self)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else "stopped"
        return f"<Server {self.plan.engine} {self.base_url} pid={self.pid} {state}>"

    # --- internals ------------------------------------------------------------------------
    def _observe(self) -> list:
        """The live tree now; also remembered, so stop() finds children orphaned later."""
        if not self.proc:
            return []
        procs = [p for p in process_tree.tree(self.proc.pid) if process_tree.alive(p)]
        for p in procs:
            self._seen.setdefault(p.pid, p)
        return procs

    def _start_watchdog(self) -> None:
        root = str(Path(labkit.__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
        with open(self.log_dir / "watchdog.log", "ab") as log:
            self.watchdog = subprocess.Popen(
                [sys.executable, "-m", "labkit.serve.watchdog", str(os.getpid()),
                 str(self.proc.pid)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True)  # own session: signals to our group miss it

    def _write_launch_record(self) -> None:
        write_launch_record(self.log_dir / "launch.json", self.plan, base_url=self.base_url,
                            pid=self.proc.pid, log_path=self.log_path, config=self.config)

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, b""
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return 0, b""

    def _wait_healthy(self, timeout: float) -> None:
        t0 = time.monotonic()
        health, models = self.plan.health_paths[0], self.plan.health_paths[-1]
        while True:
            if self.proc.poll() is not None:
                self._fail(f"{self.title} exited with code {self.proc.returncode} while "
                           "starting")
            if time.monotonic() - t0 > timeout:
                self._fail(f"{self.title} did not become healthy within {timeout:.0f} s "
                           f"(polling {health} and {models}); pass a longer timeout if it "
                           "is still loading")
            if self._get(health)[0] == 200:
                status, body = self._get(models)
                if status == 200:
                    try:
                        self.models = [m["id"] for m in json.loads(body).get("data", [])]
                    except (ValueError, AttributeError, KeyError, TypeError):
                        self.models = []
                    return
            self._observe()
            time.sleep(0.5)

    def _fail(self, what: str) -> None:
        rc = self.proc.poll()
        log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        cause = likely_cause(log, rc, engine=self.title, gpu_only=self.gpu_only,
                             port=self.port)
        raise ServerStartError(
            f"{what}.\nlikely cause: {cause}\n--- last lines of {self.log_path} ---\n"
            f"{self.log_tail(30)}", cause=cause, log_path=self.log_path, returncode=rc)


def plan(engine: str, config: ServeConfig, log_dir: Path | None = None) -> LaunchPlan:
    """The launch plan alone (for --dry-run): argv, env and files, nothing started."""
    mod = engine_module(engine)
    port = config.port if config.port is not None else 0
    return mod.build(config.with_port(port), Path(log_dir) if log_dir else None)


def check_can_run(engine: str) -> None:
    """Fail fast, before any process starts, when the engine cannot run on this machine."""
    mod = engine_module(engine)
    gpu_note = ""
    if mod.REQUIRES_GPU and not has_nvidia_gpu():
        gpu_note = (f" Note: {mod.TITLE} is GPU only and this machine has no NVIDIA GPU; "
                    "on the CPU tier use --engine vllm or --engine mini.")
    why = mod.missing()
    if why:
        raise UserError(f"{mod.TITLE} cannot start: {why}. How to get it: {mod.INSTALL_HINT}."
                        + gpu_note)
    if gpu_note:
        raise UserError(f"{mod.TITLE} needs CUDA: GPU only.{gpu_note}")


def serve(engine: str, model: str | None = None, *, port: int | None = None,
          config: ServeConfig | None = None, log_dir: str | os.PathLike | None = None,
          timeout: float = DEFAULT_STARTUP_TIMEOUT_S, **knobs) -> Server:
    """Start `engine` serving `model` and return once it answers /health and /v1/models.

    port=None (or 0) picks a free port. Knobs are ServeConfig fields (max_num_seqs=8,
    prefix_caching=False, kv_cache_gib=2, extra_args=["--seed", "0"], ...); given with a
    `config`, they override its fields: serve("vllm", config=base, max_num_seqs=8).
    """
    if config is None:
        config = ServeConfig(model=model or "", port=port, **knobs)
    else:
        overrides = {**knobs, **({"model": model} if model else {}),
                     **({"port": port} if port is not None else {})}
        config = dataclasses.replace(config, **overrides)
    mod = engine_module(engine)
    check_can_run(engine)
    if not config.port:  # None or 0: the engine would bind a port we could not find
        config = config.with_port(pick_free_port(config.host))
    log_dir = Path(log_dir) if log_dir else default_log_dir(engine, config.port)
    launch_plan = mod.build(config, log_dir)
    server = Server(launch_plan, host=config.host, port=config.port, log_dir=log_dir,
                    title=mod.TITLE, gpu_only=mod.REQUIRES_GPU, config=config)
    return server.start(timeout=timeout)


def launch(launch_plan: LaunchPlan, *, port: int, host: str = "127.0.0.1",
           log_dir: str | os.PathLike, timeout: float = DEFAULT_STARTUP_TIMEOUT_S) -> Server:
    """Start any plan (a custom server command) with the same health wait and cleanup."""
    server = Server(launch_plan, host=host, port=port, log_dir=Path(log_dir))
    return server.start(timeout=timeout)


@atexit.register
def stop_all(grace: float = 10.0) -> None:
    """Stop every server this Python process started (also runs at interpreter exit)."""
    for server in list(_LIVE):
        server.stop(grace=grace)
