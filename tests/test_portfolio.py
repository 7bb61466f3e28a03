import json

import pytest

from labkit import runs
from labkit.portfolio import build


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(tmp_path / "r1"))
    monkeypatch.setenv("GRAFANA_API_KEY", "glsa_secret_value_123")
    rec = runs.lab("00_orientation", params={"matmul_size": 64})
    rec.scalar("matmul_gflops", 12.5, unit="GFLOP/s", note="64³ float32 on cpu")
    rec.scalar("ridge_flop_per_byte", 1.3, unit="FLOP/byte")
    rec.not_measured("peak_bf16_tflops", "no datasheet peak for this CPU")
    rec.text("doctor", "key glsa_secret_value_123 leaked by a careless cell")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    rec.figure("roofline", fig, caption="roofline")
    runs.atomic_write_json(tmp_path / "r1" / "00_orientation" / "status.json",
                           {"status": "completed", "seconds": 3.2, "params": {"matmul_size": 64}})
    return tmp_path / "r1"


def test_pages_use_only_recorded_results(run_dir, tmp_path):
    out = tmp_path / "site"
    written = build(run_dir, out)
    assert {p.name for p in written} == {"README.md", "00_orientation.md", "portfolio.html"}
    page = (out / "00_orientation.md").read_text()
    assert "12.5 GFLOP/s" in page
    # copy_gbs was never recorded: the page says so instead of inventing a number
    assert "| memory bandwidth (copy) | *not measured in this run* |" in page
    assert "*not measured on this tier: no datasheet peak for this CPU*" in page
    assert "labkit run 00_orientation --profile interactive -p matmul_size=64" in page
    assert (out / "figures" / "00_orientation" / "roofline.png").exists()
    index = (out / "README.md").read_text()
    assert "[Orientation: machine, tiers, roofline](00_orientation.md) | completed | 3.2 s" in index


def test_html_is_self_contained_and_has_no_secrets(run_dir, tmp_path):
    out = tmp_path / "site"
    build(run_dir, out)
    html = (out / "portfolio.html").read_text()
    assert 'src="data:image/png;base64,' in html
    assert 'src="figures/' not in html and "<table>" in html
    assert 'href="#00_orientation"' in html
    for f in out.rglob("*"):
        if f.is_file() and f.suffix in (".md", ".html"):
            assert "glsa_secret_value_123" not in f.read_text()


def test_cli_builds_latest(run_dir, tmp_path, monkeypatch, capsys):
    from labkit import cli

    monkeypatch.setenv(runs.RUNS_DIR_ENV, str(tmp_path))
    (tmp_path / "latest").symlink_to("r1")
    assert cli.main(["portfolio", "build", "latest", "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "portfolio.html").exists()
    assert cli.main(["portfolio", "build", "missing-run"]) == 2
    assert "no run directory 'missing-run'" in capsys.readouterr().err


def test_results_json_has_no_secret_either(run_dir):
    text = (run_dir / "00_orientation" / "results.json").read_text()
    assert "glsa_secret_value_123" not in text and json.loads(text)["texts"]["doctor"]


def test_reproduce_round_trips_lists_and_blank_cells():
    import shlex

    from labkit import run_labs as runner
    from labkit.portfolio.build import LabView, _fmt

    view = LabView("23_x", "x", {"status": {"params": {"configs": [{"engine": "vllm"}],
                                                     "rate": 2.5}}}, {"profile": "cpu"})
    cmd = shlex.split(view.reproduce)
    pairs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-p"]
    common, _, _ = runner.parse_overrides(pairs)
    assert common == {"configs": [{"engine": "vllm"}], "rate": 2.5}
    assert _fmt(None) == ""
