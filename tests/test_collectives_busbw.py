"""algbw/busbw must equal nccl-tests' definitions (doc/PERFORMANCE.md, src/*.cu getBw)."""

from fractions import Fraction

import pytest

from labkit.collectives.busbw import (OPS, algbw_bytes, bandwidths, busbw_factor,
                                      counts_for_size)

# nccl-tests' tables, transcribed independently: op -> (S in units of count*size, factor)
NCCL_TESTS = {
    "all_reduce": (lambda n: 1, lambda n: Fraction(2 * (n - 1), n)),
    "reduce_scatter": (lambda n: n, lambda n: Fraction(n - 1, n)),
    "all_gather": (lambda n: n, lambda n: Fraction(n - 1, n)),
    "all_to_all": (lambda n: n, lambda n: Fraction(n - 1, n)),
    "broadcast": (lambda n: 1, lambda n: Fraction(1)),
    "sendrecv": (lambda n: 1, lambda n: Fraction(1)),
}


def test_every_op_is_covered():
    assert set(OPS) == set(NCCL_TESTS)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("n", range(2, 9))
def test_factor_and_bytes_match_nccl_tests(op, n):
    s_mult, factor = NCCL_TESTS[op]
    assert busbw_factor(op, n) == pytest.approx(float(factor(n)), rel=1e-15)
    count, elem, seconds = 12345, 2, 0.0037
    assert algbw_bytes(op, count, elem, n) == count * elem * s_mult(n)
    algbw, busbw = bandwidths(op, count, elem, n, seconds)
    assert algbw == pytest.approx(count * elem * s_mult(n) / seconds / 1e9, rel=1e-12)
    assert busbw == pytest.approx(algbw * float(factor(n)), rel=1e-12)


def test_worked_example_8_rank_all_reduce():
    # 1 GiB all_reduce in 10 ms on 8 ranks: algbw 107.37 GB/s, busbw x 14/8 = 187.90 GB/s
    algbw, busbw = bandwidths("all_reduce", 1 << 28, 4, 8, 0.010)
    assert round(algbw, 2) == 107.37 and round(busbw, 2) == 187.90


def test_busbw_of_a_perfect_ring_equals_the_link_bandwidth():
    # Why busbw exists: a ring all_reduce moves 2(n-1)/n * S over each link; if each link does
    # 100 GB/s, the ideal time is that over 100e9, and busbw must come out as 100 whatever n.
    for n in range(2, 9):
        S = 1 << 30
        t = 2 * (n - 1) / n * S / 100e9
        assert bandwidths("all_reduce", S // 4, 4, n, t)[1] == pytest.approx(100.0)


@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_counts_follow_nccl_tests_size_convention(n):
    size, elem = 1 << 20, 4
    ag = counts_for_size("all_gather", size, elem, n)
    assert (ag.param, ag.recv, ag.send) == (size // elem // n, size // elem // n * n,
                                            size // elem // n)
    rs = counts_for_size("reduce_scatter", size, elem, n)
    assert (rs.param, rs.send, rs.recv) == (size // elem // n, size // elem // n * n,
                                            size // elem // n)
    a2a = counts_for_size("all_to_all", size, elem, n)
    assert a2a.send == a2a.recv == a2a.param * n
    ar = counts_for_size("all_reduce", size, elem, n)
    assert ar.param == ar.send == ar.recv == size // elem


def test_unknown_op_is_refused():
    with pytest.raises(ValueError, match="unknown op"):
        busbw_factor("allreduce", 4)
