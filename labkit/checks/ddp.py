"""Checks for lab 11: the bus bandwidth of DDP's gradient all_reduce, from bytes and time."""

from __future__ import annotations

import random

from labkit.checks import ExerciseFailed, check_cases
from labkit.collectives.busbw import busbw_factor


def _busbw(grad_bytes: int, seconds: float, world_size: int) -> float:
    # nccl-tests: algbw = S / t in GB/s (1e9 bytes); an all_reduce's busbw is algbw x 2(n-1)/n
    return grad_bytes / seconds / 1e9 * busbw_factor("all_reduce", world_size)


def _cases(seed: int = 0):
    rng = random.Random(seed)
    edge = [(20_980_736, 0.5, 2),   # the tiny Llama's fp32 gradients on 2 ranks
            (4, 1e-6, 2),           # one float
            (1 << 30, 0.01, 8),     # 1 GiB on 8 GPUs
            (1 << 20, 1e-3, 1),     # one rank: nothing crosses a link, busbw is 0
            (14_000_000_000, 0.3, 1024)]
    rand = [(rng.randint(1, 1 << 34), rng.uniform(1e-5, 3.0), rng.choice([2, 3, 4, 8, 64]))
            for _ in range(20)]
    return edge + rand


def check_gradient_allreduce_busbw(fn, measured: dict | None = None,
                                   world_size: int | None = None) -> str:
    """fn(grad_bytes, seconds, world_size) -> busbw in GB/s. With `measured` (the training
    run's comm_split) and its world_size, also compare with the probe's own busbw."""
    cases = _cases()
    if measured:
        cases.append((measured["grad_bytes"], measured["allreduce_s"], world_size))
    n = check_cases("allreduce_busbw", fn, _busbw, cases, rel=1e-9, abs_=1e-12)
    if not measured:
        return f"allreduce_busbw: passed {n} cases"
    mine = fn(measured["grad_bytes"], measured["allreduce_s"], world_size)
    probe = measured["allreduce_busbw_gbps"]
    if abs(mine - probe) > 1e-9 * max(1.0, abs(probe)):
        raise ExerciseFailed(f"allreduce_busbw{cases[-1]}: the probe recorded {probe!r} GB/s, "
                             f"yours gives {mine!r}")
    msg = (f"allreduce_busbw: passed {n} cases; the measured all_reduce of "
           f"{measured['grad_bytes'] / 1e6:.1f} MB in {measured['allreduce_s'] * 1e3:.1f} ms on "
           f"{world_size} ranks has busbw {mine:.4f} GB/s, as the probe recorded")
    print(msg)
    return msg
