"""`labkit kvcache ...`: generate request traces, replay them against prefix caches, and
measure KV waste. Only the standard library loads here; the work modules load on use."""

from __future__ import annotations

import argparse
import json
import sys

SIMULATE_HELP = """\
Replay a JSONL request trace against a KV prefix cache and report how much prefill it saves.

What a hit means:
  hash   vLLM's automatic prefix caching. KV lives in blocks of --block-size tokens; a full
         block is found by hash(parent block's hash, its token ids), so a hit is the longest
         run of *whole blocks* that match from the start. A prompt sharing 100 tokens with an
         earlier one hits floor(100/16)*16 = 96 tokens with 16-token blocks.
  radix  SGLang's RadixAttention. A radix tree over token ids; a hit can end at any token,
         so the same prompt hits all 100. When memory runs out it evicts the least
         recently used leaf: whole (--radix-evict leaf, as SGLang) or only as many tokens
         as needed, cut from its end (--radix-evict tail).
  none   no prefix caching: nothing hits; memory is still allocated in blocks.
In every cache the prompt's last token is always recomputed (its logits give the first
output token), so a prompt can hit at most len(prompt) - 1 tokens.

What the numbers mean:
  prompt_tokens            sum of prompt lengths (vLLM's prefix_cache_queries)
  cached_tokens            prompt tokens found in the cache (vLLM's prefix_cache_hits)
  hit_rate                 cached_tokens / prompt_tokens
  prefill_tokens_computed  prompt_tokens - cached_tokens: the prefill work left to do
  evicted_tokens           cached tokens thrown away to make room (0 = capacity was enough)
  mean/p99_wait_s          queueing on a toy clock (not a latency prediction): compare fcfs
                           and lpm to see LPM cut the mean wait and starve the tail

--capacity-tokens is the whole KV pool: running requests' KV and the cache share it, as
in a real engine. Leave it out for "unlimited" (nothing is ever evicted).
"""

SIMULATE_EPILOG = """\
examples:
  labkit kvcache trace --workload shared-prompt --out shared.jsonl
  labkit kvcache simulate --trace shared.jsonl --cache hash
  labkit kvcache simulate --trace shared.jsonl --cache radix --capacity-tokens 4000 --policy lpm
  labkit kvcache simulate --trace shared.jsonl --cache radix --json > radix.json

trace format (one JSON object per line):
  {"id": "r0", "arrival": 0.12, "prompt_token_ids": [1, 2, 3], "output_len": 64}
  ("prompt": "text" instead of prompt_token_ids is tokenised with --tokenizer or a toy
  one-token-per-word tokenizer; optional "output_token_ids" give the answer's tokens;
  optional "after": "r0" holds a request back until r0 has finished, e.g. the next chat turn)
"""

TRACE_HELP = """\
Write a synthetic JSONL request trace for a classic prefix-sharing workload. Token ids are
random but seeded, so the same --seed gives the same trace; no tokenizer or download needed.

  shared-prompt  a few long system prompts, each + a short question (two-level tree)
  few-shot       one header + one task's worked examples + a question (three levels)
  multi-turn     chat sessions: each turn's prompt is the whole conversation so far
  branching      tree-of-thought: children extend their parent's prompt and thought
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "kvcache",
        help="KV cache lab: prefix-cache simulator, traces, waste study",
        description="Paged KV cache and prefix caching (vLLM hash vs SGLang radix).",
    )
    sub = p.add_subparsers(dest="kvcache_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    s = sub.add_parser(
        "simulate",
        help="replay a trace against a prefix cache; report hits",
        description=SIMULATE_HELP,
        epilog=SIMULATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument(
        "--trace", required=True, metavar="FILE", help="JSONL trace (see `labkit kvcache trace`)"
    )
    s.add_argument(
        "--cache",
        choices=["none", "hash", "radix"],
        default="radix",
        help="prefix cache (default radix)",
    )
    s.add_argument(
        "--block-size",
        type=int,
        default=16,
        metavar="B",
        help="tokens per KV block for hash/none (vLLM default 16); radix is token-granular",
    )
    s.add_argument(
        "--capacity-tokens",
        type=int,
        default=None,
        metavar="N",
        help="KV pool size in tokens, shared by running requests and the cache "
        "(default: unlimited)",
    )
    s.add_argument(
        "--policy",
        choices=["fcfs", "lpm"],
        default="fcfs",
        help="queue order: first come first served, or longest prefix match first (SGLang)",
    )
    s.add_argument(
        "--radix-evict",
        choices=["leaf", "tail"],
        default="leaf",
        help="radix eviction: whole LRU leaves as SGLang (default), or only the tokens needed "
        "from the LRU leaf's end",
    )
    s.add_argument(
        "--max-batch", type=int, default=8, metavar="N", help="requests run together (default 8)"
    )
    s.add_argument(
        "--tokenizer",
        metavar="PATH",
        help="tokenizer.json (or model dir) for traces with prompt text",
    )
    s.add_argument("--json", action="store_true", help="print summary and per-request hits as JSON")
    s.set_defaults(func=cmd_simulate)

    t = sub.add_parser(
        "trace",
        help="generate a synthetic JSONL request trace",
        description=TRACE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  labkit kvcache trace --workload multi-turn --out chat.jsonl --seed 1",
    )
    t.add_argument(
        "--workload",
        required=True,
        choices=["shared-prompt", "few-shot", "multi-turn", "branching"],
    )
    t.add_argument("--out", required=True, metavar="FILE", help="where to write the JSONL")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--num-requests", type=int, default=64, metavar="N")
    t.add_argument(
        "--text", action="store_true", help="write prompt text instead of prompt_token_ids"
    )
    t.set_defaults(func=cmd_trace)

    w = sub.add_parser(
        "waste",
        help="KV memory waste: contiguous reservation vs paged blocks",
        description="Reserved vs used KV for seeded lognormal request lengths, by scheme "
        "and block size, and how many sequences fit a KV budget (PagedAttention paper, sec. 3).",
        epilog="example:\n  labkit kvcache waste --num-seqs 1000 --budget-tokens 100000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    w.add_argument("--num-seqs", type=int, default=1000)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--max-model-len", type=int, default=2048)
    w.add_argument("--budget-tokens", type=int, default=100_000, help="KV budget for the fit table")
    w.add_argument(
        "--at",
        choices=["end", "random"],
        default="random",
        help="measure at the end of generation or at a random moment during it",
    )
    w.add_argument("--json", action="store_true")
    w.set_defaults(func=cmd_waste)


def cmd_simulate(args) -> int:
    from labkit.errors import UserError
    from labkit.kvcache.simulate import simulate
    from labkit.kvcache.trace_file import load_tokenizer, read_trace

    if args.capacity_tokens is not None and args.capacity_tokens < 1:
        raise UserError(
            "--capacity-tokens must be a positive number of tokens (leave it out for unlimited)"
        )
    tokenize = load_tokenizer(args.tokenizer) if args.tokenizer else None
    requests = read_trace(args.trace, tokenize)
    result = simulate(
        requests, args.cache, args.block_size, args.capacity_tokens, args.policy, args.max_batch,
        radix_evict=args.radix_evict,
    )
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        print()
        return 0
    s = result["summary"]
    width = max(len(k) for k in s)
    for k, v in s.items():
        print(f"{k:<{width}}  {v}")
    return 0


def cmd_trace(args) -> int:
    from labkit.errors import UserError
    from labkit.kvcache.trace_file import write_jsonl
    from labkit.kvcache.traces import generate

    if args.num_requests < 1:
        raise UserError("--num-requests must be >= 1")
    rows = generate(args.workload, args.num_requests, args.seed, text=args.text)
    path = write_jsonl(rows, args.out)
    tokens = sum(len(r.get("prompt_token_ids") or r["prompt"].split()) for r in rows)
    print(f"wrote {len(rows)} requests ({tokens} prompt tokens) to {path}")
    return 0


def cmd_waste(args) -> int:
    from labkit.kvcache.waste import fit_table, sample_lengths, waste_table

    lengths = sample_lengths(args.num_seqs, args.seed, max_model_len=args.max_model_len)
    rows = waste_table(lengths, max_model_len=args.max_model_len, at=args.at, seed=args.seed)
    fits = fit_table(lengths, args.budget_tokens, max_model_len=args.max_model_len)
    if args.json:
        print(json.dumps({"waste": rows, "fit": fits}, indent=1))
        return 0
    print(f"{'scheme':<12}{'reserved':>11}{'used':>11}{'waste':>8}{'future':>10}{'int.frag':>10}")
    for r in rows:
        name = r["scheme"] + (f" B={r['block_size']}" if r["block_size"] else "")
        print(
            f"{name:<12}{r['reserved_tokens']:>11}{r['used_tokens']:>11}{r['waste_frac']:>8.1%}"
            f"{r['reserved_future_tokens']:>10}{r['internal_fragmentation_tokens']:>10}"
        )
    print(f"\nsequences that fit {args.budget_tokens} KV tokens:")
    for r in fits:
        print(f"  {r['scheme']:<8}{r['sequences_fit']:>6}")
    return 0
