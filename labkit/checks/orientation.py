"""Checks for lab 00: counting FLOPs and bytes, the two axes of a roofline."""

from __future__ import annotations

import random

from labkit.checks import check_cases


def _flops(m: int, n: int, k: int) -> int:
    return 2 * m * n * k  # each of the m·n outputs needs k multiplies and k adds


def _intensity(m: int, n: int, k: int, bytes_per_element: int) -> float:
    # Minimum traffic: read A (m×k) and B (k×n) once, write C (m×n) once.
    return _flops(m, n, k) / ((m * k + k * n + m * n) * bytes_per_element)


def _cases(seed: int = 0):
    rng = random.Random(seed)
    edge = [(1, 1, 1), (1, 4096, 4096), (4096, 4096, 4096), (8, 1, 8192)]
    rand = [(rng.randint(1, 5000), rng.randint(1, 5000), rng.randint(1, 5000)) for _ in range(20)]
    return edge + rand


def check_matmul_flops(fn) -> int:
    return check_cases("matmul_flops", fn, _flops, _cases())


def check_arithmetic_intensity(fn) -> int:
    cases = [c + (b,) for c in _cases(1) for b in (2, 4)]
    return check_cases("arithmetic_intensity", fn, _intensity, cases, rel=1e-9)
