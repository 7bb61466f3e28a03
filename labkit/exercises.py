"""`labkit exercises export`: learner copies of the labs, with the solutions taken out.

Labs are committed solved, so papermill and nbval can run them end to end. In the code,
each exercise's reference sits between two marker lines:

    def arithmetic_intensity(m, n, k, bytes_per_element):
        # BEGIN SOLUTION
        # HINT: FLOPs of the matmul divided by the bytes of A, B and C
        flops = 2 * m * n * k
        return flops / ((m * k + k * n + m * n) * bytes_per_element)
        # END SOLUTION

The learner copy keeps the HINT lines and replaces the rest of the region with
`raise NotImplementedError("<hint>")` at the marker's indentation, so the check cell that
follows fails with the exercise's own message until the learner writes the code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from labkit.errors import UserError

BEGIN = re.compile(r"^(\s*)# BEGIN SOLUTION\s*$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
HINT = re.compile(r"^\s*# HINT:\s*(.*)$")
STUB = re.compile(r"raise NotImplementedError\(['\"]Exercise: ")  # what a region becomes


def strip_solutions(source: str, where: str = "<source>") -> str:
    """Replace every solution region in `source` with its hints and a NotImplementedError."""
    out: list[str] = []
    region: list[str] | None = None
    indent = ""
    for lineno, line in enumerate(source.splitlines(keepends=True), 1):
        if region is None:
            m = BEGIN.match(line)
            if m:
                region, indent = [], m.group(1)
            else:
                out.append(line)
            continue
        if END.match(line):
            hints = [m.group(1) for r in region if (m := HINT.match(r))]
            out += [f"{indent}# HINT: {h}\n" for h in hints]
            message = hints[0] if hints else "write this part yourself"
            out.append(f"{indent}raise NotImplementedError({('Exercise: ' + message)!r})\n")
            region = None
        elif BEGIN.match(line):
            raise UserError(f"{where}:{lineno}: BEGIN SOLUTION inside another solution region")
        else:
            region.append(line)
    if region is not None:
        raise UserError(f"{where}: a BEGIN SOLUTION has no END SOLUTION")
    return "".join(out)


def learner_notebook(nb: dict, where: str = "<notebook>") -> tuple[dict, int]:
    """A copy of a notebook with solutions stripped and outputs cleared; and how many regions."""
    count = 0
    cells = []
    for cell in nb["cells"]:
        cell = dict(cell)
        src = "".join(cell.get("source", []))
        if cell["cell_type"] == "code":
            count += len([ln for ln in src.splitlines() if BEGIN.match(ln)])
            src = strip_solutions(src, where)
            cell.update(outputs=[], execution_count=None)
        cell["source"] = src.splitlines(keepends=True)
        cells.append(cell)
    return {**nb, "cells": cells}, count


def paste_solutions(learner: dict, solved: dict) -> dict:
    """The learner copy with the reference code put back where each stub stands: what a
    learner's notebook is once every exercise is solved. Cell for cell, so a lab that was
    edited after the export is refused rather than mixed."""
    if len(learner["cells"]) != len(solved["cells"]):
        raise UserError("the learner copy and the lab have different cells: export it anew "
                        "(`labkit exercises reset LAB`)")
    cells = []
    for mine, ref in zip(learner["cells"], solved["cells"]):
        mine = dict(mine)
        if mine["cell_type"] == "code" and STUB.search("".join(mine["source"])):
            mine["source"] = ref["source"]
        cells.append(mine)
    return {**learner, "cells": cells}


def export(labs: list, out_dir: Path, overwrite: bool = False) -> list[tuple[Path, int]]:
    """Write learner copies of `labs` into out_dir, with the labs' data/ folder beside them
    (lab 12 reads data/nccl next to the notebook). An existing copy is the learner's work:
    it is kept unless `overwrite` (then `reset` keeps a backup first)."""
    from labkit.runs import atomic_write_text

    written = []
    for lab in labs:
        dst = out_dir / lab.path.name
        if dst.exists() and not overwrite:
            continue
        nb = json.loads(lab.path.read_text())
        learner, n = learner_notebook(nb, str(lab.path))
        atomic_write_text(dst, json.dumps(learner, indent=1, ensure_ascii=False) + "\n")
        written.append((dst, n))
    if labs:
        copy_data(labs[0].path.parent, out_dir)
    return written


def copy_data(labs_dir: Path, out_dir: Path) -> None:
    """labs/data → out_dir/data, file by file, without touching files already there."""
    src = labs_dir / "data"
    if not src.is_dir():
        return
    for f in src.rglob("*"):
        target = out_dir / "data" / f.relative_to(src)
        if f.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)


def reset(labs: list, out_dir: Path) -> list[tuple[Path, Path | None]]:
    """Start labs over: back up each learner copy (NN_topic.ipynb.bak-<time>), export anew."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    done = []
    for lab in labs:
        dst = out_dir / lab.path.name
        backup = None
        if dst.exists():
            backup = dst.with_name(f"{dst.name}.bak-{stamp}")
            os.replace(dst, backup)
        export([lab], out_dir, overwrite=True)
        done.append((dst, backup))
    return done


def cmd_export(args) -> int:
    from labkit import labs as labs_mod

    out = Path(args.out)
    selected = labs_mod.select(args.labs)
    written = export(selected, out, overwrite=args.force)
    for dst, n in written:
        print(f"{dst}  ({n} exercise{'s' if n != 1 else ''})")
    kept = len(selected) - len(written)
    if kept:
        print(f"{kept} learner cop{'ies' if kept != 1 else 'y'} already in {out} kept (your "
              "work); `labkit exercises reset LAB` starts one over, --force overwrites all")
    print(f"\nOpen them with `labkit lab` (or `jupyter lab {out}`); each check cell fails with "
          "a hint until your code is right.")
    return 0


def cmd_reset(args) -> int:
    from labkit import labs as labs_mod

    if not args.labs:
        raise UserError("name the lab(s) to start over, e.g. `labkit exercises reset 20`")
    for dst, backup in reset(labs_mod.select(args.labs), Path(args.out)):
        print(f"{dst}: fresh copy" + (f" (your old one: {backup})" if backup else ""))
    return 0


def register(sub) -> None:
    p = sub.add_parser("exercises", help="learner copies of the labs (solutions removed)")
    s = p.add_subparsers(dest="exercises_cmd", metavar="ACTION", required=True)
    e = s.add_parser("export", help="write learner copies of the labs",
                     description="Copy labs with every `# BEGIN SOLUTION … # END SOLUTION` "
                     "region replaced by its hints and a NotImplementedError, outputs cleared, "
                     "and the labs' data/ beside them. Copies that exist are kept.")
    e.add_argument("labs", nargs="*", metavar="LAB", help="lab number or name (default: all)")
    e.add_argument("--out", default="exercises", help="output folder (default ./exercises)")
    e.add_argument("--force", action="store_true", help="overwrite existing copies")
    e.set_defaults(func=cmd_export)
    r = s.add_parser("reset", help="start labs over (your old copy is kept as a backup)")
    r.add_argument("labs", nargs="+", metavar="LAB", help="lab number or name")
    r.add_argument("--out", default="exercises", help="learner copies (default ./exercises)")
    r.set_defaults(func=cmd_reset)
