"""Publish a page's evidence beside it: figures, tables as CSV, and a scrubbed results.json.

A reader who doubts a number should be one click from the data behind it, without the run
directory (which holds logs, executed notebooks and checkpoints nobody should have to ship):

    portfolio/<run>/figures/<page>/<figure>.png
    portfolio/<run>/tables/<page>/<table>.csv
    portfolio/<run>/data/<page>/results.json     secrets scrubbed (names and values)

Everything is written readable by all (files 0644, folders 0755): a portfolio is meant to be
copied to a web server or a shared folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from labkit import runs, secrets

DIR_MODE = 0o755


def tier_of(run: dict) -> str:
    """"GPU" when the run's machine had a GPU, else "CPU" (the tier badge on every page)."""
    return "GPU" if (run.get("machine") or {}).get("gpus") else "CPU"


def _mkdir(path: Path, top: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    while path != top and top in path.parents:  # mkdir honours the umask: make it explicit
        os.chmod(path, DIR_MODE)
        path = path.parent
    os.chmod(top, DIR_MODE)


def publish(page: str, results: dict, lab_dir: Path, out_dir: Path,
            secret_values: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Copy one lab's evidence under out_dir; return {"figures"|"tables"|"data": [(name, rel)]}."""
    links: dict[str, list[tuple[str, str]]] = {"figures": [], "tables": [], "data": []}
    for name, f in (results.get("figures") or {}).items():
        src = lab_dir / f["path"]
        if src.exists():
            rel = f"figures/{page}/{src.name}"
            _mkdir((out_dir / rel).parent, out_dir)
            runs.atomic_write_bytes(out_dir / rel, src.read_bytes())
            links["figures"].append((name, rel))
    for name, t in (results.get("tables") or {}).items():
        src = lab_dir / t.get("path", "")
        if src.is_file():
            rel = f"tables/{page}/{name}.csv"
            _mkdir((out_dir / rel).parent, out_dir)
            runs.atomic_write_text(out_dir / rel,
                                   secrets.redact_text(src.read_text(), secret_values))
            links["tables"].append((name, rel))
    rel = f"data/{page}/results.json"
    _mkdir((out_dir / rel).parent, out_dir)
    public = {k: v for k, v in results.items() if k != "status"}
    text = json.dumps(secrets.scrub(public), indent=2, default=str) + "\n"
    runs.atomic_write_text(out_dir / rel, secrets.redact_text(text, secret_values))
    links["data"].append(("results.json", rel))
    return links
