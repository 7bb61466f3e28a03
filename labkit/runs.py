"""Run records: where every lab writes the evidence it measured.

Layout (the run directory is the only hand-off between labs, and to the portfolio):

    runs/<run-id>/run.json                    machine, versions, git commit, profile, command
    runs/<run-id>/<lab>/results.json          scalars, tables, figures, texts, files, params
    runs/<run-id>/<lab>/status.json           written by `labkit run`: completed/failed/…
    runs/<run-id>/<lab>/tables/*.csv  figures/*.png  files/*  logs/*  <lab>.ipynb (executed)

A lab notebook does:

    rec = labkit.runs.lab("00_orientation")     # params: the notebook's parameters cell
    rec.scalars({"matmul_tflops": (1.7, "TFLOP/s"),          # (value, unit)
                 "copy_gbs": (12.0, "GB/s", "8 MiB buffer"),  # (value, unit, note)
                 "threads": 2,                                # a bare value: no unit
                 "gpu_tflops": NotMeasured("no CUDA GPU on this machine")},
                note="median of 5")                           # for entries without one
    rec.figure("roofline", fig)

`lab(name)` records the lab's papermill parameters itself: the names assigned in the cell
tagged `parameters` of labs/<name>.ipynb, with their values in the calling notebook at that
moment (papermill's injected values included), so a lab does not list them again.

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
import sys
import warnings
from pathlib import Path
from typing import Any, NamedTuple

from labkit import labs as labs_mod
from labkit import secrets
from labkit.atomic import FILE_MODE, atomic_write_bytes, atomic_write_text  # noqa: F401 (re-exported)
from labkit.env import machine_summary
from labkit.errors import UserError

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
    root = runs_root()
    known = sorted(d.name for d in root.glob("*") if d.is_dir()) if root.is_dir() else []
    raise UserError(f"no run directory {run!r} (looked in . and {runs_root()}); "
                    f"known runs: {', '.join(known[-5:]) or 'none yet — run `labkit run` first'}")


def write_run_json(run_dir: Path, **fields: Any) -> dict:
    """Create or update run.json with machine facts and the given fields."""
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

class NotMeasured(NamedTuple):
    """A value for rec.scalars that says this tier could not measure it, and why."""

    reason: str


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

    def scalars(self, values: dict[str, Any], unit: str = "", note: str = "") -> None:
        """Several scalars in one call (and one write), one entry per idea:

            value                      recorded with the call's unit and note
            (value, unit)              its own unit, the call's note
            (value, unit, note)        its own unit and note
            NotMeasured(reason)        rec.not_measured(name, reason)

        A None value is an error, as in scalar(): say why with NotMeasured instead."""
        entries = {}
        for name, v in values.items():
            if isinstance(v, NotMeasured):
                entries[name] = v
                continue
            parts = tuple(v) if isinstance(v, tuple) else (v,)
            if not 1 <= len(parts) <= 3:
                raise ValueError(f"{name}: want value, (value, unit) or (value, unit, note); "
                                 f"got {v!r}")
            if len(parts) == 1:
                (value,), u, n = parts, unit, note
            elif len(parts) == 2:
                (value, u), n = parts, note
            else:
                value, u, n = parts
            if value is None:
                raise ValueError(f"{name}: use NotMeasured(reason) instead of a None value")
            entries[name] = {"value": value, "unit": u, "note": n}
        for name, e in entries.items():  # all checked before anything is recorded
            if isinstance(e, NotMeasured):
                self.results["not_measured"][name] = e.reason
            else:
                self.results["scalars"][name] = e
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
    """The recorder for lab `name` in the current run (see module docstring). Without
    `params`, the lab's papermill parameters are read from the calling notebook."""
    if params is None:
        params = notebook_parameters(name, sys._getframe(1).f_globals)
    run_dir = os.environ.get(RUN_DIR_ENV)
    if run_dir:
        run = Path(run_dir)
    else:
        run = runs_root() / f"interactive-{_dt.date.today():%Y%m%d}"
    run.mkdir(parents=True, exist_ok=True)
    if not (run / "run.json").exists():
        write_run_json(run, profile="interactive", command="(notebook run by hand)")
    return LabRecorder(run / name, name, params)


def notebook_parameters(lab_name: str, namespace: dict) -> dict:
    """The current value in `namespace` of every name the lab's parameters cell assigns."""
    try:
        names = labs_mod.parameter_names(labs_mod.labs_dir() / f"{lab_name}.ipynb")
    except (OSError, ValueError, UserError) as e:
        warnings.warn(f"lab {lab_name}: parameters not recorded ({e}); pass params=dict(...)",
                      stacklevel=3)
        return {}
    return {n: namespace[n] for n in names if n in namespace}


def load_results(run_dir: os.PathLike | str) -> dict[str, dict]:
    """All labs' results.json (plus status.json as 'status') in one run, by lab name."""
    out = {}
    for d in sorted(Path(run_dir).iterdir()):
        res = read_json(d / "results.json") if d.is_dir() else None
        if res is not None:
            res["status"] = read_json(d / "status.json", default={"status": "unknown"})
            out[d.name] = res
    return out
