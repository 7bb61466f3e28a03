"""Jupyter kernels over Unix sockets (ZeroMQ's `ipc` transport) instead of TCP ports.

A kernel started the default way opens five TCP ports on 127.0.0.1 and ipykernel warns at
every start: "Kernel is running over TCP without encryption… susceptible to eavesdropping".
On one machine there is no need for TCP at all: with transport `ipc` the five channels are
socket files in Jupyter's runtime directory (mode 0700, so other users cannot connect), no
port is open, and the warning is gone — it is the fix ipykernel's message itself suggests.

Used by `labkit run` (papermill), `labkit lab` (JupyterLab) and the nbval runs in CI
(conftest.py). Windows has no ZeroMQ ipc transport, so there it stays TCP.
"""

from __future__ import annotations

import os
import uuid

from jupyter_client.manager import KernelManager
from traitlets import default

IPC_SUPPORTED = os.name != "nt"


def _socket_base() -> str:
    """A fresh path prefix in Jupyter's runtime dir: the kernel's sockets are <prefix>-<n>."""
    from jupyter_core.paths import jupyter_runtime_dir

    runtime = jupyter_runtime_dir()
    os.makedirs(runtime, mode=0o700, exist_ok=True)
    return os.path.join(runtime, f"labkit-kernel-{uuid.uuid4().hex[:12]}-ipc")


class IPCKernelManager(KernelManager):
    """A KernelManager whose kernels talk over Unix sockets (see the module docstring)."""

    @default("transport")
    def _transport_default(self) -> str:
        return "ipc" if IPC_SUPPORTED else "tcp"

    @default("ip")
    def _ip_default(self) -> str:
        # For ipc, `ip` is the sockets' path prefix. jupyter_client's default is
        # "kernel-ipc" in the *current directory*, which would litter labs/ with socket files.
        return _socket_base() if self.transport == "ipc" else "127.0.0.1"


def jupyter_server_flags() -> list[str]:
    """Command-line flags that make JupyterLab start its kernels over ipc too."""
    return ["--KernelManager.transport=ipc"] if IPC_SUPPORTED else []
