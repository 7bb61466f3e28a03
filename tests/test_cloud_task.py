"""`labkit cloud task`: a SkyPilot task that SkyPilot's own parser accepts (run for real, in
.venv-sky, offline), and clear errors for what SkyPilot's parser would let through."""

import os

import pytest
import yaml

from labkit import cli
from labkit.cloud import validate
from labkit.cloud.task import build_task, parse_gpus
from labkit.errors import UserError


def _sky_or_fail():
    try:
        validate.sky_python()
    except UserError as e:
        if os.environ.get("CI"):  # bootstrap creates .venv-sky: CI must run this for real
            pytest.fail(str(e))
        pytest.skip(str(e))


@pytest.mark.slow
def test_the_task_validates_with_skypilots_parser(tmp_path, capsys):
    _sky_or_fail()
    out = tmp_path / "task.yaml"
    assert cli.main(["cloud", "task", "00", "23", "--gpus", "H100:1", "--spot", "--bucket",
                     "my-labkit-runs", "--out", str(out)]) == 0
    assert "valid SkyPilot 0.14" in capsys.readouterr().out
    task = yaml.safe_load(out.read_text())
    assert task["resources"]["accelerators"] == "H100:1" and task["resources"]["use_spot"]
    assert task["resources"]["job_recovery"] == {"strategy": "FAILOVER",
                                                 "max_restarts_on_errors": 1}
    assert task["file_mounts"]["/labkit-runs"] == {"name": "my-labkit-runs",
                                                   "mode": "MOUNT_CACHED"}
    assert task["secrets"] == {"HF_TOKEN": None}  # declared, its value never written
    assert 'labkit run 00 23 --profile "$LABKIT_PROFILE" --run-id "$LABKIT_RUN_ID"' in task["run"]
    assert "pip install -q -e '.[gpu,test]'" in task["setup"]


@pytest.mark.slow
@pytest.mark.parametrize("edit, message", [
    (lambda t: t["resources"].update(disk_sise=100), "did you mean 'disk_size'"),
    (lambda t: t["file_mounts"]["/labkit-runs"].update(mode="MOUNTED"), "MOUNTED"),
    (lambda t: t["resources"]["job_recovery"].update(strategy="BOGUS"), "BOGUS"),
])
def test_skypilots_parser_catches_a_broken_task(tmp_path, edit, message):
    _sky_or_fail()
    task = build_task(bucket="my-labkit-runs")
    edit(task)
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(task))
    result = validate.validate_task_file(path)
    assert not result["ok"] and message in result["error"], result


@pytest.mark.parametrize("kwargs, message", [
    ({"gpus": "H1OO:1"}, "unknown GPU 'H1OO'; known: H100"),
    ({"gpus": "H100:x"}, "write NAME\\[:COUNT\\]"),
    ({"gpus": "H100:64"}, "count must be 1..16"),
    ({"recovery": "BOGUS"}, "recovery strategy 'BOGUS' does not exist; SkyPilot has: FAILOVER"),
    ({"mount_mode": "COPYY"}, "mount mode 'COPYY'"),
    ({"bucket": "My_Bucket"}, "bucket names are"),
])
def test_labkit_catches_what_skypilot_lets_through(kwargs, message):
    with pytest.raises(UserError, match=message):
        build_task(**kwargs)


def test_gpu_names_are_normalised():
    assert parse_gpus("h100") == ("H100", 1)
    assert parse_gpus("a100-80gb:8") == ("A100-80GB", 8)


def test_a_bad_profile_fails_before_any_task_is_written(tmp_path, capsys):
    out = tmp_path / "t.yaml"
    assert cli.main(["cloud", "task", "--profile", "nope", "--out", str(out)]) == 2
    assert "no profile 'nope'" in capsys.readouterr().err and not out.exists()
