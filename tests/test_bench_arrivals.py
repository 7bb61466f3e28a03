"""Arrival schedules: the right rate, the right burstiness, reproducible, no drift built in."""

import math

import numpy as np
import pytest

from labkit.bench.arrivals import describe, gaps, schedule


def test_poisson_duration_mode_has_the_target_mean_rate_and_exponential_gaps():
    t = schedule(rate=50, duration=200, kind="poisson", seed=1)
    # Count over 200 s at 50/s: 10,000 expected, sd 100 → 3 sd is 3 %.
    assert abs(len(t) / 200 - 50) / 50 < 0.03
    g = np.diff(t)
    assert abs(g.mean() - 1 / 50) / (1 / 50) < 0.03
    assert abs(g.std() / g.mean() - 1.0) < 0.05  # exponential gaps: CV = 1
    assert t[0] == 0 and np.all(g >= 0) and t[-1] < 200


@pytest.mark.parametrize("burstiness", [0.25, 4.0])
def test_gamma_gaps_have_cv_one_over_sqrt_g_and_the_same_mean(burstiness):
    g = gaps(200_000, rate=10, kind="gamma", burstiness=burstiness,
             rng=np.random.default_rng(2))
    assert abs(g.mean() - 0.1) / 0.1 < 0.02
    assert abs(g.std() / g.mean() - 1 / math.sqrt(burstiness)) < 0.05


def test_gamma_with_g_1_is_poisson_and_constant_is_exact():
    a = schedule(rate=5, num_requests=50, kind="gamma", burstiness=1.0, seed=3)
    b = schedule(rate=5, num_requests=50, kind="poisson", seed=3)
    assert np.array_equal(a, b)
    c = schedule(rate=4, num_requests=9, kind="constant")
    assert np.allclose(c, np.arange(9) * 0.25)


def test_num_requests_mode_hits_the_target_rate_exactly_but_keeps_random_gaps():
    t = schedule(rate=20, num_requests=100, kind="poisson", seed=4)
    assert len(t) == 100
    assert (len(t) - 1) / (t[-1] - t[0]) == pytest.approx(20, rel=1e-9)
    g = np.diff(t)
    assert g.std() / g.mean() > 0.6  # still Poisson-like, not stretched to constant


def test_warmup_requests_are_extra_and_measured_count_is_exact():
    t = schedule(rate=10, num_requests=40, warmup=3, seed=5)
    measured = t[t >= 3]
    assert len(measured) == 40
    assert len(t) > 40  # ~30 warmup arrivals were added in front
    assert (len(measured) - 1) / (measured[-1] - measured[0]) == pytest.approx(10)


def test_inf_rate_sends_everything_at_zero_and_rejects_warmup_or_duration_only():
    assert np.array_equal(schedule(math.inf, num_requests=7), np.zeros(7))
    with pytest.raises(ValueError):
        schedule(math.inf, num_requests=7, warmup=1)
    with pytest.raises(ValueError):
        schedule(math.inf, duration=5)


def test_same_seed_same_schedule_different_seed_different():
    a = schedule(rate=3, num_requests=20, seed=7)
    assert np.array_equal(a, schedule(rate=3, num_requests=20, seed=7))
    assert not np.array_equal(a, schedule(rate=3, num_requests=20, seed=8))


def test_both_limits_stop_at_whichever_comes_first():
    t = schedule(rate=10, num_requests=1000, duration=5, seed=0)
    assert t[-1] < 5 and 20 < len(t) < 100


def test_bad_inputs_raise_and_describe_names_the_process():
    with pytest.raises(ValueError):
        gaps(3, rate=-1)
    with pytest.raises(ValueError):
        gaps(3, rate=1, kind="uniform")
    assert "CV=2.00" in describe(1, "gamma", 0.25)
    assert "poisson" in describe(1, "gamma", 1.0)
