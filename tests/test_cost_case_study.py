"""The case study's X traces to records: computed by hand from them, and refused when one is
missing or only a lower bound."""

import pytest

from labkit.cost import case_study, monthly
from labkit.runs import LabRecorder

TRAFFIC = monthly.Traffic(requests_per_day=864_000, peak_to_mean=2.0, input_tokens=300,
                          output_tokens=100)


def _run(tmp_path, best_status="bracketed", drop=None, spot=0.5, base_status="bracketed"):
    r23 = LabRecorder(tmp_path / "23_engine_comparison", "23_engine_comparison")
    r23.scalar("baseline", "vllm")
    r23.scalar("best__shared_prefix", "mini prefix_cache=radix")
    for cfg, tok, status in (("vllm", 500.0, base_status),
                             ("mini_prefix_cache_radix", 1000.0, best_status)):
        name = f"{cfg}__shared_prefix"
        if drop != f"capacity_tok_s__{name}":
            r23.scalar(f"capacity_tok_s__{name}", tok)
        r23.scalar(f"capacity_status__{name}", status)
    return case_study.build(tmp_path, TRAFFIC, price_per_hour=4.0, price_source="test price",
                            headroom=0.25, spot_ratio=spot, availability=0.75)


def test_x_is_computed_from_the_records(tmp_path):
    case = _run(tmp_path)
    # peak 20 req/s × 100 tokens = 2000 tok/s × 1.25: vllm 5 replicas, radix 3 (2.5 → 3)
    base, after = 5 * 4.0 * 730, 3 * 4.0 * 730
    steps = {s.name: s for s in case["steps"]}
    assert steps["baseline: vllm"].usd_month == pytest.approx(base)
    assert steps["engine and config: mini prefix_cache=radix"].usd_month == pytest.approx(after)
    assert case["x_measured_pct"] == pytest.approx((1 - after / base) * 100)  # 40 %
    # spot: 3 replicas / availability 0.75 = 4 replicas at half the price
    assert case["x_with_modelled_pct"] == pytest.approx((1 - 4 * 4.0 * 0.5 * 730 / base) * 100)
    assert steps["spot instances"].kind == "modelled"
    rows = case_study.rows(case)
    assert rows[1]["change"] == pytest.approx(after - base)
    assert len(case_study.waterfall_figure(case).axes) == 1


def test_a_missing_record_or_a_lower_bound_baseline_refuses_the_x(tmp_path):
    case = _run(tmp_path / "a", drop="capacity_tok_s__mini_prefix_cache_radix__shared_prefix")
    assert case["x_measured_pct"] is None and "recorded no capacity_tok_s" in case["why_not"]
    assert case["x_measured_at_least_pct"] is None
    # the baseline's capacity only a lower bound: its bill may be lower, so no X of any kind
    case = _run(tmp_path / "b", base_status="lower bound")
    assert case["x_measured_pct"] is None and case["x_measured_at_least_pct"] is None
    assert "'baseline: vllm' on shared-prefix is only a lower bound" in case["why_not"]
    assert case["steps"][0].upper_bound and case["steps"][0].usd_month == pytest.approx(
        5 * 4.0 * 730)
    case = _run(tmp_path / "c", spot=None)
    assert case["x_measured_pct"] == pytest.approx(40.0) and case["x_with_modelled_pct"] is None
    case = _run(tmp_path / "d", best_status="SLO not met")
    assert case["x_measured_pct"] is None and "SLO not met" in case["why_not"]


def test_a_lower_bound_on_the_new_config_gives_at_least_x(tmp_path):
    """The SLO held at the highest load: the new fleet needs at most 3 replicas, so the saving
    is at least 40 % (the CI machine found exactly this case for the radix cache)."""
    case = _run(tmp_path, best_status="lower bound")
    assert case["x_measured_pct"] is None
    assert case["x_measured_at_least_pct"] == pytest.approx(40.0)
    assert "at least 40.0 %" in case["why_not"]
    after = case["steps"][1]
    assert after.upper_bound and "at most 3 replica(s)" in after.source
    assert case["x_with_modelled_pct"] is None
    assert case["x_with_modelled_at_least_pct"] == pytest.approx(
        (1 - 4 * 4.0 * 0.5 * 730 / (5 * 4.0 * 730)) * 100)
    assert [r["bound"] for r in case_study.rows(case)] == ["exact", "upper bound", "upper bound"]
    labels = [t.get_text() for t in case_study.waterfall_figure(case).axes[0].texts]
    assert labels[0].startswith("$") and labels[1].startswith("≤ $")


def _lab42_record(tmp_path, **kw):
    from labkit.labs import all_labs, l42_case_study
    from labkit.portfolio import contract

    case = _run(tmp_path / "run", **kw)
    rec = LabRecorder(tmp_path / "run" / "42_case_study", "42_case_study")
    printed = l42_case_study.record(rec, case, 864_000, lambda old, new: (1 - new / old) * 100)
    lab = next(lab for lab in all_labs() if lab.name == "42_case_study")
    problems = contract.contract_of(lab).check(rec.results)  # the cell records the tables
    return printed, rec.results, [p for p in problems if not p.startswith(("table", "figure"))]


@pytest.mark.parametrize("kw, sentence", [
    ({}, "by 40 % ($14,600.00 → $8,760.00)"),
    ({"best_status": "lower bound"}, "by at least 40 % ($14,600.00 → at most $8,760.00)"),
    ({"base_status": "lower bound"}, None)])
def test_lab42_keeps_its_record_contract_in_every_case(tmp_path, kw, sentence):
    """Whatever lab 23 found, lab 42 records every promised name or says why, in words its
    contract allows (the CI run that found a lower bound used to break the contract)."""
    printed, results, problems = _lab42_record(tmp_path, **kw)
    assert problems == []
    assert results["scalars"]["baseline_config"]["value"] == "vllm"
    assert results["scalars"]["baseline_usd_month"]["value"] == pytest.approx(14_600.0)
    if sentence is None:
        assert "sentence" in results["not_measured"] and printed.startswith("no X:")
        assert "lower bound" in results["not_measured"]["saving_pct_measured"]
    else:
        assert sentence in results["texts"]["sentence"] and printed == results["texts"]["sentence"]
    if kw.get("best_status"):
        assert results["scalars"]["saving_pct_at_least"]["value"] == pytest.approx(40.0)
        assert results["scalars"]["after_usd_month"]["note"].startswith("at most")


def test_lab42_refuses_an_exercise_answer_that_disagrees(tmp_path):
    from labkit.labs import l42_case_study

    case = _run(tmp_path, best_status="lower bound")
    rec = LabRecorder(tmp_path / "42_case_study", "42_case_study")
    with pytest.raises(AssertionError, match="exercise 1"):
        l42_case_study.record(rec, case, 864_000, lambda old, new: new / old * 100)


def test_the_case_study_page_says_not_measured_when_a_record_breaks(tmp_path, monkeypatch):
    """Lab 42's page from a real-shaped record: exact X, "at least X", and no X."""
    from labkit import runs
    from labkit.portfolio.build import build

    common = [("baseline_usd_month", 372.3), ("after_usd_month", 310.25),
              ("baseline_config", "vllm"), ("best_config", "mini prefix_cache=radix")]

    def page(kind: str) -> str:
        run = tmp_path / kind
        monkeypatch.setenv(runs.RUN_DIR_ENV, str(run))
        rec = runs.lab("42_case_study")
        if kind == "ok":
            for name, value in common + [("saving_pct_measured", 16.7),
                                         ("saving_pct_with_modelled", 70.3)]:
                rec.scalar(name, value)
        elif kind == "at_least":
            for name, value in common + [("saving_pct_at_least", 16.7)]:
                rec.scalar(name, value)
            rec.not_measured("saving_pct_measured", "the new config's capacity is a lower bound")
        else:
            rec.not_measured("saving_pct_measured", "mini's capacity is a lower bound")
        runs.atomic_write_json(run / "42_case_study" / "status.json",
                               {"status": "completed", "seconds": 1.0, "params": {}})
        build(run, tmp_path / f"site-{kind}")
        return (tmp_path / f"site-{kind}" / "42_case_study.md").read_text()

    ok = page("ok")
    assert "I reduced the monthly bill for the same traffic by 16.7" in ok
    assert "372.3" in ok and "mini prefix_cache=radix" in ok
    at_least = page("at_least")
    assert "by at least 16.7" in at_least and "→ at most 310.2" in at_least
    broken = page("broken")
    assert "No saving quoted: *not measured on this tier: mini's capacity is a lower bound*" \
        in broken
    assert "I reduced the monthly bill" not in broken
