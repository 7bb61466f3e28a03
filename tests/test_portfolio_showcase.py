"""The portfolio a reader skims: headlines, published evidence, readable files, merged tiers."""

import csv
import json
import stat

import pytest

from labkit import cli, runs
from labkit.portfolio import build

SECRET = "glsa_showcase_secret_456"


def _record(run_dir, monkeypatch, gflops, gpus=None):
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(run_dir))
    rec = runs.lab("00_orientation", params={"matmul_size": 64})
    rec.scalar("matmul_gflops", gflops, unit="GFLOP/s")
    rec.scalar("copy_gbs", 9.5, unit="GB/s")
    rec.scalar("ridge_flop_per_byte", 1.3, unit="FLOP/byte")
    rec.scalar("device_name", "test cpu")
    rec.table("llm_intensity", [{"batch": 1, "flop_per_byte": 1.0, "note": f"k {SECRET}"}])
    rec.scalar("modelled_h100_ms", 3.0, unit="ms", note="modelled from the alpha-beta fit")
    rec.not_measured("peak_bf16_tflops", "no datasheet peak for this CPU")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    rec.figure("roofline", fig, caption="roofline")
    plt.close(fig)
    runs.atomic_write_json(run_dir / "00_orientation" / "status.json",
                           {"status": "completed", "seconds": 2.0, "params": {}})
    if gpus is not None:  # what write_run_json found on that machine
        info = runs.read_json(run_dir / "run.json")
        info["machine"]["gpus"] = gpus
        info["profile"] = "h100"
        runs.atomic_write_json(run_dir / "run.json", info)
    return run_dir


@pytest.fixture
def cpu_run(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAFANA_API_KEY", SECRET)
    return _record(tmp_path / "cpu", monkeypatch, 12.5)


def test_index_leads_with_headline_hero_built_and_limitations(cpu_run, tmp_path):
    out = tmp_path / "site"
    build(cpu_run, out)
    index = (out / "README.md").read_text()
    head = index.split("## Headline results", 1)[1].split("##", 1)[0]
    assert "My matmul reached 12.5 GFLOP/s" in head and "(00_orientation.md)" in head
    assert "![roofline](figures/00_orientation/roofline.png)" in index  # the hero figure
    assert "**`CPU tier`**" in index
    built = index.split("## What I built", 1)[1].split("##", 1)[0]
    assert "A roofline probe" in built
    lim = index.split("## Limitations of this run", 1)[1].split("##", 1)[0]
    assert "`peak_bf16_tflops`: no datasheet peak for this CPU" in lim
    assert "**modelled**" in lim and "`modelled_h100_ms`" in lim
    page = (out / "00_orientation.md").read_text()  # each page lists its own gaps too
    assert "- **not measured**: `peak_bf16_tflops` — no datasheet peak for this CPU" in page
    assert "**Result:** My matmul reached 12.5 GFLOP/s" in page
    assert page.index("## The question") < page.index("## Evidence") < page.index(
        "## Measured here vs published reference") < page.index("**Reproduce:**")
    assert "989 TFLOP/s (H100 SXM dense BF16 peak; source: NVIDIA H100 datasheet)" in page
    html = (out / "portfolio.html").read_text()
    assert '<a href="#00_orientation">Orientation: machine, tiers, roofline</a>' in html


def test_tables_and_scrubbed_results_are_published_beside_the_page(cpu_run, tmp_path):
    out = tmp_path / "site"
    build(cpu_run, out)
    page = (out / "00_orientation.md").read_text()
    assert "[llm_intensity.csv](tables/00_orientation/llm_intensity.csv)" in page
    assert "[results.json](data/00_orientation/results.json)" in page
    rows = list(csv.DictReader((out / "tables/00_orientation/llm_intensity.csv").open()))
    assert rows[0]["flop_per_byte"] == "1.0"
    data = json.loads((out / "data/00_orientation/results.json").read_text())
    assert data["scalars"]["matmul_gflops"]["value"] == 12.5
    for f in out.rglob("*"):
        mode = stat.S_IMODE(f.stat().st_mode)
        assert mode == (0o755 if f.is_dir() else 0o644), (f, oct(mode))
        if f.is_file() and f.suffix != ".png":
            assert SECRET not in f.read_text(), f
    for f in (cpu_run / "00_orientation").rglob("*"):
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_a_cpu_and_a_gpu_run_merge_and_every_figure_says_its_tier(cpu_run, tmp_path, monkeypatch,
                                                                  capsys):
    gpu_run = _record(tmp_path / "gpu", monkeypatch, 812.0, gpus=[{"name": "NVIDIA H100"}])
    out = tmp_path / "site"
    assert cli.main(["portfolio", "build", str(cpu_run), str(gpu_run), "--out", str(out)]) == 0
    cpu_page = (out / "00_orientation.md").read_text()
    gpu_page = (out / "00_orientation-gpu.md").read_text()
    assert "12.5 GFLOP/s" in cpu_page and "**`CPU tier`**" in cpu_page
    assert "812 GFLOP/s" in gpu_page and "**`GPU tier`**" in gpu_page
    assert "measured on the CPU tier, run `cpu`" in cpu_page
    assert "(figures/00_orientation-gpu/roofline.png)" in gpu_page
    assert "measured on the GPU tier, run `gpu`" in gpu_page
    index = (out / "README.md").read_text()
    assert "**`CPU tier`** **`GPU tier`**" in index and "merged from 2 runs" in index
    assert "[Orientation: machine, tiers, roofline](00_orientation-gpu.md)" in index
    html = (out / "portfolio.html").read_text()
    assert 'href="#00_orientation-gpu">Orientation: machine, tiers, roofline (GPU)</a>' in html


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _artifacts_dir():
    import os
    import tempfile
    from pathlib import Path

    d = Path(os.environ.get("LABKIT_ARTIFACTS_DIR") or Path(tempfile.gettempdir()) / "labkit-artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_portfolio_html_shows_headline_and_figures_in_a_real_browser(cpu_run, tmp_path):
    import os

    from labkit.errors import under_ci

    if not os.path.exists(CHROMIUM):
        if under_ci():
            pytest.fail(f"{CHROMIUM} missing: scripts/bootstrap.sh installs it (apt-get chromium)")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    out = tmp_path / "site"
    build(cpu_run, out)
    shots = _artifacts_dir()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto((out / "portfolio.html").as_uri())
            index = page.locator("section#index")
            assert index.get_by_role("heading", name="Headline results").is_visible()
            assert "My matmul reached 12.5 GFLOP/s" in index.inner_text()
            # figures are data: URIs; a broken one has naturalWidth 0
            widths = index.locator("img").evaluate_all("els => els.map(e => e.naturalWidth)")
            assert widths and min(widths) > 0
            index.screenshot(path=str(shots / "portfolio-index.png"))
            lab = page.locator("section#\\30 0_orientation")  # CSS escape of a leading digit
            lab.scroll_into_view_if_needed()
            assert "Result: My matmul reached 12.5 GFLOP/s" in lab.inner_text()
            widths = lab.locator("img").evaluate_all("els => els.map(e => e.naturalWidth)")
            assert widths and min(widths) > 0
            lab.screenshot(path=str(shots / "portfolio-00_orientation.png"))
            page.get_by_role("link", name="Orientation: machine, tiers, roofline").first.click()
        finally:
            browser.close()
    for name in ("portfolio-index.png", "portfolio-00_orientation.png"):
        assert (shots / name).stat().st_size > 10_000
    print(f"screenshots kept in {shots}")
