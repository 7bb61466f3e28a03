"""Tiny worker functions to try the launcher with (workers must live in a module).

    from labkit.collectives.launch import launch
    launch("labkit.collectives.examples:hello", nproc=2)
"""

from __future__ import annotations


def hello() -> dict:
    """Every rank contributes its rank number; all_reduce sums them on every rank."""
    import torch
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    x = torch.tensor([float(rank)], device=device)
    dist.all_reduce(x)
    print(f"hello from rank {rank} of {world}; sum of ranks = {x.item():g}")
    return {"rank": rank, "world_size": world, "sum_of_ranks": x.item()}
