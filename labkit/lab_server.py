"""`labkit lab`: JupyterLab as the learner's front door, started safely.

    labkit lab            export learner copies to exercises/ (first time), open JupyterLab
    labkit lab --solved   the solved labs instead (read them; don't commit their outputs)

What it takes care of, each a thing a newcomer trips on:
- listens on 127.0.0.1 only, with a fresh random token printed once (never written by
  labkit; Jupyter keeps its own runtime file, readable only by you);
- `--allow-root` when run as root (JupyterLab refuses root otherwise);
- the kernel is this environment's Python (the `python3` kernelspec of the venv labkit runs
  in), talking over Unix sockets instead of TCP ports (labkit/kernel_transport.py);
- learner copies in exercises/ with each lab's data beside them; copies that exist are
  never overwritten (`labkit exercises reset LAB` starts one lab over);
- records go to one run directory (runs/lab-<date>), so `labkit portfolio build` can
  publish what you measured by hand;
- Ctrl-C stops JupyterLab and its kernels: nothing is left running.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import UserError


@dataclass
class LabServer:
    url: str  # http://127.0.0.1:PORT/lab, without the token
    token: str
    root: Path
    run_dir: Path
    process: subprocess.Popen

    @property
    def login_url(self) -> str:
        return f"{self.url}?token={self.token}"


def _wait_until_up(base: str, token: str, proc: subprocess.Popen, log: Path,
                   timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            hint = ("the port is taken: pass another --port (or 0 for a free one)"
                    if "already in use" in tail else f"see its log: {log}")
            raise UserError(f"JupyterLab exited with code {proc.returncode}: {hint}\n{tail}")
        req = urllib.request.Request(f"{base}/api/status",
                                     headers={"Authorization": f"token {token}"})
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise UserError(f"JupyterLab did not answer within {timeout:.0f} s; its log: {log}")


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop JupyterLab and every kernel it started (they share its process group)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # Jupyter shuts its kernels down on TERM
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # a kernel that outlived its server


def prepare_root(solved: bool, exercises_dir: Path) -> Path:
    """The folder JupyterLab opens: the solved labs, or the learner copies (exported now
    for any lab that has none yet; existing copies are the learner's work and stay)."""
    from labkit import exercises, labs

    if solved:
        return labs.labs_dir()
    missing = [lab for lab in labs.all_labs() if not (exercises_dir / lab.path.name).exists()]
    for dst, n in exercises.export(missing, exercises_dir):
        print(f"exported {dst} ({n} exercise{'s' if n != 1 else ''})")
    return exercises_dir


@contextlib.contextmanager
def start_lab(root: Path, port: int = 0, ip: str = "127.0.0.1", run_dir: Path | None = None,
              startup_timeout: float = 60.0):
    """Run JupyterLab on `root` until the block ends; yields a LabServer."""
    from labkit import runs
    from labkit.serve.ports import pick_free_port, port_is_free, who_holds_port
    from labkit.kernel_transport import jupyter_server_flags

    port = port or pick_free_port(ip)
    if not port_is_free(ip, port):
        holder = who_holds_port(port)
        raise UserError(f"port {port} is busy{f' ({holder})' if holder else ''}: pass another "
                        "--port, or --port 0 for a free one")
    run_dir = Path(run_dir or runs.runs_root() / f"lab-{_dt.date.today():%Y%m%d}")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "run.json").exists():
        runs.write_run_json(run_dir, profile="interactive", command="labkit lab")
    token = secrets.token_urlsafe(24)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ip={ip}", f"--port={port}",
           "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}",
           f"--IdentityProvider.token={token}", *jupyter_server_flags()]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    env = {**os.environ, runs.RUN_DIR_ENV: str(run_dir.resolve())}
    # A non-interactive backend left in the shell (MPLBACKEND=Agg, common in CI and batch
    # set-ups) would make every plt.show() in the browser draw nothing: plots inline here.
    env.pop("MPLBACKEND", None)
    log = run_dir / "logs" / f"jupyterlab-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as logf:
        # A session of its own, so stop() can end JupyterLab and its kernels together.
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        base = f"http://{ip}:{port}"
        _wait_until_up(base, token, proc, log, startup_timeout)
        yield LabServer(url=f"{base}/lab", token=token, root=Path(root), run_dir=run_dir,
                        process=proc)
    finally:
        stop(proc)


def cmd_lab(args) -> int:
    root = prepare_root(args.solved, Path(args.dir))
    with start_lab(root, port=args.port, ip=args.ip,
                   run_dir=Path(args.run_dir) if args.run_dir else None) as lab:
        print(f"\nJupyterLab is serving {lab.root} (records go to {lab.run_dir})")
        print(f"open: {lab.login_url}")
        print("(the token is shown only here; Ctrl-C stops JupyterLab and its kernels)\n",
              flush=True)
        try:
            lab.process.wait()
        except KeyboardInterrupt:
            print("\nstopping JupyterLab …", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "lab", help="open the labs in JupyterLab (learner copies, 127.0.0.1, token)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--solved", action="store_true",
                   help="open the solved labs in labs/ instead of your copies in exercises/")
    p.add_argument("--dir", default="exercises", help="learner copies (default ./exercises)")
    p.add_argument("--port", type=int, default=8888, help="port (0 picks a free one)")
    p.add_argument("--ip", default="127.0.0.1",
                   help="address to listen on (default loopback only; think twice)")
    p.add_argument("--run-dir", help="record into this run (default runs/lab-<date>)")
    p.set_defaults(func=cmd_lab)
