"""The case study's X traces to records: computed by hand from them, and refused when one is
missing or only a lower bound."""

import pytest

from labkit.cost import case_study, monthly
from labkit.runs import LabRecorder

TRAFFIC = monthly.Traffic(requests_per_day=864_000, peak_to_mean=2.0, input_tokens=300,
                          output_tokens=100)


def _run(tmp_path, best_status="bracketed", drop=None, spot=0.5):
    r23 = LabRecorder(tmp_path / "23_engine_comparison", "23_engine_comparison")
    r23.scalar("baseline", "vllm")
    r23.scalar("best__shared_prefix", "mini prefix_cache=radix")
    for cfg, tok, status in (("vllm", 500.0, "bracketed"),
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


def test_a_missing_record_or_a_lower_bound_refuses_the_x(tmp_path):
    case = _run(tmp_path / "a", drop="capacity_tok_s__mini_prefix_cache_radix__shared_prefix")
    assert case["x_measured_pct"] is None and "recorded no capacity_tok_s" in case["why_not"]
    case = _run(tmp_path / "b", best_status="lower bound")
    assert case["x_measured_pct"] is None and "not bracketed" in case["why_not"]
    case = _run(tmp_path / "c", spot=None)
    assert case["x_measured_pct"] == pytest.approx(40.0) and case["x_with_modelled_pct"] is None


def test_the_case_study_page_says_not_measured_when_a_record_breaks(tmp_path, monkeypatch):
    """Lab 42's page from a real-shaped record, then the same with the measured X removed."""
    from labkit import runs
    from labkit.portfolio.build import build

    def page(with_x: bool) -> str:
        run = tmp_path / ("ok" if with_x else "broken")
        monkeypatch.setenv(runs.RUN_DIR_ENV, str(run))
        rec = runs.lab("42_case_study")
        if with_x:
            for name, value in [("baseline_usd_month", 372.3), ("after_usd_month", 310.25),
                                ("saving_pct_measured", 16.7), ("baseline_config", "vllm"),
                                ("best_config", "mini prefix_cache=radix"),
                                ("saving_pct_with_modelled", 70.3)]:
                rec.scalar(name, value)
        else:
            rec.not_measured("saving_pct_measured", "mini's capacity is a lower bound")
        runs.atomic_write_json(run / "42_case_study" / "status.json",
                               {"status": "completed", "seconds": 1.0, "params": {}})
        build(run, tmp_path / f"site-{with_x}")
        return (tmp_path / f"site-{with_x}" / "42_case_study.md").read_text()

    ok = page(True)
    assert "I reduced the monthly bill for the same traffic by 16.7" in ok
    assert "372.3" in ok and "mini prefix_cache=radix" in ok
    broken = page(False)
    assert "No saving quoted: *not measured on this tier: mini's capacity is a lower bound*" \
        in broken
    assert "I reduced the monthly bill" not in broken
