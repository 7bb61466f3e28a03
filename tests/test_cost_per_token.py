"""labkit.cost.per_token: the $/1M-token formula, savings, and the sentence that states them."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labkit.cost.per_token import (P5_PER_GPU_HOUR, cheapest, cost_per_million_tokens,
                                   cost_sentence, saving_percent)


def test_one_h100_at_the_p5_price():
    # FIELD_NOTES: p5.48xlarge $55.04/h for 8 GPUs; 2,000 tok/s on one GPU.
    assert P5_PER_GPU_HOUR == pytest.approx(6.88)
    assert cost_per_million_tokens(6.88, 2000) == pytest.approx(6.88 / 7.2e6 * 1e6)
    assert cost_per_million_tokens(6.88, 2000) == pytest.approx(0.9556, abs=1e-4)


@given(price=st.floats(0.01, 100), tok=st.floats(0.1, 1e5), gpus=st.integers(1, 16))
def test_cost_scales_with_gpus_and_inversely_with_throughput(price, tok, gpus):
    one = cost_per_million_tokens(price, tok, 1)
    assert cost_per_million_tokens(price, tok, gpus) == pytest.approx(one * gpus)
    assert cost_per_million_tokens(price, tok * 2, 1) == pytest.approx(one / 2)
    # a million tokens at tok/s take 1e6/tok seconds of price*gpus/3600 $/s
    assert cost_per_million_tokens(price, tok, gpus) == pytest.approx(
        1e6 / tok * price * gpus / 3600)


@pytest.mark.parametrize("tok", [0, -5, math.inf, math.nan, None])
def test_no_throughput_has_no_cost_per_token(tok):
    with pytest.raises(ValueError, match="output_tok_per_s"):
        cost_per_million_tokens(6.88, tok)


def test_bad_price_or_gpu_count_is_refused():
    with pytest.raises(ValueError):
        cost_per_million_tokens(-1, 100)
    with pytest.raises(ValueError):
        cost_per_million_tokens(1, 100, gpus=0)


def test_saving_is_relative_to_the_baseline_and_signed():
    assert saving_percent(2.0, 1.2) == pytest.approx(40.0)
    assert saving_percent(2.0, 2.5) == pytest.approx(-25.0)
    # same price: the saving is the throughput ratio in disguise
    a, b = cost_per_million_tokens(6.88, 100), cost_per_million_tokens(6.88, 160)
    assert saving_percent(a, b) == pytest.approx((1 - 100 / 160) * 100)
    with pytest.raises(ValueError):
        saving_percent(0, 1)


def test_sentence_states_the_computed_saving():
    costs = {"vllm": cost_per_million_tokens(6.88, 100),
             "mini prefix_cache=radix": cost_per_million_tokens(6.88, 130),
             "mini prefix_cache=none": cost_per_million_tokens(6.88, 70)}
    best = cheapest(costs)
    assert best == "mini prefix_cache=radix"
    text = cost_sentence("tiny-llama", "shared-prefix", best, "vllm", costs)
    x = (1 - 100 / 130) * 100
    assert f"cuts cost per 1M output tokens by {x:.0f}% vs vllm" in text
    assert text.startswith("for this model (tiny-llama) and workload (shared-prefix), "
                           "mini prefix_cache=radix")


def test_sentence_when_the_baseline_wins_or_is_missing():
    costs = {"vllm": 1.0, "mini": 1.5}
    text = cost_sentence("m", "random", "vllm", "vllm", costs)
    assert "no config beats the baseline vllm" in text and "costs 50% more" in text
    text = cost_sentence("m", "random", "mini", "sglang", {"mini": 1.5})
    assert "the baseline sglang met the SLO at no tested load" in text
    assert "only vllm met the SLO" in cost_sentence("m", "random", "vllm", "vllm", {"vllm": 1})
