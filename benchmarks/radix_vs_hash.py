"""Does a radix prefix cache hit at least as many tokens as vLLM's block-hash cache?

Issue 4 asks for "radix ≥ hash at every capacity". At unlimited capacity it is a theorem
(radix hits the optimum, hash the optimum rounded down to whole blocks; tests/
test_kvcache_properties.py). Under memory pressure it depends on what each cache throws
away, so this script measures it: every workload generator × seeds × KV capacities (fractions
of what the trace needs with nothing evicted) × hash block sizes × batch sizes × FCFS/LPM,
through the simulator (`labkit kvcache simulate`), for both radix eviction modes:

    leaf  SGLang's: the least recently used leaf goes whole
    tail  only the tokens needed, cut from the end of the least recently used leaf

A cell "loses" when the radix cache served fewer prompt tokens from cache than the hash cache
with the same settings. With LPM the two caches also schedule differently (the order follows
each cache's own hits), so those cells compare whole policies, not just caches.

    .venv/bin/python benchmarks/radix_vs_hash.py            # the full grid, ~5 min on 2 cores
    .venv/bin/python benchmarks/radix_vs_hash.py --seeds 1 --fractions 0.5,0.1
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labkit.errors import UserError  # noqa: E402
from labkit.kvcache import simulate as sim  # noqa: E402
from labkit.kvcache import traces  # noqa: E402
from labkit.kvcache.trace_file import TraceRequest  # noqa: E402


def requests_of(workload: str, n: int, seed: int) -> list[TraceRequest]:
    """The generated trace as `labkit kvcache simulate --trace` reads it (multi-turn and
    branching requests wait for the request they continue: "after")."""
    return [TraceRequest(r["id"], r["arrival"], r["prompt_token_ids"], r["output_len"],
                         r.get("output_token_ids"), i + 1, r.get("after"))
            for i, r in enumerate(traces.generate(workload, n, seed))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=64, help="requests per trace")
    p.add_argument("--seeds", type=int, default=3, help="trace seeds 0..N-1 per workload")
    p.add_argument("--fractions", default="1,0.75,0.5,0.35,0.25,0.15,0.1,0.05",
                   help="KV capacity as fractions of the no-eviction size")
    p.add_argument("--block-sizes", default="16,64", help="hash-cache block sizes")
    p.add_argument("--batches", default="1,8", help="simulator max_batch values")
    args = p.parse_args(argv)
    fractions = [float(x) for x in args.fractions.split(",")]
    block_sizes = [int(x) for x in args.block_sizes.split(",")]
    batches = [int(x) for x in args.batches.split(",")]

    cells = defaultdict(lambda: {"cells": 0, "leaf": [], "tail": []})  # by fraction
    skipped = 0
    for workload in traces.WORKLOADS:
        for seed in range(args.seeds):
            reqs = requests_of(workload, args.requests, seed)
            full = sim.unlimited_capacity(reqs)
            for frac in fractions:
                cap = int(full * frac)
                for bs in block_sizes:
                    for mb in batches:
                        for policy in ("fcfs", "lpm"):
                            try:
                                h = sim.simulate(reqs, "hash", bs, cap, policy, mb)["summary"]
                            except UserError:  # one request alone does not fit: no cell
                                skipped += 1
                                continue
                            c = cells[frac]
                            c["cells"] += 1
                            for mode in ("leaf", "tail"):
                                r = sim.simulate(reqs, "radix", bs, cap, policy, mb,
                                                 radix_evict=mode)["summary"]
                                if r["cached_tokens"] < h["cached_tokens"]:
                                    c[mode].append((workload, seed, bs, mb, policy,
                                                    r["cached_tokens"], h["cached_tokens"]))
            print(f"{workload} seed {seed} done", file=sys.stderr)

    print("| capacity (of no-eviction size) | cells | radix leaf behind hash | radix tail behind hash "
          "| worst tail shortfall |")
    print("|---|---|---|---|---|")
    for frac in fractions:
        c = cells[frac]
        worst = max((1 - r / h for *_, r, h in c["tail"]), default=0.0)
        print(f"| {frac:.0%} | {c['cells']} | {len(c['leaf'])} | {len(c['tail'])} "
              f"| {'—' if not c['tail'] else f'{worst:.1%}'} |")
    total = sum(c["cells"] for c in cells.values())
    print(f"\n{total} cells; {sum(len(c['leaf']) for c in cells.values())} with radix leaf behind "
          f"hash, {sum(len(c['tail']) for c in cells.values())} with radix tail behind hash"
          f"{f'; {skipped} skipped (a single request does not fit)' if skipped else ''}")
    for frac in fractions:
        for cell in cells[frac]["tail"]:
            workload, seed, bs, mb, policy, r, h = cell
            print(f"  tail behind: {workload} seed {seed} capacity {frac:.0%} hash B={bs} "
                  f"max_batch {mb} {policy}: radix {r} vs hash {h}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
