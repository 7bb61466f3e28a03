"""An nccl-tests-style benchmark of torch.distributed collectives (gloo on CPU, nccl on GPU).

    from labkit.collectives.benchmark import run_collectives
    from labkit.collectives.table import format_table, size_sweep
    report = run_collectives(backend="gloo", nproc=2, sizes=size_sweep(1024, 1 << 20))
    print(format_table(report))

How one row is measured (same recipe as nccl-tests, see busbw.py for the bandwidths):
1. allocate the buffers for (op, size), fill them with zeros (an in-place SUM repeated 20 times
   would otherwise overflow to inf), run `warmup` untimed iterations;
2. barrier, then run `iters` iterations back to back, timestamping after each (CUDA events on
   GPU, so we time the GPU work and not the kernel launch);
3. after the loop, one all_gather collects every rank's per-iteration times. The slowest
   rank (largest mean) sets the row: its mean is exactly nccl-tests' `time` (each rank's
   average, then the max over ranks) and feeds algbw and busbw; its fastest and slowest
   iterations are the min and max columns.
   Why not average the per-iteration maximum over ranks instead? Ranks get descheduled at
   different moments, so per-iteration maxima overstate the time: by 0.5-8 % at 1-16 MiB
   on the shared 2-core dev box (benchmarks/README.md). That is bias, not precision.
4. with check=True, refill the inputs with known small integers (exact in every dtype,
   bf16 included), run the op once more and count wrong elements on all ranks (#wrong).
An op the backend refuses (it raises for this dtype/op) becomes an "unsupported" row with the
backend's own message, instead of crashing the run.
"""

from __future__ import annotations

import platform
import time

from labkit.collectives.busbw import OPS, bandwidths, counts_for_size
from labkit.collectives.launch import default_backend, launch
from labkit.errors import UserError

REDOPS = ("sum", "max", "min")
REDUCING = ("all_reduce", "reduce_scatter")


def _known_values(rank, index, torch):
    """Rank- and position-dependent small integers 1..11: any misplaced chunk shows up."""
    return ((rank * 5 + index) % 11 + 1).to(torch.float64)


def make_case(op: str, counts, dtype, device, redop: str):
    """Buffers (send, recv) and closures for one (op, size): run once, fill, count wrong."""
    from types import SimpleNamespace

    import torch
    import torch.distributed as dist

    rank, n = dist.get_rank(), dist.get_world_size()
    red = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[redop]
    send = torch.zeros(counts.send, dtype=dtype, device=device)
    # all_reduce and broadcast are in place in torch.distributed: one buffer serves both roles
    recv = send if op in ("all_reduce", "broadcast") else torch.zeros(
        counts.recv, dtype=dtype, device=device)
    pc = counts.param
    # the newer *_single names replace *_tensor (deprecated in torch 2.13); keep older torches
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    rscatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor

    def run():
        if op == "all_reduce":
            dist.all_reduce(send, op=red)
        elif op == "broadcast":
            dist.broadcast(send, src=0)
        elif op == "all_gather":
            gather(recv, send)
        elif op == "reduce_scatter":
            rscatter(recv, send, op=red)
        elif op == "all_to_all":
            dist.all_to_all_single(recv, send)
        elif op == "sendrecv":  # ring neighbours, both directions at once (as nccl-tests)
            ops = [dist.P2POp(dist.isend, send, (rank + 1) % n),
                   dist.P2POp(dist.irecv, recv, (rank - 1) % n)]
            for req in dist.batch_isend_irecv(ops):
                req.wait()
        else:
            raise ValueError(f"unknown op {op!r}")

    def value(r, index):
        return _known_values(r, index.to(torch.float64), torch)

    def expected():
        idx = torch.arange(counts.recv, device=device)
        if op == "all_reduce":
            stacked = torch.stack([value(r, idx) for r in range(n)])
            return {"sum": stacked.sum(0), "max": stacked.amax(0), "min": stacked.amin(0)}[redop]
        if op == "broadcast":
            return value(0, idx)
        if op == "sendrecv":
            return value((rank - 1) % n, idx)
        if op == "all_gather":
            return torch.cat([value(r, idx[:pc]) for r in range(n)])
        if op == "all_to_all":  # chunk r of my output is chunk `rank` of rank r's input
            return torch.cat([value(r, rank * pc + idx[:pc]) for r in range(n)])
        stacked = torch.stack([value(r, rank * pc + idx) for r in range(n)])  # reduce_scatter
        return {"sum": stacked.sum(0), "max": stacked.amax(0), "min": stacked.amin(0)}[redop]

    def fill():
        send.copy_(value(rank, torch.arange(counts.send, device=device)).to(dtype))

    def count_wrong() -> int:
        want = expected().to(dtype).to(torch.float64)  # rounded the way the dtype would round
        got = recv.to(torch.float64)
        tol = torch.finfo(dtype).eps * want.abs() * n if dtype.is_floating_point else 0
        return int(((got - want).abs() > tol).sum())

    return SimpleNamespace(run=run, fill=fill, count_wrong=count_wrong, send=send, recv=recv)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_iterations(run, iters: int, device: str) -> list[float]:
    """Seconds per iteration, this rank only; the loop does nothing but run and timestamp."""
    if device.startswith("cuda"):
        import torch

        events = [torch.cuda.Event(enable_timing=True) for _ in range(iters + 1)]
        events[0].record()
        for i in range(iters):
            run()
            events[i + 1].record()
        torch.cuda.synchronize()
        return [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(iters)]
    stamps = [0.0] * (iters + 1)
    stamps[0] = time.perf_counter()
    for i in range(iters):
        run()
        stamps[i + 1] = time.perf_counter()
    return [b - a for a, b in zip(stamps, stamps[1:])]


def gather_times(per_iter_s: list[float], device: str) -> list[list[float]]:
    """Every rank's per-iteration seconds (ranks x iters), in one all_gather after the loop."""
    import torch
    import torch.distributed as dist

    local = torch.tensor(per_iter_s, dtype=torch.float64, device=device)
    everyone = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, local)
    return [t.tolist() for t in everyone]


def bench_one(op, nbytes, dtype, device, redop="sum", iters=20, warmup=5, check=True,
              keep_samples=False):
    """One table row: time `op` on a buffer of `nbytes` (nccl-tests' size) on every rank.

    keep_samples=True adds row["samples_s"]: every rank's per-iteration seconds (ranks x
    iters), to look at jitter and skew between ranks.
    """
    import torch
    import torch.distributed as dist

    n, elem = dist.get_world_size(), torch.empty(0, dtype=dtype).element_size()
    counts = counts_for_size(op, nbytes, elem, n)
    row = dict(op=op, size_bytes=max(counts.send, counts.recv) * elem, count=counts.param,
               dtype=str(dtype).removeprefix("torch."), redop=redop if op in REDUCING else "none",
               root=0 if op == "broadcast" else -1, nranks=n, iters=iters, warmup=warmup)
    case = make_case(op, counts, dtype, device, redop)
    for _ in range(warmup):
        case.run()
    _sync(device)
    dist.barrier()  # everyone starts the timed loop together
    samples = gather_times(time_iterations(case.run, iters, device), device)
    means = [sum(t) / len(t) for t in samples]  # == (last stamp - first stamp) / iters
    slowest = max(range(n), key=means.__getitem__)
    mean, times = means[slowest], samples[slowest]
    if keep_samples:
        row["samples_s"] = samples
    algbw, busbw = bandwidths(op, counts.param, elem, n, mean)
    row.update(time_us_mean=mean * 1e6, time_us_min=min(times) * 1e6,
               time_us_max=max(times) * 1e6, algbw_GBps=algbw, busbw_GBps=busbw,
               supported=True, reason=None, wrong=None, correct=None)
    if check:
        case.fill()
        case.run()
        _sync(device)
        wrong = torch.tensor([case.count_wrong()], device=device)
        dist.all_reduce(wrong)  # #wrong counts elements on all ranks, as nccl-tests does
        row.update(wrong=int(wrong.item()), correct=int(wrong.item()) == 0)
    return row


def probe(op: str, dtype, device: str, redop: str) -> str | None:
    """None if the backend runs `op` for this dtype, else its error message.

    Backends refuse unsupported ops/dtypes locally, before talking to peers, so every rank
    reaches the same verdict and nobody is left waiting in a collective.
    """
    import torch
    import torch.distributed as dist

    n = dist.get_world_size()
    elem = torch.empty(0, dtype=dtype).element_size()
    try:
        make_case(op, counts_for_size(op, n * elem, elem, n), dtype, device, redop).run()
        _sync(device)
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
    return None


def worker(ops, sizes, dtype="float32", redop="sum", iters=20, warmup=5, check=True):
    """Runs on every rank (via launch); rank 0 returns the rows, the others return None."""
    import torch
    import torch.distributed as dist

    backend = dist.get_backend()
    device = f"cuda:{torch.cuda.current_device()}" if backend == "nccl" else "cpu"
    dt = getattr(torch, dtype)
    rows = []
    for op in ops:
        reason = probe(op, dt, device, redop)
        if reason is not None:
            rows.append(dict(op=op, dtype=dtype, nranks=dist.get_world_size(), supported=False,
                             reason=f"not supported by {backend}: {reason}"))
            continue
        for nbytes in sizes:
            if counts_for_size(op, nbytes, dt.itemsize, dist.get_world_size()).param == 0:
                continue  # smaller than one element per rank
            rows.append(bench_one(op, nbytes, dt, device, redop, iters, warmup, check))
    if dist.get_rank() != 0:
        return None
    name = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor()
    return {"torch": torch.__version__, "device": name or platform.machine(), "rows": rows}


def run_collectives(backend=None, nproc=2, ops=OPS, sizes=None, dtype="float32", redop="sum",
                    iters=20, warmup=5, check=True, timeout=600, log=print) -> dict:
    """Launch `nproc` ranks, benchmark every (op, size); return a JSON-ready report."""
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise UserError(f"unknown op(s) {unknown}; choose from {', '.join(OPS)}")
    if redop not in REDOPS:
        raise UserError(f"redop must be one of {', '.join(REDOPS)}, not {redop!r}")
    if iters < 1 or warmup < 0:
        raise UserError("need iters >= 1 and warmup >= 0")
    sizes = list(sizes or [1 << 10, 1 << 20])
    backend = backend or default_backend()
    args = dict(ops=list(ops), sizes=sizes, dtype=dtype, redop=redop, iters=iters,
                warmup=warmup, check=check)
    out = launch("labkit.collectives.benchmark:worker", nproc=nproc, backend=backend,
                 args=args, timeout=timeout, log=log)[0]
    return dict(backend=backend, nranks=nproc, host=platform.node(), **args, **out)
