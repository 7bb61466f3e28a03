"""Kernels over Unix sockets: no TCP port opened, no plain-text-TCP warning, code still runs."""

import os
import stat

import psutil
import pytest

from labkit.kernel_transport import IPC_SUPPORTED, IPCKernelManager

pytestmark = pytest.mark.skipif(not IPC_SUPPORTED, reason="no ZeroMQ ipc transport on Windows")


def test_kernel_runs_code_over_ipc_and_opens_no_channel_port(tmp_path, capfd):
    km = IPCKernelManager(kernel_name="python3")
    assert km.transport == "ipc"
    # the sockets live in Jupyter's private runtime dir, not in the current directory
    assert os.path.dirname(km.ip) != os.getcwd()
    km.start_kernel(cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        outputs = []
        reply = kc.execute_interactive("x = 6 * 7\nprint(x)", timeout=30,
                                       output_hook=outputs.append)
        assert reply["content"]["status"] == "ok"
        pid = km.provisioner.pid
        listening = [c for c in psutil.Process(pid).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        # none of the five channels is a TCP port (over TCP all five listen here); what may
        # remain is ipykernel's own debugger socket, and only on loopback
        assert len(listening) <= 1 and all(c.laddr.ip == "127.0.0.1" for c in listening)
        sockets = [f"{km.ip}-{port}" for port in (km.shell_port, km.iopub_port)]
        assert all(stat.S_ISSOCK(os.stat(s).st_mode) for s in sockets)
        runtime = os.stat(os.path.dirname(km.ip)).st_mode
        assert runtime & 0o077 == 0  # other users cannot reach the kernel's sockets
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert any(m["msg_type"] == "stream" and "42" in m["content"]["text"] for m in outputs)
    assert not list(tmp_path.iterdir())  # nothing written where the notebook runs
    assert "without encryption" not in capfd.readouterr().err

