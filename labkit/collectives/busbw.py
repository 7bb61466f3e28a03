"""algbw and busbw exactly as nccl-tests defines them (nccl-tests doc/PERFORMANCE.md).

Why two bandwidths? `algbw = S / t` is what the *application* sees: bytes of the operation
divided by time. But S means different things per op, and an all_reduce on 8 GPUs moves
almost twice its size over each link, so algbw cannot be compared with a link's speed, or
across ops and rank counts. `busbw = algbw * factor` rescales by how much each rank must
send at least, with the best algorithm: it is comparable to the hardware's peak link bandwidth
and roughly constant as ranks are added. For n ranks:

| op             | S (bytes)                         | factor     |
|----------------|-----------------------------------|------------|
| all_reduce     | count * dtype size                | 2(n-1)/n   |
| reduce_scatter | count * dtype size * n (input)    | (n-1)/n    |
| all_gather     | count * dtype size * n (output)   | (n-1)/n    |
| all_to_all     | count * dtype size * n            | (n-1)/n    |
| broadcast      | count * dtype size                | 1          |
| sendrecv       | count * dtype size                | 1          |

"count" is nccl-tests' per-rank parameter count (the `count` column of its table): the
elements each rank *receives* in reduce_scatter, *sends* in all_gather, and per peer in
all_to_all. GB here is 1e9 bytes, as in nccl-tests.
"""

from __future__ import annotations

from dataclasses import dataclass

OPS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "all_to_all", "sendrecv")


def busbw_factor(op: str, nranks: int) -> float:
    """busbw / algbw for `op` on `nranks` ranks."""
    n = nranks
    if op == "all_reduce":
        # reduce-scatter then all-gather: each rank sends (n-1)/n of the data twice
        return 2 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter", "all_to_all"):
        # each rank must receive the n-1 chunks it does not own
        return (n - 1) / n
    if op in ("broadcast", "sendrecv", "reduce"):
        # the full buffer crosses at least one link once
        return 1.0
    raise ValueError(f"unknown op {op!r}; known: {', '.join(OPS)}")


@dataclass(frozen=True)
class Counts:
    """Element counts for one nccl-tests row (getCollByteCount in nccl-tests)."""

    send: int  # elements in each rank's send buffer
    recv: int  # elements in each rank's receive buffer
    param: int  # the `count` column: what is passed to the NCCL call


def counts_for_size(op: str, nbytes: int, elem_size: int, nranks: int) -> Counts:
    """Turn a requested size (`-b`/`-e` of nccl-tests) into buffer element counts.

    As in nccl-tests, the size is the larger buffer: the whole output of all_gather, the
    whole input of reduce_scatter and all_to_all, the buffer of the others.
    """
    count, n = nbytes // elem_size, nranks
    if op == "all_gather":
        per_rank = count // n
        return Counts(send=per_rank, recv=per_rank * n, param=per_rank)
    if op == "reduce_scatter":
        per_rank = count // n
        return Counts(send=per_rank * n, recv=per_rank, param=per_rank)
    if op == "all_to_all":
        per_peer = count // n
        return Counts(send=per_peer * n, recv=per_peer * n, param=per_peer)
    if op in ("all_reduce", "broadcast", "sendrecv", "reduce"):
        return Counts(send=count, recv=count, param=count)
    raise ValueError(f"unknown op {op!r}; known: {', '.join(OPS)}")


def algbw_bytes(op: str, param_count: int, elem_size: int, nranks: int) -> int:
    """S, the bytes that algbw divides by time (see the table in the module docstring)."""
    if op in ("all_gather", "reduce_scatter", "all_to_all"):
        return param_count * elem_size * nranks
    busbw_factor(op, nranks)  # validates op
    return param_count * elem_size


def bandwidths(
    op: str, param_count: int, elem_size: int, nranks: int, seconds: float
) -> tuple[float, float]:
    """(algbw, busbw) in GB/s (1e9 bytes per second) for one timed operation."""
    algbw = algbw_bytes(op, param_count, elem_size, nranks) / seconds / 1e9
    return algbw, algbw * busbw_factor(op, nranks)
