"""The glue labs 22 and 23 use: fresh-prompt sweeps, the fault readout, engine-config
comparison and the server-metrics cross-check. Against the fake server (known latencies),
and on hand-made records; no real engine starts here."""

import asyncio
import json
import math
from pathlib import Path

import pytest

from labkit.labs import l23_engine_comparison as compare, l22_deploy_and_bench as readout
from labkit.bench import server_metrics
from labkit.bench.client import RequestRecord
from labkit.bench.fake_server import fake_server
from labkit.bench.sweep import run_fresh_sweep
from labkit.bench.loadgen import BenchConfig, run_bench
from labkit.bench.workloads import WorkloadParams
from labkit.cost.per_token import cost_per_million_tokens
from labkit.serve.config import has_nvidia_gpu
from labkit.errors import UserError


def rec(i, scheduled, sent, first, end, tokens=4, chunks=None, client=None, dispatched=None):
    chunks = tokens if chunks is None else chunks
    return RequestRecord(id=i, scheduled=scheduled, sent=sent,
                         dispatched=sent if dispatched is None else dispatched,
                         first_token=first, end=end,
                         chunk_times=[first + k * (end - first) / max(1, chunks - 1)
                                      for k in range(chunks)],
                         completion_tokens=tokens,
                         client_tokens=chunks if client is None else client)


def test_peak_in_flight_counts_overlaps_and_not_touching_ends():
    recs = [rec(0, 0, 0, 0.1, 1.0), rec(1, 0, 0.5, 0.6, 2.0), rec(2, 0, 1.0, 1.1, 1.5),
            rec(3, 0, 3.0, 3.1, 4.0)]
    # [0,1], [0.5,2], [1,1.5]: #0 ends exactly when #2 starts, so at most 2 at once
    assert readout.peak_in_flight(recs) == 2
    assert readout.peak_in_flight([]) == 0


def test_relative_sleeps_model_carries_every_late_wakeup_forward():
    # 4 requests due at 0,1,2,3 s; each of the last three woke 0.1 s late
    recs = [rec(i, float(i), i + (0.1 if i else 0), i + 0.2, i + 0.5,
                dispatched=i + (0.1 if i else 0)) for i in range(4)]
    assert readout.naive_dispatch_rate(recs) == pytest.approx(3 / (3 + 0.3))


def test_token_count_mismatches_are_counted_per_method():
    recs = [rec(0, 0, 0, 0.1, 1, tokens=8, chunks=8, client=8),
            rec(1, 0, 0, 0.1, 1, tokens=8, chunks=4, client=8),  # 2 tokens per chunk
            rec(2, 0, 0, 0.1, 1, tokens=8, chunks=8, client=9)]  # BPE re-split the text
    tc = readout.token_counts(recs)
    assert tc["with_usage"] == 3
    assert tc["chunks_mismatch_rate"] == pytest.approx(1 / 3)
    assert tc["retokenised_mismatch_rate"] == pytest.approx(1 / 3)
    assert (tc["usage_tokens"], tc["chunk_tokens"], tc["retokenised_tokens"]) == (24, 20, 25)


def test_negative_ttft_is_found():
    ext = readout.ttft_extremes([rec(0, 0, 1.0, 0.9, 2.0), rec(1, 0, 0, 0.05, 1)])
    assert ext["negative"] == 1 and ext["min_ms"] == pytest.approx(-100)


@pytest.mark.slow
def test_fresh_sweep_new_prompts_per_point_and_fault_table_on_a_known_server(tmp_path):
    slo = {"ttft": 2000, "tpot": 200}  # 20 ms and 5 ms served: generous for a busy CI box
    with fake_server(ttft_ms=20, tpot_ms=5, multi_token_chunk_rate=0.5) as url:
        cfg = BenchConfig(base_url=url, model="fake-model", num_requests=12, slo=slo,
                          params=WorkloadParams(input_len=8, output_len=6),
                          out_dir=str(tmp_path / "sweep"), progress=False, seed=7)
        sweep = run_fresh_sweep(cfg, "rates", [40, 10, 20])
        capped = run_bench(BenchConfig(**{**cfg.__dict__, "rate": 40.0, "concurrency": 1,
                                               "out_dir": str(tmp_path / "capped")}))
    assert [r["load"] for r in sweep["rows"]] == [10, 20, 40]  # sorted
    seeds = [s["run"]["config"]["seed"] for s in sweep["summaries"]]
    assert seeds == [7, 8, 9]  # a new prompt set at every point
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["capacity"]["load"] == 40
    assert (tmp_path / "sweep" / "rate-20" / "requests.jsonl").exists()
    assert "summaries" in sweep and Path(sweep["plot"]).exists()

    rows, scalars = readout.fault_table(sweep, capped, readout.records_of(capped),
                                        retokenised=False)
    assert [r["fault"] for r in rows][0] == "open-loop rate drift" and len(rows) == 5
    assert scalars["negative_ttft_count"] == 0 and scalars["min_ttft_ms"] >= 19
    # a cap of 1 at 40 req/s with ~45 ms requests: requests wait in the client
    assert scalars["capped_e2e_p99_from_schedule_ms"] > scalars["capped_e2e_p99_from_send_ms"]
    assert scalars["capped_queue_wait_p99_ms"] > 50
    # half the streams carry two tokens per chunk: counting chunks undercounts them
    assert 0.3 < scalars["chunks_vs_usage_mismatch_rate"] < 0.7
    assert "retokenised_vs_usage_mismatch_rate" not in scalars
    assert 1 <= scalars["peak_in_flight"] <= 12
    assert scalars["achieved_vs_target_worst"] > 0.9


def test_run_bench_works_inside_a_running_event_loop(tmp_path):
    """What a Jupyter kernel does: call the sync API while a loop runs in this thread."""
    with fake_server(ttft_ms=5, tpot_ms=1) as url:
        cfg = BenchConfig(base_url=url, model="fake-model", num_requests=3, progress=False,
                          params=WorkloadParams(input_len=4, output_len=3),
                          out_dir=str(tmp_path))

        async def inside_a_loop():
            return run_bench(cfg)

        s = asyncio.run(inside_a_loop())
    assert s["requests"]["completed"] == 3


def test_parse_config_dict_and_string_forms():
    a = compare.parse_config({"engine": "mini", "prefix_cache": "none", "max_num_seqs": 4})
    b = compare.parse_config("mini:prefix_cache=none,max_num_seqs=4")
    assert a == b and a.knobs == {"prefix_cache": "none", "max_num_seqs": 4}
    assert a.label == "mini prefix_cache=none max_num_seqs=4"
    assert compare.parse_config({"engine": "vllm"}).label == "vllm"
    assert compare.parse_config("vllm:prefix_caching=false").knobs == {"prefix_caching": False}
    with pytest.raises(UserError, match="unknown engine 'tgi'"):
        compare.parse_config({"engine": "tgi"})
    with pytest.raises(UserError, match="'engine' key"):
        compare.parse_config({"prefix_cache": "radix"})


@pytest.mark.skipif(has_nvidia_gpu(), reason="checks the CPU tier's reasons")
def test_gpu_only_configs_get_a_reason_and_start_nothing(tmp_path):
    assert "no CPU kernels" in compare.why_not_here(compare.parse_config("sglang"))
    assert "GPU-only" in compare.why_not_here(compare.parse_config("trtllm"))
    q = compare.why_not_here(compare.parse_config({"engine": "vllm", "quantization": "fp8"}))
    assert q == compare.QUANTIZATION_REASON
    res = compare.measure_config(compare.parse_config("sglang"), "unused", {},
                                 BenchConfig(base_url="", model=""), {}, "rates", [1],
                                 tmp_path)
    assert res["not_measured"] and not res["sweeps"] and not any(tmp_path.iterdir())


def _sweep(points, slo=True):
    rows = [{"load": load, "output_tok_per_s": tok, "ttft_p99_ms": 100.0, "tpot_p99_ms": 20.0,
             "meets_slo": ok, "achieved_rps": 1.0} for load, tok, ok in points]
    cap = None
    for r in rows:
        if not r["meets_slo"]:
            break
        cap = r
    return {"rows": rows, "capacity": cap}


def test_capacity_rows_price_the_capacity_not_the_peak():
    results = [
        {"config": "vllm", "engine": "vllm", "not_measured": None,
         "sweeps": {"random": _sweep([(2, 50.0, True), (8, 90.0, False)])},
         "prefix_hit_rate": {"random": 0.01}},
        {"config": "mini", "engine": "mini", "not_measured": None,
         "sweeps": {"random": _sweep([(2, 40.0, False), (8, 120.0, True)])},
         "prefix_hit_rate": {}},
        {"config": "sglang", "engine": "sglang", "not_measured": "GPU only", "sweeps": {},
         "prefix_hit_rate": {}}]
    rows = compare.capacity_rows(results, 6.88, gpus=2)
    by = {r["config"]: r for r in rows}
    assert by["vllm"]["status"] == "measured" and by["vllm"]["load_at_slo"] == 2
    assert by["vllm"]["usd_per_1m_output_tokens"] == pytest.approx(
        cost_per_million_tokens(6.88, 50.0, 2))  # 50 tok/s at the SLO, not the 90 past it
    assert by["vllm"]["prefix_hit_rate"] == 0.01
    # a pass above a failure is not capacity
    assert by["mini"]["status"] == "SLO not met" and by["mini"]["usd_per_1m_output_tokens"] is None
    assert by["sglang"]["status"] == "not measured" and by["sglang"]["reason"] == "GPU only"
    assert compare.costs_by_workload(rows) == {"random": {
        "vllm": pytest.approx(cost_per_million_tokens(6.88, 50.0, 2))}}
    text = compare.format_capacity(rows)
    assert "SLO not met" in text and "not measured: GPU only" in text
    assert [r["load"] for r in compare.sweep_rows(results)] == [2, 8, 2, 8]


def test_server_metrics_deltas():
    before = {"vllm:prefix_cache_queries_total": 100.0, "vllm:prefix_cache_hits_total": 10.0,
              "vllm:time_to_first_token_seconds_sum": 1.0,
              "vllm:time_to_first_token_seconds_count": 10.0}
    after = {"vllm:prefix_cache_queries_total": 300.0, "vllm:prefix_cache_hits_total": 160.0,
             "vllm:time_to_first_token_seconds_sum": 4.0,
             "vllm:time_to_first_token_seconds_count": 20.0}
    assert server_metrics.prefix_hit_rate("vllm", before, after) == pytest.approx(0.75)
    assert server_metrics.prefix_hit_rate("mini", before, after) == pytest.approx(0.75)
    assert server_metrics.histogram_mean("vllm", "ttft_seconds", before, after) == \
        pytest.approx(0.3)
    assert server_metrics.prefix_hit_rate("sglang", {}, {"sglang:cache_hit_rate": 0.4}) == 0.4
    assert server_metrics.histogram_mean("vllm", "ttft_seconds", {}, {}) is None
    assert server_metrics.scrape("http://127.0.0.1:9/metrics") == {}  # nothing listens


def test_figures_draw_from_rows():
    import matplotlib

    matplotlib.use("Agg")
    from labkit.bench import plots

    rows = [{"load": 1, "output_tok_per_s": 10.0, "ttft_p99_ms": 50.0, "tpot_p99_ms": 5.0,
             "meets_slo": True}, {"load": 2, "output_tok_per_s": 15.0,
                                  "ttft_p99_ms": math.nan, "tpot_p99_ms": 9.0,
                                  "meets_slo": False}]
    fig = plots.pareto_figure(rows, {"ttft": 100, "tpot": 8}, "rates", rows[0])
    assert len(fig.axes) == 2
    cap_rows = [{"config": "a", "workload": "random", "status": "measured",
                 "output_tok_per_s_at_slo": 10.0, "usd_per_1m_output_tokens": 190.0},
                {"config": "b", "workload": "random", "status": "SLO not met",
                 "output_tok_per_s_at_slo": None, "usd_per_1m_output_tokens": None}]
    fig = plots.capacity_figure(cap_rows, "note")
    assert fig.axes[0].get_legend_handles_labels()[1] == ["a", "b"]
    fig = plots.curves_figure({"random": {"a": rows}}, {"ttft": 100}, "concurrencies")
    assert fig.axes[0].get_title() == "workload: random"


def test_verdicts_flag_lower_bounds_and_a_missing_baseline():
    results = [
        {"config": "vllm", "engine": "vllm", "not_measured": None,
         "sweeps": {"random": _sweep([(2, 50.0, True), (8, 90.0, False)]),
                    "shared-prefix": _sweep([(2, 20.0, False)])},
         "prefix_hit_rate": {}},
        {"config": "mini", "engine": "mini", "not_measured": None,
         "sweeps": {"random": _sweep([(2, 40.0, True), (8, 80.0, True)]),  # top load met it
                    "shared-prefix": _sweep([(2, 30.0, True)])},
         "prefix_hit_rate": {}}]
    rows = compare.capacity_rows(results, 6.88)
    assert {r["status"] for r in rows if r["config"] == "mini"} == {"measured (lower bound)"}
    v = {x["workload"]: x for x in compare.verdicts(rows, ["random", "shared-prefix", "multi-turn"],
                                                    "vllm", "tiny")}
    assert v["random"]["best"] == "mini" and v["random"]["lower_bound"]
    assert v["random"]["saving_pct"] == pytest.approx((1 - 50 / 80) * 100)
    assert f"by {(1 - 50 / 80) * 100:.0f}% vs vllm" in v["random"]["sentence"]
    assert v["shared-prefix"]["saving_pct"] is None and "baseline vllm" in v["shared-prefix"]["why"]
    assert v["multi-turn"]["best"] is None and "no config met the SLO" in v["multi-turn"]["why"]


def _searched(status, low, high, tok=100.0, total=900.0):
    cap = None if low is None else {"load": low, "output_tok_per_s": tok,
                                    "total_tok_per_s": total, "ttft_p99_ms": 90.0,
                                    "tpot_p99_ms": 12.0, "meets_slo": True}
    rows = [r for r in (cap, high and {"load": high, "meets_slo": False}) if r]
    return {"status": status, "low": low, "high": high, "rows": rows, "capacity": cap}


def test_capacity_rows_from_a_search_carry_both_bounds_and_both_prices():
    results = [{"config": c, "engine": "mini", "not_measured": None, "prefix_hit_rate": {},
                "sweeps": {"shared-prefix": s}} for c, s in (
        ("a", _searched("bracketed", 12, 14)), ("b", _searched("lower bound", 64, None, tok=150.0)),
        ("c", _searched("SLO not met", None, 2)))]
    by = {r["config"]: r for r in compare.capacity_rows(results, 2.0)}
    a = by["a"]
    assert (a["capacity_status"], a["load_low"], a["load_high"], a["status"]) == \
        ("bracketed", 12, 14, "measured")
    # 2 $/h over 100 output tok/s, and over 900 tok/s in + out: two conventions, one capacity
    assert a["usd_per_1m_output_tokens"] == pytest.approx(2.0 / (100 * 3600) * 1e6)
    assert a["usd_per_1m_total_tokens"] == pytest.approx(2.0 / (900 * 3600) * 1e6)
    assert (by["b"]["capacity_status"], by["b"]["status"]) == \
        ("lower bound", "measured (lower bound)")
    assert by["c"]["capacity_status"] == "SLO not met" and by["c"]["usd_per_1m_output_tokens"] is None
    v = compare.verdicts(list(by.values()), ["shared-prefix"], "a", "tiny")[0]
    assert v["best"] == "b" and v["lower_bound"]  # b's capacity is only a floor


def test_recorded_verdicts_quote_no_saving_from_a_lower_bound(tmp_path):
    from labkit.runs import LabRecorder

    results = [{"config": c, "engine": "mini", "not_measured": None, "prefix_hit_rate": {},
                "sweeps": {"random": s, "shared-prefix": s2}} for c, s, s2 in (
        ("base", _searched("bracketed", 8, 12, tok=100.0), _searched("bracketed", 8, 12)),
        ("fast", _searched("bracketed", 16, 20, tok=125.0),
         _searched("lower bound", 64, None, tok=200.0)))]
    rows = compare.capacity_rows(results, 2.0)
    rec = LabRecorder(tmp_path / "23", "23_engine_comparison")
    compare.record_capacity(rec, rows)
    lines = compare.record_verdicts(rec, rows, ["random", "shared-prefix"], "base", "tiny",
                                    gpu_present=False)
    sc, nm = rec.results["scalars"], rec.results["not_measured"]
    assert sc["saving_pct__random"]["value"] == pytest.approx(20.0)  # 1 − 100/125
    assert sc["capacity_status__fast__shared_prefix"]["value"] == "lower bound"
    assert sc["capacity_load_low__base__random"]["value"] == 8
    assert sc["capacity_load_high__base__random"]["value"] == 12
    assert "capacity_load_high__fast__shared_prefix" not in sc
    assert "saving_pct__shared_prefix" not in sc and "lower bound" in nm["saving_pct__shared_prefix"]
    assert sc["lower_bound__shared_prefix"]["value"] == "yes"
    assert any("only a lower bound" in line for line in lines)
