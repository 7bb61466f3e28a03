"""The tiny Llama's matmuls of one step: `x @ W` (MKL) vs oneDNN-packed weights (cpu_gemm.py).

One forward pass multiplies the step's rows (one per decoding sequence, hundreds for a
prefill chunk) by 17 weight matrices: q|k|v, o, gate|up and down in each of 4 layers, and
the output head. This script times those 17 matmuls both ways at several row counts, the
two kinds interleaved 30 times so the machine's drift hits both alike; "packed / plain" is
the median of the per-pair ratios (> 1: packed is faster).

    nice -n -20 .venv/bin/python benchmarks/cpu_gemm.py                # 1 and all threads
    .venv/bin/python benchmarks/cpu_gemm.py --rows 8 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labkit.engine.fast.cpu_gemm import Linear, PackedLinear, can_pack  # noqa: E402

HIDDEN, INTER, VOCAB, LAYERS = 256, 768, 4096, 4  # the tiny Llama (labkit model build)
SHAPES = [(HIDDEN, 2 * HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, 2 * INTER), (INTER, HIDDEN)] * LAYERS
SHAPES += [(HIDDEN, VOCAB)]


def time_step(linears, xs, reps: int) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        for lin in linears:
            lin(xs[lin.weight.shape[0]])
    return (time.perf_counter() - t) / reps


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="2,4,8,16,32,128,512", help="rows per matmul (batch tokens)")
    p.add_argument("--threads", default=f"1,{os.cpu_count() or 1}", help="torch threads to try")
    p.add_argument("--pairs", type=int, default=30, help="interleaved timing pairs per cell")
    args = p.parse_args(argv)
    if not can_pack("cpu", torch.float32):
        raise SystemExit("this torch build has no oneDNN linear: nothing to compare")
    torch.manual_seed(0)
    weights = [torch.randn(i, o) for i, o in SHAPES]
    plain = [Linear(w) for w in weights]
    packed = [PackedLinear(w) for w in weights]
    mb = sum(w.numel() for w in weights) * 4 / 2**20
    print(f"{len(weights)} matmuls, {mb:.1f} MiB of float32 weights; torch {torch.__version__}")
    print("| threads | rows | plain x @ W (ms) | oneDNN packed (ms) | packed / plain |")
    print("|---|---|---|---|---|")
    with torch.inference_mode():
        for threads in sorted({int(t) for t in args.threads.split(",")}):
            torch.set_num_threads(threads)
            for rows in (int(r) for r in args.rows.split(",")):
                xs = {i: torch.randn(rows, i) for i in (HIDDEN, INTER)}
                reps = max(2, 400 // rows)
                time_step(plain, xs, 2), time_step(packed, xs, 2)  # warm-up
                a, b = [], []
                for _ in range(args.pairs):
                    a.append(time_step(plain, xs, reps))
                    b.append(time_step(packed, xs, reps))
                ratio = statistics.median(x / y for x, y in zip(a, b))
                print(f"| {threads} | {rows} | {statistics.median(a) * 1e3:.2f} | "
                      f"{statistics.median(b) * 1e3:.2f} | {ratio:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
