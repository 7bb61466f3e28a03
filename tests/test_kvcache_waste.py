"""The memory-waste study: contiguous reservation vs paged blocks."""

import pytest

from labkit.kvcache.waste import (
    fit_table,
    kv_bytes_per_token,
    plot_waste,
    sample_lengths,
    sequences_that_fit,
    waste_row,
    waste_table,
)


def test_lengths_are_seeded_skewed_and_within_the_model_limit():
    a, b = sample_lengths(500, seed=1), sample_lengths(500, seed=1)
    assert a == b and a != sample_lengths(500, seed=2)
    assert all(p >= 1 and o >= 1 and p + o <= 2048 for p, o in a)
    outs = sorted(o for _, o in a)
    assert sum(outs) / len(outs) > outs[len(outs) // 2]  # mean above median: a long right tail


def test_paged_waste_is_under_one_block_per_sequence_and_grows_with_block_size():
    lengths = sample_lengths(300, seed=0)
    previous = -1
    for b in (1, 2, 4, 8, 16, 32, 64):
        row = waste_row(lengths, "paged", b)
        assert row["wasted_tokens"] <= len(lengths) * (b - 1)
        assert row["wasted_tokens"] >= previous  # each block size divides the next
        assert row["reserved_future_tokens"] == 0
        previous = row["wasted_tokens"]
    assert waste_row(lengths, "paged", 1)["wasted_tokens"] == 0


def test_contiguous_schemes_reserve_in_the_expected_order():
    lengths = sample_lengths(300, seed=0)
    rows = {r["scheme"] + str(r["block_size"]): r for r in waste_table(lengths, block_sizes=(16,))}
    used = rows["maxNone"]["used_tokens"]
    assert rows["maxNone"]["reserved_tokens"] == 300 * 2048
    assert (
        rows["maxNone"]["reserved_tokens"]
        >= rows["pow2None"]["reserved_tokens"]
        >= rows["oracleNone"]["reserved_tokens"]
        == used
    )
    assert rows["paged16"]["reserved_tokens"] < rows["pow2None"]["reserved_tokens"]


def test_mid_generation_snapshot_splits_future_reservation_from_fragmentation():
    lengths = [(100, 100)] * 50
    row = waste_row(lengths, "oracle", at="random", seed=0)
    assert row["reserved_future_tokens"] > 0 and row["internal_fragmentation_tokens"] == 0
    assert row["wasted_tokens"] == row["reserved_future_tokens"]
    mx = waste_row(lengths, "max", at="random", seed=0, bytes_per_token=10)
    assert mx["internal_fragmentation_tokens"] == 50 * (2048 - 200)
    assert mx["wasted_bytes"] == 10 * mx["wasted_tokens"]


def test_sequences_that_fit_a_budget():
    lengths = [(10, 6)] * 10  # 16 tokens each
    assert sequences_that_fit(lengths, 64, "paged", block_size=16) == 4
    assert sequences_that_fit(lengths, 64, "paged", block_size=32) == 2
    assert sequences_that_fit(lengths, 64, "max", max_model_len=32) == 2
    assert sequences_that_fit(lengths, 1000, "oracle") == 10
    rows = fit_table(sample_lengths(500, seed=0), 50_000)
    fit = {r["scheme"]: r["sequences_fit"] for r in rows}
    assert fit["oracle"] >= fit["paged"] > fit["pow2"] > fit["max"]


def test_kv_bytes_per_token_llama3_8b():
    assert kv_bytes_per_token(32, 8, 128, 2) == 128 * 1024


def test_plot_waste_draws_one_bar_per_row():
    pytest.importorskip("matplotlib")
    rows = waste_table(sample_lengths(100, seed=0), block_sizes=(8, 16))
    ax = plot_waste(rows)
    assert len(ax.patches) == len(rows) == 5
