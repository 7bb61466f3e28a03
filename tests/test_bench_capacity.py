"""The capacity search: raise the load until the SLO breaks, bisect to a stated resolution.

The pure logic runs against a measure() of known capacity; one slow test runs the real
search with `labkit bench` against the fake server configured to saturate at a known load.
"""

import json

import pytest

from labkit.bench.capacity import SearchPlan, describe_bounds, run_capacity_search, search
from labkit.bench.fake_server import fake_server
from labkit.bench.loadgen import BenchConfig
from labkit.bench.workloads import WorkloadParams


def threshold_measure(capacity, seen=None):
    def measure(load):
        if seen is not None:
            seen.append(load)
        return {"load": load, "meets_slo": load <= capacity}
    return measure


@pytest.mark.parametrize("true_capacity", [2, 3, 5, 6, 11, 17, 31, 40, 63])
def test_concurrency_search_brackets_the_true_capacity(true_capacity):
    plan = SearchPlan(kind="concurrencies", start=2, max_load=64, resolution=1)
    r = search(threshold_measure(true_capacity), plan)
    assert r["status"] == "bracketed"
    assert r["low"] == true_capacity and r["high"] == true_capacity + 1
    assert r["capacity"]["load"] == true_capacity
    assert all(isinstance(row["load"], int) for row in r["rows"])


def test_search_stops_at_the_resolution_and_measures_each_load_once():
    seen = []
    plan = SearchPlan(kind="concurrencies", start=2, max_load=256, resolution=4)
    r = search(threshold_measure(37, seen), plan)
    assert r["status"] == "bracketed"
    assert r["low"] <= 37 < r["high"] and r["high"] - r["low"] <= 4
    assert len(seen) == len(set(seen)) == r["points_measured"]
    # 2, 4, 8, 16, 32, 64 raised; then 48, 40, 36 (at most a handful of bisection steps)
    assert seen[:6] == [2, 4, 8, 16, 32, 64]
    assert len(seen) <= 6 + 4


def test_every_load_passing_is_only_a_lower_bound():
    plan = SearchPlan(kind="concurrencies", start=4, max_load=20, resolution=1)
    seen = []
    r = search(threshold_measure(1000, seen), plan)
    assert r["status"] == "lower bound"
    assert r["low"] == 20 and r["high"] is None
    assert seen == [4, 8, 16, 20]  # the last raise is capped at max_load
    assert "≥ 20" in describe_bounds(r)


def test_first_load_failing_says_so():
    r = search(threshold_measure(1), SearchPlan(kind="concurrencies", start=2))
    assert r["status"] == "SLO not met"
    assert r["low"] is None and r["high"] == 2 and r["capacity"] is None
    assert "< 2" in describe_bounds(r)


def test_rate_search_bisects_to_a_float_resolution():
    plan = SearchPlan(kind="rates", start=1.0, factor=2.0, max_load=100.0, resolution=0.25)
    r = search(threshold_measure(13.3), plan)
    assert r["status"] == "bracketed"
    assert r["low"] <= 13.3 < r["high"] and r["high"] - r["low"] <= 0.25


def test_a_noisy_pass_above_a_failure_keeps_the_bracket_honest():
    """A lucky pass at a higher load never hides a failure below it: low always passed and
    high always failed, whatever order the noise comes in."""
    outcomes = {2: True, 4: True, 8: False, 6: True, 7: False}
    r = search(lambda load: {"load": load, "meets_slo": outcomes[load]},
               SearchPlan(kind="concurrencies", start=2, resolution=1))
    assert (r["low"], r["high"]) == (6, 7)
    by_load = {row["load"]: row["meets_slo"] for row in r["rows"]}
    assert by_load[r["low"]] and not by_load[r["high"]]


@pytest.mark.parametrize("bad", [dict(kind="qps"), dict(start=0), dict(factor=1.0),
                                 dict(start=10, max_load=5), dict(resolution=0),
                                 dict(measured_requests=0)])
def test_plans_that_cannot_work_are_refused(bad):
    with pytest.raises(ValueError):
        SearchPlan(**bad)


def test_run_needs_an_slo(tmp_path):
    with pytest.raises(ValueError, match="SLO"):
        run_capacity_search(BenchConfig(base_url="http://127.0.0.1:1", model="m",
                                        out_dir=str(tmp_path)), SearchPlan())


@pytest.mark.slow
def test_search_finds_the_fake_servers_known_capacity(tmp_path):
    """The fake server slows every request's per-token time by in_flight/4 once more than 4
    are in flight: with TPOT 10 ms and a TPOT limit of 16 ms, concurrency 6 (15 ms) meets
    the SLO and 7 (17.5 ms) does not. The search must land on exactly that bracket."""
    with fake_server(ttft_ms=10, tpot_ms=10, saturate_at=4) as url:
        cfg = BenchConfig(base_url=url, model="fake-model", slo={"tpot": 16.0},
                          params=WorkloadParams(input_len=8, output_len=16),
                          out_dir=str(tmp_path), progress=False)
        plan = SearchPlan(kind="concurrencies", start=2, max_load=32, resolution=1,
                          measured_requests=48, warmup_requests=4)
        r = run_capacity_search(cfg, plan)
    assert r["status"] == "bracketed", r["rows"]
    assert (r["low"], r["high"]) == (6, 7)
    # ≥ 48 measured per point; the warm-up requests were sent and left out
    for s in r["summaries"]:
        assert s["requests"]["measured"] == 48
        assert s["requests"]["warmup_excluded"] == 4
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["status"] == "bracketed" and saved["low"] == 6
    assert (tmp_path / "sweep.csv").read_text().count("\n") == 1 + r["points_measured"]
