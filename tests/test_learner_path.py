"""The learner's front door: `labkit lab` (JupyterLab on loopback with a token) and lab 00
run through JupyterLab's own UI in a real browser (headless Chromium driven by Playwright).

The browser test keeps its screenshot in test-artifacts/ (or $LABKIT_TEST_ARTIFACTS) so a
person can look at what the learner sees. Under CI it must run: a missing browser fails it.
"""

import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from labkit import cli, labs
from labkit.errors import UserError
from labkit.lab_server import prepare_root, start_lab

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("LABKIT_TEST_ARTIFACTS",
                                Path(__file__).resolve().parents[1] / "test-artifacts"))


def _get(url, token=None):
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token
                                 else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _tree(proc):
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.slow
def test_lab_listens_on_loopback_with_a_token_and_stops_clean(tmp_path):
    (tmp_path / "nb").mkdir()
    with start_lab(tmp_path / "nb", port=0, run_dir=tmp_path / "run") as lab:
        base = lab.url.rsplit("/lab", 1)[0]
        assert _get(f"{base}/api/status", lab.token) == 200
        assert _get(f"{base}/api/status") == 403  # no token, no access
        assert _get(f"{base}/api/status", "wrong") == 403
        proc = psutil.Process(lab.process.pid)
        listening = {c.laddr.ip for c in proc.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}
        assert json.loads((lab.run_dir / "run.json").read_text())["command"] == "labkit lab"
        # the token is printed to the learner, never written by labkit
        assert lab.token not in (lab.run_dir / "run.json").read_text()
        with pytest.raises(UserError, match=f"port {lab.url.split(':')[2].split('/')[0]} is busy"):
            with start_lab(tmp_path / "nb", port=int(lab.url.split(":")[2].split("/")[0])):
                pass
        tree = _tree(proc)
    time.sleep(0.5)
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_lab_exports_learner_copies_once_and_keeps_them(tmp_path):
    root = prepare_root(False, tmp_path / "ex")
    names = sorted(p.name for p in root.glob("*.ipynb"))
    assert names == sorted(lab.path.name for lab in labs.all_labs())
    assert (root / "data" / "nccl").is_dir()  # lab 12's logs travel with the copies
    first = root / names[0]
    first.write_text(first.read_text() + " ")  # the learner's edit
    mine = first.read_text()
    prepare_root(False, tmp_path / "ex")
    assert first.read_text() == mine  # a learner's copy is never overwritten
    assert prepare_root(True, tmp_path / "ex") == labs.labs_dir()


def test_lab_help_teaches():
    with pytest.raises(SystemExit):
        cli.main(["lab", "--help"])


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not os.path.exists(CHROMIUM):
        why = "needs Debian's chromium and PyPI's playwright (scripts/bootstrap.sh installs both)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return sync_playwright


def _started(page) -> bool:
    prompts = [e.text_content() or "" for e in page.locator(".jp-CodeCell .jp-InputPrompt").all()]
    return any(re.search(r"\[(\d+|\*)\]", p) for p in prompts)


def _run_all(page, tries: int = 3) -> None:
    """Run > Run All Cells, as a learner would. A click that lands while JupyterLab is still
    wiring the notebook to its kernel does nothing, so focus the notebook first, and click
    again if no cell has started after a while."""
    for _ in range(tries):
        page.locator(".jp-Notebook .jp-Cell").first.click()
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.locator('li[data-command="runmenu:run-all"]').click()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if _started(page):
                return
            time.sleep(1)
    raise AssertionError("Run All Cells started no cell (three clicks, 30 s each)")


def _all_cells_ran(page) -> bool:
    prompts = [e.text_content() or "" for e in page.locator(".jp-CodeCell .jp-InputPrompt").all()]
    idle = page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').count() > 0
    return idle and bool(prompts) and all(re.search(r"\[\d+\]", p) for p in prompts)


@pytest.mark.slow
def test_lab00_runs_whole_in_jupyterlab_in_a_real_browser(tmp_path):
    sync_playwright = _playwright()
    work = tmp_path / "learner"
    work.mkdir()
    # the solved lab, copied: the UI may autosave outputs, which must never land in labs/
    shutil.copy(labs.labs_dir() / "00_orientation.ipynb", work)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "jupyterlab_lab00.png"
    with start_lab(work, port=0, run_dir=tmp_path / "run") as lab, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{lab.url}/tree/00_orientation.ipynb?token={lab.token}")
            page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]',
                                   timeout=120_000)
            _run_all(page)
            deadline = time.monotonic() + 600
            while not _all_cells_ran(page):
                assert time.monotonic() < deadline, "lab 00 did not finish in 10 minutes"
                time.sleep(2)
            # the last cell's figure arrives just after its prompt number: give it a moment
            page.wait_for_selector(".jp-RenderedImage img", timeout=30_000)
            page.screenshot(path=str(shot))
            errors = page.locator(".jp-OutputArea-output[data-mime-type="
                                  "'application/vnd.jupyter.stderr']").all_text_contents()
            tracebacks = [t for t in errors if "Error" in t or "Traceback" in t]
            assert not tracebacks, tracebacks
        finally:
            browser.close()
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 20_000
    # the kernel recorded into the lab's run directory, as `labkit run` would
    results = json.loads((tmp_path / "run" / "00_orientation" / "results.json").read_text())
    assert results["scalars"] and results["figures"]
