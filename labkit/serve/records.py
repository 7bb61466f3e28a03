"""Where a server's evidence goes: its log and a launch record, in the run directory.

    <run>/serve/<engine>-<port>-<time>/      under `labkit run` ($LABKIT_RUN_DIR)
    runs/serve/<time>-<engine>-<port>/       otherwise (or --log-dir / log_dir=)
        <engine>.log     the engine's stdout and stderr
        launch.json      exact argv, the environment variables we added, the config
        watchdog.log     the watchdog's own messages (normally empty)

launch.json makes a measurement reproducible: "which flags produced these numbers?" has a
written answer. Secret-looking values (--api-key KEY, HF_TOKEN) are never written.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

from labkit.runs import atomic_write_json, runs_root
from labkit.secrets import REDACTED, is_secret_name
from labkit.serve.config import LaunchPlan, ServeConfig


def redact_argv(argv: list[str]) -> list[str]:
    """Hide the value of secret-looking flags (--api-key KEY, --hf-token=T) before writing."""
    out, hide_next = [], False
    for a in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
        elif a.startswith("--") and "=" in a and is_secret_name(a[2:].split("=", 1)[0]):
            out.append(a.split("=", 1)[0] + "=" + REDACTED)
        else:
            out.append(a)
            hide_next = a.startswith("--") and is_secret_name(a[2:])
    return out


def default_log_dir(engine: str, port: int) -> Path:
    """Inside the current run under `labkit run` (LABKIT_RUN_DIR), else runs/serve/<stamp>."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = os.environ.get("LABKIT_RUN_DIR")
    if run_dir:
        return Path(run_dir) / "serve" / f"{engine}-{port}-{stamp}"
    return runs_root() / "serve" / f"{stamp}-{engine}-{port}"


def write_launch_record(path: Path, plan: LaunchPlan, *, base_url: str, pid: int,
                        log_path: Path, config: ServeConfig | None) -> None:
    atomic_write_json(path, {
        "engine": plan.engine, "base_url": base_url, "pid": pid,
        "argv": redact_argv(plan.argv), "env_added": plan.env, "files": list(plan.files),
        "notes": plan.notes, "log": str(log_path),
        "config": ({**vars(config), "extra_args": redact_argv(config.extra_args)}
                   if config else None),
        "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds")})
