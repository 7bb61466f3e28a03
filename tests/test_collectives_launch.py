"""The launcher: results, one clear error per failing rank, timeouts that leave nothing behind,
and nothing listening beyond loopback."""

import ipaddress
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from labkit.collectives.launch import LaunchTimeout, RankFailed, launch
from labkit.errors import UserError

HERE = Path(__file__).parent


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_results_logs_and_loopback_only():
    lines = []
    results = launch("distributed_workers:listening_sockets", nproc=2, backend="gloo",
                     timeout=120, log=lines.append)
    assert [r["env_rank"] for r in results] == ["0", "1"]
    assert all(r["sum"] == 2.0 for r in results)  # the all_reduce really ran across ranks
    listening = [addr for r in results for addr in r["listening"]]
    assert listening, "gloo must have opened its listening sockets"
    for ip, port in listening:
        assert ipaddress.ip_address(ip).is_loopback, f"rank listens on {ip}:{port}"
    # every output line arrives tagged with its rank
    assert any(line.startswith("[rank 1] rank 1 listens on") for line in lines)
    assert all(line.startswith(("[rank 0] ", "[rank 1] ")) for line in lines)


def test_failing_rank_becomes_one_error_with_its_traceback():
    start = time.monotonic()
    with pytest.raises(RankFailed) as info:
        launch("distributed_workers:fail_on_rank", nproc=2, backend="gloo",
               args={"bad_rank": 1}, timeout=120, log=None)
    err = info.value
    assert err.rank == 1
    assert "ValueError: deliberate failure on rank 1" in err.traceback
    assert "rank 1 failed" in str(err) and "fail_on_rank" in str(err)
    # rank 0 was stuck in all_reduce: it must have been killed, not waited for
    assert time.monotonic() - start < 60


def test_timeout_kills_every_rank_and_their_children(tmp_path):
    with pytest.raises(LaunchTimeout) as info:
        launch("distributed_workers:hang_on_rank", nproc=2, backend="gloo",
               args={"hang_rank": 1, "pid_dir": str(tmp_path)}, timeout=5, log=None,
               init_process_group=False)
    pids = [int(p) for f in tmp_path.glob("*.pids") for p in f.read_text().split()]
    assert len(pids) == 4, "both ranks and their children should have started"
    assert set(info.value.pids) <= set(pids)
    assert "ranks [1] did not finish within 5 s" in str(info.value)
    time.sleep(0.5)
    assert [p for p in pids if alive(p)] == []


def test_ctrl_c_in_the_caller_stops_all_ranks(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        from labkit.collectives.launch import launch
        launch("distributed_workers:hang_on_rank", nproc=2, backend="gloo",
               args={{"hang_rank": 0, "pid_dir": {str(tmp_path)!r}}}, timeout=300, log=None,
               init_process_group=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd(),
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while len(list(tmp_path.glob("*.pids"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    pids = [int(p) for f in tmp_path.glob("*.pids") for p in f.read_text().split()]
    assert len(pids) == 4
    proc.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal or a notebook sends
    _, err = proc.communicate(timeout=30)
    assert "KeyboardInterrupt" in err
    time.sleep(0.5)
    assert [p for p in pids if alive(p)] == []


def test_notebook_functions_are_refused_with_advice():
    def local_worker():
        return 1

    with pytest.raises(UserError, match="put it in a .py module"):
        launch(local_worker, nproc=1, backend="gloo")
