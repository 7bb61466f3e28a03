"""Lab 40 glue: lab 23's measured capacities priced with the catalog, a monthly bill, spot
and quantization — each number marked measured, or modelled with its source."""

from __future__ import annotations

import os
import time
from pathlib import Path

from labkit import runs
from labkit.cost import catalog, monthly, per_token


def lab23_capacities(run_dir: Path) -> tuple[list[dict], str | None]:
    """Rows of lab 23's capacity table that met the SLO, or ([], why not)."""
    res = runs.read_json(Path(run_dir) / "23_engine_comparison" / "results.json")
    if res is None:
        return [], ("lab 23 has not run in this run directory (`labkit run 23` first, or run "
                    "the labs in order)")
    rows = (res.get("tables", {}).get("capacity_and_cost") or {}).get("rows", [])
    ok = [r for r in rows if r.get("output_tok_per_s_at_slo") not in (None, "")]
    return ok, None if ok else "lab 23 recorded no capacity that met its SLO"


def cpu_price_here(rows: list[catalog.PriceRow]) -> tuple[float, str]:
    """$/hour for this machine's cores, from the catalog's CPU instance (per-vCPU share)."""
    cpu = catalog.cpu_row(rows)
    cores = os.cpu_count() or 1
    per_vcpu = cpu.price / (cpu.vcpus or 1)
    return per_vcpu * cores, (f"{cores} vCPU × ${per_vcpu:.4g}/vCPU-hour: the {cpu.label} "
                              f"row (${cpu.price}/h for {cpu.vcpus:g} vCPUs; {cpu.source})")


def priced(capacities: list[dict], price: float, what: str) -> list[dict]:
    """$/1M tokens per config and workload, both conventions, at the measured capacity."""
    out = []
    for r in capacities:
        tok = float(r["output_tok_per_s_at_slo"])
        total = float(r["total_tok_per_s_at_slo"]) if r.get("total_tok_per_s_at_slo") else None
        out.append({"config": r["config"], "workload": r["workload"],
                    "capacity_status": r.get("capacity_status", ""),
                    "output_tok_per_s": tok, "price_per_hour": round(price, 4),
                    "priced_as": what,
                    "usd_per_1m_output": per_token.cost_per_million_tokens(price, tok),
                    "usd_per_1m_total": per_token.cost_per_million_tokens(price, total)
                    if total else None})
    return out


def best(rows: list[dict], workload: str) -> dict | None:
    """The cheapest bracketed config on a workload (a lower bound is never 'best')."""
    cands = [r for r in rows if r["workload"] == workload and r["capacity_status"] == "bracketed"]
    return min(cands, key=lambda r: r["usd_per_1m_output"]) if cands else None


def measure_checkpoint_write(nbytes: int, where: Path, repeats: int = 3) -> float:
    """Seconds to write `nbytes` atomically and durably (temp file, fsync, rename): what a
    checkpoint of that size costs on this disk. Best of `repeats`."""
    where = Path(where)
    where.mkdir(parents=True, exist_ok=True)
    block = os.urandom(min(nbytes, 1 << 20))  # random: no file system can compress it away
    best_s = float("inf")
    for i in range(repeats):
        tmp, dst = where / f"ckpt.tmp{i}", where / f"ckpt{i}"
        t0 = time.perf_counter()
        with open(tmp, "wb") as f:
            left = nbytes
            while left > 0:
                left -= f.write(block[:left])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
        best_s = min(best_s, time.perf_counter() - t0)
        dst.unlink()
    return best_s


def sensitivity_figure(rows: list[dict], base: float):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = [r["input"] for r in rows][::-1]
    for i, r in enumerate(rows[::-1]):
        lo, hi = sorted((r["usd_low"], r["usd_high"]))
        ax.barh(i, hi - lo, left=lo, color="tab:blue", alpha=0.7)
    ax.axvline(base, color="black", lw=1)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("$ per month (each input moved ±20 %)")
    ax.set_title("What moves the monthly bill", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def spot_figure(result: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist(result["walls_h"], bins=40, color="tab:orange", alpha=0.8, label="spot (Monte Carlo)")
    ax.axvline(result["on_demand_hours"], color="black", ls="--", label="on demand")
    ax.set_xlabel("job wall time (hours)")
    ax.set_ylabel("runs")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def traffic_rows(t: monthly.Traffic, f: monthly.Fleet) -> list[dict]:
    m = monthly.monthly_spend(t, f)
    return [{"step": k, "value": round(v, 4) if isinstance(v, float) else v}
            for k, v in m.items()]
