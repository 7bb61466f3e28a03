"""Ports: find a free one, and say clearly who holds a busy one BEFORE starting a server.

An engine that finds its port taken fails after a minute of model loading with a traceback
ending in "[Errno 98] Address already in use". Trying to bind the port ourselves first
costs microseconds and lets us name the port and the process holding it.
"""

from __future__ import annotations

import errno
import socket

from labkit.errors import UserError


def port_is_free(host: str, port: int) -> bool:
    """True when a server could bind host:port now.

    SO_REUSEADDR, as uvicorn and other servers set it, so that sockets of a server that just
    exited (TIME_WAIT) do not count as busy; a listening socket still does, including one
    bound to 0.0.0.0 on the same port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def pick_free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for an unused port (bind to port 0). Another process could take it
    before the server binds it; the launcher's port check catches that case."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def who_holds_port(port: int) -> str | None:
    """'pid 1234 (python -m http.server 8000)' for the process listening on the port, if
    psutil may see it (other users' processes are hidden from a non-root user)."""
    try:
        import psutil

        for c in psutil.net_connections(kind="inet"):
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN:
                if c.pid is None:
                    return f"a process of another user (listening on {c.laddr.ip})"
                p = psutil.Process(c.pid)
                cmd = " ".join(p.cmdline()) or p.name()
                return f"pid {c.pid} ({cmd[:120]})"
    except Exception:  # noqa: BLE001 — best effort: AccessDenied, races, no psutil
        return None
    return None


def check_port(host: str, port: int) -> None:
    """Raise a UserError naming the port and its holder when host:port is taken."""
    if port_is_free(host, port):
        return
    holder = who_holds_port(port)
    raise UserError(
        f"port {port} on {host} is already in use"
        + (f" by {holder}" if holder else "")
        + f"; stop that server, or pick another port: --port {port + 1} "
          "(or port=None in Python to pick a free one)")
