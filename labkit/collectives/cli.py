"""Sub-commands of step 1: `labkit collectives`, `labkit nccl-log`, `labkit topo`.

Only the standard library is imported here; torch and pynvml load inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from labkit.errors import UserError

COLLECTIVES_EPILOG = """\
What the columns mean (the same as nccl-tests, so numbers compare with published ones):
  size    bytes of the larger buffer (all_gather: whole output; reduce_scatter: whole input)
  count   elements per rank passed to the call
  time    microseconds per operation: mean over --iters on the slowest rank (a collective
          is done when its last rank is; nccl-tests averages the ranks' means by default,
          `-a 1`, and reports this max with `-a 3`); min/max: that rank's extremes
  algbw   size-of-the-operation / time, in GB/s (1e9 bytes/s)
  busbw   algbw x a per-op factor (all_reduce 2(n-1)/n, all_gather/reduce_scatter/all_to_all
          (n-1)/n, broadcast/sendrecv 1): comparable to a link's peak bandwidth
  #wrong  elements that differ from the expected result (with --check; N/A without)

examples:
  labkit collectives                                  gloo on CPU, 2 ranks, 1K..16M
  labkit collectives --ops all_reduce --min-bytes 1M --max-bytes 64M --json ar.json
  labkit collectives --backend nccl --nproc 8 --min-bytes 8 --max-bytes 8G --factor 2
"""

NCCL_LOG_EPILOG = """\
Make a log to read:
  NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,GRAPH,NET,TUNING NCCL_DEBUG_FILE=nccl.%h.%p.log \\
      labkit collectives --backend nccl --nproc 8
  labkit nccl-log nccl.gpu-node-1.12345.log
It reports NCCL's version, which rank runs on which host/GPU, the transport of every channel
(P2P/IPC or P2P/CUMEM = GPU-to-GPU over NVLink/PCIe; SHM = through host memory; NET/IB =
InfiniBand/RoCE, with GDRDMA = GPUDirect RDMA; NET/Socket = plain TCP), the NICs NCCL chose,
the algorithm/protocol picked per size (TUNING lines) and every WARN, then what to check.
"""

TOPO_EPILOG = """\
Cells as in `nvidia-smi topo -m`: NV<k> = k NVLinks (direct or through NVSwitch), PIX = same
PCIe switch, PXB = several PCIe switches, PHB = through the CPU's PCIe host bridge, NODE =
across host bridges on one NUMA node, SYS = across the CPU socket interconnect (slowest).
Without a GPU it says so and exits 0.
"""

DTYPES = ("float32", "float16", "bfloat16", "float64", "int32", "int64", "int8", "uint8",
          "float8_e4m3fn", "float8_e5m2")


def register(subparsers) -> None:
    from labkit.collectives.busbw import OPS

    raw = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "collectives", formatter_class=raw, epilog=COLLECTIVES_EPILOG,
        help="benchmark all_reduce, all_gather, ... like nccl-tests (gloo or nccl)",
        description="Time torch.distributed collectives over a range of sizes on N local "
        "ranks and report algbw/busbw exactly as nccl-tests defines them.")
    p.add_argument("--backend", choices=("gloo", "nccl"), default=None,
                   help="default: nccl when CUDA GPUs are visible, else gloo")
    p.add_argument("--nproc", type=int, default=None,
                   help="ranks on this machine (default: number of GPUs for nccl, 2 for gloo)")
    p.add_argument("--ops", default=",".join(OPS), help=f"comma list from {','.join(OPS)}")
    p.add_argument("--min-bytes", "-b", default="1K", help="smallest size, e.g. 8, 1K, 1M")
    p.add_argument("--max-bytes", "-e", default="16M", help="largest size, e.g. 64M, 8G")
    p.add_argument("--factor", "-f", type=float, default=2.0, help="size multiplier per step")
    p.add_argument("--iters", "-n", type=int, default=20, help="timed iterations per size")
    p.add_argument("--warmup", "-w", type=int, default=5, help="untimed iterations first")
    p.add_argument("--dtype", "-d", choices=DTYPES, default="float32", metavar="DTYPE",
                   help=f"element type: {', '.join(DTYPES)} (default float32)")
    p.add_argument("--redop", "-o", choices=("sum", "max", "min"), default="sum",
                   help="reduction of all_reduce and reduce_scatter (default sum)")
    p.add_argument("--check", "-c", action=argparse.BooleanOptionalAction, default=True,
                   help="verify results with known inputs and count wrong elements")
    p.add_argument("--timeout", type=float, default=1800, help="seconds before all ranks die")
    p.add_argument("--json", type=Path, default=None, help="also write the report here")
    p.add_argument("--quiet", action="store_true", help="do not stream the ranks' output")
    p.set_defaults(func=collectives_command)

    p = subparsers.add_parser(
        "nccl-log", formatter_class=raw, epilog=NCCL_LOG_EPILOG,
        help="explain an NCCL_DEBUG=INFO log: transports, NICs, algorithms, warnings",
        description="Summarise what NCCL decided, from its NCCL_DEBUG=INFO output.")
    p.add_argument("file", type=Path, help="log file (several ranks' logs may be concatenated)")
    p.add_argument("--json", action="store_true", help="print the parsed log as JSON")
    p.set_defaults(func=nccl_log_command)

    p = subparsers.add_parser(
        "topo", formatter_class=raw, epilog=TOPO_EPILOG,
        help="GPU-to-GPU link matrix (NVLink/PCIe/cross-socket) and NIC affinity via NVML",
        description="Show how this machine's GPUs (and NICs) are connected, like "
        "`nvidia-smi topo -m`.")
    p.add_argument("--json", action="store_true", help="print the topology as JSON")
    p.set_defaults(func=topo_command)


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def collectives_command(args) -> int:
    from labkit.collectives.benchmark import run_collectives
    from labkit.collectives.launch import default_backend
    from labkit.collectives.table import format_table, parse_size, size_sweep

    backend = args.backend or default_backend()
    nproc = args.nproc
    if nproc is None:
        import torch

        nproc = torch.cuda.device_count() if backend == "nccl" else 2
    ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    sizes = size_sweep(parse_size(args.min_bytes), parse_size(args.max_bytes), args.factor)
    report = run_collectives(
        backend=backend, nproc=nproc, ops=ops, sizes=sizes, dtype=args.dtype,
        redop=args.redop, iters=args.iters, warmup=args.warmup, check=args.check,
        timeout=args.timeout, log=None if args.quiet else print)
    print(format_table(report))
    if args.json:
        _write_json(args.json, report)
        print(f"# wrote {args.json}")
    wrong = sum(r.get("wrong") or 0 for r in report["rows"])
    return 1 if wrong else 0


def nccl_log_command(args) -> int:
    from labkit.cluster.nccl_diagnose import format_summary, report
    from labkit.cluster.nccl_log import parse_nccl_log

    if not args.file.is_file():
        raise UserError(f"{args.file} is not a file; pass the path of an NCCL_DEBUG=INFO log")
    log = parse_nccl_log(args.file.read_text(errors="replace"))
    print(json.dumps(report(log), indent=2) if args.json else format_summary(log))
    return 0


def topo_command(args) -> int:
    from labkit.cluster.topo import format_topology, read_topology

    topo = read_topology()
    print(json.dumps(topo, indent=2) if args.json else format_topology(topo))
    return 0
