"""A load sweep for notebooks: every load point sends prompts the server has never seen.

Like sweep.run_sweep (load point i uses seed `cfg.seed + i`: new prompts and a new arrival
draw each time, the same lengths and shapes, so an engine's prefix cache cannot serve a
later point from an earlier point's prompts), with what a lab needs on top: the loads run
in ascending order, and each point's full summary is kept for the readout. Shared-prefix
groups get new system prompts per point too, so every point starts with cold prefixes and
warms them itself.

The result has the shape of run_sweep's (rows, capacity, kind, slo_ms, attainment, out_dir,
plot), plus `summaries`: each point's full summary, for the readout.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

from labkit.bench import sweep
from labkit.bench.report import _clean
from labkit.bench.loadgen import BenchConfig, default_out_dir, run_bench


def run_fresh_sweep(cfg: BenchConfig, kind: str, values: list[float],
                    attainment: float = 0.9, plot: bool = True) -> dict:
    """One benchmark per load value, each with fresh prompts; table, plot, capacity."""
    if kind not in sweep.LOAD_NAME:
        raise ValueError(f"kind must be one of {', '.join(sweep.LOAD_NAME)}, got {kind!r}")
    out = Path(cfg.out_dir or default_out_dir())
    out.mkdir(parents=True, exist_ok=True)
    rows, summaries = [], []
    for i, v in enumerate(sorted(values)):
        point = replace(cfg, out_dir=str(out / f"{sweep.LOAD_NAME[kind]}-{v:g}"),
                        seed=cfg.seed + i)
        point = replace(point, rate=float(v)) if kind == "rates" else \
            replace(point, concurrency=int(v))
        s = run_bench(point)
        summaries.append(s)
        rows.append(sweep.row_from_summary(v, s, attainment))
    with open(out / "sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=sweep.COLUMNS)
        w.writeheader()
        w.writerows(rows)
    best = sweep.capacity(rows) if cfg.slo else None
    result = {"kind": kind, "slo_ms": cfg.slo, "attainment": attainment, "rows": rows,
              "capacity": best, "out_dir": str(out)}
    (out / "sweep.json").write_text(json.dumps(_clean(result), indent=2) + "\n")
    if plot:
        result["plot"] = str(sweep.plot(rows, kind, cfg.slo, out / "pareto.png"))
    result["summaries"] = summaries
    return result
