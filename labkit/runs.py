"""Run records: where every lab writes the evidence it measured.

Layout (the run directory is the only hand-off between labs, and to the portfolio):

    runs/<run-id>/run.json                    machine, versions, git commit, profile, command
    runs/<run-id>/<lab>/results.json          scalars, tables, figures, texts, files, params
    runs/<run-id>/<lab>/status.json           written by `labkit run`: completed/failed/…
    runs/<run-id>/<lab>/tables/*.csv  figures/*.png  files/*  logs/*  <lab>.ipynb (executed)

A lab notebook does:

    rec = labkit.runs.lab("00_orientation", params={"matmul_size": matmul_size})
    rec.scalar("matmul_tflops", 1.7, unit="TFLOP/s")
    rec.figure("roofline", fig)
    rec.not_measured("gpu_tflops", "no CUDA GPU on this machine")

Under `labkit run` the run directory comes from LABKIT_RUN_DIR; a notebook opened by hand
records into runs/interactive-<date>/ instead. Every write is atomic (temp file + rename),
so a crash never leaves a half-written results.json, and everything passes through
labkit.secrets.scrub so no token lands on disk.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

from labkit import secrets
from labkit.atomic import FILE_MODE, atomic_write_bytes, atomic_write_text  # noqa: F401 (re-exported)

RUNS_DIR_ENV = "LABKIT_RUNS_DIR"  # where runs live (default ./runs)
RUN_DIR_ENV = "LABKIT_RUN_DIR"  # the current run, set by `labkit run` for each lab's kernel


# --- atomic writes (labkit/atomic.py: a leaf module, so secrets.py can use it too) -------

def atomic_write_json(path: os.PathLike | str, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(secrets.scrub(obj), indent=2, default=str) + "\n")


def read_json(path: os.PathLike | str, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default


# --- run directories -----------------------------------------------------------------------

def runs_root() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV, "runs")).resolve()


def new_run_id(profile: str = "cpu") -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{profile}"


def resolve_run_dir(run: str | os.PathLike) -> Path:
    """A run given as a path, a run id under the runs root, or 'latest'."""
    p = Path(run)
    if p.is_dir():
        return p.resolve()
    q = runs_root() / str(run)
    if q.is_dir():
        return q.resolve()
    from labkit.errors import UserError

    known = sorted(d.name for d in runs_root().glob("*") if d.is_dir()) if runs_root().is_dir() else []
    raise UserError(f"no run directory {run!r} (looked in . and {runs_root()}); "
                    f"known runs: {', '.join(known[-5:]) or 'none yet — run `labkit run` first'}")


def write_run_json(run_dir: Path, **fields: Any) -> dict:
    """Create or update run.json with machine facts and the given fields."""
    from labkit.env import machine_summary  # late import: env imports heavier helpers

    path = run_dir / "run.json"
    info = read_json(path, default={}) or {}
    if "machine" not in info:
        info.update(run_id=run_dir.name, created=_now(), **machine_summary())
    info.update(fields)
    atomic_write_json(path, info)
    return info


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


# --- recording ----------------------------------------------------------------------------

class LabRecorder:
    """Records one lab's results into <run>/<lab>/results.json (rewritten atomically)."""

    def __init__(self, lab_dir: Path, lab: str, params: dict | None = None):
        self.path = lab_dir
        self.lab = lab
        self.path.mkdir(parents=True, exist_ok=True)
        old = read_json(self.path / "results.json", default=None)
        # A re-run of a lab starts a fresh record; results of other labs are untouched.
        self.results: dict[str, Any] = {
            "lab": lab, "params": secrets.drop_secret_names(params or {}), "started": _now(),
            "scalars": {}, "tables": {}, "figures": {}, "texts": {}, "files": {},
            "not_measured": {},
        }
        if old and old.get("lab") != lab:
            raise ValueError(f"{self.path} holds results of lab {old.get('lab')!r}")
        self._save()

    def scalar(self, name: str, value: float | int | str | None, unit: str = "",
               note: str = "") -> None:
        if value is None:
            raise ValueError(f"{name}: use not_measured(name, reason) instead of a None value")
        self.results["scalars"][name] = {"value": value, "unit": unit, "note": note}
        self._save()

    def table(self, name: str, rows: Any, note: str = "") -> Path:
        """rows: a list of dicts (or anything with .to_dict('records'), e.g. a DataFrame)."""
        if hasattr(rows, "to_dict"):
            rows = rows.to_dict("records")
        rows = [dict(r) for r in rows]
        columns: list[str] = []
        for r in rows:
            columns += [c for c in r if c not in columns]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
        rel = f"tables/{name}.csv"
        atomic_write_text(self.path / rel, secrets.redact_text(buf.getvalue()))
        self.results["tables"][name] = {"path": rel, "columns": columns, "rows": rows, "note": note}
        self._save()
        return self.path / rel

    def figure(self, name: str, fig: Any, caption: str = "") -> Path:
        """Save a matplotlib figure as PNG (the portfolio embeds it)."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        rel = f"figures/{name}.png"
        atomic_write_bytes(self.path / rel, buf.getvalue())
        self.results["figures"][name] = {"path": rel, "caption": caption}
        self._save()
        return self.path / rel

    def text(self, name: str, text: str) -> None:
        self.results["texts"][name] = text
        self._save()

    def file(self, name: str, src: os.PathLike | str) -> Path:
        """Copy a file or directory (e.g. a trained checkpoint) into <lab>/files/."""
        src = Path(src)
        dst = self.path / "files" / (name if src.is_dir() else name + src.suffix)
        if src.is_dir():
            tmp = dst.with_name(dst.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src, tmp)
            shutil.rmtree(dst, ignore_errors=True)
            os.replace(tmp, dst)
        else:
            atomic_write_bytes(dst, src.read_bytes())
        self.results["files"][name] = str(dst.relative_to(self.path))
        self._save()
        return dst

    def not_measured(self, name: str, reason: str) -> None:
        """Say explicitly that this tier cannot measure something, and why."""
        self.results["not_measured"][name] = reason
        self._save()

    def _save(self) -> None:
        self.results["updated"] = _now()
        atomic_write_json(self.path / "results.json", self.results)


def lab(name: str, params: dict | None = None) -> LabRecorder:
    """The recorder for lab `name` in the current run (see module docstring)."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if run_dir:
        run = Path(run_dir)
    else:
        run = runs_root() / f"interactive-{_dt.date.today():%Y%m%d}"
    run.mkdir(parents=True, exist_ok=True)
    if not (run / "run.json").exists():
        write_run_json(run, profile="interactive", command="(notebook run by hand)")
    return LabRecorder(run / name, name, params)


def load_results(run_dir: os.PathLike | str) -> dict[str, dict]:
    """All labs' results.json (plus status.json as 'status') in one run, by lab name."""
    out = {}
    for d in sorted(Path(run_dir).iterdir()):
        res = read_json(d / "results.json") if d.is_dir() else None
        if res is not None:
            res["status"] = read_json(d / "status.json", default={"status": "unknown"})
            out[d.name] = res
    return out
