"""Spot arithmetic and monthly spend, against hand-computed values."""

import json
import math

import pytest

from labkit.cost import monthly, spot
from labkit.errors import UserError

MIN, H = 60, 3600


@pytest.mark.parametrize("mtbf_h, daly_min, young_min", [(24, 117, 120), (6, 57, 60),
                                                          (0.25, 9.1, 12.2)])
def test_young_and_daly_match_the_published_vectors(mtbf_h, daly_min, young_min):
    c, m = 5 * MIN, mtbf_h * H
    assert spot.young(c, m) / MIN == pytest.approx(young_min, abs=0.05)
    assert spot.daly(c, m) / MIN == pytest.approx(daly_min, abs=0.5 if daly_min > 20 else 0.05)


def test_daly_beyond_its_range_and_bad_input():
    assert spot.daly(100, 40) == 40  # C >= 2M: checkpoint every MTBF
    with pytest.raises(UserError):
        spot.young(0, 10)


def test_trace_file_in_spot_traces_shape(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"metadata": {"gap_seconds": 300}, "data": [1, 1, 1, 0, 0, 1, 1, 0]}))
    t = spot.read_trace(p)
    assert t.preemptions == 2 and t.availability == 5 / 8
    assert t.mtbf_s == 5 * 300 / 2
    p.write_text(json.dumps({"data": [1]}))
    with pytest.raises(UserError, match="not a spot-traces file"):
        spot.read_trace(p)
    gen = spot.generate_trace(hours=24, mtbf_h=2, outage_h=0.5, seed=1)
    assert gen["metadata"]["generated_by"] == "labkit.cost.spot" and len(gen["data"]) == 288


def test_a_job_that_is_never_preempted_costs_its_clean_time():
    job = spot.Job(work_h=10, checkpoint_s=60, restart_s=300, interval_s=H)
    r = spot.simulate_job(job, mtbf_s=1e12, spot_price=2.0, on_demand_price=6.0, trials=50)
    clean_h = 10 + 10 * 60 / H  # 10 h of work + 10 checkpoints of a minute
    assert r["on_demand_hours"] == pytest.approx(clean_h)
    assert r["spot_hours_mean"] == pytest.approx(clean_h)
    assert r["preemptions_mean"] == 0 and r["saving_pct"] == pytest.approx(100 * (1 - 2 / 6))


def test_preemptions_stretch_the_job_and_the_expected_count_matches_poisson():
    job = spot.Job(work_h=20, checkpoint_s=5 * MIN, restart_s=10 * MIN,
                   interval_s=spot.daly(5 * MIN, 2 * H))
    r = spot.simulate_job(job, mtbf_s=2 * H, spot_price=1.0, on_demand_price=3.0,
                          trials=2000, seed=3)
    assert r["spot_hours_mean"] > r["on_demand_hours"]
    assert r["spot_hours_p95"] >= r["spot_hours_p50"]
    # preemptions ≈ wall time / MTBF (Poisson); the wall includes the lost work
    assert r["preemptions_mean"] == pytest.approx(r["spot_hours_mean"] / 2, rel=0.15)
    assert spot.serving_replicas(6, 0.75) == 8 and spot.serving_replicas(6, 1.0) == 6


def test_monthly_spend_by_hand():
    t = monthly.Traffic(requests_per_day=864_000, peak_to_mean=2.0, input_tokens=400,
                        output_tokens=100)
    f = monthly.Fleet(capacity_tok_s=500.0, price_per_hour=4.29, headroom=0.25)
    m = monthly.monthly_spend(t, f)
    assert m["mean_rps"] == 10 and m["peak_rps"] == 20 and m["peak_output_tok_s"] == 2000
    assert m["replicas_exact"] == pytest.approx(5.0) and m["replicas"] == 5  # 2000·1.25/500
    assert m["usd_per_month"] == pytest.approx(5 * 4.29 * 730)
    rows = monthly.sensitivity(t, f)
    assert rows[0]["swing_usd"] >= rows[-1]["swing_usd"]
    by = {r["input"]: r for r in rows}
    assert by["price_per_hour"]["usd_high"] == pytest.approx(5 * 4.29 * 1.2 * 730)
    assert by["requests_per_day"]["usd_high"] == pytest.approx(6 * 4.29 * 730)  # 6.0 → 6
    with pytest.raises(UserError, match="capacity_tok_s must be a positive"):
        monthly.monthly_spend(t, monthly.Fleet(0.0, 4.29))
    assert math.isclose(m["utilisation_at_peak"], 2000 / 2500)


def test_quantization_memory_is_arithmetic_and_speed_is_labelled_modelled():
    from labkit.cost import quantization as q

    assert q.kv_bytes_per_token(32, 8, 128, "bf16") == 128 * 1024  # Llama-3.1-8B: 128 KiB
    assert q.weight_bytes(8e9, "fp8") == 8e9 and q.weight_bytes(8e9, "bf16") == 16e9
    # 80 GiB × 0.9, minus 16 GB of bf16 weights, over 128 KiB per token
    assert q.kv_tokens_that_fit(80, 8e9, "bf16", 32, 8, 128) == \
        int((80 * 2**30 * 0.9 - 16e9) // (128 * 1024))
    m = q.modelled_capacity(1000.0, "fp8")
    assert m["kind"] == "modelled" and m["tok_s"] == pytest.approx(1390.0) and "H100" in m["source"]
    with pytest.raises(UserError, match="known: bf16"):
        q.weight_bytes(1, "fp6")


def test_cost_cli_prints_the_formulas_results(capsys):
    from labkit import cli

    assert cli.main(["cost", "per-token", "--price", "6.88", "--tok-s", "2000"]) == 0
    assert "$0.9556 per 1M output tokens" in capsys.readouterr().out
    assert cli.main(["cost", "spot", "--checkpoint-min", "5", "--mtbf-h", "24"]) == 0
    assert "Young 120.0 min, Daly 116.7 min" in capsys.readouterr().out
    assert cli.main(["cost", "monthly", "--requests-per-day", "864000", "--output-tokens",
                     "100", "--capacity", "500", "--price", "4.29", "--headroom", "0.25"]) == 0
    assert "5 replica(s)" in capsys.readouterr().out
    assert cli.main(["cost", "prices", "--gpu", "H200"]) == 0
    out = capsys.readouterr().out
    assert "p5en.48xlarge" in out and "1x_H200" in out and "p5.48xlarge" not in out
    assert cli.main(["cost", "per-token", "--price", "6.88", "--tok-s", "0"]) == 2
