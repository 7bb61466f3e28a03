"""`labkit run` end to end on three tiny test labs: one records, one fails, one hangs."""

import json
from pathlib import Path

import psutil
import pytest

from labkit import cli, labs, run_labs as runner
from labkit.errors import UserError

TEST_LABS = Path(__file__).parent / "data" / "labs"
SECRET = "hf_THIS-VALUE-MUST-NEVER-BE-WRITTEN-42"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_LABS_DIR", str(TEST_LABS))
    monkeypatch.setenv("LABKIT_RUNS_DIR", str(tmp_path / "runs"))
    profile = tmp_path / "test.yaml"
    profile.write_text("timeout_per_lab: 120\nparams: {}\nlabs:\n  01_ok:\n    size: 5\n")
    return tmp_path, str(profile)


def test_parameters_are_validated_before_anything_runs(env):
    _, profile = env
    prof = runner.load_profile(profile)
    ok = labs.select(["01"])
    params, secret = runner.resolve_parameters(ok, prof, ["size=7", "hf_token=abcdefgh"])
    assert params == {"01_ok": {"size": 7}}
    assert secret == {"HF_TOKEN": "abcdefgh"}  # goes to the kernel's environment only
    with pytest.raises(UserError, match=r"lab 01_ok: parameter size='big' should be int"):
        runner.resolve_parameters(ok, prof, ["size=big"])
    with pytest.raises(UserError, match=r"allowed values: fast, slow"):
        runner.resolve_parameters(ok, prof, ["mode=medium"])
    with pytest.raises(UserError, match=r"no selected lab has parameter\(s\) sise; allowed: "
                                        r"mode, size"):
        runner.resolve_parameters(ok, prof, ["sise=3"])
    with pytest.raises(UserError, match=r"lab 01_ok has no parameter 'fail'"):
        runner.resolve_parameters(ok, prof, ["01.fail=true"])
    with pytest.raises(UserError, match="no lab '99'"):
        labs.select(["99"])


def test_unknown_parameter_stops_the_run_before_any_notebook(env, capsys):
    tmp, profile = env
    rc = cli.main(["run", "01", "--profile", profile, "-p", "nope=1"])
    assert rc == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp / "runs").exists() or not any((tmp / "runs").glob("*/01_ok"))


def processes_of_run(run_dir: Path) -> list:
    """Live processes started for this run: their environment names its run directory
    (other developers' kernels on a shared machine do not count)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("LABKIT_RUN_DIR") == str(run_dir):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


@pytest.mark.slow
def test_run_records_reports_failures_times_out_and_resumes(env, capfd):
    # capfd, not capsys: the kernel writes to the file descriptors, not to sys.stderr
    tmp, profile = env
    rc = cli.main(["run", "01", "02", "--profile", profile, "-p", f"hf_token={SECRET}"])
    assert rc == 1  # one lab failed
    out = capfd.readouterr()
    run_dir = Path(out.out.strip().splitlines()[-1])
    assert ("02_fail failed at notebook cell #3 (In [3]): ValueError: deliberate failure"
            in out.err)

    ok = json.loads((run_dir / "01_ok" / "results.json").read_text())
    assert ok["scalars"]["size_squared"]["value"] == 25  # profile value 5 reached the lab
    assert json.loads((run_dir / "01_ok" / "status.json").read_text())["status"] == "completed"
    fail = json.loads((run_dir / "02_fail" / "status.json").read_text())
    assert fail["status"] == "failed" and fail["cell"] == 3

    # The kernel saw the token (the careless lab printed it) but no file keeps it.
    for f in run_dir.rglob("*"):
        if f.is_file():
            assert SECRET not in f.read_text(errors="ignore"), f
    assert "***redacted***" in (run_dir / "01_ok" / "01_ok.ipynb").read_text()
    # Kernels talk over Unix sockets: ipykernel's plain-TCP warning is in no output or log.
    assert "without encryption" not in out.err
    assert all("without encryption" not in f.read_text(errors="ignore")
               for f in (run_dir / "01_ok").rglob("*") if f.is_file())

    # A lab past its timeout is stopped, kernel included, and reported.
    rc = cli.main(["run", "03", "--profile", profile, "--resume", str(run_dir),
                   "--timeout", "10", "-p", "03.seconds=600"])
    assert rc == 1
    assert "03_hang timeout" in capfd.readouterr().err
    hang = json.loads((run_dir / "03_hang" / "status.json").read_text())
    assert hang["status"] == "timeout"
    assert not processes_of_run(run_dir)

    # --resume reruns only what did not complete.
    rc = cli.main(["run", "01", "02", "--profile", profile, "--resume", str(run_dir),
                   "-p", "02.fail=false"])
    err = capfd.readouterr().err
    assert rc == 0
    assert "01_ok: completed earlier in this run, skipped" in err
    assert json.loads((run_dir / "02_fail" / "status.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("profile", sorted(p.stem for p in runner.PROFILES_DIR.glob("*.yaml")))
def test_every_shipped_profile_validates_against_the_labs(profile):
    prof = runner.load_profile(profile)
    runner.validate_profile(prof)
    assert prof.get("tier") in runner.TIERS


@pytest.mark.parametrize("lab_params, params, message", [
    ({"00_orientation": {"matmul_sise": 8}}, {}, "has no parameter 'matmul_sise'"),
    ({"23_engine_comparison": {"measured_requests": "many"}}, {}, "should be int"),
    ({"99_nope": {}}, {}, "lab '99_nope', which does not exist"),
    ({}, {"no_such_knob": 1}, "no lab has parameter"),
])
def test_a_broken_profile_is_refused_even_for_labs_not_selected(lab_params, params, message):
    prof = {"name": "broken", "tier": "gpu", "labs": lab_params, "params": params}
    with pytest.raises(UserError, match=message):
        runner.resolve_parameters(labs.select(["00"]), prof, [])


def test_labs_that_need_two_gpus_are_skipped_on_one():
    two = next(lab for lab in labs.all_labs() if "multi_gpu" in lab.requires.get("gpu", []))
    one = labs.select(["00"])[0]
    gpu = {"name": "h100", "tier": "gpu"}
    assert runner.needs_more_gpus(two, gpu, 1) == "skipped: needs 2 GPUs, this machine has 1"
    assert runner.needs_more_gpus(two, gpu, 8) is None
    assert runner.needs_more_gpus(one, gpu, 1) is None
    assert runner.needs_more_gpus(two, {"name": "cpu", "tier": "cpu"}, 0) is None


def test_a_profile_extends_another_and_overrides_only_what_it_names(tmp_path):
    base = runner.load_profile("h100")
    child = runner.load_profile("h200")
    assert child["name"] == "h200" and child["tier"] == "gpu"
    assert child["labs"]["23_engine_comparison"]["price_per_hour"] == 7.912
    lab23, lab00 = "23_engine_comparison", "00_orientation"
    assert child["labs"][lab23]["model"] == base["labs"][lab23]["model"]  # inherited
    assert child["labs"][lab00]["matmul_size"] == base["labs"][lab00]["matmul_size"]
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop\n")
    with pytest.raises(UserError, match="extends itself"):
        runner.load_profile(str(loop))


@pytest.mark.slow
def test_a_named_run_resumes_itself_when_started_again(env, capfd):
    tmp, profile = env
    assert cli.main(["run", "01", "--profile", profile, "--run-id", "cloud-job-1"]) == 0
    run_dir = tmp / "runs" / "cloud-job-1"
    assert json.loads((run_dir / "01_ok" / "status.json").read_text())["status"] == "completed"
    capfd.readouterr()
    # the same command again, as a restarted (preempted) job runs it: nothing is redone
    assert cli.main(["run", "01", "--profile", profile, "--run-id", "cloud-job-1"]) == 0
    assert "01_ok: completed earlier in this run, skipped" in capfd.readouterr().err
    assert cli.main(["run", "01", "--profile", profile, "--run-id", "../escape"]) == 2
    assert "--run-id '../escape': use letters" in capfd.readouterr().err
