"""The launcher: health wait, logs, failure diagnosis, and no process left behind — ever.

Uses tests/_fake_engine.py, a server that starts in milliseconds and can fork children
(some leaving its process group, some ignoring SIGTERM), so every cleanup path is exercised
without the minute a real engine takes. test_engines_vllm.py repeats the key checks on vLLM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

import _fake_engine
from labkit.serve import LaunchPlan, ServeConfig, ServerStartError, launch, serve
from labkit.serve import cli, registry
from labkit.serve.diagnose import likely_cause
from labkit.serve.launcher import check_can_run
from labkit.serve.records import redact_argv
from labkit.serve.ports import pick_free_port
from labkit.errors import UserError

TESTS = Path(__file__).parent


def _gone(pids, timeout=20.0) -> list[int]:
    """Wait until none of the PIDs is running (zombies count as gone); return survivors."""
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    left.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _kill(pids) -> None:
    """Test hygiene: a failing test must not leave its processes behind either."""
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass


def _tree(pid: int) -> list[int]:
    p = psutil.Process(pid)
    return [p.pid] + [c.pid for c in p.children(recursive=True)]


@pytest.fixture
def model(tmp_path):
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return str(d)


@pytest.fixture
def fake_engine(monkeypatch):
    monkeypatch.setitem(registry.ENGINES, "fake", "_fake_engine")


def test_start_health_logs_and_stop_kills_the_whole_tree(tmp_path):
    port = pick_free_port()
    server = launch(_fake_engine.plan(port, "--children", "2", "--escaped-child"),
                    port=port, log_dir=tmp_path, timeout=30)
    with server:
        assert server.base_url == f"http://127.0.0.1:{port}"
        assert server.model == "fake-model"  # read from /v1/models
        pids = server.pids()
        assert len(pids) == 4, pids  # server + 2 children + the one that left the group
        assert "fake engine pid" in server.log_path.read_text()
        record = json.loads((tmp_path / "launch.json").read_text())
        assert record["argv"] == server.plan.argv and record["pid"] == server.pid
        escaped = [p for p in pids if os.getpgid(p) != server.pid]
        assert len(escaped) == 1  # setsid child: killpg alone would miss it
        watchdog = server.watchdog.pid
    assert not server.alive()
    try:
        assert _gone(pids + [watchdog], timeout=10) == []
    finally:
        _kill(pids + [watchdog])


def test_serve_picks_a_free_port_and_applies_overrides(fake_engine, model, tmp_path):
    base = ServeConfig(model=model, port=None)
    with serve("fake", config=base, extra_args=["--children", "1"], log_dir=tmp_path,
               timeout=30) as server:
        assert server.port != 8000 and server.base_url.endswith(f":{server.port}")
        assert len(server.pids()) == 2  # the override reached the engine's argv
        record = json.loads((tmp_path / "launch.json").read_text())
        assert record["config"]["extra_args"] == ["--children", "1"]
        pids = server.pids()
    assert _gone(pids, timeout=10) == []


def test_launch_record_hides_secret_flag_values():
    argv = ["python", "-m", "x", "--api-key", "sk-123456789", "--hf-token=hf_abcdefgh",
            "--max-tokens", "5"]
    assert redact_argv(argv) == ["python", "-m", "x", "--api-key", "***redacted***",
                                 "--hf-token=***redacted***", "--max-tokens", "5"]


def test_stop_all_stops_every_server_of_this_process(tmp_path):
    from labkit.serve import stop_all

    servers = [launch(_fake_engine.plan(port := pick_free_port()), port=port,
                      log_dir=tmp_path / str(i), timeout=30) for i in range(2)]
    pids = [p for s in servers for p in s.pids()]
    stop_all()
    assert not any(s.alive() for s in servers)
    assert _gone(pids, timeout=10) == []


def test_sigterm_ignored_escalates_to_sigkill(tmp_path):
    port = pick_free_port()
    server = launch(_fake_engine.plan(port, "--children", "1", "--ignore-sigterm"),
                    port=port, log_dir=tmp_path, timeout=30)
    pids = server.pids()
    t0 = time.monotonic()
    server.stop(grace=1.0)
    assert _gone(pids, timeout=5) == []
    assert time.monotonic() - t0 < 10


def test_port_in_use_is_reported_before_starting(model, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(UserError) as e:
            serve("vllm", model=model, port=port, log_dir=tmp_path)
    msg = str(e.value)
    assert f"port {port}" in msg and "already in use" in msg
    assert f"pid {os.getpid()}" in msg  # psutil names the holder: this test process
    assert f"--port {port + 1}" in msg
    assert not (tmp_path / "vllm.log").exists()  # nothing was started


def test_missing_engine_module_names_the_extra_to_install(model, tmp_path):
    if registry.engine_module("sglang").missing() is None:
        pytest.skip("sglang is installed here")
    with pytest.raises(UserError) as e:
        serve("sglang", model=model, log_dir=tmp_path)
    msg = str(e.value)
    assert "pip install -e '.[sglang]'" in msg
    if not os.path.exists("/dev/nvidiactl"):
        assert "GPU only" in msg and "--engine vllm or --engine mini" in msg


def test_missing_teaching_engine_says_so(monkeypatch):
    # Simulate a checkout without labkit/engine/ (the parent package itself is absent).
    monkeypatch.setattr(registry.engine_module("mini"), "PYTHON_MODULE",
                        "labkit.no_such_engine.server")
    with pytest.raises(UserError, match="teaching engine .*--engine vllm"):
        check_can_run("mini")


def test_crash_shows_log_tail_and_missing_package(tmp_path):
    port = pick_free_port()
    p = LaunchPlan(engine="broken", argv=[sys.executable, "-c",
                                          "print('loading weights'); import flash_attn_xyz"])
    with pytest.raises(ServerStartError) as e:
        launch(p, port=port, log_dir=tmp_path, timeout=30)
    err = e.value
    assert err.returncode == 1
    assert "No module named 'flash_attn_xyz'" in err.cause
    assert "loading weights" in str(err)  # the log tail is part of the message
    assert err.log_path == tmp_path / "broken.log"


def test_sigkilled_server_is_diagnosed_as_out_of_memory(tmp_path):
    p = LaunchPlan(engine="oom", argv=[sys.executable, "-c",
                                       "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    with pytest.raises(ServerStartError) as e:
        launch(p, port=pick_free_port(), log_dir=tmp_path, timeout=30)
    assert e.value.returncode == -9
    assert e.value.cause.startswith("out of memory")


def test_timeout_stops_what_was_started(tmp_path):
    port = pick_free_port()
    with pytest.raises(ServerStartError, match="did not become healthy within 2 s"):
        launch(_fake_engine.plan(port, "--never-healthy", "--children", "1"), port=port,
               log_dir=tmp_path, timeout=2)
    log = (tmp_path / "fake.log").read_text()
    pids = [int(x) for x in log.split("pid ")[1].replace("children", "").replace("[", " ")
            .replace("]", " ").replace(",", " ").split()]
    assert len(pids) == 2 and _gone(pids, timeout=10) == []


@pytest.mark.parametrize("log,rc,expected", [
    ("RuntimeError: Found no NVIDIA driver on your system.", 1, "CUDA required"),
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", 1,
     "out of memory"),
    ("ValueError: Available memory on node 0 (3.1/23 GiB) on kv cache allocation is less "
     "than requested memory for kv (20 GiB).", 1, "out of memory"),
    ("OSError: /x is not a local folder and is not a valid model identifier", 1,
     "model not found"),
    ("OSError: [Errno 98] Address already in use", 1, "port in use"),
    ("ModuleNotFoundError: No module named 'vllm'", 1, "'.[cpu]'"),
    ("ModuleNotFoundError: No module named 'tensorrt_llm'", 1, "NVIDIA's index"),
    ("api_server.py: error: unrecognized arguments: --bogus", 2, "rejected a flag"),
    ("all fine until\nsegfault", -11, "exited with code -11"),
])
def test_likely_cause(log, rc, expected):
    assert expected in likely_cause(log, rc, engine="vLLM", gpu_only=True, port=8000)


# A child Python that starts the fake engine, reports its tree, then waits to be killed.
CHILD = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {tests!r})
    import _fake_engine
    from labkit.serve import launch
    s = launch(_fake_engine.plan({port}, "--children", "1", "--escaped-child",
                                 "--ignore-sigterm"),
               port={port}, log_dir={log_dir!r}, timeout=30)
    print(json.dumps({{"pids": s.pids(), "watchdog": s.watchdog.pid}}), flush=True)
    time.sleep(600)
""")


def test_parent_killed_with_sigkill_leaves_no_process(tmp_path):
    """kill -9 of the notebook kernel: no Python cleanup runs; pdeathsig + watchdog must."""
    port = pick_free_port()
    code = CHILD.format(tests=str(TESTS), port=port, log_dir=str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pids = []
    try:
        line = child.stdout.readline()
        info = json.loads(line)
        pids = info["pids"] + [info["watchdog"]]
        assert len(info["pids"]) == 3
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        # SIGTERM is ignored by every member here: the watchdog must escalate to SIGKILL
        # (10 s grace) and reach the child that left the process group.
        assert _gone(pids, timeout=30) == []
        with socket.socket() as s:  # the port is free again
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
    finally:
        if child.poll() is None:
            child.kill()
        _kill(pids)


PDEATHSIG_CHILD = textwrap.dedent("""
    import subprocess, sys, time
    from labkit.serve.process_tree import die_with_parent
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                         preexec_fn=die_with_parent())
    print(p.pid, flush=True)
    time.sleep(600)
""")


def test_parent_death_signal_alone_reaches_the_server():
    """Layer 2 without the watchdog: the kernel SIGTERMs the server when its parent dies."""
    child = subprocess.Popen([sys.executable, "-c", PDEATHSIG_CHILD], stdout=subprocess.PIPE,
                             text=True)
    pid = int(child.stdout.readline())
    try:
        child.kill()
        child.wait(timeout=10)
        assert _gone([pid], timeout=5) == []
    finally:
        _kill([pid])


def _cli(argv):
    ap = argparse.ArgumentParser(prog="labkit")
    cli.register(ap.add_subparsers())
    args = ap.parse_args(argv)
    return args.func(args)


def test_cli_dry_run_prints_command_and_env(model, capsys):
    assert _cli(["serve", "--engine", "vllm", "--model", model, "--port", "8011",
                 "--no-prefix-caching", "--max-num-seqs", "8", "--kv-cache-gib", "3",
                 "--dry-run", "--", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert (f"-m vllm.entrypoints.openai.api_server --model {model} --host 127.0.0.1 "
            "--port 8011 --max-num-seqs 8 --no-enable-prefix-caching --seed 0") in out
    assert "VLLM_CPU_KVCACHE_SPACE=3" in out


def test_cli_dry_run_works_for_gpu_engines_without_them(capsys, tmp_path):
    assert _cli(["serve", "--engine", "trtllm", "--model", "org/model", "--prefix-caching",
                 "--log-dir", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "trtllm-serve org/model --host 127.0.0.1 --port 8000 --backend pytorch" in out
    assert "enable_block_reuse: true" in out
    assert not any(tmp_path.iterdir())  # a dry run writes nothing
    if registry.engine_module("trtllm").missing():
        assert "warning: TensorRT-LLM cannot start" in out


CLI_CHILD = textwrap.dedent("""
    import argparse, sys
    sys.path.insert(0, {tests!r})
    from labkit.serve import cli, registry
    registry.ENGINES["fake"] = "_fake_engine"
    ap = argparse.ArgumentParser(prog="labkit")
    cli.register(ap.add_subparsers())
    args = ap.parse_args(sys.argv[1:])
    sys.exit(args.func(args))
""")


def test_cli_foreground_until_ctrl_c_then_tree_is_gone(model, tmp_path):
    port = pick_free_port()
    code = CLI_CHILD.format(tests=str(TESTS))
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--engine", "fake", "--model", model,
         "--port", str(port), "--log-dir", str(tmp_path), "--", "--children", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any(ln.startswith("Ctrl-C") for ln in lines):
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line)
        out = "".join(lines)
        assert f"base URL:    http://127.0.0.1:{port}" in out
        assert f"curl -s http://127.0.0.1:{port}/v1/completions" in out
        assert "fake-model" in out
        pids = [p for p in _tree(proc.pid) if p != proc.pid]
        assert len(pids) >= 3  # server, its child, the watchdog
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert _gone(pids, timeout=10) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill(pids)
