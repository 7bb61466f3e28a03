"""`labkit cost prices|per-token|monthly|spot`: the cost formulas on the command line."""

from __future__ import annotations

import argparse

PER_TOKEN = """\
$/1M output tokens = $/hour × GPUs / (output tokens/s × 3600) × 10⁶

Use the throughput measured *at the SLO* (labkit bench --find-capacity), not the peak of an
overloaded server. With --prompt-tok-s the second figure spreads the cost over prompt and
output tokens (what a per-token API bill counts; far lower on prompt-heavy workloads).
  labkit cost per-token --price 6.88 --tok-s 2000        → $0.956 per 1M output tokens"""

MONTHLY = """\
mean req/s = requests/day / 86,400;  peak = mean × peak-to-mean
replicas   = ceil(peak req/s × output tokens × (1 + headroom) / capacity tok/s per replica)
$/month    = replicas × $/replica-hour × 730 h
  labkit cost monthly --requests-per-day 864000 --output-tokens 100 --capacity 500 --price 4.29"""

SPOT = """\
Checkpoint interval for checkpoint time C and mean time between preemptions M:
  Young  τ = √(2CM)        Daly  τ = √(2CM)·[1 + ⅓√(C/2M) + (C/2M)/9] − C
With --work-h and prices: a Monte Carlo of the job on spot (Poisson preemptions) vs on demand.
  labkit cost spot --checkpoint-min 5 --mtbf-h 24          → Young 120 min, Daly 117 min
  labkit cost spot --checkpoint-min 5 --mtbf-h 2 --work-h 20 \\
      --spot-price 2.2 --on-demand-price 6.88"""


def cmd_prices(args) -> int:
    from labkit.cost import catalog

    rows = catalog.load_catalog(args.override)
    if args.gpu:
        rows = catalog.for_gpu(rows, args.gpu)
    print(catalog.format_rows(rows))
    return 0


def cmd_per_token(args) -> int:
    from labkit.cost.per_token import cost_per_million_tokens
    from labkit.errors import UserError

    try:
        out = cost_per_million_tokens(args.price, args.tok_s, args.gpus)
    except ValueError as e:
        raise UserError(str(e)) from None
    print(f"${out:.4g} per 1M output tokens  (${args.price}/h × {args.gpus} / "
          f"({args.tok_s:g} tok/s × 3600) × 1e6)")
    if args.prompt_tok_s:
        total = cost_per_million_tokens(args.price, args.tok_s + args.prompt_tok_s, args.gpus)
        print(f"${total:.4g} per 1M tokens in + out  ({args.tok_s + args.prompt_tok_s:g} tok/s)")
    return 0


def cmd_monthly(args) -> int:
    from labkit.cost import monthly

    t = monthly.Traffic(args.requests_per_day, args.peak_to_mean, args.input_tokens,
                        args.output_tokens)
    f = monthly.Fleet(args.capacity, args.price, args.headroom)
    print(monthly.describe(t, f))
    print("\nwhat moves the bill most (each input ±20 %):")
    for r in monthly.sensitivity(t, f):
        print(f"  {r['input']:18s} ${r['usd_low']:>12,.0f} … ${r['usd_high']:>12,.0f}   "
              f"swing {r['swing_pct']:5.1f} %")
    return 0


def cmd_spot(args) -> int:
    from labkit.cost import spot

    c, m = args.checkpoint_min * 60, args.mtbf_h * 3600
    y, d = spot.young(c, m), spot.daly(c, m)
    print(f"checkpoint every: Young {y / 60:.1f} min, Daly {d / 60:.1f} min "
          f"(C = {args.checkpoint_min:g} min, MTBF = {args.mtbf_h:g} h)")
    if args.work_h:
        job = spot.Job(args.work_h, c, args.restart_min * 60, d)
        r = spot.simulate_job(job, m, args.spot_price, args.on_demand_price, trials=args.trials)
        print(f"on demand: {r['on_demand_hours']:.1f} h, ${r['on_demand_cost']:,.2f}")
        print(f"spot:      {r['spot_hours_mean']:.1f} h mean (p95 {r['spot_hours_p95']:.1f} h), "
              f"${r['spot_cost_mean']:,.2f} mean, {r['preemptions_mean']:.1f} preemptions; "
              f"saving {r['saving_pct']:.1f} %  (Monte Carlo, {r['trials']} runs)")
    return 0


def register(sub) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("cost", help="price catalog, $/1M tokens, monthly spend, spot",
                       description=__doc__, formatter_class=raw)
    s = p.add_subparsers(dest="cost_cmd", metavar="ACTION", required=True)
    pr = s.add_parser("prices", help="the price catalog (SkyPilot's shape, with sources)")
    pr.add_argument("--gpu", help="only this accelerator, e.g. H100")
    pr.add_argument("--override", help="your own CSV with the same columns (e.g. a discount)")
    pr.set_defaults(func=cmd_prices)
    pt = s.add_parser("per-token", help="$/1M tokens from $/hour and tok/s",
                      description=PER_TOKEN, formatter_class=raw)
    pt.add_argument("--price", type=float, required=True, help="$ per hour per GPU")
    pt.add_argument("--tok-s", type=float, required=True, help="output tok/s at the SLO")
    pt.add_argument("--gpus", type=int, default=1)
    pt.add_argument("--prompt-tok-s", type=float, default=0.0, help="prompt tok/s, same run")
    pt.set_defaults(func=cmd_per_token)
    mo = s.add_parser("monthly", help="replicas and $/month for a traffic profile",
                      description=MONTHLY, formatter_class=raw)
    mo.add_argument("--requests-per-day", type=float, required=True)
    mo.add_argument("--peak-to-mean", type=float, default=2.0)
    mo.add_argument("--input-tokens", type=int, default=512)
    mo.add_argument("--output-tokens", type=int, default=128)
    mo.add_argument("--capacity", type=float, required=True,
                    help="output tok/s one replica sustains at the SLO (measured)")
    mo.add_argument("--price", type=float, required=True, help="$ per replica-hour")
    mo.add_argument("--headroom", type=float, default=0.2)
    mo.set_defaults(func=cmd_monthly)
    sp = s.add_parser("spot", help="checkpoint interval (Young, Daly) and spot vs on demand",
                      description=SPOT, formatter_class=raw)
    sp.add_argument("--checkpoint-min", type=float, required=True)
    sp.add_argument("--mtbf-h", type=float, required=True, help="mean time between preemptions")
    sp.add_argument("--work-h", type=float, help="the job's compute hours (enables Monte Carlo)")
    sp.add_argument("--restart-min", type=float, default=10.0)
    sp.add_argument("--spot-price", type=float, default=1.0)
    sp.add_argument("--on-demand-price", type=float, default=3.0)
    sp.add_argument("--trials", type=int, default=2000)
    sp.set_defaults(func=cmd_spot)
