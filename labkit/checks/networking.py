"""Checks for lab 12: reading NCCL's 'Channel .. via ..' transport strings."""

from __future__ import annotations

from labkit.checks import check_cases

CLASSES = ("p2p", "shm", "rdma+gdr", "rdma", "tcp")


def _classify(via: str) -> str:
    # NET/IB is NCCL's verbs transport: InfiniBand *and* RoCE (the HCA's link layer, shown in
    # 'NET/IB : Using [0]mlx5_0:1/RoCE', tells them apart). GDRDMA = GPUDirect RDMA.
    if via.startswith("P2P"):
        return "p2p"
    if via.startswith("SHM"):
        return "shm"
    if via.startswith("NET/IB"):
        return "rdma+gdr" if "GDRDMA" in via else "rdma"
    if via.startswith("NET/Socket"):
        return "tcp"
    raise ValueError(f"unknown transport {via!r}")


# The forms NCCL 2.17-2.23 print (see labs/data/nccl/ and FIELD_NOTES.md).
CASES = ["P2P/CUMEM/read", "P2P/CUMEM", "P2P/IPC/read", "P2P/IPC", "P2P/direct pointer",
         "SHM/direct/direct", "NET/IB/0/GDRDMA", "NET/IB/7/GDRDMA", "NET/IB/0", "NET/IB/12",
         "NET/Socket/0", "NET/Socket/3"]


def check_classify_transport(fn) -> int:
    return check_cases("classify_transport", fn, _classify, [(via,) for via in CASES])
