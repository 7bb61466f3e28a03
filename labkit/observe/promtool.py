"""promtool: check generated rule files, and unit-test their alerts like code.

    check_rules(path)        → (ok, promtool's output)      `promtool check rules`
    run_tests(path)          → (ok, promtool's output)      `promtool test rules`
    burn_suite(spec, rules)  → a promtool test file for the SLOs' page alerts

The suite feeds each SLO a synthetic hour in which 20 % of requests are bad (burning a
99 % objective's budget 20× — above the 14.4× page), then an hour in which none are, and
expects the fast page *pending* a minute after the low-traffic guard is met (its `for` not
yet passed), *firing* at minute 30, and *resolved* at minute 80, the short window clean:
the life cycle an on-call engineer sees. Exact values are wrapped in round(x, 0.001): promtool 2.42 compares
floats exactly and has no fuzzy compare.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

from labkit.observe.prometheus import INSTALL_HINT, PrometheusMissing, find_promtool
from labkit.observe.slo import Spec, annotations


def _run(args: list[str], timeout: float = 120) -> tuple[bool, str]:
    tool = find_promtool()
    if not tool:
        raise PrometheusMissing(f"promtool is not on PATH (it comes with prometheus): "
                                f"{INSTALL_HINT}")
    p = subprocess.run([tool, *args], capture_output=True, text=True, timeout=timeout)
    return p.returncode == 0, (p.stdout + p.stderr).strip()


def check_rules(path) -> tuple[bool, str]:
    return _run(["check", "rules", str(path)])


def run_tests(path) -> tuple[bool, str]:
    return _run(["test", "rules", str(path)], timeout=300)


def burn_suite(spec: Spec, rules_file: str, le: dict[str, str] | None = None) -> dict:
    """promtool test-file content: per SLO, bad traffic for 60 min then clean traffic."""
    le = le or {}
    # The condition turns true once the low-traffic guard is met (10 requests a minute)
    # and two samples exist; a minute later the page is pending, its `for: 2m` not passed.
    pending_at = f"{max(1, math.ceil(spec.min_requests / 10)) + 1}m"
    tests = []
    for slo in spec.slos:
        sel = f'service="{spec.service}",slo="{slo.name}"'
        extra = f"{slo.selector}," if slo.selector else ""
        if slo.histogram:
            bound = le.get(slo.histogram, repr(float(slo.threshold)))
            series = [  # 10 requests a minute; 8 good for an hour, then all 10
                {"series": f'{slo.histogram}_bucket{{{extra}le="{bound}"}}',
                 "values": "0+8x60 488+10x60"},
                {"series": f"{slo.histogram}_count{{{slo.selector}}}", "values": "0+10x120"}]
        else:  # one series per outcome, as vLLM's request_success_total{finished_reason}
            series = [{"series": f"{slo.counter}{{{extra}{slo.bad}}}",
                       "values": "0+2x60 120+0x60"},
                      {"series": f'{slo.counter}{{{extra}labkit_test="good"}}',
                       "values": "0+8x60 480+10x60"}]
        fast = f"SLOBurn_{slo.name}_1h_5m"
        labels = {"service": spec.service, "slo": slo.name, "severity": "page",
                  "burn_rate": "14.4"}
        tests.append({
            "name": f"{slo.name}: 20 % bad for an hour pages, then resolves",
            "interval": "1m", "input_series": series,
            "promql_expr_test": [
                {"expr": f"round(slo:sli_error:ratio_rate5m{{{sel}}}, 0.001)",
                 "eval_time": "30m",
                 "exp_samples": [{"labels": f"{{{sel}}}", "value": 0.2}]},
                {"expr": f'ALERTS{{alertname="{fast}",alertstate="pending"}}',
                 "eval_time": pending_at,
                 "exp_samples": [{"labels": "ALERTS{" + _labels(
                     {"alertname": fast, "alertstate": "pending", **labels}) + "}",
                     "value": 1}]}],
            "alert_rule_test": [
                {"eval_time": pending_at, "alertname": fast, "exp_alerts": []},  # pending only
                {"eval_time": "30m", "alertname": fast,
                 "exp_alerts": [{"exp_labels": labels,
                                 "exp_annotations": annotations(spec, slo, 14.4, "1h", "5m")}]},
                {"eval_time": "80m", "alertname": fast, "exp_alerts": []}]})  # resolved
    return {"rule_files": [rules_file], "evaluation_interval": "1m", "tests": tests}


def _labels(d: dict) -> str:
    return ", ".join(f'{k}="{v}"' for k, v in d.items())


def write_suite(spec: Spec, rules_path: Path, out: Path, le=None) -> Path:
    import yaml

    out.write_text(yaml.safe_dump(burn_suite(spec, rules_path.name, le), sort_keys=False,
                                  width=120))
    return out
