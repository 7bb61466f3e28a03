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
