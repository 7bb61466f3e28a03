"""Run N ranks of a worker function on this machine, from a notebook or the CLI.

    from labkit.collectives.launch import launch
    results = launch("labkit.collectives.examples:hello", nproc=2)   # one value per rank

or from a shell: `python -m labkit.collectives.launch labkit.collectives.examples:hello`.

What it does, and why each part is there:
- Each rank is a fresh `python -m labkit.collectives.worker` subprocess in its own session.
  Own session = own process group, so on failure, timeout or Ctrl-C we can kill a rank *and
  everything it started* with one `killpg`, leaving no stray processes behind.
- Rendezvous goes through a `file://` store in a fresh temp directory, not a TCP port.
  `torchrun --standalone` and `tcp://127.0.0.1:PORT` both start a TCPStore, and on torch 2.13
  TCPStore listens on `::` (every interface) whatever host you pass: we measured it. A file
  store opens no port at all, and a fresh temp file per launch means concurrent launches
  never collide (the reason other launchers hunt for a free port).
- The only ports left are the backend's own data connections; GLOO_SOCKET_IFNAME=lo and
  NCCL_SOCKET_IFNAME=lo make gloo and NCCL's bootstrap bind them to 127.0.0.1, on ports the
  kernel picks free. tests/test_distributed_launch.py checks that nothing listens elsewhere.
- Output of every rank is streamed line by line as `[rank 1] ...`, from this (the calling)
  thread, so it shows up in the notebook cell that called launch().
- The first rank that fails wins: its traceback (written by the worker to a file) becomes one
  `RankFailed` error; the other ranks, usually stuck in a collective waiting for it, are
  killed instead of timing out minutes later.

Worker functions must live in an importable .py module (ranks are new processes: they cannot
see functions defined in a notebook). They take keyword arguments (`args=`) and return
something JSON-serialisable; the process group is already initialised when they run.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from labkit.errors import UserError

KILL_GRACE_S = 3.0  # SIGTERM first (lets NCCL/gloo close sockets), then SIGKILL


class RankFailed(UserError):
    """A rank raised or died; `rank`, `exitcode` and `traceback` say which and how."""

    def __init__(self, rank: int, exitcode: int | None, traceback: str, output_tail: str):
        self.rank, self.exitcode, self.traceback = rank, exitcode, traceback
        detail = traceback or f"(no Python traceback: last output of rank {rank})\n{output_tail}"
        super().__init__(
            f"rank {rank} failed (exit code {exitcode}); every other rank was stopped.\n"
            f"--- traceback of rank {rank} ---\n{detail.rstrip()}"
        )


class LaunchTimeout(UserError):
    """Some ranks did not finish in time; all ranks were killed. `pids` lists them."""

    def __init__(self, message: str, pids: list[int]):
        self.pids = pids
        super().__init__(message)


def default_backend() -> str:
    """nccl when CUDA GPUs are visible, else gloo (the CPU tier)."""
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def _target_name(target: str | Callable) -> str:
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None)
    if module in (None, "__main__") or "<locals>" in target.__qualname__:
        raise UserError(
            f"{target.__qualname__} is defined in a notebook or script, which other processes "
            "cannot import; put it in a .py module and pass 'module:function'"
        )
    return f"{module}:{target.__qualname__}"


def _rank_env(rank: int, nproc: int, extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    # Children must import what the caller can (a notebook's cwd, tests/ ...): pass sys.path.
    paths = [p or os.getcwd() for p in sys.path]
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc),
        MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", NCCL_SOCKET_IFNAME="lo",
        PYTHONUNBUFFERED="1",  # lines reach the parent as they are printed
    )
    # N ranks x all cores threads each would oversubscribe the CPU (torchrun does the same).
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    env.update(extra or {})
    return env


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM every rank's process group, wait a little, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            try:
                os.killpg(p.pid, sig)  # pgid == pid: start_new_session made each rank a leader
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + KILL_GRACE_S
        while sig == signal.SIGTERM and time.monotonic() < deadline:
            if all(p.poll() is not None for p in procs):
                break
            time.sleep(0.05)
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def launch(
    target: str | Callable,
    nproc: int = 2,
    backend: str | None = None,
    args: dict[str, Any] | None = None,
    timeout: float = 300,
    log: Callable[[str], None] | None = print,
    env: dict[str, str] | None = None,
    init_process_group: bool = True,
) -> list[Any]:
    """Run `target(**args)` on `nproc` ranks; return the ranks' return values, rank order.

    target: "package.module:function" (or such a function object). backend: "gloo" or
    "nccl"; None picks nccl when CUDA is available. timeout: seconds for the whole run, after
    which every rank is killed and LaunchTimeout raised. log: receives each "[rank r] line";
    None silences the ranks. env: extra environment variables for the ranks.
    """
    name = _target_name(target)
    backend = backend or default_backend()
    if backend not in ("gloo", "nccl"):
        raise UserError(f"backend must be gloo or nccl, not {backend!r}")
    if nproc < 1:
        raise UserError(f"nproc must be >= 1, got {nproc}")
    if backend == "nccl":
        import torch

        if torch.cuda.device_count() < nproc:
            raise UserError(
                f"nccl needs one GPU per rank: asked for {nproc} ranks, "
                f"{torch.cuda.device_count()} GPU(s) visible; use --backend gloo or fewer ranks"
            )
    run_dir = Path(tempfile.mkdtemp(prefix="labkit-launch-"))
    spec = dict(
        target=name, args=args or {}, backend=backend, world_size=nproc,
        init_method=f"file://{run_dir / 'store'}", run_dir=str(run_dir),
        pg_timeout_s=max(30, int(timeout)), init_process_group=init_process_group,
    )
    (run_dir / "spec.json").write_text(json.dumps(spec))
    procs: list[subprocess.Popen] = []
    try:
        for rank in range(nproc):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "labkit.collectives.worker", str(run_dir / "spec.json"),
                 str(rank)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=_rank_env(rank, nproc, env), start_new_session=True,
            ))
        failed = _supervise(procs, run_dir, timeout, log)
        if failed is not None:
            raise failed
        return [json.loads((run_dir / f"result-{r}.json").read_text()) for r in range(nproc)]
    finally:
        _stop(procs)  # no-op when all exited; on error, timeout or Ctrl-C it kills every rank
        shutil.rmtree(run_dir, ignore_errors=True)


def _supervise(procs, run_dir: Path, timeout: float, log) -> Exception | None:
    """Stream output until every rank exits; return the error to raise, if any."""
    sel = selectors.DefaultSelector()
    partial = {r: b"" for r in range(len(procs))}
    tails = {r: deque(maxlen=40) for r in range(len(procs))}
    for r, p in enumerate(procs):
        os.set_blocking(p.stdout.fileno(), False)
        sel.register(p.stdout, selectors.EVENT_READ, r)

    def emit(r: int, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\r\n")
        tails[r].append(line)
        if log is not None:
            log(f"[rank {r}] {line}")

    deadline = time.monotonic() + timeout
    while True:
        for key, _ in sel.select(timeout=0.1):
            r = key.data
            chunk = os.read(key.fileobj.fileno(), 65536)
            if not chunk:  # EOF: the rank closed its output (it is exiting)
                sel.unregister(key.fileobj)
                if partial[r]:
                    emit(r, partial[r])
                    partial[r] = b""
                continue
            *lines, partial[r] = (partial[r] + chunk).split(b"\n")
            for raw in lines:
                emit(r, raw)
        codes = [p.poll() for p in procs]
        bad = [r for r, c in enumerate(codes) if c not in (None, 0)]
        if bad:
            return _first_failure(bad, codes, run_dir, tails)
        if all(c == 0 for c in codes) and not sel.get_map():
            return None
        if time.monotonic() > deadline:
            running = [r for r, c in enumerate(codes) if c is None]
            return LaunchTimeout(
                f"ranks {running} did not finish within {timeout:g} s, so every rank was "
                "stopped. A rank waiting forever in a collective usually means another rank "
                "skipped or reordered a call (or the timeout is too short for this work).",
                pids=[p.pid for p in procs],
            )


def _first_failure(bad: list[int], codes, run_dir: Path, tails) -> RankFailed:
    # When rank 1 raises, rank 0 often fails a moment later with "connection closed by peer",
    # and may even exit first. The root cause is the rank whose traceback was written first
    # (workers write it before closing their sockets), whether or not it has exited yet.
    def when(r: int) -> float:
        f = run_dir / f"error-{r}.txt"
        return f.stat().st_mtime_ns if f.exists() else float("inf")

    written = [r for r in range(len(codes)) if (run_dir / f"error-{r}.txt").exists()]
    # A rank killed by a signal (negative exit code: SIGKILL, the OOM killer, a segfault)
    # writes no traceback, yet its death is what its peers' tracebacks complain about.
    killed = [r for r in bad if codes[r] < 0 and r not in written]
    r = killed[0] if killed else min(set(bad) | set(written), key=lambda r: (when(r), r))
    f = run_dir / f"error-{r}.txt"
    tb = f.read_text() if f.exists() else ""
    return RankFailed(r, codes[r], tb, "\n".join(tails[r]))


def main(argv: list[str] | None = None) -> int:
    """`python -m labkit.collectives.launch module:function --nproc 2 --args '{"k": 1}'`."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m labkit.collectives.launch",
                                 description="Run N local ranks of a worker function.")
    ap.add_argument("target", help="package.module:function, e.g. "
                    "labkit.collectives.examples:hello")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--backend", choices=("gloo", "nccl"), default=None)
    ap.add_argument("--args", default="{}", help="keyword arguments as a JSON object")
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args(argv)
    try:
        results = launch(a.target, nproc=a.nproc, backend=a.backend,
                         args=json.loads(a.args), timeout=a.timeout)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
