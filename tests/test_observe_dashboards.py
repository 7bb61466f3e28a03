"""Dashboards as code: the Grafana JSON checks out against Grafana's model, and every panel's
PromQL returns data from a live Prometheus scraping the teaching engine under load."""

import copy
import time

import pytest

from labkit.observe import dashboards as dash
from labkit.observe.prometheus import find_prometheus


def test_generated_dashboard_passes_grafanas_model_and_labkits_rules():
    d = dash.grafana_dashboard()
    assert dash.check_grafana(d) == []
    assert d["schemaVersion"] >= 39
    assert [v["name"] for v in d["templating"]["list"]] == ["DS_PROMETHEUS", "model_name"]
    assert all(t["datasource"]["uid"] == "${DS_PROMETHEUS}"
               for p in d["panels"] for t in p["targets"])
    titles = [p["title"] for p in d["panels"]]
    for wanted in ("Time to first token", "Prefix-cache hit rate", "KV-cache usage",
                   "Batch: running and waiting requests", "GPU utilisation vs SM activity"):
        assert wanted in titles
    assert "providers:" in dash.provisioning_yaml()


@pytest.mark.parametrize("breakage, expected", [
    (lambda d: d["panels"][0].update(gridPoss=d["panels"][0].pop("gridPos")), "/panels[0]/gridPoss"),
    (lambda d: d.update(schemaVersion=36), "schemaVersion 36 < 39"),
    (lambda d: d["templating"]["list"].pop(), "no model_name variable"),
    (lambda d: d["panels"][1].update(id=1), "duplicate panel ids"),
])
def test_a_broken_dashboard_is_reported(breakage, expected):
    d = copy.deepcopy(dash.grafana_dashboard())
    breakage(d)
    assert any(expected in p for p in dash.check_grafana(d))


def test_sglang_names_with_either_prefix():
    q = dash.PANELS[0].targets[1][1]
    s = dash.for_engine(q, "sglang")
    assert '__name__=~"sglang[:_]time_to_first_token_seconds_bucket"' in s and "vllm:" not in s
    run = dash.for_engine("sum(vllm:num_requests_running" + dash.M + ")", "sglang")
    assert run == 'sum({__name__=~"sglang[:_]num_running_reqs",model_name=~"$model_name"})'
    assert dash.promql(q) == q.replace("$model_name", ".*").replace("$__rate_interval", "30s")


@pytest.mark.slow
@pytest.mark.skipif(find_prometheus() is None, reason="prometheus is not installed")
def test_every_panel_returns_data_from_the_teaching_engine_under_load(tmp_path):
    from labkit.bench.loadgen import BenchConfig, run_bench
    from labkit.bench.workloads import WorkloadParams
    from labkit.labs import l30_metrics_and_dashboards as lab30
    from labkit.models import build_tiny_llama
    from labkit.observe.gpu_exporter import GpuCollector

    model = str(build_tiny_llama(verbose=False))
    with lab30.observed_engine(tmp_path, model, max_model_len=512, max_num_seqs=8,
                               dtype="float32") as obs:
        start = time.time()
        run_bench(BenchConfig(base_url=obs.server.base_url, model=obs.server.model,
                              workload="shared-prefix", rate=8.0, num_requests=40,
                              params=WorkloadParams(num_groups=2, system_prompt_len=64,
                                                    question_len=8, output_len=8),
                              out_dir=str(tmp_path / "bench"), progress=False))
        lab30.wait_for_scrapes(obs.prom)
        data = dash.panel_data(obs.prom, start, time.time())
        fig = dash.render_png(data, tmp_path / "dashboard.png", note_no_gpu="no GPU here")
    no_gpu = GpuCollector().no_gpu_reason is not None
    for d in data:
        p = d["panel"]
        if p.gpu and no_gpu:
            assert d["series"] == [], p.title  # nothing invented where nothing was measured
        else:
            assert d["series"], f"{p.title}: no series — a renamed metric?"
            assert d["has_data"], f"{p.title}: only NaN"
    assert (tmp_path / "dashboard.png").stat().st_size > 30_000 and len(fig.axes) >= len(data)
