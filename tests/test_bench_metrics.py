"""Metric formulas on hand-built request records (no server involved)."""

import pytest

from labkit.bench import request_metrics as metrics
from labkit.bench.client import RequestRecord
from labkit.bench.report import flatten, format_summary, load_records
from labkit.errors import UserError


def streamed(i, scheduled, sent, ttft, n_tokens, tpot, usage=None, per_chunk=1, warmup=False):
    """A successful request whose tokens arrived every `tpot` s after a `ttft` s wait."""
    first = sent + ttft
    n_chunks = -(-n_tokens // per_chunk)
    times = [first + k * tpot * per_chunk for k in range(n_chunks)]
    return RequestRecord(id=i, scheduled=scheduled, sent=sent, first_token=first,
                         end=times[-1], chunk_times=times, chunk_tokens=[1] * n_chunks,
                         completion_tokens=n_tokens if usage is None else usage,
                         prompt_tokens=10, client_tokens=n_chunks, warmup=warmup)


def failed(i, cause, scheduled=0.0):
    return RequestRecord(id=i, scheduled=scheduled, sent=scheduled, end=scheduled + 0.01,
                         error=cause)


def test_the_two_tpot_conventions_differ_as_their_definitions_say():
    r = streamed(0, 0.0, 0.0, ttft=0.5, n_tokens=100, tpot=0.01)
    assert metrics.ttft(r) == pytest.approx(0.5)
    assert metrics.e2e(r) == pytest.approx(0.5 + 99 * 0.01)
    assert metrics.tpot(r) == pytest.approx(0.01)  # vLLM/SGLang: first token excluded
    assert metrics.per_token_latency(r) == pytest.approx(1.49 / 100)  # GuideLLM: included
    assert metrics.per_token_latency(r) > metrics.tpot(r) * 1.4
    assert metrics.itl(r) == pytest.approx([0.01] * 99)


def test_one_token_answers_have_no_tpot_but_a_per_token_latency():
    r = streamed(0, 0.0, 0.0, ttft=0.2, n_tokens=1, tpot=0.01)
    assert metrics.tpot(r) is None
    assert metrics.per_token_latency(r) == pytest.approx(0.2)


def test_tpot_uses_the_servers_token_count_not_the_chunk_count():
    # 20 tokens in 10 chunks of 2 (speculative decoding style), 10 ms per token
    r = streamed(0, 0.0, 0.0, ttft=0.1, n_tokens=20, tpot=0.01, per_chunk=2)
    assert r.client_tokens == 10 and r.completion_tokens == 20
    assert metrics.tpot(r) == pytest.approx(0.18 / 19)
    assert metrics.itl(r) == pytest.approx([0.02] * 9)  # chunk gaps, as vLLM pools them


def test_summary_counts_latencies_from_send_and_from_schedule_and_errors_by_cause():
    recs = [
        streamed(0, 0.0, 0.3, ttft=0.5, n_tokens=11, tpot=0.01),  # waited 300 ms in client
        streamed(1, 1.0, 1.0, ttft=0.1, n_tokens=11, tpot=0.01),
        failed(2, "http_500", 2.0),
        failed(3, "dropped_stream", 3.0),
        failed(4, "http_500", 4.0),
        streamed(5, 5.0, 5.0, ttft=0.1, n_tokens=11, tpot=0.01, usage=12),  # mismatch
        streamed(6, -1.0, -1.0, ttft=9.0, n_tokens=5, tpot=0.5, warmup=True),
    ]
    s = metrics.summarize(recs, target_rate=1.0, slo={"ttft": 550, "tpot": 20})
    assert s["requests"] == {"measured": 6, "completed": 3, "failed": 3, "warmup_excluded": 1}
    assert s["errors"] == {"http_500": 2, "dropped_stream": 1}
    lat = s["latency_ms"]
    assert lat["ttft"]["max"] == pytest.approx(500)
    assert lat["ttft_from_schedule"]["max"] == pytest.approx(800)  # 300 queue + 500
    assert lat["queue_wait"]["max"] == pytest.approx(300)
    assert lat["e2e_from_schedule"]["max"] - lat["e2e"]["max"] == pytest.approx(300)
    assert lat["itl"]["n"] == 10 + 10 + 10
    # SLO judged from the schedule: request 0 (800 ms) misses, 1 and 5 meet, failures miss
    assert s["goodput"]["good_requests"] == 2
    assert s["goodput"]["attainment"] == pytest.approx(2 / 6)
    send = metrics.summarize(recs, slo={"ttft": 550}, slo_clock="send")
    assert send["goodput"]["good_requests"] == 3
    # usage vs client: one of three disagreed
    assert s["tokens"]["client_vs_usage_mismatched"] == 1
    assert s["tokens"]["client_vs_usage_mismatch_rate"] == pytest.approx(1 / 3)
    assert s["tokens"]["output_tokens"] == 11 + 11 + 12
    # window: first measured schedule (0.0) to last end (5.0 + 0.1 + 0.1)
    assert s["duration_s"] == pytest.approx(5.2)
    assert s["throughput"]["requests_per_s"] == pytest.approx(3 / 5.2)
    # sends at 0.3, 1, 2, 3, 4, 5 → 5 intervals over 4.7 s
    assert s["rate"]["achieved"] == pytest.approx(5 / 4.7)
    assert s["rate"]["scheduled"] == pytest.approx(1.0)


def test_percentiles_follow_numpy_linear_interpolation():
    st = metrics.stats([0.001 * k for k in range(1, 101)])  # 1..100 ms
    assert st["p50"] == pytest.approx(50.5)
    assert st["p99"] == pytest.approx(99.01)
    assert st["max"] == pytest.approx(100) and st["n"] == 100
    assert metrics.stats([]) == {"n": 0}


def test_parse_slo():
    assert metrics.parse_slo("ttft=500, tpot=50,e2e=1e4") == {"ttft": 500, "tpot": 50,
                                                              "e2e": 10000}
    assert metrics.parse_slo(None) == {}
    with pytest.raises(UserError):
        metrics.parse_slo("latency=5")


def test_records_round_trip_through_jsonl_and_a_torn_line_is_skipped(tmp_path):
    recs = [streamed(0, 0.0, 0.0, 0.1, 3, 0.01), failed(1, "timeout")]
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(r.to_json() + "\n" for r in recs) + '{"id": 2, "sched')
    back = load_records(path)
    assert [r.id for r in back] == [0, 1]
    assert back[0].chunk_times == pytest.approx(recs[0].chunk_times)
    assert back[1].error == "timeout"


def test_summary_table_names_each_convention():
    s = metrics.summarize([streamed(0, 0.0, 0.0, 0.1, 5, 0.01)], target_rate=2.0)
    text = format_summary(s)
    for needle in ("(E2E−TTFT)/(out−1)", "GuideLLM", "pooled", "per_token_latency",
                   "ttft_from_schedule"):
        assert needle in text
    assert "latency_ms.tpot.p99" in flatten(s)


def test_a_client_that_falls_behind_its_schedule_says_so():
    on_time = [streamed(i, i * 0.1, i * 0.1, 0.05, 3, 0.01) for i in range(20)]
    for r in on_time:
        r.dispatched = r.scheduled + 0.001
    assert metrics.summarize(on_time, target_rate=10.0)["warnings"] == []
    late = [streamed(i, i * 0.1, i * 0.1 + 0.08, 0.05, 3, 0.01) for i in range(20)]
    for r in late:
        r.dispatched = r.scheduled + 0.08
    s = metrics.summarize(late, target_rate=10.0)
    assert any("fell behind" in w for w in s["warnings"])
    assert s["rate"]["dispatch_lag_ms"]["p50"] == pytest.approx(80)
    assert "WARNING: the client fell behind" in format_summary(s)
