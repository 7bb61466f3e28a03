"""Validate a SkyPilot task offline with SkyPilot's own parser, in SkyPilot's own venv.

`sky.Task.from_yaml` checks the task, resources and storage schemas without credentials or
network: misspelt keys ("did you mean 'disk_size'?"), wrong types, bad mount modes. It does
not check the managed-job recovery strategy's name or the GPU name, so labkit does
(labkit.cloud.task) and asks SkyPilot's strategy registry too.

SkyPilot pins click, uvicorn and bcrypt below what vLLM wants, so it lives in .venv-sky
(scripts/bootstrap.sh creates it); importing it writes ~/.sky, so HOME points at a temp dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from labkit.errors import UserError

SKY_VENV = Path(__file__).resolve().parents[2] / ".venv-sky"

_PARSE = r"""
import json, sys
import sky
from sky.utils import registry
try:
    task = sky.Task.from_yaml(sys.argv[1])
    for r in task.resources:
        if r.job_recovery:
            registry.JOBS_RECOVERY_STRATEGY_REGISTRY.from_str(r.job_recovery.get("strategy"))
    print(json.dumps({"ok": True, "sky": sky.__version__, "name": task.name,
                      "resources": [str(r) for r in task.resources],
                      "storage_mounts": sorted(task.storage_mounts or {})}))
except Exception as e:
    print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
"""


def sky_python(venv: Path = SKY_VENV) -> Path:
    py = Path(os.environ.get("LABKIT_SKY_PYTHON", venv / "bin" / "python"))
    if not py.exists():
        raise UserError(f"SkyPilot's environment is missing ({py}): run `make setup` (it "
                        "creates .venv-sky), or `python3 -m venv .venv-sky && .venv-sky/bin/pip "
                        "install 'skypilot==0.14.1'`")
    return py


def validate_task_file(path: str | os.PathLike, timeout: float = 120) -> dict:
    """{'ok': True, 'sky': version, ...} or {'ok': False, 'error': SkyPilot's message}."""
    with tempfile.TemporaryDirectory(prefix="labkit-sky-home-") as home:
        env = {**os.environ, "HOME": home, "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"}
        proc = subprocess.run([str(sky_python()), "-c", _PARSE, str(Path(path).resolve())],
                              capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=Path(path).resolve().parent)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise UserError(f"SkyPilot's parser did not answer (exit {proc.returncode}): "
                        f"{proc.stderr.strip()[-500:]}")
    return json.loads(lines[-1])
