"""Exported labs run whole: export every lab, paste the reference solutions back, and the
learner's notebook is the lab itself (same code, same data beside it); lab 12, the one that
reads data next to the notebook, is run end to end from the export."""

import json

import pytest

from labkit import exercises, labs

LABS = labs.all_labs()


def _code(nb):
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("lab", LABS, ids=[lab.name for lab in LABS])
def test_exported_lab_with_solutions_pasted_back_is_the_lab(lab, tmp_path):
    [(path, n)] = exercises.export([lab], tmp_path)
    learner = json.loads(path.read_text())
    solved = json.loads(lab.path.read_text())
    assert n >= 1, "every lab has an exercise"
    stubs = sum(len(exercises.STUB.findall(c)) for c in _code(learner))
    assert stubs == n  # every region became a stub the check cell will trip on
    restored = exercises.paste_solutions(learner, solved)
    assert _code(restored) == _code(solved)
    # whatever the lab reads relative to its folder travels with it
    src, dst = lab.path.parent / "data", tmp_path / "data"
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == \
        sorted(p.relative_to(dst) for p in dst.rglob("*"))


def test_paste_refuses_a_copy_of_another_version(tmp_path):
    lab = labs.select(["00"])[0]
    [(path, _)] = exercises.export([lab], tmp_path)
    learner = json.loads(path.read_text())
    learner["cells"] = learner["cells"][:-1]
    with pytest.raises(Exception, match="export it anew"):
        exercises.paste_solutions(learner, json.loads(lab.path.read_text()))


@pytest.mark.slow
def test_exported_lab12_runs_whole_from_the_learner_folder(tmp_path, monkeypatch):
    import papermill as pm

    from labkit.kernel_transport import IPCKernelManager

    monkeypatch.setenv("LABKIT_RUN_DIR", str(tmp_path / "run"))
    lab = labs.select(["12"])[0]
    [(path, _)] = exercises.export([lab], tmp_path / "learner")
    restored = exercises.paste_solutions(json.loads(path.read_text()),
                                         json.loads(lab.path.read_text()))
    path.write_text(json.dumps(restored))
    pm.execute_notebook(str(path), str(tmp_path / "out.ipynb"), kernel_name="python3",
                        cwd=str(path.parent), progress_bar=False,
                        kernel_manager_class=IPCKernelManager)
    results = json.loads((tmp_path / "run" / "12_cluster_networking" / "results.json")
                         .read_text())
    # the six sample logs were found beside the exported notebook and diagnosed
    rows = results["tables"]["nccl_log_samples"]["rows"]
    assert len(rows) == len(list((lab.path.parent / "data" / "nccl").glob("*.log"))) == 6
