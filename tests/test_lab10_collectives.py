"""Lab 10 (collectives): its helpers, its exercise in learner form, and its portfolio page."""

import json
import linecache

import pytest

from labkit import exercises, labs, runs
from labkit.checks import ExerciseFailed
from labkit.collectives import alpha_beta as ab
from labkit.labs import l10_collectives as cs
from labkit.portfolio import build


# --- helpers ----------------------------------------------------------------------------------

def test_plan_backend_uses_nccl_only_with_two_gpus_and_says_why_otherwise():
    assert cs.plan_backend("nccl", 0, 8 << 30, gpus=8) == dict(
        backend="nccl", nproc=8, max_bytes=8 << 30, nccl_not_measured=None)
    assert cs.plan_backend("auto", 0, 1 << 20, gpus=4)["nproc"] == 4
    one = cs.plan_backend("nccl", 0, 8 << 30, gpus=1)
    assert (one["backend"], one["nproc"], one["max_bytes"]) == ("gloo", 2, 4 << 20)
    assert "1 CUDA GPU(s) visible" in one["nccl_not_measured"]
    cpu = cs.plan_backend("gloo", 2, 4 << 20, gpus=8)
    assert cpu["backend"] == "gloo" and "CPU tier" in cpu["nccl_not_measured"]
    assert cs.plan_backend("auto", 0, 1 << 20, gpus=0)["backend"] == "gloo"


def _row(op, size, t_us, busbw, supported=True):
    return dict(op=op, size_bytes=size, count=size // 4, dtype="float32", time_us_mean=t_us,
                algbw_GBps=size / (t_us * 1e-6) / 1e9, busbw_GBps=busbw, wrong=0,
                supported=supported, reason=None)


def test_peak_busbw_picks_the_best_size_and_keeps_unsupported_ops():
    report = {"backend": "gloo", "nranks": 2, "rows": [
        _row("all_reduce", 1024, 100.0, 0.01), _row("all_reduce", 1 << 20, 900.0, 1.2),
        _row("all_reduce", 4 << 20, 5000.0, 0.8),
        dict(op="all_to_all", dtype="float32", nranks=2, supported=False,
             reason="not supported by gloo: RuntimeError: nope")]}
    peaks = {p["op"]: p for p in cs.peak_busbw(report)}
    assert peaks["all_reduce"]["peak_busbw_GBps"] == 1.2
    assert peaks["all_reduce"]["at"] == "1 MiB"
    assert peaks["all_to_all"] == dict(op="all_to_all", supported=False,
                                       reason="not supported by gloo: RuntimeError: nope")
    rows = cs.table_rows(report)
    assert rows[-1]["supported"] is False and len(rows) == 4


def test_prediction_rows_follow_the_ring_and_tree_formulas():
    nvlink, ndr = ab.NVLINK_H100.with_alpha(3e-6), ab.NDR_400G.with_alpha(10e-6)
    rows = cs.prediction_rows([1 << 20, 1 << 30], nvlink, ndr, model="modelled: test")
    assert len(rows) == 16 and {r["model"] for r in rows} == {"modelled: test"}
    big = [r for r in rows if r["size_bytes"] == 1 << 30 and r["gpus"] == 1024][0]
    ring = 2 * 1023 * 10e-6 + 2 * 1023 / 1024 * (1 << 30) / 50e9
    tree = 2 * 10 * 10e-6 + 2 * (1 << 30) / 50e9
    assert big["ring_us"] == pytest.approx(ring * 1e6, abs=0.01)
    assert big["tree_us"] == pytest.approx(tree * 1e6, abs=0.01)
    assert big["faster"] == "tree" and big["nodes"] == 128
    small8 = [r for r in rows if r["size_bytes"] == 1 << 20 and r["gpus"] == 8][0]
    assert small8["link"] == nvlink.name  # one node: NVLink only


# --- the exercise, as a learner gets it ---------------------------------------------------------

def _exercise_cells(nb):
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    first = next(i for i, c in enumerate(code) if "def ring_all_reduce" in c)
    return code[first:first + 2]


def _run_like_jupyter(cells, tmp_path):
    """exec the cells as a kernel does: module __main__, source findable by inspect."""
    from labkit.checks.collectives import check_ring_all_reduce

    def check_one_world_size(fn, **kwargs):  # 3 ranks: sizes not divisible by the world size
        return check_ring_all_reduce(fn, **{**kwargs, "world_sizes": (3,)})

    ns = {"__name__": "__main__", "check_ring_all_reduce": check_one_world_size,
          "rec": runs.LabRecorder(tmp_path / "rec", "10_collectives")}
    for i, src in enumerate(cells):
        name = f"<lab10 cell {i}>"
        linecache.cache[name] = (len(src), None, src.splitlines(True), name)
        exec(compile(src, name, "exec"), ns)
    return ns


@pytest.mark.slow
def test_learner_copy_of_lab10_fails_with_the_hint_and_reference_passes(tmp_path, capsys):
    lab = labs.select(["10"])[0]
    reference = json.loads(lab.path.read_text())
    ns = _run_like_jupyter(_exercise_cells(reference), tmp_path)
    assert "✔ ring_all_reduce: matches dist.all_reduce for world sizes 3 on tensors of " \
        "sizes 1, 2, 3, 4, 5, 7, 16, 33, 1000, 1001, (5, 3)" in capsys.readouterr().out
    assert ns["rec"].results["scalars"]["ring_exercise"]["value"] == "passed"

    [(path, n)] = exercises.export([lab], tmp_path / "learner")
    assert n == 1
    learner = json.loads(path.read_text())
    assert "chunks[recv_idx] +=" not in path.read_text()
    with pytest.raises(ExerciseFailed, match="not implemented yet — Exercise: reduce-scatter"):
        _run_like_jupyter(_exercise_cells(learner), tmp_path)


# --- portfolio --------------------------------------------------------------------------------

@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(tmp_path / "r"))
    rec = runs.lab("10_collectives", params={"backend": "gloo"})
    rec.scalar("backend", "gloo", note="2 ranks")
    rec.not_measured("nccl_collectives", "the lab ran gloo on CPU processes (the CPU tier)")
    rec.table("peak_busbw", [dict(op="all_reduce", supported=True, peak_busbw_GBps=0.8219,
                                  at_bytes=1 << 20, at="1 MiB", algbw_GBps=0.8219, time_us=1275.7)])
    rec.scalar("peak_busbw_all_reduce", 0.8219, unit="GB/s", note="at 1 MiB, gloo, 2 ranks")
    rec.scalar("alpha_us_all_reduce", 599.29, unit="us")
    rec.scalar("predict_size_large", "1 GiB")
    rec.scalar("modelled_h100_1024gpu_large_ring_ms", 62.5493, unit="ms", note="modelled")
    rec.scalar("modelled_h100_1024gpu_large_tree_ms", 43.1417, unit="ms", note="modelled")
    rec.scalar("ring_exercise", "passed", note="✔ ring_all_reduce: matches dist.all_reduce")
    runs.atomic_write_json(tmp_path / "r" / "10_collectives" / "status.json",
                           {"status": "completed", "seconds": 70.0})
    return tmp_path / "r"


def test_portfolio_page_states_measured_and_modelled_numbers(fake_run, tmp_path):
    build(fake_run, tmp_path / "site")
    page = (tmp_path / "site" / "10_collectives.md").read_text()
    assert "For all_reduce I reached 0.8219 GB/s busbw (at 1 MiB, gloo, 2 ranks)" in page
    assert "α = 599.3 us" in page
    assert "ring 62.55 ms vs tree 43.14 ms" in " ".join(page.split())
    assert "not measured on this tier: the lab ran gloo on CPU processes" in page
    assert "fitted_1024rank" not in page  # missing results never render as a raw name
    assert "*not measured in this run*" in page  # ... but as a plain "not measured"


def test_fitted_link_inverts_the_ring_model_and_its_scalars_name_the_rank_count():
    # a 4-rank all_reduce fit T(S) = 60 us + S / 1 GB/s: per ring step alpha = 60 / 6 us and
    # 1/beta = 1 GB/s * 6 / 4 (2(p-1) steps, each moving S/p bytes)
    fit = ab.AlphaBeta(alpha_s=60e-6, beta_s_per_byte=1e-9, n_points=8, rel_rms=0.0)
    assert cs.fitted_link({}, {"nranks": 4, "backend": "gloo"}) is None
    assert cs.fitted_link({"all_reduce": fit}, {"nranks": 1, "backend": "gloo"}) is None
    link = cs.fitted_link({"all_reduce": fit}, {"nranks": 4, "backend": "gloo"})
    assert link.alpha_s == pytest.approx(10e-6)
    assert link.bandwidth_GBps == pytest.approx(1.5)
    rows = cs.prediction_rows([2**20], link, link, model="fitted")
    found = cs.fitted_scalars(link, rows, 2**20, nranks=4)
    assert found["fitted_step_alpha_us"][:2] == (10.0, "us")
    biggest = rows[-1]["gpus"]
    assert {f"fitted_{biggest}rank_large_{a}_ms" for a in ("ring", "tree")} < set(found)
