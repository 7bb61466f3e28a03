"""Dashboards as code: one panel list, rendered as Grafana JSON and as a PNG from live data.

The panels are what an inference on-call looks at: latency percentiles (TTFT, ITL, E2E,
queue time), batch size (running and waiting requests), KV-cache use, the prefix-cache hit
rate, token throughput, preemptions, finish reasons, and the GPU (utilisation *next to* SM
activity, memory, power). Each panel's PromQL is written once, with two placeholders:

    $model_name       the Grafana variable (a regex over the model_name label)
    $__rate_interval  Grafana's rate window

`grafana_dashboard()` keeps them for Grafana (schemaVersion 39, a DS_PROMETHEUS data source
input and a model_name variable, like vLLM's example dashboard); `promql()` fills them in
for a plain Prometheus query (`.*` and a fixed window), which is how `render_png()` draws the
same panels with matplotlib from a live Prometheus — Grafana itself cannot be installed from
the registries this project reaches.

Names are vLLM's (the teaching engine exports the same ones). `for_engine(expr, "sglang")`
maps them to SGLang's, accepting both its `sglang:` prefix and the router's `sglang_`.
The prefix-cache hit rate is computed from the counters, rate(hits)/rate(queries): vLLM's
own example dashboard has no such panel.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

M = '{model_name=~"$model_name"}'
UNIT_LABEL = {"s": "seconds", "percentunit": "fraction (0-1)", "percent": "%", "short": "count",
              "reqps": "requests/s", "mbytes": "MiB", "watt": "W"}
RATE = "$__rate_interval"


def _q(p: float, hist: str) -> str:
    return f"histogram_quantile({p}, sum by (le) (rate({hist}_bucket{M}[{RATE}])))"


@dataclass
class Panel:
    title: str
    targets: list[tuple[str, str]]  # (legend, PromQL with the placeholders)
    unit: str  # Grafana unit id: s, percentunit, percent, reqps, short, mbytes, watt
    description: str = ""
    gpu: bool = False  # only meaningful where a GPU exporter reports DCGM fields
    axis: str = field(default="")  # the PNG's y label (defaults to the unit)


PANELS = [
    Panel("Time to first token", [("p50", _q(0.5, "vllm:time_to_first_token_seconds")),
                                  ("p99", _q(0.99, "vllm:time_to_first_token_seconds"))], "s",
          "Server side: arrival to first token, from the engine's histogram "
          "(bucket-interpolated)."),
    Panel("Inter-token latency", [("p50", _q(0.5, "vllm:inter_token_latency_seconds")),
                                  ("p99", _q(0.99, "vllm:inter_token_latency_seconds"))], "s"),
    Panel("End-to-end latency", [("p50", _q(0.5, "vllm:e2e_request_latency_seconds")),
                                 ("p99", _q(0.99, "vllm:e2e_request_latency_seconds"))], "s"),
    Panel("Queue time", [("p99", _q(0.99, "vllm:request_queue_time_seconds"))], "s",
          "Waiting for a batch slot: the first thing to grow under overload."),
    Panel("Batch: running and waiting requests",
          [("running", f"sum(vllm:num_requests_running{M})"),
           ("waiting", f"sum(vllm:num_requests_waiting{M})")], "short"),
    Panel("KV-cache usage", [("used", f"avg(vllm:kv_cache_usage_perc{M})")], "percentunit"),
    Panel("Prefix-cache hit rate",
          [("hits / queries", f"sum(rate(vllm:prefix_cache_hits_total{M}[{RATE}])) / "
                              f"sum(rate(vllm:prefix_cache_queries_total{M}[{RATE}]))")],
          "percentunit", "Share of looked-up prompt tokens found in the cache."),
    Panel("Token throughput",
          [("prompt", f"sum(rate(vllm:prompt_tokens_total{M}[{RATE}]))"),
           ("generation", f"sum(rate(vllm:generation_tokens_total{M}[{RATE}]))")], "short",
          axis="tokens/s"),
    Panel("Preemptions", [("per second", f"sum(rate(vllm:num_preemptions_total{M}[{RATE}]))")],
          "short", axis="preemptions/s"),
    Panel("Finished requests by reason",
          [("{{finished_reason}}",
            f"sum by (finished_reason) (rate(vllm:request_success_total{M}[{RATE}]))")],
          "reqps"),
    Panel("GPU utilisation vs SM activity",
          [("GPU util (any kernel running)", "avg(DCGM_FI_DEV_GPU_UTIL)"),
           ("SM active", "avg(DCGM_FI_PROF_SM_ACTIVE) * 100")], "percent",
          "100 % utilisation with 10 % SM activity is a GPU mostly idle inside its kernels.",
          gpu=True),
    Panel("GPU memory used", [("{{gpu}}", "DCGM_FI_DEV_FB_USED")], "mbytes", gpu=True),
    Panel("GPU power", [("{{gpu}}", "DCGM_FI_DEV_POWER_USAGE")], "watt", gpu=True),
    Panel("Host CPU", [("cpu", "avg(labkit_host_cpu_percent)")], "percent",
          "From labkit's exporter; on the CPU tier this is where the work shows."),
]

SGLANG = {  # vLLM name → SGLang's (without prefix); None: SGLang has no such metric
    "vllm:time_to_first_token_seconds": "time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds": "inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds": "e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds": "queue_time_seconds",
    "vllm:num_requests_running": "num_running_reqs",
    "vllm:num_requests_waiting": "num_queue_reqs",
    "vllm:kv_cache_usage_perc": "token_usage",
    "vllm:prompt_tokens_total": "prompt_tokens_total",
    "vllm:generation_tokens_total": "generation_tokens_total",
}


def for_engine(expr: str, engine: str) -> str:
    """The same query for another engine's metric names (vllm and mini: unchanged)."""
    if engine in ("vllm", "mini"):
        return expr
    if engine != "sglang":
        raise ValueError(f"no metric names known for engine {engine!r}")
    for name, theirs in sorted(SGLANG.items(), key=lambda kv: -len(kv[0])):
        for suffix in ("_bucket", ""):
            expr = expr.replace(name + suffix + M, f'{{__name__=~"sglang[:_]{theirs}{suffix}",'
                                                   f'model_name=~"$model_name"}}')
    return expr


def promql(expr: str, model: str = ".*", window: str = "30s") -> str:
    """A panel's query with the Grafana placeholders filled in, for Prometheus itself."""
    return expr.replace("$model_name", model).replace("$__rate_interval", window)


def grafana_dashboard(panels=PANELS, title: str = "labkit — inference serving",
                      engine: str = "vllm") -> dict:
    """Grafana dashboard JSON (schemaVersion 39), importable with a Prometheus data source."""
    ds = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    out = []
    for i, p in enumerate(panels):
        out.append({
            "id": i + 1, "type": "timeseries", "title": p.title, "description": p.description,
            "datasource": ds, "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom",
                                   "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "none"}},
            "targets": [{"refId": chr(65 + k), "datasource": ds, "editorMode": "code",
                         "expr": for_engine(expr, engine), "legendFormat": legend,
                         "range": True}
                        for k, (legend, expr) in enumerate(p.targets)]})
    model_var = {"name": "model_name", "label": "model", "type": "query", "datasource": ds,
                 "query": {"query": "label_values(model_name)", "refId": "model"},
                 "definition": "label_values(model_name)", "includeAll": True,
                 "multi": True, "refresh": 1, "current": {}, "options": [],
                 "allValue": ".*", "hide": 0, "regex": "", "skipUrlSync": False, "sort": 1}
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                      "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "title": title, "uid": "labkit-serving", "tags": ["labkit", "inference", engine],
        "timezone": "browser", "editable": True, "graphTooltip": 1, "schemaVersion": 39,
        "version": 1, "refresh": "5s", "time": {"from": "now-15m", "to": "now"},
        "templating": {"list": [
            {"name": "DS_PROMETHEUS", "label": "data source", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0, "options": [], "refresh": 1,
             "regex": "", "skipUrlSync": False, "includeAll": False, "multi": False},
            model_var]},
        "annotations": {"list": []}, "panels": out,
    }


def provisioning_yaml(dashboards_dir: str = "/var/lib/grafana/dashboards/labkit") -> str:
    """Grafana's file provisioning for the generated JSON (put it in provisioning/dashboards)."""
    return ("apiVersion: 1\nproviders:\n  - name: labkit\n    orgId: 1\n    folder: labkit\n"
            "    type: file\n    disableDeletion: false\n    updateIntervalSeconds: 30\n"
            f"    options:\n      path: {dashboards_dir}\n      foldersFromFilesStructure: false\n")


def dump(dashboard: dict) -> str:
    return json.dumps(dashboard, indent=2) + "\n"


def panel_data(prom, start: float, end: float, step: float = 1.0, window: str = "30s",
               panels=PANELS) -> list[dict]:
    """Every panel's series over [start, end] from a live Prometheus (for the PNG and tests)."""
    out = []
    for p in panels:
        series = []
        for legend, expr in p.targets:
            for row in prom.query_range(promql(expr, window=window), start, end, step):
                name = legend
                for key, value in row["metric"].items():
                    name = name.replace("{{" + key + "}}", value)
                series.append({"legend": name, **row})
        out.append({"panel": p, "series": series,
                    "has_data": any(not math.isnan(v) for s in series for v in s["values"])})
    return out


def render_png(data: list[dict], path, note_no_gpu: str | None = None, cols: int = 3):
    """The dashboard as one figure (a matplotlib grid), saved to `path`; returns the figure."""
    import matplotlib.pyplot as plt

    rows = -(-len(data) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 2.9 * rows), squeeze=False)
    t0 = min((s["times"][0] for d in data for s in d["series"] if s["times"]), default=0)
    for ax, d in zip(axes.flat, data):
        p = d["panel"]
        for s in d["series"]:
            ax.plot([t - t0 for t in s["times"]], s["values"], label=s["legend"], lw=1.2)
        ax.set_title(p.title, fontsize=9)
        ax.set_xlabel("seconds", fontsize=8)
        ax.set_ylabel(p.axis or UNIT_LABEL.get(p.unit, p.unit), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if d["has_data"]:
            ax.legend(fontsize=7, loc="upper left")
        else:
            why = note_no_gpu if (p.gpu and note_no_gpu) else "no data in this window"
            ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes,
                    fontsize=8, color="gray", wrap=True)
    for ax in list(axes.flat)[len(data):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return fig


# Keys Grafana's own model does not hold: __inputs belongs to the export envelope (the data
# source to ask for on import), `definition` is the editor's display copy of a query.
ENVELOPE_ONLY = {"/__inputs", "/templating/list[1]/definition"}


def check_grafana(dashboard: dict) -> list[str]:
    """Problems with a dashboard, [] when none: labkit's structural rules, then a round trip
    through the pinned grafana-foundation-sdk's Dashboard model — a misspelt or misplaced
    key is dropped by the model, and reported here with its path."""
    problems = []
    if dashboard.get("schemaVersion", 0) < 39:
        problems.append(f"schemaVersion {dashboard.get('schemaVersion')} < 39")
    if not any(i.get("name") == "DS_PROMETHEUS" for i in dashboard.get("__inputs", [])):
        problems.append("no DS_PROMETHEUS data source input")
    names = [v.get("name") for v in dashboard.get("templating", {}).get("list", [])]
    if "model_name" not in names:
        problems.append("no model_name variable")
    ids = [p.get("id") for p in dashboard.get("panels", [])]
    if len(ids) != len(set(ids)):
        problems.append(f"duplicate panel ids {ids}")
    for p in dashboard.get("panels", []):
        if not p.get("targets") or not all(t.get("expr") and t.get("refId") for t in p["targets"]):
            problems.append(f"panel {p.get('title')!r}: every target needs refId and expr")
    try:
        from grafana_foundation_sdk.models.dashboard import Dashboard
    except ImportError:
        return problems + ["grafana-foundation-sdk is not installed (pip install -e '.[test]')"]
    back = json.loads(json.dumps(Dashboard.from_json(dashboard).to_json(),
                                 default=lambda o: o.to_json() if hasattr(o, "to_json") else o))
    problems += [f"not in Grafana's dashboard model: {path}"
                 for path in _dropped(dashboard, back) if path not in ENVELOPE_ONLY]
    return problems


def _dropped(a, b, path=""):
    if isinstance(a, dict):
        for k, v in a.items():
            if not isinstance(b, dict) or k not in b:
                yield f"{path}/{k}"
            else:
                yield from _dropped(v, b[k], f"{path}/{k}")
    elif isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from _dropped(x, y, f"{path}[{i}]")
