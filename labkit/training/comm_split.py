"""How much of a DDP step is gradient communication, and how much is compute?

DDP hides most of the all_reduce: it groups gradients into buckets (`bucket_cap_mb`) and
starts each bucket's all_reduce while backward is still computing earlier layers. So
"time in communication" is not directly visible in a step. We measure three things on the
same batch, each `iters` times, and report medians of the slowest rank:

  compute_s        forward + backward inside `ddp.no_sync()`: DDP skips the all_reduce,
                   so this is pure compute (what one rank alone would spend)
  synced_s         forward + backward as in training: compute + every bucket's all_reduce
  exposed_comm_s   synced_s - compute_s: the communication time that was NOT hidden behind
                   backward, i.e. what scaling actually pays per step
  allreduce_s      one bare dist.all_reduce of a flat buffer as large as all gradients:
                   what the communication would cost with no overlap at all; its algbw and
                   busbw use nccl-tests' definitions (busbw = algbw x 2(n-1)/n)

On a CPU box the ranks' gloo threads compete with compute for the same cores, so overlap
is poor and exposed_comm_s can exceed allreduce_s; on GPUs (NCCL on its own streams) it is
usually much smaller. exposed_comm_s is a difference of two noisy timings: on a busy shared
machine it can come out as 0 (clipped) or swing from run to run - compare it with
allreduce_s, which is measured directly, and with the machine's load average. The probe changes no weights: gradients are zeroed afterwards and no
optimizer step is taken, and it draws no random numbers (the fault drill stays exact).
"""

from __future__ import annotations

import statistics
import time


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)  # GPU work is asynchronous: wait before reading clocks


def measure_comm_split(ddp, loss_fn, x, y, iters: int = 5) -> dict:
    """Collective (every rank calls it). `loss_fn(model, x, y)` returns a scalar loss."""
    import torch
    import torch.distributed as dist

    device = next(ddp.parameters()).device
    world = dist.get_world_size()

    def fwd_bwd(no_sync: bool) -> float:
        dist.barrier()  # start together, or we would time another rank's lateness
        _sync(device)
        t0 = time.perf_counter()
        if no_sync:
            with ddp.no_sync():
                loss_fn(ddp, x, y).backward()
        else:
            loss_fn(ddp, x, y).backward()
        _sync(device)
        dt = time.perf_counter() - t0
        ddp.zero_grad(set_to_none=True)
        return dt

    fwd_bwd(True)  # warm-up: first calls allocate buffers
    fwd_bwd(False)
    compute, synced = [], []
    for _ in range(iters):  # interleaved: a slow spell on a shared machine hits both alike
        compute.append(fwd_bwd(True))
        synced.append(fwd_bwd(False))

    n = sum(p.numel() for p in ddp.parameters() if p.requires_grad)
    flat = torch.zeros(n, dtype=torch.float32, device=device)
    times = []
    for _ in range(iters + 1):
        dist.barrier()
        _sync(device)
        t0 = time.perf_counter()
        dist.all_reduce(flat)
        _sync(device)
        times.append(time.perf_counter() - t0)
    times = times[1:]  # the first call sets up the algorithm's buffers

    mine = [statistics.median(v) for v in (compute, synced, times)]
    slowest = torch.tensor(mine, dtype=torch.float64, device=device)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)  # a step is as slow as its slowest rank
    compute_s, synced_s, allreduce_s = slowest.tolist()
    nbytes = n * 4
    algbw = nbytes / allreduce_s / 1e9 if allreduce_s > 0 else 0.0
    return {
        "iters": iters,
        "grad_bytes": nbytes,
        "compute_s": compute_s,
        "synced_s": synced_s,
        "exposed_comm_s": max(0.0, synced_s - compute_s),
        "exposed_comm_share": max(0.0, synced_s - compute_s) / synced_s if synced_s else 0.0,
        "allreduce_s": allreduce_s,
        "allreduce_algbw_gbps": algbw,
        "allreduce_busbw_gbps": algbw * 2 * (world - 1) / world,
    }
