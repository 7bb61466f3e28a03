"""Alpha-beta fit recovers known parameters; ring/tree predictions follow the formulas."""

import math

import matplotlib
import numpy as np
import pytest

from labkit.collectives.alpha_beta import (NDR_400G, NVLINK_H100, crossover_bytes,
                                           fit_alpha_beta, fit_rows, link_from_allreduce_fit,
                                           plot_fit, predict_ring_vs_tree,
                                           ring_allreduce_time, tree_allreduce_time)

matplotlib.use("Agg")

SIZES = np.geomspace(1 << 10, 1 << 26, 17)


@pytest.mark.parametrize("alpha,gbps", [(50e-6, 2.0), (5e-6, 300.0), (1e-3, 0.1)])
def test_fit_recovers_alpha_and_beta_from_noisy_data(alpha, gbps):
    rng = np.random.default_rng(1)
    beta = 1 / (gbps * 1e9)
    t = (alpha + beta * SIZES) * (1 + 0.03 * rng.standard_normal(SIZES.size))
    fit = fit_alpha_beta(SIZES, t)
    assert fit.alpha_s == pytest.approx(alpha, rel=0.1)
    assert fit.beta_s_per_byte == pytest.approx(beta, rel=0.05)
    assert fit.bandwidth_GBps == pytest.approx(gbps, rel=0.05)


def test_fit_shrugs_off_outliers_that_break_plain_least_squares():
    alpha, beta = 100e-6, 1 / 1e9
    t = alpha + beta * SIZES
    t[[2, 5, 15]] *= [8.0, 5.0, 3.0]  # a noisy neighbour hit three points
    fit = fit_alpha_beta(SIZES, t)
    assert fit.alpha_s == pytest.approx(alpha, rel=0.05)
    assert fit.beta_s_per_byte == pytest.approx(beta, rel=0.05)
    (b, a) = np.polyfit(SIZES, t, 1)  # plain least squares, for contrast
    assert abs(b - beta) / beta > 0.2 or abs(a - alpha) / alpha > 0.2


def test_fit_rows_uses_the_algbw_bytes_of_each_op():
    alpha, beta = 30e-6, 1 / 5e9
    rows = []
    for s in SIZES:
        t = alpha + beta * s
        rows.append({"op": "all_gather", "supported": True, "time_us_mean": t * 1e6,
                     "algbw_GBps": s / t / 1e9})
    rows.append({"op": "all_to_all", "supported": False})
    fits = fit_rows(rows)
    assert set(fits) == {"all_gather"}
    assert fits["all_gather"].alpha_s == pytest.approx(alpha, rel=1e-6)
    assert fits["all_gather"].bandwidth_GBps == pytest.approx(5.0, rel=1e-6)


def test_plot_fit_draws_points_and_line():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    fit = fit_alpha_beta(SIZES, 1e-5 + SIZES / 1e9)
    plot_fit(ax, SIZES, 1e-5 + SIZES / 1e9, fit, label="all_reduce")
    assert len(ax.lines) == 2 and ax.get_xscale() == "log"
    plt.close(fig)


def test_ring_and_tree_formulas():
    a, b, n = 2e-6, 1 / 50e9, 1 << 26
    for p in (8, 64, 1024):
        assert ring_allreduce_time(n, p, a, b) == pytest.approx(
            2 * (p - 1) * a + 2 * (p - 1) / p * n * b)
        assert tree_allreduce_time(n, p, a, b) == pytest.approx(2 * math.log2(p) * a + 2 * n * b)
        # at the crossover size both algorithms take the same time
        x = crossover_bytes(p, a, b)
        assert ring_allreduce_time(x, p, a, b) == pytest.approx(tree_allreduce_time(x, p, a, b))


def test_link_params_from_a_measured_ring_fit_round_trip():
    a, b, p = 3e-6, 1 / 40e9, 4
    fit = fit_alpha_beta(SIZES, ring_allreduce_time(SIZES, p, a, b))
    la, lb = link_from_allreduce_fit(fit, p)
    assert la == pytest.approx(a, rel=1e-6) and lb == pytest.approx(b, rel=1e-6)


def test_worked_example_nvlink_and_ndr():
    rows = predict_ring_vs_tree(1 << 30, NVLINK_H100.with_alpha(3e-6), NDR_400G.with_alpha(8e-6))
    assert [r["gpus"] for r in rows] == [8, 16, 32, 64, 128, 256, 512, 1024]
    one_node, big = rows[0], rows[-1]
    assert one_node["link"].startswith("NVLink") and big["link"].startswith("InfiniBand")
    # 1 GiB on 8 GPUs over NVLink: bandwidth term 2*7/8 * 2^30 / 450e9 dominates
    assert one_node["ring_s"] == pytest.approx(14 * 3e-6 + 1.75 * (1 << 30) / 450e9)
    assert one_node["faster"] == "ring"  # large message, few ranks: ring wins
    assert big["faster"] == "tree"  # 1024 ranks: 2046 latency steps make ring lose
    small = predict_ring_vs_tree(4096, NVLINK_H100.with_alpha(3e-6), NDR_400G.with_alpha(8e-6))
    assert all(r["faster"] == "tree" for r in small)
    with pytest.raises(ValueError, match="give a latency"):
        predict_ring_vs_tree(1 << 20, NVLINK_H100, NDR_400G)
