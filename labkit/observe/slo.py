"""SLOs as code: a YAML spec → Prometheus recording rules and multi-window, multi-burn-rate
alerts (the Google SRE workbook's scheme, as sloth generates it).

    service: tiny-llama
    period_days: 30
    slos:
      - name: ttft
        objective: 0.99            # 99 % of requests ...
        latency: {histogram: "vllm:time_to_first_token_seconds", threshold: 1.0}  # ... TTFT ≤ 1 s
      - name: availability
        objective: 0.999
        errors: {counter: "vllm:request_success_total", bad: 'finished_reason="abort"'}

For each SLO: the error ratio over 5m, 30m, 1h, 2h, 6h, 1d and 3d as recording rules
`slo:sli_error:ratio_rate<window>{slo="…"}`, and four alerts (FIELD_NOTES, SRE workbook):

    severity  burn rate  long window  short window  for    budget spent when it fires
    page      14.4       1h           5m            2m     2 %
    page      6          6h           30m           15m    5 %
    ticket    3          1d           2h            1h     10 %
    ticket    1          3d           6h            3h     10 %

An alert fires when *both* windows burn faster than the rate: the long one proves it is not
a blip, the short one that it is still happening (so it resolves soon after the fix).

Pitfalls handled:
- `le` is matched as a *string*: prometheus_client writes le="1.0", Go clients le="1", and
  Prometheus 2.x compares the text. Give the bucket bounds the target really exposes
  (`bucket_bounds()` reads them from a /metrics page) and the selector uses that spelling.
- the threshold must be an existing bucket bound: the error lists the bounds there are.
- a low-traffic guard: no page for 3 slow requests out of 5 at 4 a.m. (`min_requests` over
  the long window).
- `scale`: every window and `for` multiplied by a factor, for drills that must fire in
  minutes (lab 31). A scaled rule file says so in its first line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from labkit.errors import UserError

WINDOWS = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]
# (severity, burn rate, long window, short window, for)
BURN_ALERTS = [("page", 14.4, "1h", "5m", "2m"), ("page", 6.0, "6h", "30m", "15m"),
               ("ticket", 3.0, "1d", "2h", "1h"), ("ticket", 1.0, "3d", "6h", "3h")]
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", duration)
    if not m:
        raise UserError(f"duration {duration!r}: write e.g. 30s, 5m, 1h, 3d")
    return float(m.group(1)) * UNIT_S[m.group(2)]


def duration(secs: float) -> str:
    """A Prometheus duration for `secs`, in whole seconds (rounded up, at least 1s)."""
    return f"{max(1, math.ceil(secs - 1e-9))}s"


@dataclass
class SLO:
    name: str
    objective: float
    histogram: str | None = None  # latency SLO: the histogram's name (without _bucket)
    threshold: float | None = None  # seconds; must be one of the bucket bounds
    counter: str | None = None  # error SLO: the request counter
    bad: str | None = None  # label matcher(s) of the bad requests, e.g. finished_reason="abort"
    selector: str = ""  # extra label matchers for every series, e.g. model_name="tiny-llama"
    description: str = ""

    def __post_init__(self):
        if not 0 < self.objective < 1:
            raise UserError(f"SLO {self.name}: objective must be between 0 and 1 "
                            f"(0.99 = 99 %), got {self.objective}")
        if bool(self.histogram) == bool(self.counter):
            raise UserError(f"SLO {self.name}: give either latency (histogram + threshold) or "
                            "errors (counter + bad), not both or neither")
        if self.histogram and self.threshold is None:
            raise UserError(f"SLO {self.name}: a latency SLO needs a threshold in seconds")
        if self.counter and not self.bad:
            raise UserError(f"SLO {self.name}: an error SLO needs `bad`, the matcher of "
                            'failed requests, e.g. finished_reason="abort"')


@dataclass
class Spec:
    service: str
    slos: list[SLO]
    period_days: int = 30
    min_requests: int = 20  # over the long window, before any alert may fire
    labels: dict = field(default_factory=dict)


def load_spec(data: dict) -> Spec:
    """A Spec from the YAML's dict, with errors that name the field."""
    try:
        slos = []
        for s in data["slos"]:
            lat, err = s.get("latency") or {}, s.get("errors") or {}
            slos.append(SLO(name=s["name"], objective=float(s["objective"]),
                            histogram=lat.get("histogram"), threshold=lat.get("threshold"),
                            counter=err.get("counter"), bad=err.get("bad"),
                            selector=s.get("selector", ""),
                            description=s.get("description", "")))
        return Spec(service=data["service"], slos=slos,
                    period_days=int(data.get("period_days", 30)),
                    min_requests=int(data.get("min_requests", 20)))
    except KeyError as e:
        raise UserError(f"SLO spec: missing field {e.args[0]!r}") from None


def bucket_bounds(metrics_text: str, histogram: str) -> list[str]:
    """The `le` values a target exposes for `histogram`, spelt exactly as exposed."""
    found = re.findall(re.escape(histogram) + r'_bucket\{[^}]*le="([^"]+)"', metrics_text)
    return sorted(set(found) - {"+Inf"}, key=float)


def le_label(threshold: float, bounds: list[str] | None, histogram: str) -> str:
    """The exposed spelling of the bucket bound equal to `threshold` ("1.0" or "1")."""
    if bounds is None:  # no exposition given: prometheus_client's spelling
        return repr(float(threshold))
    for b in bounds:
        if math.isclose(float(b), threshold, rel_tol=1e-12):
            return b
    raise UserError(f"{histogram}: {threshold} s is not a bucket bound, so no query can count "
                    f"requests under it; the bounds are: {', '.join(bounds)}")


def error_ratio(slo: SLO, window: str, bounds: list[str] | None = None) -> str:
    sel = f"{slo.selector}," if slo.selector else ""
    if slo.histogram:
        le = le_label(slo.threshold, bounds, slo.histogram)
        good = f'sum(rate({slo.histogram}_bucket{{{sel}le="{le}"}}[{window}]))'
        total = f"sum(rate({slo.histogram}_count{{{slo.selector}}}[{window}]))"
        return f"1 - ({good} / {total})"
    bad = f"sum(rate({slo.counter}{{{sel}{slo.bad}}}[{window}]))"
    total = f"sum(rate({slo.counter}{{{slo.selector}}}[{window}]))"
    return f"({bad} or vector(0)) / {total}"


def traffic(slo: SLO, window: str) -> str:
    metric = f"{slo.histogram}_count" if slo.histogram else slo.counter
    return f"sum(increase({metric}{{{slo.selector}}}[{window}]))"


def annotations(spec: Spec, slo: SLO, rate: float, long: str, short: str) -> dict:
    return {"summary": f"{spec.service} {slo.name}: error budget burning {rate}x over {long} "
                       f"and {short}",
            "description": slo.description or f"objective {slo.objective}"}


def rule_groups(spec: Spec, bounds: dict[str, list[str]] | None = None,
                scale: float = 1.0) -> dict:
    """Prometheus rule file content (a dict for yaml.safe_dump)."""
    bounds = bounds or {}
    w = {name: duration(seconds(name) * scale) for name in WINDOWS + ["2m", "15m", "3h"]}
    groups = []
    for slo in spec.slos:
        labels = {"service": spec.service, "slo": slo.name, **spec.labels}
        recording = [{"record": f"slo:sli_error:ratio_rate{win}",
                      "expr": error_ratio(slo, w[win], bounds.get(slo.histogram)),
                      "labels": labels} for win in WINDOWS]
        budget = 1 - slo.objective
        alerts = []
        for severity, rate, long, short, for_ in BURN_ALERTS:
            sel = f'{{service="{spec.service}",slo="{slo.name}"}}'
            expr = (f"(slo:sli_error:ratio_rate{long}{sel} > {rate} * {budget:.6g}"
                    f" and slo:sli_error:ratio_rate{short}{sel} > {rate} * {budget:.6g})"
                    f" and on() ({traffic(slo, w[long])} >= {spec.min_requests})")
            alerts.append({
                "alert": f"SLOBurn_{slo.name}_{long}_{short}",
                "expr": expr, "for": w[for_],
                "labels": {**labels, "severity": severity, "burn_rate": str(rate)},
                "annotations": annotations(spec, slo, rate, long, short)})
        groups.append({"name": f"slo-{spec.service}-{slo.name}-recording", "rules": recording})
        groups.append({"name": f"slo-{spec.service}-{slo.name}-alerts", "rules": alerts})
    return {"groups": groups}


def rules_yaml(spec: Spec, bounds=None, scale: float = 1.0) -> str:
    import yaml

    head = (f"# generated by labkit.observe.slo for service {spec.service}, "
            f"{spec.period_days}-day error budget\n")
    if scale != 1.0:
        head += (f"# DRILL: every window and `for` scaled by {scale:g} (1h -> "
                 f"{duration(3600 * scale)}): for a drill only, never for production\n")
    return head + yaml.safe_dump(rule_groups(spec, bounds, scale), sort_keys=False, width=120)
