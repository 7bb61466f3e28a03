"""Exercise mechanics: the learner copy fails its checks with the hint; the reference passes."""

import json

import pytest

from labkit import exercises, labs
from labkit.checks import ExerciseFailed
from labkit.errors import UserError

SRC = '''def f(x):
    # BEGIN SOLUTION
    # HINT: double it
    y = 2 * x
    return y
    # END SOLUTION

z = 1
'''


def test_strip_solutions_keeps_hints_and_indentation():
    out = exercises.strip_solutions(SRC)
    assert "2 * x" not in out and "z = 1" in out
    assert "    # HINT: double it\n    raise NotImplementedError('Exercise: double it')\n" in out
    ns: dict = {}
    exec(out, ns)
    with pytest.raises(NotImplementedError, match="double it"):
        ns["f"](3)


def test_unbalanced_markers_are_reported():
    with pytest.raises(UserError, match="no END SOLUTION"):
        exercises.strip_solutions("# BEGIN SOLUTION\nx = 1\n")


def _exercise_cells(nb):
    """The code cells from the first solution region to its check cell (no heavy set-up)."""
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    first = next(i for i, c in enumerate(code) if "def matmul_flops" in c)
    return code[first:first + 2]


def run_cells(cells):
    ns: dict = {}
    for c in cells:
        exec("from labkit.checks import orientation\n" + c, ns)


def test_learner_copy_of_lab00_fails_with_the_hint_and_reference_passes(tmp_path, capsys):
    lab = labs.select(["00"])[0]
    reference = json.loads(lab.path.read_text())
    run_cells(_exercise_cells(reference))
    assert "✔ matmul_flops: passed" in capsys.readouterr().out

    [(path, n)] = exercises.export([lab], tmp_path)
    assert n == 2
    learner = json.loads(path.read_text())
    assert "return 2 * m * n * k" not in path.read_text()
    with pytest.raises(ExerciseFailed, match="not implemented yet — Exercise: each of the m\\*n"):
        run_cells(_exercise_cells(learner))


def test_check_reports_failing_input_expected_and_actual():
    from labkit.checks import orientation

    with pytest.raises(ExerciseFailed, match=r"matmul_flops\(1, 1, 1\): expected 2, got 1"):
        orientation.check_matmul_flops(lambda m, n, k: m * n * k)  # forgot the adds


def test_export_copies_the_data_and_never_overwrites_a_learners_copy(tmp_path, capsys):
    from labkit import cli

    out = tmp_path / "ex"
    assert cli.main(["exercises", "export", "12", "--out", str(out)]) == 0
    nb = out / "12_cluster_networking.ipynb"
    logs = sorted(p.name for p in (out / "data" / "nccl").iterdir())
    assert logs == sorted(p.name for p in (labs.labs_dir() / "data" / "nccl").iterdir())
    nb.write_text(nb.read_text().replace("Lab 12", "Lab 12 (my notes)"))
    assert cli.main(["exercises", "export", "12", "--out", str(out)]) == 0
    assert "my notes" in nb.read_text()  # kept
    assert "1 learner copy already in" in capsys.readouterr().out
    assert cli.main(["exercises", "reset", "12", "--out", str(out)]) == 0
    assert "my notes" not in nb.read_text()
    [backup] = out.glob("12_cluster_networking.ipynb.bak-*")
    assert "my notes" in backup.read_text()  # the old copy is not lost
    with pytest.raises(SystemExit):
        cli.main(["exercises", "reset", "--out", str(out)])  # reset names its labs
