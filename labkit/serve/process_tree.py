"""A server is a process TREE: start it so that all of it can be stopped, whatever happens.

vLLM's API server forks an engine-core process, which starts workers; SGLang and
TensorRT-LLM do the same with schedulers and MPI ranks. Killing only the PID we started
leaves the children holding gigabytes of RAM or a GPU's memory. Three layers, because each
covers a hole in the others:

1. Own session (setsid): the server and every child it forks share one process group, so
   os.killpg reaches all of them, and a Ctrl-C in our terminal does not hit the server
   before we can shut it down in order.
2. PR_SET_PDEATHSIG (Linux): the kernel sends the server SIGTERM the moment the process that
   started it dies, even by SIGKILL, when no Python cleanup code can run. It covers only that
   one process (not its children), and it fires when the *thread* that started the server
   exits: start servers from a long-lived thread (a notebook's main thread is one).
3. A watchdog process (watchdog.py), in a session of its own so that signals aimed at our
   process group miss it: it polls our PID, remembers the server's descendants while they
   live, and when we vanish, SIGTERMs the group and the remembered PIDs, then SIGKILLs what is
   left after a grace period. That catches children that left the group, and children whose
   parent died before it could stop them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def die_with_parent(sig: int = signal.SIGTERM):
    """A preexec_fn: ask the kernel to send `sig` to the child when its parent dies.

    The libc lookup happens here, in the parent: between fork() and exec() the child may only
    do async-signal-safe work, and dlopen() could block on a loader lock another thread of
    the parent (a notebook kernel has several) held at fork time.
    """
    parent = os.getpid()  # evaluated in the parent, before fork
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") \
        else None

    def _preexec() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
            if os.getppid() != parent:  # the parent died between fork() and prctl()
                os.kill(os.getpid(), sig)

    return _preexec


def alive(p) -> bool:
    """psutil.Process still running? A zombie (dead, not yet reaped) counts as gone."""
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def tree(pid: int) -> list:
    """The process and all its descendants, as psutil.Process objects (PID-reuse safe:
    psutil checks the creation time before it sends a signal)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def group(pgid: int) -> list:
    """Every live process whose process group is pgid."""
    import psutil

    members = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                members.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    return members


def _signal_all(pgid: int | None, procs: list, sig: int) -> None:
    import psutil

    if pgid is not None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for p in procs:
        try:
            p.send_signal(sig)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass


def terminate(pgid: int | None, procs: list, grace: float = 20.0) -> list:
    """SIGTERM the group and the given processes, wait up to `grace` seconds for a clean
    shutdown (engines free memory and join workers on SIGTERM), then SIGKILL the rest.
    Returns the processes still alive afterwards (should be empty)."""
    procs = list({p.pid: p for p in procs}.values())
    if pgid is not None and pgid == os.getpgrp():
        pgid = None  # never signal our own group (it would include us and our terminal)
    if pgid is not None:
        procs += [p for p in group(pgid) if p.pid not in {q.pid for q in procs}]
    _signal_all(pgid, procs, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in procs):
        time.sleep(0.2)
    survivors = [p for p in procs if alive(p)]
    if pgid is not None:
        survivors += [p for p in group(pgid) if p.pid not in {q.pid for q in survivors}]
    if survivors:
        _signal_all(pgid, survivors, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(p) for p in survivors):
            time.sleep(0.1)
    return [p for p in survivors if alive(p)]
