"""SLO rules and burn-rate alerts, tested like code with promtool (Prometheus 2.42)."""

import pytest
import yaml

from labkit.errors import UserError
from labkit.observe import promtool, slo
from labkit.observe.prometheus import find_promtool

needs_promtool = pytest.mark.skipif(find_promtool() is None, reason="promtool not installed")

SPEC = {"service": "tiny-llama", "slos": [
    {"name": "ttft", "objective": 0.99,
     "latency": {"histogram": "vllm:time_to_first_token_seconds", "threshold": 1.0}},
    {"name": "availability", "objective": 0.99,
     "errors": {"counter": "vllm:request_success_total", "bad": 'finished_reason="abort"'}}]}
PY_EXPOSITION = ('vllm:time_to_first_token_seconds_bucket{le="0.5"} 3\n'
                 'vllm:time_to_first_token_seconds_bucket{le="1.0"} 4\n'
                 'vllm:time_to_first_token_seconds_bucket{le="+Inf"} 4\n')


def _write(tmp_path, spec, bounds=None, le=None, scale=1.0):
    rules = tmp_path / "rules.yaml"
    rules.write_text(slo.rules_yaml(spec, bounds, scale))
    return rules, promtool.write_suite(spec, rules, tmp_path / "tests.yaml", le)


@needs_promtool
def test_generated_rules_check_and_the_alert_goes_pending_firing_resolved(tmp_path):
    spec = slo.load_spec(SPEC)
    rules, tests = _write(tmp_path, spec)
    ok, out = promtool.check_rules(rules)
    assert ok and "SUCCESS: 22 rules found" in out  # 7 windows + 4 alerts, per SLO
    ok, out = promtool.run_tests(tests)
    assert ok, out
    names = [r.get("alert") for g in yaml.safe_load(rules.read_text())["groups"]
             for r in g["rules"] if "alert" in r]
    assert "SLOBurn_ttft_1h_5m" in names and "SLOBurn_availability_3d_6h" in names


@needs_promtool
def test_le_is_matched_as_text_so_the_exposed_spelling_is_used(tmp_path):
    bounds = slo.bucket_bounds(PY_EXPOSITION, "vllm:time_to_first_token_seconds")
    assert bounds == ["0.5", "1.0"]  # prometheus_client writes 1.0, a Go client 1
    assert 'le="1.0"' in slo.error_ratio(slo.load_spec(SPEC).slos[0], "5m", bounds)
    # rules written for a Go exporter's le="1" never match the Python engine's series:
    spec = slo.load_spec({**SPEC, "slos": SPEC["slos"][:1]})
    _, tests = _write(tmp_path, spec, bounds={"vllm:time_to_first_token_seconds": ["0.5", "1"]},
                      le={"vllm:time_to_first_token_seconds": "1.0"})
    ok, out = promtool.run_tests(tests)
    assert not ok and "SLOBurn_ttft_1h_5m" in out


def test_a_threshold_must_be_a_bucket_bound():
    bounds = slo.bucket_bounds(PY_EXPOSITION, "vllm:time_to_first_token_seconds")
    s = slo.load_spec(SPEC).slos[0]
    s.threshold = 0.8
    with pytest.raises(UserError, match="0.8 s is not a bucket bound.*the bounds are: 0.5, 1.0"):
        slo.error_ratio(s, "5m", bounds)


@needs_promtool
def test_low_traffic_guard_keeps_a_quiet_service_from_paging(tmp_path):
    spec = slo.load_spec({**SPEC, "slos": SPEC["slos"][:1], "min_requests": 100_000})
    _, tests = _write(tmp_path, spec)
    ok, out = promtool.run_tests(tests)  # the same burn, but "too few requests to judge"
    assert not ok and "SLOBurn_ttft_1h_5m" in out


def test_drill_scaling_shrinks_every_window_and_says_so():
    text = slo.rules_yaml(slo.load_spec(SPEC), scale=1 / 30)
    assert text.splitlines()[1].startswith("# DRILL: every window and `for` scaled by 0.0333")
    rules = [r for g in yaml.safe_load(text)["groups"] for r in g["rules"]]
    rec = {r["record"]: r["expr"] for r in rules if "record" in r}
    assert "[120s]" in rec["slo:sli_error:ratio_rate1h"]  # 1h / 30
    assert "[10s]" in rec["slo:sli_error:ratio_rate5m"]
    fast = next(r for r in rules if r.get("alert") == "SLOBurn_ttft_1h_5m")
    assert fast["for"] == "4s"


@pytest.mark.parametrize("bad, message", [
    ({"objective": 99}, "between 0 and 1"),
    ({"latency": None, "errors": None}, "either latency"),
    ({"latency": {"histogram": "h"}}, "needs a threshold"),
])
def test_a_broken_spec_names_the_problem(bad, message):
    s = {**SPEC["slos"][0], **bad}
    with pytest.raises(UserError, match=message):
        slo.load_spec({"service": "x", "slos": [s]})
    with pytest.raises(UserError, match="missing field 'service'"):
        slo.load_spec({"slos": []})


@pytest.mark.slow
@pytest.mark.skipif(find_promtool() is None, reason="prometheus not installed")
def test_the_drill_fires_and_resolves_on_the_teaching_engine(tmp_path):
    from labkit.models import build_tiny_llama
    from labkit.observe.drill import run_drill, timeline_figure

    spec = {"service": "tiny-llama", "min_requests": 5, "slos": [
        {"name": "ttft", "objective": 0.99,
         "latency": {"histogram": "vllm:time_to_first_token_seconds", "threshold": 0.5}}]}
    r = run_drill(tmp_path, str(build_tiny_llama(verbose=False)), spec, max_model_len=512,
                  max_num_seqs=32, dtype="float32", baseline_s=6)
    order = [e["event"] for e in r["timeline"]]
    assert order == ["load started", "fault injected", "pending", "firing", "fault removed",
                     "resolved"], r["timeline"]
    t = {e["event"]: e["t_s"] for e in r["timeline"]}
    assert t["firing"] - t["pending"] >= 3.9  # the scaled `for: 4s` (pending from activeAt)
    assert r["resolved"] and r["requests"] > 30
    assert "# DRILL" in (tmp_path / "slo_rules.yaml").read_text()
    assert not (tmp_path / "fault").exists()  # the engine is left healthy
    assert len(timeline_figure(r).axes) == 1
