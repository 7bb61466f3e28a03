"""The foundation's promise end to end: run lab 00, build the portfolio, leak no token."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

TOKEN = "tok_a1b2c3d4e5f6-never-on-disk"


@pytest.mark.slow
def test_run_lab00_then_portfolio_with_a_token(tmp_path):
    runs_dir = tmp_path / "runs"
    labkit = [sys.executable, "-m", "labkit.cli"]
    r = subprocess.run(labkit + ["run", "00", "--out", str(runs_dir), "-p", "matmul_size=256",
                                 "-p", "copy_mib=32", "-p", "check_engines=false",
                                 "-p", f"some_token={TOKEN}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = Path(r.stdout.strip().splitlines()[-1])
    res = json.loads((run_dir / "00_orientation" / "results.json").read_text())
    assert res["scalars"]["matmul_gflops"]["value"] > 0
    assert res["params"]["matmul_size"] == 256
    assert (run_dir / "00_orientation" / "figures" / "roofline.png").exists()
    assert (run_dir / "00_orientation" / "00_orientation.ipynb").exists()

    site = tmp_path / "site"
    b = subprocess.run(labkit + ["portfolio", "build", str(run_dir), "--out", str(site)],
                       capture_output=True, text=True, timeout=120)
    assert b.returncode == 0, b.stderr
    page = (site / "00_orientation.md").read_text()
    assert f"{res['scalars']['matmul_gflops']['value']:,.4g} GFLOP/s" in page

    for root in (run_dir, site):
        for f in root.rglob("*"):
            if f.is_file():
                assert TOKEN not in f.read_text(errors="ignore"), f
    assert TOKEN not in r.stdout + r.stderr + b.stdout + b.stderr
