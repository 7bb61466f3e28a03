"""labkit.cost.monthly and the per-token conventions: hand-computed expectations."""

import pytest

from labkit.cost.monthly import Fleet, Traffic, monthly_spend, sensitivity
from labkit.cost.per_token import cost_per_million
from labkit.errors import UserError


def test_monthly_spend_by_hand():
    # 864,000 req/day = 10 req/s mean; peak 3x = 30 req/s; x 100 output tokens = 3,000 tok/s;
    # x 1.2 headroom = 3,600 tok/s / 1,000 per replica = 3.6 -> 4 replicas x $6.88 x 730 h
    t = Traffic(requests_per_day=864_000, peak_to_mean=3, input_tokens=400, output_tokens=100)
    f = Fleet(capacity_tok_s=1000, price_per_hour=6.88, headroom=0.2)
    m = monthly_spend(t, f)
    assert m["mean_rps"] == pytest.approx(10)
    assert m["peak_output_tok_s"] == pytest.approx(3000)
    assert m["replicas_exact"] == pytest.approx(3.6)
    assert m["replicas"] == 4
    assert m["usd_per_month"] == pytest.approx(4 * 6.88 * 730)  # 20,089.60
    assert m["utilisation_at_peak"] == pytest.approx(0.75)
    out_month = 864_000 * 365 / 12 * 100
    assert m["usd_per_1m_output_tokens_served"] == pytest.approx(4 * 6.88 * 730 / out_month * 1e6)


def test_exact_fit_does_not_round_up_a_float_crumb():
    t = Traffic(requests_per_day=86_400, peak_to_mean=1, output_tokens=100)  # 100 tok/s
    m = monthly_spend(t, Fleet(capacity_tok_s=50, price_per_hour=1, headroom=0))
    assert m["replicas"] == 2


def test_sensitivity_ranks_the_inputs_that_move_the_bill():
    t = Traffic(requests_per_day=864_000, peak_to_mean=3, input_tokens=400, output_tokens=100)
    f = Fleet(capacity_tok_s=1000, price_per_hour=6.88, headroom=0.2)
    rows = sensitivity(t, f, step=0.2)
    by = {r["input"]: r for r in rows}
    # price moves the bill linearly: 4 replicas at 0.8x and 1.2x the price
    assert by["price_per_hour"]["usd_low"] == pytest.approx(4 * 6.88 * 0.8 * 730)
    assert by["price_per_hour"]["usd_high"] == pytest.approx(4 * 6.88 * 1.2 * 730)
    # capacity -20% -> 3600/800 = 4.5 -> 5 replicas; +20% -> 3600/1200 = 3 replicas
    assert by["capacity_tok_s"]["usd_low"] == pytest.approx(5 * 6.88 * 730)
    assert by["capacity_tok_s"]["usd_high"] == pytest.approx(3 * 6.88 * 730)
    swings = [r["swing_usd"] for r in rows]
    assert swings == sorted(swings, reverse=True)


@pytest.mark.parametrize("t, f", [
    (Traffic(requests_per_day=0), Fleet(1, 1)),
    (Traffic(requests_per_day=10, peak_to_mean=0.5), Fleet(1, 1)),
    (Traffic(requests_per_day=10), Fleet(0, 1)),
    (Traffic(requests_per_day=10), Fleet(1, -1)),
])
def test_bad_inputs_are_user_errors(t, f):
    with pytest.raises(UserError):
        monthly_spend(t, f)


def test_total_convention_spreads_cost_over_prompt_and_output():
    # 100 output + 900 prompt tok/s at $3.6/h: output $10 per 1M, total $1 per 1M
    assert cost_per_million(3.6, 100) == pytest.approx(10.0)
    assert cost_per_million(3.6, 100, prompt_tok_per_s=900, convention="total") == \
        pytest.approx(1.0)
    with pytest.raises(ValueError, match="convention"):
        cost_per_million(3.6, 100, convention="input")
