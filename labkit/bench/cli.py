"""`labkit bench`: load-test any OpenAI-compatible server and report latency correctly."""

from __future__ import annotations

import argparse
import math
import os
import sys

from labkit.errors import UserError

DESCRIPTION = """\
Send a workload to an OpenAI-compatible server (vLLM, SGLang, TensorRT-LLM, the teaching
engine, …) at a fixed open-loop arrival schedule, stream every answer, and report:

  TTFT               send → first token
  TPOT               (E2E − TTFT)/(out − 1): decode time per token, first token excluded
                     (vLLM/SGLang's TPOT)
  per_token_latency  E2E/out, first token included (GuideLLM's "TPOT", inference-perf NTPOT)
  ITL                every gap between streamed chunks, pooled over all requests
  E2E                send → last token
  *_from_schedule    the same measured from when the schedule said to send: includes any
                     waiting inside the client (a concurrency cap, a busy client)
  goodput            requests/s that met every --slo limit
and request and token throughput, the achieved vs the target rate, errors by cause and how
often the client's token count disagreed with the server's `usage`.
Results: DIR/requests.jsonl (one line per request, written as each finishes),
DIR/summary.json, DIR/summary.csv; with --sweep also sweep.csv and pareto.png.

--find-capacity searches for the highest load that meets --slo instead of trying a fixed
list: it doubles the load from --start until the SLO breaks (at most --max-load), then
bisects between the last pass and the first fail until they are --resolution apart, and
prints both bounds ("12 ≤ capacity < 14"), or says the capacity is only a lower bound."""

EPILOG = """\
examples:
  labkit bench --base-url http://127.0.0.1:8000 --model tiny --rate 4 --num-requests 200
  labkit bench --base-url http://127.0.0.1:8000 --model tiny --workload shared-prefix \\
      --rate 8 --burstiness 0.5 --duration 60 --warmup 10 --slo ttft=500,tpot=50
  labkit bench ... --api chat --workload multi-turn --concurrency 16 --num-requests 400
  labkit bench ... --sweep rates --values 1,2,4,8 --num-requests 200 --slo ttft=500,tpot=50
  labkit bench ... --find-capacity concurrencies --start 2 --max-load 64 --resolution 2 \
      --num-requests 100 --warmup-requests 8 --slo ttft=1000,tpot=100
  labkit bench ... --workload sharegpt:data/sharegpt.json --tokenizer models/tiny

Try it without a real engine: `python -m labkit.bench.fake_server --port 8000` serves a
fake model with a known 50 ms TTFT and 10 ms per token; the report should say so."""


def _float_or_inf(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'inf', got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="load-test an OpenAI-compatible server: TTFT, TPOT, ITL, goodput",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    t = p.add_argument_group("target")
    t.add_argument("--base-url", required=True, help="server root, e.g. http://127.0.0.1:8000")
    t.add_argument("--model", required=True, help="model name the server serves (/v1/models)")
    t.add_argument("--api", choices=["completions", "chat"], default="completions",
                   help="/v1/completions (prompt) or /v1/chat/completions (messages)")
    t.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="environment variable holding the API key, if the server needs one "
                        "(default OPENAI_API_KEY); the key is never written to any file")
    t.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="give up on one request after S seconds (counted as 'timeout')")
    ld = p.add_argument_group("load (open loop: send times are fixed before the run)")
    ld.add_argument("--rate", type=_float_or_inf, default=math.inf, metavar="R|inf",
                    help="requests per second (default inf: all at once)")
    ld.add_argument("--arrival", choices=["poisson", "gamma", "constant"], default="poisson",
                    help="gaps between sends (default poisson)")
    ld.add_argument("--burstiness", type=float, default=1.0, metavar="G",
                    help="gamma shape: 1 = Poisson, <1 burstier, >1 smoother (gap CV = 1/√G)")
    ld.add_argument("--concurrency", type=int, metavar="C",
                    help="at most C requests in flight; waits show up as queue_wait")
    ld.add_argument("--num-requests", type=int, metavar="N", help="measured requests")
    ld.add_argument("--duration", type=float, metavar="S", help="seconds of measured arrivals")
    ld.add_argument("--warmup", type=float, default=0.0, metavar="S",
                    help="arrivals in the first S seconds are sent but not measured")
    ld.add_argument("--seed", type=int, default=0, help="same seed, same schedule and prompts")
    w = p.add_argument_group("workload")
    w.add_argument("--workload", default="random", metavar="NAME",
                   help="random | shared-prefix | multi-turn | sharegpt:FILE (default random)")
    w.add_argument("--input-len", type=int, default=256, help="random: prompt words (≈tokens)")
    w.add_argument("--output-len", type=int, default=None,
                   help="max_tokens per request (default 128; sharegpt: the dataset's reply)")
    w.add_argument("--range-ratio", type=float, default=0.0,
                   help="random: lengths vary uniformly by ±ratio")
    w.add_argument("--num-groups", type=int, default=8, help="shared-prefix: groups")
    w.add_argument("--system-prompt-len", type=int, default=512,
                   help="shared-prefix/multi-turn: shared system prompt words")
    w.add_argument("--question-len", type=int, default=64,
                   help="shared-prefix/multi-turn: words per question")
    w.add_argument("--num-turns", type=int, default=4, help="multi-turn: turns per conversation")
    w.add_argument("--no-ignore-eos", action="store_true",
                   help="let the model stop early (default asks for exactly max_tokens via "
                        "the vLLM/SGLang `ignore_eos` extension)")
    w.add_argument("--tokenizer", metavar="PATH",
                   help="local tokenizer.json or model dir for client-side token counts")
    s = p.add_argument_group("SLO and sweeps")
    s.add_argument("--slo", metavar="ttft=MS,tpot=MS,e2e=MS",
                   help="latency limits for goodput; any subset, e.g. ttft=500,tpot=50")
    s.add_argument("--slo-clock", choices=["auto", "schedule", "send"], default="auto",
                   help="judge TTFT/E2E from the scheduled or the actual send (auto: "
                        "schedule, or send when --rate inf)")
    s.add_argument("--slo-attainment", type=float, default=0.9, metavar="F",
                   help="sweep: a load meets the SLO when this share of requests does "
                        "(default 0.9)")
    s.add_argument("--sweep", choices=["rates", "concurrencies"],
                   help="run once per --values entry; table, Pareto plot, capacity")
    s.add_argument("--values", metavar="V1,V2,…", help="loads for --sweep, e.g. 1,2,4,8")
    s.add_argument("--find-capacity", choices=["rates", "concurrencies"],
                   help="search for the highest load meeting --slo: raise ×2, then bisect")
    s.add_argument("--start", type=float, default=2, help="--find-capacity: first load")
    s.add_argument("--max-load", type=float, default=64, help="--find-capacity: highest load")
    s.add_argument("--resolution", type=float, default=2,
                   help="--find-capacity: stop when the bracket is this narrow")
    s.add_argument("--warmup-requests", type=int, default=8, metavar="N",
                   help="--find-capacity: requests sent first at each load, not measured")
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="DIR", help="results directory (default runs/bench/<time>)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=handle)


def config_from_args(args):
    from labkit.bench.request_metrics import parse_slo
    from labkit.bench.loadgen import BenchConfig
    from labkit.bench.workloads import WorkloadParams

    if args.num_requests is None and args.duration is None:
        raise UserError("say how long to run: --num-requests N or --duration SECONDS")
    arrival = args.arrival
    if args.burstiness != 1.0 and arrival == "constant":
        raise UserError("--burstiness shapes random gaps; it does not apply to --arrival "
                        "constant (use gamma or poisson)")
    params = WorkloadParams(
        input_len=args.input_len, output_len=args.output_len, range_ratio=args.range_ratio,
        num_groups=args.num_groups, system_prompt_len=args.system_prompt_len,
        question_len=args.question_len, num_turns=args.num_turns,
        ignore_eos=not args.no_ignore_eos)
    return BenchConfig(
        base_url=args.base_url, model=args.model, workload=args.workload, api=args.api,
        rate=args.rate, burstiness=args.burstiness, arrival=arrival,
        concurrency=args.concurrency, num_requests=args.num_requests, duration=args.duration,
        warmup=args.warmup, slo=parse_slo(args.slo), slo_clock=args.slo_clock,
        out_dir=args.out, seed=args.seed, timeout=args.timeout, params=params,
        tokenizer=args.tokenizer, progress=not args.no_progress,
        api_key=os.environ.get(args.api_key_env) or None)


def handle(args) -> int:
    from labkit.bench.report import format_summary
    from labkit.bench.loadgen import run_bench
    from labkit.bench.sweep import format_sweep, run_sweep

    cfg = config_from_args(args)
    if args.find_capacity:
        return find_capacity(cfg, args)
    if args.sweep:
        if not args.values:
            raise UserError("--sweep needs --values, e.g. --sweep rates --values 1,2,4,8")
        try:
            values = [float(v) for v in args.values.split(",") if v.strip()]
        except ValueError:
            raise UserError(f"--values must be numbers separated by commas, got "
                            f"{args.values!r}") from None
        result = run_sweep(cfg, args.sweep, values, args.slo_attainment)
        print(format_sweep(result))
        return 0 if any(r["requests_per_s"] for r in result["rows"]) else 1
    summary = run_bench(cfg)
    print(format_summary(summary))
    if summary["requests"]["completed"] == 0:
        print("every request failed: see 'errors by cause' above", file=sys.stderr)
        return 1
    return 0


def find_capacity(cfg, args) -> int:
    from labkit.bench.capacity import SearchPlan, describe_bounds, run_capacity_search
    from labkit.bench.sweep import format_sweep

    if not cfg.slo:
        raise UserError("--find-capacity needs --slo, e.g. --slo ttft=1000,tpot=100")
    if args.num_requests is None or args.duration is not None:
        raise UserError("--find-capacity measures --num-requests N per load point "
                        "(at least 100 keeps p99 from being the single slowest request)")
    try:
        plan = SearchPlan(kind=args.find_capacity, start=args.start, max_load=args.max_load,
                          resolution=args.resolution, attainment=args.slo_attainment,
                          measured_requests=args.num_requests,
                          warmup_requests=args.warmup_requests)
    except ValueError as e:
        raise UserError(f"--find-capacity: {e}") from None
    result = run_capacity_search(cfg, plan)
    print(format_sweep(result))
    print(f"{result['status']}: {describe_bounds(result)}")
    return 0 if result["capacity"] else 1


def main(argv: list[str] | None = None) -> int:
    """`python -m labkit.bench ARGS` = `labkit bench ARGS` (handy before the CLI wiring)."""
    parser = argparse.ArgumentParser(prog="labkit")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except UserError as e:
        print(f"labkit: error: {e}", file=sys.stderr)
        return 2
