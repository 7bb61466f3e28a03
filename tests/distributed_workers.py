"""Worker functions for the launcher tests (ranks import them by name: they need a module)."""

import os
import subprocess
import sys
import time
from pathlib import Path


def fail_on_rank(bad_rank: int):
    import torch
    import torch.distributed as dist

    if dist.get_rank() == bad_rank:
        raise ValueError(f"deliberate failure on rank {bad_rank}")
    dist.all_reduce(torch.ones(1))  # the others wait here for the failed rank, forever
    return "unreachable"


def hang_on_rank(hang_rank: int, pid_dir: str):
    """Records its pid and a child's pid; `hang_rank` hangs, the others return at once.

    Launched without a process group (no torch import: starts in a blink). The child left
    behind by the rank that returned must die too: it is in that rank's process group.
    """
    rank = int(os.environ["RANK"])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(pid_dir, f"{rank}.pids").write_text(f"{os.getpid()} {child.pid}")
    if rank == hang_rank:
        time.sleep(600)
    return rank


def listening_sockets():
    """Run a collective, then report this rank's listening TCP sockets and its backend."""
    import psutil
    import torch
    import torch.distributed as dist

    x = torch.ones(1000)
    dist.all_reduce(x)
    dist.barrier()
    conns = psutil.Process().net_connections(kind="inet")
    listening = [[c.laddr.ip, c.laddr.port] for c in conns if c.status == psutil.CONN_LISTEN]
    dist.barrier()  # nobody closes sockets before everyone looked
    print(f"rank {dist.get_rank()} listens on {len(listening)} socket(s)")
    return {"listening": listening, "sum": x[0].item(), "env_rank": os.environ["RANK"]}


def corrupt_and_count(nbytes: int):
    """Per op: wrong elements after a clean run, and after corrupting one element on rank 0."""
    import torch
    import torch.distributed as dist

    from labkit.collectives.busbw import OPS, counts_for_size
    from labkit.collectives.benchmark import make_case

    out = {}
    for op in OPS:
        counts = counts_for_size(op, nbytes, 4, dist.get_world_size())
        case = make_case(op, counts, torch.float32, "cpu", "sum")
        case.fill()
        case.run()
        clean = case.count_wrong()
        if dist.get_rank() == 0:
            case.recv[-1] += 1
        out[op] = [clean, case.count_wrong()]
    return out
