"""A/B(/C...) of teaching-engine settings, served: every variant's server up at once.

On a shared machine whose speed drifts by ±15 % within minutes, two runs an hour apart say
little. So every variant gets its own server, all are up for the whole run, and each
repetition runs every variant once, in rotating order, on the same requests (closed loop,
`labkit bench`'s shared-prefix or random workload). "vs first" is the median, over
repetitions, of variant / first variant within the repetition.

    nice -n -20 .venv/bin/python benchmarks/served_ab.py "--cpu-gemm torch --num-threads 1" ""
    .venv/bin/python benchmarks/served_ab.py --concurrency 32 --workload random "" "--num-threads 1"
    .venv/bin/python benchmarks/served_ab.py "OMP_WAIT_POLICY=PASSIVE -- --num-threads 2" ""
    .venv/bin/python benchmarks/served_ab.py vllm ""          # vLLM's CPU build as a variant

A variant is the teaching engine's extra flags ("" = defaults), optionally prefixed with
environment variables and " -- ", or the word vllm.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engine_vs_vllm as E  # noqa: E402


def parse_variant(spec: str) -> tuple[dict, str]:
    """'A=1 B=2 -- --flag x' -> ({'A': '1', 'B': '2'}, '--flag x')."""
    padded = f" {spec} "
    if " -- " not in padded:
        return {}, spec.strip()
    env, flags = padded.split(" -- ", 1)
    return dict(kv.split("=", 1) for kv in env.split()), flags.strip()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variants", nargs="+", help='teaching-engine flags per variant ("" = defaults)')
    p.add_argument("--workload", default="shared-prefix", choices=("shared-prefix", "random"))
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--repeats", type=int, default=8)
    defaults = E.build_parser().parse_args([])  # workload sizes as in engine_vs_vllm.py
    args = p.parse_args(argv)
    for k in ("max_model_len", "groups", "system_len", "question_len", "shared_output_len",
              "input_len", "output_len"):
        setattr(args, k, getattr(defaults, k))
    args.vllm_args = ""

    from labkit.models import build_tiny_llama

    model = build_tiny_llama(verbose=False)
    names = [f"{i}: {v or '(defaults)'}" for i, v in enumerate(args.variants)]
    c, n = args.concurrency, max(8, 3 * args.concurrency)
    with ExitStack() as stack:
        servers = {}
        for name, spec in zip(names, args.variants):
            env, flags = parse_variant(spec)
            saved = dict(os.environ)
            os.environ.update(env)  # the server process inherits it
            try:
                args.mini_args = flags
                servers[name] = stack.enter_context(
                    E.Server("vllm" if flags == "vllm" else "mini", model, args))
            finally:
                os.environ.clear()
                os.environ.update(saved)
        for s in servers.values():
            s.wait_healthy()
        for s in servers.values():  # warm-up
            E.bench(s.base, args.workload, c, 16, 1, args)
        results = {name: [] for name in names}
        for rep in range(args.repeats):
            for name in names[rep % len(names):] + names[: rep % len(names)]:
                E.wait_quiet(servers.values())  # vLLM polls a core for ~1 s after a run
                row = E.bench(servers[name].base, args.workload, c, n, 9000 + rep, args)
                results[name].append(row["output_tokens_per_s"])
                print(f"rep {rep} {name}: {row['output_tokens_per_s']:.0f} out tok/s",
                      file=sys.stderr, flush=True)
    first = results[names[0]]
    print(f"\n{args.workload}, C = {c}, {n} requests per run, {args.repeats} repetitions\n")
    print("| variant | out tok/s, median (min–max) | vs first, median (min–max) |")
    print("|---|---|---|")
    for name in names:
        r, ratios = results[name], [b / a for a, b in zip(first, results[name])]
        print(f"| {name} | {statistics.median(r):.0f} ({min(r):.0f}–{max(r):.0f}) | "
              f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
