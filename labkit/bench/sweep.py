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


PANELS = (("ttft_p99_ms", "TTFT p99 (ms)", "ttft"),
          ("tpot_p99_ms", "TPOT p99 (ms, vLLM convention)", "tpot"))


def _plt():
    import matplotlib.pyplot as plt

    return plt


def pareto_figure(rows: list[dict], slo: dict, kind: str, capacity: dict | None = None):
    """Latency vs throughput, one point per load; the Pareto front and the capacity marked."""
    fig, axes = _plt().subplots(1, 2, figsize=(11, 4.2))
    for ax, (key, label, slo_key) in zip(axes, PANELS):
        pts = [(r["output_tok_per_s"], r[key]) for r in rows if r[key] is not None]
        if not pts:
            ax.set_title(f"{label}: no data")
            continue
        ok = [r for r in rows if r[key] is not None and r["meets_slo"]]
        bad = [r for r in rows if r[key] is not None and not r["meets_slo"]]
        ax.scatter([r["output_tok_per_s"] for r in ok], [r[key] for r in ok],
                   color="tab:green", label="meets the SLO", zorder=3)
        ax.scatter([r["output_tok_per_s"] for r in bad], [r[key] for r in bad],
                   color="tab:red", marker="x", label="misses the SLO", zorder=3)
        for r in rows:
            if r[key] is not None:
                ax.annotate(f"{LOAD_NAME[kind]} {r['load']:g}", (r["output_tok_per_s"], r[key]),
                            textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = pareto_front(pts)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], color="tab:orange",
                label="Pareto front", zorder=2)
        if slo.get(slo_key):
            ax.axhline(slo[slo_key], color="tab:red", linestyle="--", lw=1,
                       label=f"SLO {slo[slo_key]:g} ms")
        if capacity and capacity.get(key) is not None:
            ax.scatter([capacity["output_tok_per_s"]], [capacity[key]], s=160,
                       facecolors="none", edgecolors="black", label="capacity at the SLO",
                       zorder=4)
        ax.set_xlabel("output tokens/s (server usage)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("latency vs throughput: each point is one load level")
    fig.tight_layout()
    return fig


def save_pareto_png(rows: list[dict], kind: str, slo: dict, path: Path) -> Path:
    """pareto_figure saved as a PNG (headless: the Agg backend, the figure closed after)."""
    import matplotlib

    matplotlib.use("Agg")
    fig = pareto_figure(rows, slo, kind, capacity(rows) if slo else None)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def run_sweep(cfg: BenchConfig, kind: str, values: list[float],
              attainment: float = 0.9, plot: bool = True) -> dict:
    """Run one benchmark per value; write the table, the plot and the capacity.

    Load point i uses seed cfg.seed + i: new prompts each time, the same lengths. With one
    seed for every point, point 2 would resend point 1's exact prompts, and an engine with a
    prefix cache (vLLM's default, SGLang, the teaching engine) would serve them from cache:
    a "random" workload quietly turned into a 100 %-hit one, flattering the later points.
    Shared-prefix groups get new system prompts per point too, so every point starts with
    cold prefixes and warms them itself.

    The result: rows, capacity, kind, slo_ms, attainment, out_dir, plot (sweep.json holds
    these), plus `summaries`: each point's full summary, for a lab's readout."""
    if kind not in LOAD_NAME:
        raise ValueError(f"kind must be one of {', '.join(LOAD_NAME)}, got {kind!r}")
    out = Path(cfg.out_dir or default_out_dir())
    out.mkdir(parents=True, exist_ok=True)
    rows, summaries = [], []
    for i, v in enumerate(values):
        point = replace(cfg, out_dir=str(out / f"{LOAD_NAME[kind]}-{v:g}"), seed=cfg.seed + i)
        point = replace(point, rate=float(v)) if kind == "rates" else \
            replace(point, concurrency=int(v))
        summaries.append(run_bench(point))
        rows.append(row_from_summary(v, summaries[-1], attainment))
    with open(out / "sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    best = capacity(rows) if cfg.slo else None
    result = {"kind": kind, "slo_ms": cfg.slo, "attainment": attainment, "rows": rows,
              "capacity": best, "out_dir": str(out)}
    (out / "sweep.json").write_text(json.dumps(_clean(result), indent=2) + "\n")
    if plot:
        result["plot"] = str(save_pareto_png(rows, kind, cfg.slo, out / "pareto.png"))
    result["summaries"] = summaries
    return result


def run_fresh_sweep(cfg: BenchConfig, kind: str, values: list[float],
                    attainment: float = 0.9, plot: bool = True) -> dict:
    """run_sweep with the loads in ascending order, as a lab reads them."""
    return run_sweep(cfg, kind, sorted(values), attainment, plot)


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
