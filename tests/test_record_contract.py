"""The record contract: labs declare what a CPU run records, CI checks the real results.

The check over real results reuses the nbval run of labs/ (conftest.py points every notebook
at one run directory and moves that check to the end of the session), so no lab runs twice.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import labs, runs
from labkit.labs import l23_engine_comparison as compare
from labkit.labs import PROJECT_ROOT
from labkit.portfolio import contract
from labkit.portfolio.template_names import Unresolvable, names_read

LABS = labs.all_labs()
TEMPLATES = PROJECT_ROOT / "portfolio_templates"


@pytest.mark.parametrize("lab", LABS, ids=[lab.name for lab in LABS])
def test_every_lab_declares_what_a_cpu_run_records(lab):
    c = contract.contract_of(lab)  # raises on an unknown key
    assert any(c.required.values()), f"{lab.name}: add labkit.records to the notebook metadata"


@pytest.mark.parametrize("lab", LABS, ids=[lab.name for lab in LABS])
def test_every_name_a_template_reads_is_declared(lab):
    tpl = TEMPLATES / f"{lab.name}.md.j2"
    if not tpl.exists():
        pytest.skip("no template of its own: the generic page lists what was recorded")
    c = contract.contract_of(lab)
    undeclared = sorted(n for n in names_read(tpl) if not c.covers(n))
    assert not undeclared, (f"{tpl.name} reads {undeclared}, which {lab.name}'s labkit.records "
                            "does not declare (add them, or to 'optional')")


def test_template_names_resolve_literals_concat_loops_and_macros(tmp_path):
    (tmp_path / "_inc.md.j2").write_text('{{ lab.figure("hero") }}')
    (tmp_path / "t.md.j2").write_text(
        '{% macro pct(name) %}{{ lab.value(name) }}{% endmacro %}'
        '{% include "_inc.md.j2" %}{{ lab.scalar("a") }}'
        '{% for c in ["x", "y"] %}{{ pct("hit_" ~ c) }}{% endfor %}'
        '{% for w in lab.value("workloads") %}{{ lab.scalar("saving__" ~ w) }}{% endfor %}'
        '{% for n in lab.results.scalars %}{{ lab.scalar(n) }}{% endfor %}')
    assert names_read(tmp_path / "t.md.j2") == {"hero", "a", "hit_x", "hit_y", "workloads",
                                                "saving__*"}
    (tmp_path / "bad.md.j2").write_text('{% set n = "a" %}{{ lab.scalar(n) }}')
    with pytest.raises(Unresolvable, match="string literal"):
        names_read(tmp_path / "bad.md.j2")
    c = contract.Contract.from_metadata("t", {"scalars": ["a"], "optional": ["saving__*"]})
    assert c.covers("saving__*") and c.covers("saving__chat") and not c.covers("hit_x")


def test_contract_reports_missing_and_unallowed_not_measured():
    c = contract.Contract.from_metadata("t", {
        "scalars": ["a", "b", "c"], "figures": ["f"],
        "allowed_not_measured": {"b": "no CUDA GPU"}})
    res = {"scalars": {"a": {"value": 1}}, "figures": {},
           "not_measured": {"b": "no CUDA GPU on this machine", "c": "engine crashed"}}
    problems = c.check(res)
    assert len(problems) == 2
    assert any("'c' is not_measured" in p for p in problems)
    assert any("figure 'f' was not recorded" in p for p in problems)
    res["not_measured"]["b"] = "out of memory"
    assert any("'b'" in p and "no CUDA GPU" in p for p in c.check(res))
    with pytest.raises(ValueError, match="unknown key"):
        contract.Contract.from_metadata("t", {"scalar": ["a"]})


@pytest.mark.slow
def test_labkit_run_checks_the_contract_and_removing_a_record_breaks_it(tmp_path):
    r = subprocess.run([sys.executable, "-m", "labkit.cli", "run", "00", "--out",
                        str(tmp_path / "runs"), "-p", "matmul_size=256", "-p", "copy_mib=32",
                        "-p", "check_engines=false"], capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "00_orientation: record contract holds" in r.stderr
    run_dir = Path(r.stdout.strip().splitlines()[-1])
    status = runs.read_json(run_dir / "00_orientation" / "status.json")
    assert status["contract"] == {"holds": True, "problems": []}
    assert contract.check_run(run_dir) == {"00_orientation": []}

    lab00 = labs.select(["00"])[0]
    declared = contract.contract_of(lab00).required["scalars"][0]
    path = run_dir / "00_orientation" / "results.json"
    res = json.loads(path.read_text())
    del res["scalars"][declared]
    path.write_text(json.dumps(res))
    problems = contract.check_run(run_dir)["00_orientation"]
    assert problems == [f"scalar {declared!r} was not recorded"]
    res["not_measured"][declared] = "something broke"
    path.write_text(json.dumps(res))
    assert "not_measured" in contract.check_run(run_dir)["00_orientation"][0]


@pytest.mark.slow
@pytest.mark.parametrize("ci", ["true", ""])
def test_a_broken_engine_start_fails_under_ci(ci, tmp_path, monkeypatch):
    monkeypatch.setenv("CI", ci)
    from labkit.bench.loadgen import BenchConfig
    from labkit.serve import ServerStartError

    # A real start of the teaching engine on a model folder it cannot load: the server exits.
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "not-a-model"}')
    args = (compare.ConfigSpec("mini"), str(broken), {}, BenchConfig(base_url="", model=""),
            {}, "rate", [1.0], tmp_path / "out")
    if ci:
        with pytest.raises(ServerStartError):
            compare.measure_config(*args, startup_timeout=60)
    else:
        got = compare.measure_config(*args, startup_timeout=60)
        assert got["not_measured"].startswith("the server did not start")


def test_labs_run_by_nbval_keep_their_record_contract(request):
    """Ordered last by conftest.py: checks what the nbval run of labs/ recorded."""
    ran = [n for n, ok in request.config.labkit_notebooks.items() if ok]
    if not ran:
        pytest.skip("no lab notebook ran (and passed) in this session; run with labs/")
    problems = contract.check_run(request.config.labkit_nbval_run_dir, ran)
    broken = {lab: p for lab, p in problems.items() if p}
    assert not broken, contract.format_report(broken)


@pytest.mark.parametrize("lab", LABS, ids=[lab.name for lab in LABS])
def test_a_declared_hero_figure_is_a_required_figure(lab):
    hero = lab.records.get("hero")
    if hero:  # the index leads with it: a CPU run must have it
        assert hero in contract.contract_of(lab).required["figures"]


def test_lab21_engine_failure_turned_not_measured_breaks_its_contract():
    # Lab 21's cell turns an engine failure into not_measured (so a learner's page says why);
    # its contract allows no reason for the TTFT it measures on the CPU tier, so CI fails.
    lab21 = labs.select(["21"])[0]
    c = contract.contract_of(lab21)
    res = {kind: {n: {"value": 1} for n in names} for kind, names in c.required.items()}
    res["not_measured"] = {}
    assert c.check(res) == []
    del res["scalars"]["ttft_p50_ms_radix"]
    res["not_measured"]["ttft_p50_ms_radix"] = ("the teaching engine with --prefix-cache radix "
                                                "failed: ServerStartError: exited with 1")
    assert any("'ttft_p50_ms_radix' is not_measured" in p for p in c.check(res))


def test_a_drafted_contract_holds_on_the_run_it_came_from(tmp_path, monkeypatch):
    from labkit.portfolio.contract_suggest import suggest

    monkeypatch.setenv(runs.RUN_DIR_ENV, str(tmp_path / "r"))
    rec = runs.lab("00_orientation")
    rec.scalar("matmul_gflops", 3.0)
    rec.table("labs", [{"lab": "00"}])
    lab00 = labs.select(["00"])[0]
    draft = suggest(tmp_path / "r", lab00)
    assert draft["scalars"] == ["matmul_gflops"] and draft["tables"] == ["labs"]
    assert "copy_gbs" in draft["optional"]  # the template reads it, this run did not record it
    c = contract.Contract.from_metadata("00_orientation", draft)
    assert c.check(runs.read_json(tmp_path / "r" / "00_orientation" / "results.json")) == []
    assert all(c.covers(n) for n in names_read(TEMPLATES / "00_orientation.md.j2"))
