"""Summary files and the table printed at the end of a run.

    summary.json   the nested summary (metrics.summarize) plus the run's config
    summary.csv    the same flattened to `name,value` rows (latency_ms.ttft.p99,…)
    requests.jsonl one line per request (written by the runner as requests finish)

`load_records(path)` reads requests.jsonl back, so any figure can be recomputed later:
`metrics.summarize(load_records("runs/bench/…/requests.jsonl"))`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path

from labkit.bench.client import RequestRecord
from labkit.bench.request_metrics import CONVENTIONS


def _atomic_write(path: Path, text: str) -> None:
    """Temp file + rename: a reader never sees half a summary, even after a crash."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten(v, key + "."))
        elif not isinstance(v, list):
            flat[key] = v
    return flat


def _clean(obj):
    """JSON has no inf/nan: write them as strings instead of producing invalid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def write_summary(out: Path, summary: dict) -> None:
    out = Path(out)
    _atomic_write(out / "summary.json", json.dumps(_clean(summary), indent=2) + "\n")
    rows = flatten({k: v for k, v in summary.items() if k not in ("conventions", "run")})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["metric", "value"])
    w.writerows(rows.items())
    _atomic_write(out / "summary.csv", buf.getvalue())


def load_records(path: str | os.PathLike) -> list[RequestRecord]:
    """Records from a requests.jsonl; a torn last line (crash mid-write) is skipped."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(RequestRecord.from_dict(json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            continue
    return records


def _fmt(x, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "inf" if math.isinf(x) else f"{x:,.{digits}f}"
    return str(x)


def format_summary(s: dict) -> str:
    """A readable table: counts, rates, then each latency with its convention."""
    req, rate, thr = s["requests"], s["rate"], s["throughput"]
    lines = []
    run = s.get("run", {})
    if run:
        lines.append(f"arrivals: {run.get('arrivals')}   results: {run.get('out_dir')}")
    lines.append(f"requests: {req['completed']} completed, {req['failed']} failed "
                 f"(of {req['measured']} measured; {req['warmup_excluded']} warmup excluded)")
    if s["errors"]:
        lines.append("errors by cause: " + ", ".join(f"{k}={v}" for k, v in s["errors"].items()))
    vs = rate.get("achieved_vs_target")
    lines.append(f"rate (req/s): target {_fmt(rate['target'], 2)}, schedule "
                 f"{_fmt(rate['scheduled'], 2)}, achieved {_fmt(rate['achieved'], 2)}"
                 + (f" ({vs * 100:.1f} % of target)" if vs else "")
                 + f"; dispatch lag p99 {_fmt(rate['dispatch_lag_ms'].get('p99'), 2)} ms")
    lines.append(f"throughput over {s['duration_s']:.2f} s: {thr['requests_per_s']:.2f} req/s, "
                 f"{thr['output_tokens_per_s']:,.1f} output tok/s, "
                 f"{thr['total_tokens_per_s']:,.1f} total tok/s")
    if "goodput" in s:
        g = s["goodput"]
        limits = ", ".join(f"{k}≤{v:g} ms" for k, v in g["slo_ms"].items())
        lines.append(f"goodput ({limits}; {g['clock']}): {g['requests_per_s']:.2f} req/s, "
                     f"{_fmt((g['attainment'] or 0) * 100)} % of requests met every limit")
    t = s["tokens"]
    if t["client_vs_usage_mismatch_rate"] is not None:
        lines.append(f"token counts from {t['source']}; client count disagreed with usage on "
                     f"{t['client_vs_usage_mismatch_rate'] * 100:.1f} % of requests")
    else:
        lines.append("token counts: the server sent no usage; client counts used (unchecked)")
    lines += [f"WARNING: {w}" for w in s.get("warnings", [])]
    lines.append("")
    head = f"{'metric (ms)':<20}{'mean':>9}{'p50':>9}{'p90':>9}{'p95':>9}{'p99':>9}{'max':>9}  n"
    lines += [head, "-" * len(head)]
    for name, st in s["latency_ms"].items():
        cells = "".join(f"{_fmt(st.get(k), 2):>9}" for k in ("mean", "p50", "p90", "p95",
                                                              "p99", "max"))
        lines.append(f"{name:<20}{cells}  {st.get('n', 0)}")
    lines += ["", "conventions:"]
    lines += [f"  {k:<19} {v}" for k, v in CONVENTIONS.items()]
    return "\n".join(lines)
