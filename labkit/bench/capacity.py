"""Capacity at the SLO, found rather than assumed: raise the load until the SLO breaks, then
bisect between the last load that passed and the first that failed.

A sweep over a fixed list of loads answers "which of these met the SLO?". If every one met
it, the highest is only a *lower bound* on capacity, and a cost computed from it flatters
the config that happened to get the smallest list. The search here keeps going:

    raise    start, start·factor, start·factor², …   until a load fails (or max_load passes)
    bisect   between the last pass (low) and the first fail (high) until high − low ≤ resolution

and returns both bounds, so whoever prices the result knows how precise it is:

    status "bracketed"     low met the SLO, high did not: capacity ∈ [low, high)
    status "lower bound"   even max_load met it: capacity ≥ low; quote no saving from it
    status "SLO not met"   even the first load failed: capacity < start

Each load point sends `warmup_requests` first (left out of the statistics: the cold start
of a closed loop, where every slot fires at once) and then `measured_requests`, at least
100 by default, so that p99 is not simply the slowest request of a handful. Each point also
gets its own seed: fresh prompts, so a prefix cache cannot serve point 5 from point 4.

`search()` is the pure logic (it takes any `measure(load) -> row` function, which makes it
testable against a server of known capacity); `run_capacity_search()` wires it to
`labkit bench` and writes the same files a sweep does (sweep.csv, sweep.json).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from labkit.bench import sweep
from labkit.bench.report import _clean
from labkit.bench.loadgen import BenchConfig, default_out_dir, run_bench

STATUSES = ("bracketed", "lower bound", "SLO not met")


@dataclass
class SearchPlan:
    kind: str = "concurrencies"  # "concurrencies" (closed loop) or "rates" (open loop, req/s)
    start: float = 2  # first load tried
    factor: float = 2.0  # each raise multiplies the load by this
    max_load: float = 64  # never try more than this
    resolution: float = 2  # stop bisecting when high − low ≤ this (load units)
    attainment: float = 0.9  # share of requests that must meet every SLO limit
    measured_requests: int = 100  # per load point, after the warm-up
    warmup_requests: int = 8  # per load point, sent first and left out of the statistics

    def __post_init__(self):
        if self.kind not in sweep.LOAD_NAME:
            raise ValueError(f"kind must be one of {', '.join(sweep.LOAD_NAME)}, got {self.kind!r}")
        if not (self.start > 0 and self.max_load >= self.start):
            raise ValueError(f"need 0 < start ≤ max_load, got start={self.start}, "
                             f"max_load={self.max_load}")
        if not self.factor > 1:
            raise ValueError(f"factor must be > 1 (each raise must raise), got {self.factor}")
        if not self.resolution > 0:
            raise ValueError(f"resolution must be > 0, got {self.resolution}")
        if self.measured_requests < 1 or self.warmup_requests < 0:
            raise ValueError("measured_requests must be ≥ 1 and warmup_requests ≥ 0")
        if self.kind == "concurrencies":  # a concurrency is a whole number of requests
            self.start, self.max_load = int(self.start), int(self.max_load)
            self.resolution = max(1, int(self.resolution))

    @property
    def integer(self) -> bool:
        return self.kind == "concurrencies"


def _raised(load: float, plan: SearchPlan) -> float:
    nxt = load * plan.factor
    if plan.integer:
        nxt = max(int(load) + 1, int(math.ceil(nxt)))
    return min(nxt, plan.max_load)


def _mid(low: float, high: float, plan: SearchPlan) -> float:
    return (int(low) + int(high)) // 2 if plan.integer else (low + high) / 2


def search(measure: Callable[[float], dict], plan: SearchPlan) -> dict:
    """Find the highest load that meets the SLO. `measure(load)` runs one load point and
    returns its sweep row (needs "load" and "meets_slo"). Every point measured is kept."""
    rows: list[dict] = []

    def passes(load: float) -> bool:
        row = measure(load)
        rows.append(row)
        return bool(row["meets_slo"])

    low = high = None
    load = plan.start
    while True:  # raise until the SLO breaks
        if not passes(load):
            high = load
            break
        low = load
        if load >= plan.max_load:
            break
        load = _raised(load, plan)
    if low is not None and high is not None:  # bisect the bracket
        while high - low > plan.resolution:
            mid = _mid(low, high, plan)
            if mid in (low, high):
                break
            if passes(mid):
                low = mid
            else:
                high = mid
    status = ("lower bound" if high is None else "SLO not met" if low is None
              else "bracketed")
    by_load = {r["load"]: r for r in rows}
    return {"status": status, "low": low, "high": high, "resolution": plan.resolution,
            "kind": plan.kind, "attainment": plan.attainment,
            "rows": sorted(rows, key=lambda r: r["load"]),
            "capacity": by_load.get(low), "points_measured": len(rows)}


def describe_bounds(result: dict) -> str:
    """'16 ≤ capacity < 20 (concurrency)' and the like, for print-outs and pages."""
    name = sweep.LOAD_NAME[result["kind"]]
    low, high = result["low"], result["high"]
    if result["status"] == "bracketed":
        return f"{low:g} ≤ capacity < {high:g} ({name})"
    if result["status"] == "lower bound":
        return f"capacity ≥ {low:g} ({name}; even the highest load allowed met the SLO)"
    return f"capacity < {high:g} ({name}; even the first load failed the SLO)"


def run_capacity_search(cfg: BenchConfig, plan: SearchPlan) -> dict:
    """`search()` against a live server with `labkit bench`; `cfg.slo` must be set.

    The result has a sweep's shape (rows, capacity, kind, slo_ms, attainment, out_dir,
    summaries) plus status, low, high and resolution."""
    if not cfg.slo:
        raise ValueError("a capacity search needs an SLO (cfg.slo), e.g. {'ttft': 1000}")
    out = Path(cfg.out_dir or default_out_dir())
    out.mkdir(parents=True, exist_ok=True)
    summaries: dict[float, dict] = {}

    def measure(load: float) -> dict:
        point = replace(cfg, out_dir=str(out / f"{sweep.LOAD_NAME[plan.kind]}-{load:g}"),
                        seed=cfg.seed + len(summaries),
                        num_requests=plan.warmup_requests + plan.measured_requests,
                        warmup_requests=plan.warmup_requests)
        point = replace(point, rate=float(load)) if plan.kind == "rates" else \
            replace(point, concurrency=int(load))
        s = run_bench(point)
        summaries[load] = s
        return sweep.row_from_summary(load, s, plan.attainment)

    result = search(measure, plan)
    result.update(slo_ms=cfg.slo, out_dir=str(out), plan=asdict(plan))
    with open(out / "sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=sweep.COLUMNS)
        w.writeheader()
        w.writerows(result["rows"])
    (out / "sweep.json").write_text(json.dumps(_clean(result), indent=2) + "\n")
    result["summaries"] = [summaries[r["load"]] for r in result["rows"]]
    return result
