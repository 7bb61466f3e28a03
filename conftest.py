"""Session-wide test settings, shared by tests/ and the nbval runs over labs/.

Labs record into LABKIT_RUNS_DIR; pointing it at a temporary folder keeps test runs out of
the learner's runs/ folder. Kernels started by nbval inherit this environment.
"""

import os
import tempfile

os.environ.setdefault("LABKIT_RUNS_DIR", tempfile.mkdtemp(prefix="labkit-test-runs-"))
os.environ.setdefault("MPLBACKEND", "Agg")

# nbval's kernels over Unix sockets, as `labkit run` does (labkit/kernel_transport.py): no TCP
# ports and no "running over TCP without encryption" warning in every lab's output. nbval
# builds its KernelManager itself with no hook to configure it, hence the substitution.
try:
    import nbval.kernel

    from labkit.kernel_transport import IPCKernelManager

    nbval.kernel.KernelManager = IPCKernelManager
except ImportError:  # nbval not installed: plain pytest runs still work
    pass

# Test fixtures that are notebooks (one fails on purpose, one hangs) are run by the runner
# tests, not by nbval.
collect_ignore_glob = ["tests/data/*"]

# --- the record contract over the notebooks nbval ran ----------------------------------------
# nbval only checks that cells run. So that CI also sees a lab that stopped *recording*, every
# notebook nbval runs records into one known run directory (NBVAL_RUN_DIR), each notebook's
# cell outcomes are noted, and tests/test_record_contract.py's check of those results is
# moved to the very end of the session (labkit.portfolio.contract).
from pathlib import Path

import pytest

NBVAL_RUN_DIR = Path(os.environ["LABKIT_RUNS_DIR"]) / "nbval"
CONTRACT_CHECK = "test_labs_run_by_nbval_keep_their_record_contract"


def _is_notebook_cell(item) -> bool:
    return str(getattr(item, "fspath", "")).endswith(".ipynb")


NOTEBOOK_OUTCOMES: dict[str, bool] = {}  # notebook stem -> True while every cell passed


def pytest_configure(config):
    config.labkit_notebooks = NOTEBOOK_OUTCOMES
    config.labkit_nbval_run_dir = NBVAL_RUN_DIR


def pytest_collection_modifyitems(session, config, items):
    last = [i for i in items if i.name == CONTRACT_CHECK]
    items[:] = [i for i in items if i.name != CONTRACT_CHECK] + last


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    # The kernel starts during the first cell's setup and inherits this environment.
    if not _is_notebook_cell(item):
        yield
        return
    old = os.environ.get("LABKIT_RUN_DIR")
    os.environ["LABKIT_RUN_DIR"] = str(NBVAL_RUN_DIR)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LABKIT_RUN_DIR", None)
        else:
            os.environ["LABKIT_RUN_DIR"] = old


def pytest_runtest_logreport(report):
    if report.nodeid.split("::")[0].endswith(".ipynb"):
        stem = Path(report.nodeid.split("::")[0]).stem
        NOTEBOOK_OUTCOMES[stem] = NOTEBOOK_OUTCOMES.get(stem, True) and not report.failed
