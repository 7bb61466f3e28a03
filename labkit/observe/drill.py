"""The alert drill: break the service on purpose, watch the SLO alert fire, fix it, watch it
resolve — and keep the timeline.

An alert nobody has seen fire is a guess. The drill runs the real chain end to end: the
teaching engine under steady load, a real Prometheus evaluating the generated SLO rules,
then a fault (every engine step sleeps `delay_ms`: TTFT jumps past the SLO threshold),
then the fix (the fault file removed). It polls /api/v1/alerts once a second and records
when the fast page went pending (Prometheus's own activeAt), firing and resolved.

The SLO windows are scaled down (`scale`, default 1/30: 1h → 120 s, 5m → 10 s, `for` 2m →
4 s) so the whole drill takes about a minute instead of hours; the rule file says so in its
first line. A production rule file uses scale 1.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

from labkit.engine.fault import set_fault
from labkit.errors import UserError
from labkit.observe import slo as slo_mod
from labkit.observe.prometheus import Prometheus


def _epoch(rfc3339: str) -> float:
    """Prometheus's activeAt ("2026-12-03T14:04:27.123456789Z") as a Unix time."""
    import datetime as dt

    head, _, frac = rfc3339.rstrip("Z").partition(".")
    stamp = dt.datetime.fromisoformat(head).replace(tzinfo=dt.timezone.utc).timestamp()
    return stamp + (float(f"0.{frac}") if frac else 0.0)


def _wait_healthy(prom, alert: str, slo_name: str, threshold: float, timeout_s: float) -> None:
    """Inject the fault only into a healthy service: the alert inactive and the short window
    under the page threshold. A machine too slow to meet the SLO unprovoked says so."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        firing = any(a["labels"].get("alertname") == alert for a in prom.alerts())
        rows = prom.query(f'slo:sli_error:ratio_rate5m{{slo="{slo_name}"}}')
        if not firing and rows and rows[0]["value"] < threshold:
            return
        time.sleep(1.0)
    raise UserError(f"the service never met its SLO before the fault ({alert} active or the "
                    "error ratio above the page threshold): this machine is too busy or too "
                    "slow for the SLO threshold; raise it (e.g. threshold 1.0 s)")


def _load(base_url: str, model: str, stop: threading.Event, out_dir: Path, rate: float,
          params) -> list[dict]:
    """Open-loop load in 1-second chunks until `stop`; returns each chunk's summary."""
    from labkit.bench.loadgen import BenchConfig, run_bench

    summaries, seed = [], 0
    cfg = BenchConfig(base_url=base_url, model=model, workload="random", rate=rate,
                      num_requests=max(1, round(rate)), params=params, progress=False)
    while not stop.is_set():
        seed += 1
        summaries.append(run_bench(replace(cfg, seed=seed, out_dir=str(out_dir / f"chunk{seed}"))))
    return summaries


def run_drill(data_dir, model: str, spec: dict, *, alert: str | None = None,
              scale: float = 1 / 30, rate: float = 6.0, delay_ms: float = 1000.0,
              baseline_s: float = 10.0, timeout_s: float = 120.0, **engine_knobs) -> dict:
    """Run the drill; returns {"timeline": [...], "series": [...], "rules": path, ...}."""
    from labkit.bench.workloads import WorkloadParams
    from labkit.serve import serve

    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    fault = data_dir / "fault"
    set_fault(fault, None)
    parsed = slo_mod.load_spec(spec)
    alert = alert or f"SLOBurn_{parsed.slos[0].name}_1h_5m"
    events: list[dict] = []
    t0 = time.time()

    def mark(event: str, **more):
        events.append({"t_s": round(time.time() - t0, 1), "event": event, **more})

    with serve("mini", model=model, port=None, log_dir=data_dir / "engine",
               extra_args=["--fault-file", str(fault)], **engine_knobs) as server:
        with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
            exposition = r.read().decode()
        bounds = {s.histogram: slo_mod.bucket_bounds(exposition, s.histogram)
                  for s in parsed.slos if s.histogram}
        rules = data_dir / "slo_rules.yaml"
        rules.write_text(slo_mod.rules_yaml(parsed, bounds, scale))
        with Prometheus(data_dir / "prometheus", rule_files=[rules]) as prom:
            prom.add_target("engine", server.base_url.split("//")[1])
            prom.wait_for_target("engine")
            stop = threading.Event()
            result: dict = {}
            loader = threading.Thread(target=lambda: result.update(chunks=_load(
                server.base_url, server.model, stop, data_dir / "load", rate,
                WorkloadParams(input_len=16, output_len=8))), daemon=True)
            loader.start()
            mark("load started", detail=f"{rate:g} requests/s")
            time.sleep(baseline_s)
            _wait_healthy(prom, alert, parsed.slos[0].name, 14.4 * (1 - parsed.slos[0].objective),
                          timeout_s)
            set_fault(fault, delay_ms)
            mark("fault injected", detail=f"every engine step sleeps {delay_ms:g} ms")
            state, deadline = "inactive", time.time() + timeout_s
            while time.time() < deadline:
                now = {a["labels"].get("alertname"): a for a in prom.alerts()}
                new = now[alert]["state"] if alert in now else "inactive"
                if new != state:
                    if state == "inactive" and new in ("pending", "firing"):
                        # pending began at activeAt, maybe between two polls: use its time
                        events.append({"t_s": round(_epoch(now[alert]["activeAt"]) - t0, 1),
                                       "event": "pending", "alert": alert})
                    if new != "pending":
                        mark(new if new != "inactive" else "resolved", alert=alert)
                    state = new
                    if new == "firing" and not any(e["event"] == "fault removed" for e in events):
                        set_fault(fault, None)
                        mark("fault removed", detail="fault file deleted")
                    if events[-1]["event"] == "resolved":
                        break
                time.sleep(1.0)
            stop.set()
            loader.join(60)
            end = time.time()
            series = []
            for name in ("slo:sli_error:ratio_rate5m", "slo:sli_error:ratio_rate1h"):
                for row in prom.query_range(f'{name}{{slo="{parsed.slos[0].name}"}}', t0, end, 1):
                    series.append({"name": name, "times": [t - t0 for t in row["times"]],
                                   "values": row["values"]})
    set_fault(fault, None)
    budget = 1 - parsed.slos[0].objective
    return {"alert": alert, "timeline": events, "series": series, "rules": str(rules),
            "scale": scale, "threshold": 14.4 * budget, "requests": sum(
                c["requests"]["completed"] for c in result.get("chunks", [])),
            "resolved": bool(events) and events[-1]["event"] == "resolved"}


def timeline_figure(result: dict):
    """Error ratios over the drill with the page threshold and the events marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    scale = result["scale"]
    for s in result["series"]:
        window = "5m" if s["name"].endswith("5m") else "1h"
        scaled = slo_mod.duration(slo_mod.seconds(window) * scale)
        ax.plot(s["times"], s["values"], label=f"error ratio, {window} window (scaled: {scaled})")
    ax.axhline(result["threshold"], color="tab:red", ls="--",
               label=f"page threshold: 14.4 × budget = {result['threshold']:.3f}")
    colors = {"fault injected": "black", "pending": "tab:orange", "firing": "tab:red",
              "fault removed": "tab:green", "resolved": "tab:blue"}
    last = None
    for e in result["timeline"]:
        if e["event"] in colors:
            ax.axvline(e["t_s"], color=colors[e["event"]], lw=1, alpha=0.7)
            same = last is not None and abs(e["t_s"] - last) < 1.5  # side by side, not over
            ax.text(e["t_s"], 1.02, e["event"], rotation=90, fontsize=7, va="bottom",
                    ha="left" if same else "right", transform=ax.get_xaxis_transform())
            last = e["t_s"]
    ax.set_xlabel("seconds since the drill started")
    ax.set_ylabel("share of requests over the TTFT limit")
    ax.set_ylim(-0.02, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    return fig
