"""Lab 30 glue: a real Prometheus scraping the teaching engine and the GPU exporter, a load
test, and the numbers to put side by side (server histograms vs the client's own clock)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from labkit.observe.prometheus import Prometheus


@dataclass
class Observed:
    prom: Prometheus
    server: object  # labkit.serve.launcher.Server
    exporter_url: str


@contextlib.contextmanager
def observed_engine(data_dir: Path, model: str, **knobs):
    """Prometheus, the teaching engine and the exporter, each registered as a target; all
    stopped when the block ends (nothing is left running, even on an error)."""
    from labkit.serve import serve
    from labkit.observe.gpu_exporter import start_exporter

    data_dir = Path(data_dir)
    with Prometheus(data_dir / "prometheus") as prom, \
            start_exporter() as exporter_url, \
            serve("mini", model=model, port=None, log_dir=data_dir / "engine", **knobs) as server:
        prom.add_target("engine", server.base_url.split("//")[1],
                        labels={"engine": "mini"}, metrics_path="/metrics")
        prom.add_target("gpu", exporter_url.split("//")[1].split("/")[0])
        prom.wait_for_target("engine")
        prom.wait_for_target("gpu")
        yield Observed(prom, server, exporter_url)


def wait_for_scrapes(prom: Prometheus, seconds: float = 3.0) -> None:
    """Let a few 1 s scrapes land after the load ends, so the last requests are counted."""
    time.sleep(seconds)


def quantiles_from_prometheus(prom: Prometheus, start: float, end: float) -> dict:
    """TTFT p50/p99 over [start, end] from the engine's histogram, as a dashboard computes it
    (bucket counts increased over the window, then linear interpolation inside a bucket)."""
    window = f"{max(int(end - start) + 2, 5)}s"
    out = {}
    for p in (0.5, 0.99):
        expr = (f"histogram_quantile({p}, sum by (le) "
                f"(increase(vllm:time_to_first_token_seconds_bucket[{window}])))")
        rows = prom.query(expr, time=end)
        out[f"p{int(p * 100)}"] = rows[0]["value"] * 1e3 if rows else None
    count = prom.query(f"sum(increase(vllm:time_to_first_token_seconds_count[{window}]))",
                       time=end)
    out["requests"] = round(count[0]["value"]) if count else None
    return out


def bucket_around(prom: Prometheus, seconds: float) -> tuple[float, float]:
    """The histogram bucket bounds (s) a latency falls between: what interpolation works in."""
    rows = prom.query("max by (le) (vllm:time_to_first_token_seconds_bucket)")
    bounds = sorted(float(r["metric"]["le"]) for r in rows if r["metric"]["le"] != "+Inf")
    lower = max((b for b in bounds if b < seconds), default=0.0)
    upper = min((b for b in bounds if b >= seconds), default=float("inf"))
    return lower, upper


def ttft_rows(client: dict, server: dict) -> list[dict]:
    """The same requests' TTFT three ways, for the comparison table."""
    lat = client["latency_ms"]
    return [{"source": "labkit bench, from the send (client clock)",
             "p50_ms": lat["ttft"].get("p50"), "p99_ms": lat["ttft"].get("p99")},
            {"source": "labkit bench, from the schedule (what a user waits)",
             "p50_ms": lat["ttft_from_schedule"].get("p50"),
             "p99_ms": lat["ttft_from_schedule"].get("p99")},
            {"source": "Prometheus histogram_quantile (server clock, interpolated)",
             "p50_ms": server["p50"], "p99_ms": server["p99"]}]


def ttft_buckets(prom: Prometheus, start: float, end: float) -> tuple[list[float], list[float]]:
    """The run's TTFT histogram: bucket upper bounds (s, +Inf last) and cumulative counts."""
    window = f"{max(int(end - start) + 2, 5)}s"
    rows = prom.query(f"sum by (le) (increase(vllm:time_to_first_token_seconds_bucket"
                      f"[{window}]))", time=end)
    pairs = sorted((float(r["metric"]["le"]), r["value"]) for r in rows)
    return [b for b, _ in pairs], [c for _, c in pairs]


def record_all(rec, summary: dict, server_q: dict, load_seconds: float) -> None:
    """The lab's scalars in one place: client and server TTFT, the request counts."""
    lat = summary["latency_ms"]
    rec.scalar("requests_completed", summary["requests"]["completed"])
    rec.scalar("requests_seen_by_prometheus", server_q["requests"],
               note="increase of the TTFT histogram's _count over the run")
    rec.scalar("client_ttft_p50_ms", round(lat["ttft"]["p50"], 2), unit="ms",
               note="labkit bench, from the send")
    rec.scalar("client_ttft_p99_ms", round(lat["ttft"]["p99"], 2), unit="ms",
               note="labkit bench, from the send")
    for p in ("p50", "p99"):
        rec.scalar(f"prometheus_ttft_{p}_ms", round(server_q[p], 2), unit="ms",
                   note="histogram_quantile over the run, server clock")
    rec.scalar("load_seconds", round(load_seconds, 1), unit="s")
