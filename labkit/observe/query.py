"""Prometheus HTTP API answers as plain rows, ready for a table or a plot.

/api/v1/query answers {"resultType": "vector", "result": [{"metric": {...}, "value": [t, "1.5"]}]}
and /api/v1/query_range a "matrix" of [t, "v"] pairs: values are strings, and "NaN" or
"+Inf" are valid ones (histogram_quantile over no traffic gives NaN). The rows here hold
floats, so `math.isnan` and matplotlib work on them directly.

    instant_rows(data) → [{"metric": {...}, "value": 1.5, "time": 1733...}]
    range_rows(data)   → [{"metric": {...}, "times": [...], "values": [...]}]
    as_frame(rows)     → a pandas DataFrame, if pandas is installed (one row per sample)
"""

from __future__ import annotations


def instant_rows(data: dict) -> list[dict]:
    kind = data.get("resultType")
    if kind == "scalar":
        t, v = data["result"]
        return [{"metric": {}, "value": float(v), "time": float(t)}]
    if kind != "vector":
        raise ValueError(f"expected an instant vector, got {kind!r}")
    return [{"metric": r["metric"], "value": float(r["value"][1]), "time": float(r["value"][0])}
            for r in data["result"]]


def range_rows(data: dict) -> list[dict]:
    if data.get("resultType") != "matrix":
        raise ValueError(f"expected a range matrix, got {data.get('resultType')!r}")
    return [{"metric": r["metric"], "times": [float(t) for t, _ in r["values"]],
             "values": [float(v) for _, v in r["values"]]} for r in data["result"]]


def label(row: dict, *names: str) -> str:
    """A short legend entry from the series' labels ('model_name=tiny-llama')."""
    m = row["metric"]
    picked = [f"{n}={m[n]}" for n in names if n in m]
    return ", ".join(picked) or m.get("__name__", "series")


def as_frame(rows: list[dict]):
    import pandas as pd

    flat = []
    for r in rows:
        if "times" in r:
            flat += [{**r["metric"], "time": t, "value": v}
                     for t, v in zip(r["times"], r["values"])]
        else:
            flat.append({**r["metric"], "time": r["time"], "value": r["value"]})
    return pd.DataFrame(flat)
