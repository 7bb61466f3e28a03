"""Sweep the load: one benchmark per request rate (or concurrency), then find capacity.

Latency grows with load; throughput grows until the server saturates. A single run tells
you one point of that curve; a sweep draws it:

    sweep.csv / sweep.json   one row per load: achieved rate, tok/s, latency percentiles,
                             goodput, SLO attainment
    pareto.png               latency vs throughput, the non-dominated points joined
    capacity                 the highest load that still meets the SLO — the number a
                             cost model turns into $/1M tokens

"Meets the SLO" means at least `attainment` (default 90 %, DistServe's goodput definition)
of the requests met every limit. Capacity is the highest load *below which every tested
load met it*: a lucky pass above a failure is noise, not capacity.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

from labkit.bench.report import _clean
from labkit.bench.loadgen import BenchConfig, default_out_dir, run_bench

LOAD_NAME = {"rates": "rate", "concurrencies": "concurrency"}
COLUMNS = ["load", "achieved_rps", "requests_per_s", "output_tok_per_s", "total_tok_per_s",
           "failed",
           "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "itl_p99_ms",
           "e2e_p50_ms", "e2e_p99_ms", "goodput_rps", "attainment", "meets_slo"]


def row_from_summary(load: float, s: dict, attainment: float) -> dict:
    lat, g = s["latency_ms"], s.get("goodput")
    # Latencies on the clock the SLO is judged on: from the schedule for an open-loop rate.
    from_schedule = g is not None and "schedule" in g["clock"]
    ttft = lat["ttft_from_schedule" if from_schedule else "ttft"]
    e2e = lat["e2e_from_schedule" if from_schedule else "e2e"]
    return {
        "load": load, "achieved_rps": s["rate"]["achieved"],
        "requests_per_s": s["throughput"]["requests_per_s"],
        "output_tok_per_s": s["throughput"]["output_tokens_per_s"],
        "total_tok_per_s": s["throughput"].get("total_tokens_per_s"),
        "failed": s["requests"]["failed"],
        "ttft_p50_ms": ttft.get("p50"), "ttft_p99_ms": ttft.get("p99"),
        "tpot_p50_ms": lat["tpot"].get("p50"), "tpot_p99_ms": lat["tpot"].get("p99"),
        "itl_p99_ms": lat["itl"].get("p99"),
        "e2e_p50_ms": e2e.get("p50"), "e2e_p99_ms": e2e.get("p99"),
        "goodput_rps": g["requests_per_s"] if g else None,
        "attainment": g["attainment"] if g else None,
        "meets_slo": (g["attainment"] is not None and g["attainment"] >= attainment)
        if g else None,
    }


def capacity(rows: list[dict]) -> dict | None:
    """The last row of the leading run of rows that meet the SLO (rows sorted by load)."""
    best = None
    for r in sorted(rows, key=lambda r: r["load"]):
        if not r["meets_slo"]:
            break
        best = r
    return best


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points (throughput, latency) that no other point beats on both axes."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(x2 >= x and y2 <= y and (x2 > x or y2 < y)
                        for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def plot(rows: list[dict], kind: str, slo: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, name, limit in ((axes[0], "ttft_p99_ms", "TTFT p99 (ms)", slo.get("ttft")),
                                 (axes[1], "tpot_p99_ms", "TPOT p99 (ms, vLLM convention)",
                                  slo.get("tpot"))):
        pts = [(r["output_tok_per_s"], r[key]) for r in rows if r[key] is not None]
        if not pts:
            continue
        ax.scatter(*zip(*pts), color="tab:blue", zorder=3)
        for r in rows:
            if r[key] is not None:
                ax.annotate(f"{r['load']:g}", (r["output_tok_per_s"], r[key]),
                            textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = pareto_front(pts)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], color="tab:orange",
                label="Pareto front", zorder=2)
        if limit:
            ax.axhline(limit, color="tab:red", linestyle="--", label=f"SLO {limit:g} ms")
        ax.set_xlabel("output tokens/s")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"latency vs throughput; point labels = {LOAD_NAME[kind]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_sweep(cfg: BenchConfig, kind: str, values: list[float],
              attainment: float = 0.9) -> dict:
    """Run one benchmark per value; write the table, the plot and the capacity.

    Load point i uses seed cfg.seed + i: new prompts each time, the same lengths. With one
    seed for every point, point 2 would resend point 1's exact prompts, and an engine with a
    prefix cache (vLLM's default, SGLang, the teaching engine) would serve them from cache:
    a "random" workload quietly turned into a 100 %-hit one, flattering the later points."""
    if kind not in ("rates", "concurrencies"):
        raise ValueError("kind must be 'rates' or 'concurrencies'")
    out = Path(cfg.out_dir or default_out_dir())
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, v in enumerate(values):
        sub = out / f"{LOAD_NAME[kind]}-{v:g}"
        if kind == "rates":
            c = replace(cfg, rate=float(v), out_dir=str(sub), seed=cfg.seed + i)
        else:
            c = replace(cfg, concurrency=int(v), out_dir=str(sub), seed=cfg.seed + i)
        rows.append(row_from_summary(v, run_bench(c), attainment))
    with open(out / "sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    best = capacity(rows) if cfg.slo else None
    result = {"kind": kind, "slo_ms": cfg.slo, "attainment": attainment, "rows": rows,
              "capacity": best, "out_dir": str(out)}
    (out / "sweep.json").write_text(json.dumps(_clean(result), indent=2) + "\n")
    result["plot"] = str(plot(rows, kind, cfg.slo, out / "pareto.png"))
    return result


def format_sweep(result: dict) -> str:
    heads = ["load", "achieved", "req/s", "out tok/s", "fail", "TTFT p50", "TTFT p99",
             "TPOT p50", "TPOT p99", "E2E p99", "goodput", "SLO"]
    keys = ["load", "achieved_rps", "requests_per_s", "output_tok_per_s", "failed",
            "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "e2e_p99_ms",
            "goodput_rps", "meets_slo"]

    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return "inf" if math.isinf(v) else f"{v:,.1f}"
        return str(v)

    lines = ["".join(f"{h:>11}" for h in heads)]
    lines += ["".join(f"{cell(r[k]):>11}" for k in keys) for r in result["rows"]]
    lines.append("latencies in ms; TTFT/E2E on the SLO's clock; TPOT = (E2E−TTFT)/(out−1)")
    if not result["slo_ms"]:
        lines.append("no --slo given: capacity not judged")
    elif result["capacity"]:
        c = result["capacity"]
        lines.append(f"capacity at the SLO ({result['attainment']:.0%} of requests within "
                     f"every limit): {LOAD_NAME[result['kind']]} "
                     f"{c['load']:g} → {c['output_tok_per_s']:,.1f} output tok/s")
    else:
        lines.append("no tested load met the SLO: lower the load or relax the limits")
    plot = f", plot: {result['plot']}" if result.get("plot") else ""
    lines.append(f"table: {result['out_dir']}/sweep.csv{plot}")
    return "\n".join(lines)
