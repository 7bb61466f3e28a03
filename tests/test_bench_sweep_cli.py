"""Sweeps (capacity, Pareto front) and the `labkit bench` command line."""

import argparse
import json

import pytest

from labkit.bench import cli
from labkit.bench.fake_server import fake_server
from labkit.bench.sweep import capacity, pareto_front
from labkit.errors import UserError


def test_pareto_front_keeps_only_points_nothing_beats_on_both_axes():
    pts = [(100, 50), (200, 60), (150, 80), (300, 200), (250, 250)]
    assert pareto_front(pts) == [0, 1, 3]  # (150,80) loses to (200,60); (250,250) to (300,200)


def test_capacity_is_the_last_load_before_the_first_miss():
    rows = [{"load": v, "meets_slo": ok} for v, ok in
            [(8, True), (1, True), (2, True), (4, False), (16, True)]]
    assert capacity(rows)["load"] == 2  # 8 and 16 passing above a failure is noise
    assert capacity([{"load": 1, "meets_slo": False}]) is None


def parse(argv):
    parser = argparse.ArgumentParser(prog="labkit")
    cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", *argv])


@pytest.mark.slow
def test_cli_sweep_writes_table_plot_and_capacity(tmp_path, capsys):
    with fake_server(ttft_ms=20, tpot_ms=2) as url:
        args = parse(["--base-url", url, "--model", "fake-model", "--num-requests", "15",
                      "--output-len", "4", "--input-len", "8", "--sweep", "rates",
                      "--values", "10,40", "--slo", "ttft=200,tpot=20", "--out",
                      str(tmp_path), "--no-progress"])
        assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "capacity at the SLO" in out and "rate 40" in out
    result = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["load"] for r in result["rows"]] == [10, 40]
    assert all(r["meets_slo"] for r in result["rows"])
    assert result["rows"][1]["achieved_rps"] > 3 * result["rows"][0]["achieved_rps"]
    assert (tmp_path / "pareto.png").stat().st_size > 10_000
    assert (tmp_path / "rate-10" / "summary.json").exists()
    assert (tmp_path / "sweep.csv").read_text().startswith("load,achieved_rps")
    # Each load point sends new prompts (seed + i): a prefix cache cannot replay point 1.
    seeds = [json.loads((tmp_path / f"rate-{v}" / "summary.json").read_text())["run"]["config"]["seed"]
             for v in (10, 40)]
    assert seeds[1] == seeds[0] + 1


def test_cli_rejects_what_it_cannot_run():
    with pytest.raises(UserError, match="--num-requests N or --duration"):
        cli.config_from_args(parse(["--base-url", "http://x", "--model", "m"]))
    with pytest.raises(UserError, match="burstiness"):
        cli.config_from_args(parse(["--base-url", "http://x", "--model", "m", "--rate", "5",
                                    "--num-requests", "3", "--arrival", "constant",
                                    "--burstiness", "0.5"]))
    with pytest.raises(UserError, match="--values"):
        args = parse(["--base-url", "http://x", "--model", "m", "--num-requests", "3",
                      "--sweep", "rates"])
        args.func(args)
    with pytest.raises(SystemExit):
        parse(["--base-url", "http://x", "--model", "m", "--rate", "-1"])


def test_cli_config_reads_the_key_from_env_and_keeps_it_out_of_the_record(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-secret-123")
    cfg = cli.config_from_args(parse(["--base-url", "http://x", "--model", "m",
                                      "--num-requests", "3", "--api-key-env", "MY_KEY",
                                      "--rate", "inf", "--slo", "ttft=100"]))
    assert cfg.api_key == "sk-secret-123"
    assert "sk-secret" not in json.dumps(cfg.public_dict()) and "sk-secret" not in repr(cfg)
    assert cfg.slo == {"ttft": 100.0} and cfg.rate == float("inf")


@pytest.mark.slow
def test_cli_find_capacity_prints_both_bounds(tmp_path, capsys):
    # saturates past 2 in flight: TPOT 5 ms × C/2, so C = 3 (7.5 ms) meets tpot ≤ 8, 4 does not
    with fake_server(ttft_ms=5, tpot_ms=5, saturate_at=2) as url:
        args = parse(["--base-url", url, "--model", "fake-model", "--num-requests", "24",
                      "--warmup-requests", "3", "--output-len", "12", "--input-len", "8",
                      "--find-capacity", "concurrencies", "--start", "1", "--max-load", "16",
                      "--resolution", "1", "--slo", "tpot=8", "--out", str(tmp_path),
                      "--no-progress"])
        assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "bracketed: 3 ≤ capacity < 4 (concurrency)" in out
    assert json.loads((tmp_path / "sweep.json").read_text())["plan"]["warmup_requests"] == 3


def test_cli_find_capacity_needs_an_slo_and_a_request_count():
    base = ["--base-url", "http://127.0.0.1:9", "--model", "m", "--find-capacity", "rates"]
    for extra, msg in ((["--num-requests", "50"], "needs --slo"),
                       (["--duration", "5", "--slo", "ttft=100"], "--num-requests N per load"),
                       (["--num-requests", "50", "--slo", "ttft=100", "--start", "0"],
                        "start")):
        args = parse(base + extra)
        with pytest.raises(UserError, match=msg):
            args.func(args)
