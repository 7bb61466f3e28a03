"""A real Prometheus: loopback only, targets added while it runs are scraped, clean stop."""

import time

import psutil
import pytest

from labkit.errors import UserError
from labkit.observe import query
from labkit.observe.prometheus import Prometheus, PrometheusMissing, find_prometheus

needs_prometheus = pytest.mark.skipif(find_prometheus() is None,
                                      reason="prometheus is not installed (bootstrap installs it)")


@needs_prometheus
@pytest.mark.slow
def test_scrapes_a_target_added_later_on_loopback_and_stops_clean(tmp_path):
    from prometheus_client import CollectorRegistry, Counter, start_http_server

    reg = CollectorRegistry()
    hits = Counter("labkit_test_hits", "test counter", registry=reg)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=reg)
    port = server.server_port
    try:
        with Prometheus(tmp_path / "prom") as prom:
            proc = psutil.Process(prom.proc.pid)
            listening = {c.laddr.ip for c in proc.net_connections(kind="inet")
                         if c.status == psutil.CONN_LISTEN}
            assert listening == {"127.0.0.1"}
            hits.inc(7)
            t0 = time.monotonic()
            prom.add_target("app", f"127.0.0.1:{port}", labels={"tier": "cpu"})
            prom.wait_for_target("app", timeout=15)
            # no restart, no reload: the file_sd refresh (1 s) plus Prometheus's discovery
            # manager, which hands new targets to the scraper in 5 s batches
            assert time.monotonic() - t0 < 10
            deadline = time.monotonic() + 10
            rows = []
            while not rows and time.monotonic() < deadline:
                rows = prom.query("labkit_test_hits_total")
                time.sleep(0.3)
            assert rows[0]["value"] == 7.0
            assert rows[0]["metric"]["job"] == "app" and rows[0]["metric"]["tier"] == "cpu"
            now = time.time()
            rng = prom.query_range("labkit_test_hits_total", now - 5, now, 1)
            assert rng and all(v == 7.0 for v in rng[0]["values"])
            with pytest.raises(UserError, match="bad_data"):
                prom.query("sum(")  # Prometheus's own message, not a traceback
            prom.remove_target("app", f"127.0.0.1:{port}")
            deadline = time.monotonic() + 10
            while prom.targets() and time.monotonic() < deadline:
                time.sleep(0.3)
            assert prom.targets() == []
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
        assert (tmp_path / "prom" / "tsdb").is_dir()  # the data stays in the run directory
    finally:
        server.shutdown()


def test_missing_binary_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no prometheus anywhere on PATH
    with pytest.raises(PrometheusMissing, match="apt-get install prometheus"):
        Prometheus(tmp_path / "prom").start()


def test_api_answers_become_float_rows():
    data = {"resultType": "vector", "result": [
        {"metric": {"le": "1.0"}, "value": [1700000000.5, "NaN"]},
        {"metric": {"job": "x"}, "value": [1700000000.5, "+Inf"]}]}
    rows = query.instant_rows(data)
    assert rows[0]["value"] != rows[0]["value"] and rows[1]["value"] == float("inf")
    rng = query.range_rows({"resultType": "matrix", "result": [
        {"metric": {"a": "b"}, "values": [[1, "2"], [2, "3.5"]]}]})
    assert rng == [{"metric": {"a": "b"}, "times": [1.0, 2.0], "values": [2.0, 3.5]}]
    assert query.label(rng[0], "a") == "a=b"
    with pytest.raises(ValueError):
        query.instant_rows({"resultType": "matrix", "result": []})


@needs_prometheus
@pytest.mark.slow
def test_prom_up_status_down_leaves_nothing_running(tmp_path, capsys):
    from labkit import cli

    d = str(tmp_path / "p")
    assert cli.main(["prom", "--dir", d, "up", "--target", "self=127.0.0.1:1"]) == 0
    state = __import__("json").loads((tmp_path / "p" / "state.json").read_text())
    assert psutil.pid_exists(state["pid"]) and state["url"].startswith("http://127.0.0.1:")
    assert cli.main(["prom", "--dir", d, "up"]) == 2  # one per folder: says so, starts none
    assert "already running" in capsys.readouterr().err
    assert cli.main(["prom", "--dir", d, "targets", "add", "other=127.0.0.1:2"]) == 0
    time.sleep(6)  # discovery hands targets over in 5 s batches
    assert cli.main(["prom", "--dir", d, "status"]) == 0
    out = capsys.readouterr().out
    assert "self" in out and "other" in out and "down" in out  # nothing listens on :1 and :2
    assert cli.main(["prom", "--dir", d, "down"]) == 0
    time.sleep(0.5)
    p = psutil.Process(state["pid"]) if psutil.pid_exists(state["pid"]) else None
    assert p is None or p.status() == psutil.STATUS_ZOMBIE
    assert cli.main(["prom", "--dir", d, "status"]) == 2  # no state left: says how to start
