"""`labkit gpu-check`: a clean 'no GPU' report here, and checks that fail one at a time."""

import json

import pytest

from labkit import cli, gpu_check
from labkit.gpu_check import no_gpu_reason


@pytest.mark.skipif(no_gpu_reason() is None, reason="this machine has a GPU: the real run")
def test_without_a_gpu_it_exits_0_with_every_check_skipped(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    assert cli.main(["gpu-check", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["gpu"] is False and "no NVIDIA GPU" in report["reason"]
    assert set(report["checks"]) == {name for name, _ in gpu_check.CHECKS}
    assert all(c == {"status": "skipped", "reason": report["reason"]}
               for c in report["checks"].values())
    assert "no GPU:" in capsys.readouterr().out


def test_one_failing_check_is_reported_and_the_others_still_run(tmp_path):
    def boom():
        raise RuntimeError("CUDA error: out of memory")

    ran = []
    checks = [("first", lambda: ran.append(1) or {"x": 1}), ("broken", boom),
              ("last", lambda: ran.append(3) or {"y": 2})]
    report = gpu_check.run_checks(checks)
    assert ran == [1, 3]
    assert report["checks"]["first"]["status"] == "ok" and report["checks"]["first"]["x"] == 1
    broken = report["checks"]["broken"]
    assert broken["status"] == "failed"
    assert broken["error"] == "RuntimeError: CUDA error: out of memory"
    assert "Traceback" in broken["traceback"] and broken["seconds"] >= 0
    assert report["checks"]["last"]["status"] == "ok" and report["gpu"] is True


def test_a_failed_check_makes_the_command_fail(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "no_gpu_reason", lambda: None)
    monkeypatch.setattr(gpu_check, "CHECKS", [("nccl", lambda: 1 / 0)])
    out = tmp_path / "r.json"
    assert cli.main(["gpu-check", "--out", str(out)]) == 1
    assert json.loads(out.read_text())["checks"]["nccl"]["error"].startswith("ZeroDivisionError")
