"""Every lab notebook keeps the conventions `labkit run`, nbval and the portfolio rely on."""

import ast
import json

import pytest

from labkit import env, labs, run_labs as runner, secrets

LABS = labs.all_labs()


@pytest.mark.parametrize("lab", LABS, ids=[lab.name for lab in LABS])
def test_lab_notebook_conventions(lab):
    nb = json.loads(lab.path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    cells = nb["cells"]
    assert not any(c.get("outputs") for c in cells if c["cell_type"] == "code"), "outputs"
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    # papermill silently drops a parameter line it cannot parse (e.g. `n = 2  # 0 = off`),
    # which would make that parameter impossible to override: every assignment must parse.
    src = "".join(tagged[0]["source"])
    assigned = [t.id for node in ast.parse(src).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)]
    declared = lab.parameters()
    assert sorted(assigned) == sorted(declared), "papermill could not parse every parameter"
    assert not [n for n in declared if secrets.is_secret_name(n)], "secret-looking name"
    for tier, reqs in lab.requires.items():
        assert tier in ("cpu", "gpu") and set(reqs) <= set(env.REQUIREMENTS), reqs
    code = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert f'labkit.runs.lab("{lab.name}"' in code, "records under its own name"


@pytest.mark.parametrize("profile", ["cpu", "h100"])
def test_profiles_only_set_declared_parameters_of_the_right_type(profile):
    # Raises UserError naming the lab and parameter if a profile drifted from a notebook.
    params, _ = runner.resolve_parameters(LABS, runner.load_profile(profile), [])
    assert set(params) == {lab.name for lab in LABS}


def _text(cell) -> str:
    return "".join(cell["source"])


@pytest.mark.parametrize("lab", LABS, ids=[lab.name for lab in LABS])
def test_lab_reads_as_a_lesson(lab):
    """The learner-facing shape: a header that says what the lab needs and costs, the
    parameters first, exercises numbered from 1, and a closing word on the portfolio."""
    import re

    cells = json.loads(lab.path.read_text())["cells"]
    head = _text(cells[0])
    assert cells[0]["cell_type"] == "markdown" and head.startswith(f"# Lab {lab.number} — ")
    for field in ("**Prerequisites:**", "**Time:**", "**Recorded**"):
        assert field in head, f"header lacks {field}"
    assert "CPU tier" in head.split("**Time:**")[1].split("\n")[0], "time per tier"
    code = [c for c in cells if c["cell_type"] == "code"]
    assert "parameters" in code[0].get("metadata", {}).get("tags", []), "parameters first"
    numbers = [int(n) for c in cells if c["cell_type"] == "markdown"
               for n in re.findall(r"^#+ .*?Exercise (\d+):", _text(c), flags=re.M)]
    assert numbers == list(range(1, len(numbers) + 1)), f"exercises numbered {numbers}"
    assert not re.search(r"^#+ .*Exercise:", "\n".join(_text(c) for c in cells), flags=re.M)
    assert "**What goes into your portfolio:**" in _text(cells[-1])
