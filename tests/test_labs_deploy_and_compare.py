"""Labs 22 (deploy and load-test) and 23 (engine comparison → cost): their exercises, and
portfolio pages built from recorder-made runs. The notebooks themselves run under nbval."""

import json

import pytest

from labkit import exercises, labs, runs
from labkit.checks import ExerciseFailed
from labkit.cost.per_token import cost_per_million_tokens, saving_percent
from labkit.portfolio import build

PRELUDE = {
    "22": "from labkit.checks import serving\n",
    "23": "from labkit.checks import cost as cost_checks\nprice_per_hour = 6.88\n",
}
FIRST = {"22": "def tpot_vllm", "23": "def cost_per_million"}


def _exercise_cells(nb, lab):
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    first = next(i for i, c in enumerate(code) if FIRST[lab] in c)
    return code[first:first + 2]


def _run(cells, lab):
    ns: dict = {}
    for c in cells:
        exec(PRELUDE[lab] + c, ns)


@pytest.mark.parametrize("lab,passed,hint", [
    ("22", "✔ tpot_vllm: passed", "decode time \\(E2E − TTFT\\)"),
    ("23", "✔ cost_per_million: passed", "dollars per second"),
])
def test_learner_copy_fails_with_the_hint_and_reference_passes(lab, passed, hint, tmp_path,
                                                               capsys):
    (meta,) = labs.select([lab])
    _run(_exercise_cells(json.loads(meta.path.read_text()), lab), lab)
    assert passed in capsys.readouterr().out
    [(path, n)] = exercises.export([meta], tmp_path)
    assert n >= 1
    with pytest.raises(ExerciseFailed, match=f"not implemented yet — Exercise: {hint}"):
        _run(_exercise_cells(json.loads(path.read_text()), lab), lab)


def test_a_wrong_tpot_is_reported_with_input_expected_actual():
    from labkit.checks import serving

    with pytest.raises(ExerciseFailed, match=r"tpot_vllm\(500.0, 1490.0, 100\): expected "
                                             r"10.0, got 14.9"):
        serving.check_tpot(lambda ttft, e2e, out: e2e / out)  # GuideLLM's, not vLLM's


def _completed(run_dir, lab):
    runs.atomic_write_json(run_dir / lab / "status.json",
                           {"status": "completed", "seconds": 100.0, "params": {}})


def _figure(rec, name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    rec.figure(name, fig, caption=name)
    plt.close(fig)


def test_lab22_page_states_capacity_and_the_two_tpots(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(tmp_path / "r"))
    rec = runs.lab("22_deploy_and_bench")
    rec.scalar("engine", "vllm")
    rec.scalar("model", "tiny-llama")
    rec.scalar("startup_s", 41.5, unit="s")
    rec.scalar("load_avg_before", 5.2)
    rec.scalar("load_avg_after", 1.1)
    rec.scalar("cpu_cores", 2)
    rec.scalar("slo_ttft_ms", 1000.0, unit="ms")
    rec.scalar("slo_tpot_ms", 150.0, unit="ms")
    rec.scalar("slo_attainment", 0.9)
    rec.scalar("capacity_rate", 2.0, unit="req/s")
    rec.scalar("capacity_output_tok_per_s", 31.75, unit="tok/s")
    rec.scalar("capacity_goodput_rps", 1.93, unit="req/s")
    rec.scalar("conventions_rate", 2.0, unit="req/s")
    rec.scalar("tpot_p50_ms", 26.21, unit="ms")
    rec.scalar("guidellm_tpot_p50_ms", 39.3, unit="ms")
    rec.scalar("itl_p50_ms", 10.8, unit="ms")
    rec.scalar("itl_p99_ms", 1988.0, unit="ms")
    rec.scalar("capped_e2e_p99_from_send_ms", 4835.0, unit="ms")
    rec.scalar("capped_e2e_p99_from_schedule_ms", 11770.0, unit="ms")
    rec.text("launch_command", "python -m vllm.entrypoints.openai.api_server --model m")
    rec.table("sweep", [{"load": 2.0, "achieved_rps": 1.99, "output_tok_per_s": 31.75,
                         "meets_slo": True}])
    rec.table("faults", [{"fault": "negative TTFT", "seen in public tools": "GuideLLM #216",
                          "this run": "0 negative of 80", "verdict": "one clock"}])
    _figure(rec, "pareto")
    _completed(tmp_path / "r", "22_deploy_and_bench")
    build(tmp_path / "r", tmp_path / "site")
    page = (tmp_path / "site" / "22_deploy_and_bench.md").read_text()
    assert "I deployed vllm serving `tiny-llama`" in page
    assert "still met my SLO was **2 req/s**" in page and "**31.75 tok/s**" in page
    assert "for at least\n90%\nof the requests" in page
    assert f"{(39.3 / 26.21 - 1) * 100:.0f}%\nhigher" in page
    assert "4,835 ms timed from the send but\n11,770 ms" in page
    # never recorded: said, not invented
    assert "## Reading the latencies" in page and "*not measured in this run*" in page
    assert "figures/22_deploy_and_bench/pareto.png" in page
    assert "load average was 5.2 before and\n1.1 after" in page
    assert "waiting for a core" in page  # 5.2 runnable processes on 2 cores


def test_lab23_page_states_the_computed_saving_and_labels_the_price(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(tmp_path / "r"))
    rec = runs.lab("23_engine_comparison")
    base = cost_per_million_tokens(6.88, 95.0)
    best = cost_per_million_tokens(6.88, 137.0)
    x = saving_percent(base, best)
    for name, value in [("model", "tiny-llama"), ("baseline", "vllm"), ("gpu_present", "no"),
                        ("workloads", "shared-prefix, random"), ("price_per_hour", 6.88),
                        ("gpus", 1), ("slo_ttft_ms", 2000.0), ("slo_tpot_ms", 200.0),
                        ("best__shared_prefix", "mini prefix_cache=radix"),
                        ("usd_per_1m_best__shared_prefix", round(best, 4)),
                        ("usd_per_1m_baseline__shared_prefix", round(base, 4)),
                        ("saving_pct__shared_prefix", round(x, 1)),
                        ("lower_bound__shared_prefix", "no"),
                        ("best__random", "vllm"), ("lower_bound__random", "yes"),
                        ("usd_per_1m_best__random", 3.5), ("measured_requests", 100),
                        ("warmup_requests", 8)]:
        rec.scalar(name, value)
    rec.not_measured("saving_pct__random", "a capacity behind it is only a lower bound")
    rec.table("capacity_and_cost", [
        {"config": "sglang", "workload": "all", "status": "not measured",
         "reason": "SGLang has no CPU kernels"}])
    _completed(tmp_path / "r", "23_engine_comparison")
    build(tmp_path / "r", tmp_path / "site")
    page = (tmp_path / "site" / "23_engine_comparison.md").read_text()
    assert (f"**For this model and the shared-prefix workload, mini prefix_cache=radix cuts "
            f"cost per 1M output tokens by\n  {round(x, 1):.1f}% vs vllm**") in page
    assert f"(${round(best, 4):.2f} vs ${round(base, 4):.2f} per 1M output" in page
    # a saving from a lower-bound capacity is never quoted
    assert ("random: the cheapest config was vllm ($3.50 per 1M\n  output tokens), but I quote "
            "no saving: *not measured on this tier: a capacity behind it is only a lower "
            "bound*") in page
    assert "100 measured requests (after 8\nwarm-up requests)" in page
    assert "apply an H100 on-demand GPU-hour price to throughput measured on a\nCPU" in page
    assert "SGLang has no CPU kernels" in page
    assert "The machine's 1-minute load average" not in page  # not recorded: nothing said


def test_capacity_scalars_bound_and_not_measured():
    from labkit.labs import l22_deploy_and_bench as readout
    from labkit.runs import NotMeasured

    rows = [{"load": 2.0, "attainment": 1.0, "output_tok_per_s": 30.0},
            {"load": 8.0, "attainment": 0.95, "output_tok_per_s": 110.0}]
    cap = {"load": 8.0, "output_tok_per_s": 110.0, "goodput_rps": 7.6}
    slo = {"ttft": 300.0, "tpot": 50.0}
    found = readout.capacity_scalars({"capacity": cap, "rows": rows}, slo)
    assert found["capacity_is_lower_bound"][0] == "yes"  # the top rate met the SLO
    assert found["capacity_rate"][:2] == (8.0, "req/s")
    assert found["top_rate_attainment"][0] == 0.95
    missed = readout.capacity_scalars({"capacity": None, "rows": rows}, slo)
    assert isinstance(missed["capacity_rate"], NotMeasured)
    assert "300" in missed["capacity_rate"].reason
    assert readout.fault_scalars({"min_ttft_ms": 1.23456, "peak_in_flight": 3,
                                  "modelled_relative_sleep_vs_target_worst": 0.5}) == {
        "min_ttft_ms": (1.2346, "ms", ""), "peak_in_flight": (3, "", ""),
        "modelled_relative_sleep_vs_target_worst": (0.5, "",
                                                    "modelled from this run's wake-up lags")}
