"""`labkit collectives`: an nccl-tests-style benchmark of every collective on N local ranks.

Only the standard library is imported here; torch and pynvml load inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

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
