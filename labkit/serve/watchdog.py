"""The watchdog: stops a server's whole process tree when the process that started it dies.

Started by the launcher as `python -m labkit.serve.watchdog PARENT_PID SERVER_PID`, in a
session of its own. It exits by itself when the server is gone. Why it exists, next to
PR_SET_PDEATHSIG: see process_tree.py.
"""

from __future__ import annotations

import argparse
import os
import signal
import time

from labkit.serve import process_tree


def watch(parent_pid: int, server_pid: int, interval: float = 0.5, grace: float = 10.0) -> int:
    import psutil

    # Terminal signals are for the learner's foreground job, not for us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    known: dict[int, psutil.Process] = {}
    while True:
        for p in process_tree.tree(server_pid):  # remember children while we can see them
            known.setdefault(p.pid, p)
        live = [p for p in known.values() if process_tree.alive(p)]
        if not live and not process_tree.group(server_pid):
            return 0  # the server stopped normally
        # Our parent is gone when we were re-parented (to init or a subreaper).
        if os.getppid() != parent_pid or not psutil.pid_exists(parent_pid):
            left = process_tree.terminate(server_pid, live, grace=grace)
            return 1 if left else 0
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("parent_pid", type=int)
    ap.add_argument("server_pid", type=int, help="also the server's process group id")
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--grace", type=float, default=10.0)
    a = ap.parse_args(argv)
    return watch(a.parent_pid, a.server_pid, a.interval, a.grace)


if __name__ == "__main__":
    raise SystemExit(main())
