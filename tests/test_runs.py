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


def test_scalars_records_units_notes_and_not_measured_in_one_call(run_dir):
    rec = runs.lab("00_orientation", params={})
    rec.scalars({"tflops": (1.5, "TFLOP/s"), "gbs": (12.0, "GB/s", "8 MiB"), "threads": 2,
                 "gpu_tflops": runs.NotMeasured("no CUDA GPU")}, note="median of 5")
    res = json.loads((rec.path / "results.json").read_text())
    assert res["scalars"]["tflops"] == {"value": 1.5, "unit": "TFLOP/s", "note": "median of 5"}
    assert res["scalars"]["gbs"] == {"value": 12.0, "unit": "GB/s", "note": "8 MiB"}
    assert res["scalars"]["threads"] == {"value": 2, "unit": "", "note": "median of 5"}
    assert res["not_measured"] == {"gpu_tflops": "no CUDA GPU"}
    assert "gpu_tflops" not in res["scalars"]


def test_scalars_refuses_none_and_records_nothing_of_a_bad_call(run_dir):
    rec = runs.lab("00_orientation", params={})
    with pytest.raises(ValueError, match="NotMeasured"):
        rec.scalars({"fine": 1.0, "missing": None})
    with pytest.raises(ValueError, match="want value"):
        rec.scalars({"fine": 1.0, "too_many": (1, "ms", "note", "extra")})
    assert json.loads((rec.path / "results.json").read_text())["scalars"] == {}


def test_lab_reads_the_parameters_cell_and_takes_the_callers_values(run_dir, tmp_path,
                                                                   monkeypatch):
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("size = 3  # matrix size\nmode: str = 'fast'\n")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(nb, tmp_path / "99_demo.ipynb")
    monkeypatch.setenv("LABKIT_LABS_DIR", str(tmp_path))
    # a notebook's globals: papermill injected size and mode; x is not a parameter
    kernel = {"runs": runs, "size": 512, "mode": "slow", "x": 7}
    exec('rec = runs.lab("99_demo")', kernel)
    assert kernel["rec"].results["params"] == {"size": 512, "mode": "slow"}


def test_lab_without_its_notebook_warns_and_records_no_parameters(run_dir, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("LABKIT_LABS_DIR", str(tmp_path))
    with pytest.warns(UserWarning, match="parameters not recorded"):
        rec = runs.lab("98_missing")
    assert rec.results["params"] == {}
