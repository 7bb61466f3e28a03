"""Observability (roadmap step 3): a real Prometheus scraping real engines and a GPU exporter,
dashboards as code, SLOs whose alerts are unit-tested, and an alert drill.

    prometheus.py   start/stop a loopback Prometheus whose targets labkit adds and removes
    query.py        the HTTP API's answers as rows (instant and range) for tables and plots
    gpu_exporter.py dcgm-exporter's metrics read through NVML; host metrics without a GPU
    dashboards.py   one panel list → Grafana JSON (checked against Grafana's model) and a PNG
                    drawn from the live Prometheus
    slo.py          SLO spec (YAML) → recording rules and multi-window burn-rate alerts
    promtool.py     `promtool check rules` / `test rules`, and the generated burn test suite
    drill.py        the alert drill: fault in, page pending → firing, fault out, resolved
    cli.py          `labkit prom up|down|status|targets` and `labkit exporter`
"""

