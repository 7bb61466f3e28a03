import json
import os

import pytest

from labkit import runs


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(tmp_path / "run1"))
    return tmp_path / "run1"


def test_recorder_writes_every_kind_of_result(run_dir, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec = runs.lab("05_demo", params={"size": 4, "api_key": "sk-should-not-appear"})
    rec.scalar("tokens_per_s", 123.4, unit="tok/s", note="c=8")
    rec.scalar("kib_per_token", 4.0)  # a result name, not a credential: it must survive
    rec.table("rows", [{"a": 1, "b": 2}, {"a": 3, "c": "x"}])
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    rec.figure("curve", fig, caption="a line")
    rec.text("log", "hello")
    src = tmp_path / "weights.bin"
    src.write_bytes(b"\x00\x01")
    rec.file("weights", src)
    rec.not_measured("gpu_util", "no GPU on this tier")

    res = json.loads((run_dir / "05_demo" / "results.json").read_text())
    assert res["scalars"]["tokens_per_s"] == {"value": 123.4, "unit": "tok/s", "note": "c=8"}
    assert res["tables"]["rows"]["columns"] == ["a", "b", "c"]
    assert (run_dir / "05_demo" / "tables" / "rows.csv").read_text().splitlines()[0] == "a,b,c"
    assert (run_dir / "05_demo" / "figures" / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / "05_demo" / res["files"]["weights"]).read_bytes() == b"\x00\x01"
    assert res["not_measured"] == {"gpu_util": "no GPU on this tier"}
    assert res["scalars"]["kib_per_token"]["value"] == 4.0
    assert res["params"] == {"size": 4}  # the secret-named parameter is never written
    run = json.loads((run_dir / "run.json").read_text())
    assert run["machine"]["cpu_cores"] >= 1 and "torch" in run and run["git"]["commit"]


def test_none_is_not_a_measurement(run_dir):
    rec = runs.lab("05_demo")
    with pytest.raises(ValueError, match="not_measured"):
        rec.scalar("x", None)


def test_a_crash_mid_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    runs.atomic_write_json(target, {"v": 1})

    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        runs.atomic_write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left


def test_resolve_run_dir_explains_what_exists(tmp_path, monkeypatch):
    from labkit.errors import UserError

    monkeypatch.setenv(runs.RUNS_DIR_ENV, str(tmp_path))
    (tmp_path / "20260101-000000-cpu").mkdir()
    assert runs.resolve_run_dir("20260101-000000-cpu") == tmp_path / "20260101-000000-cpu"
    with pytest.raises(UserError, match="20260101-000000-cpu"):
        runs.resolve_run_dir("nope")


def test_written_files_are_readable_by_all(tmp_path):
    # mkstemp alone would leave 0600: a results.json or page nobody else can read.
    p = runs.atomic_write_json(tmp_path / "sub" / "results.json", {"a": 1})
    assert p.stat().st_mode & 0o777 == 0o644
