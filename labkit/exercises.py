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
import re
from pathlib import Path

from labkit.errors import UserError

BEGIN = re.compile(r"^(\s*)# BEGIN SOLUTION\s*$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
HINT = re.compile(r"^\s*# HINT:\s*(.*)$")


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


def export(labs: list, out_dir: Path) -> list[tuple[Path, int]]:
    from labkit.runs import atomic_write_text

    written = []
    for lab in labs:
        nb = json.loads(lab.path.read_text())
        learner, n = learner_notebook(nb, str(lab.path))
        dst = out_dir / lab.path.name
        atomic_write_text(dst, json.dumps(learner, indent=1, ensure_ascii=False) + "\n")
        written.append((dst, n))
    return written


def cmd_export(args) -> int:
    from labkit import labs as labs_mod

    out = Path(args.out)
    for dst, n in export(labs_mod.select(args.labs), out):
        print(f"{dst}  ({n} exercise{'s' if n != 1 else ''})")
    print(f"\nOpen them with `jupyter lab {out}`; each check cell fails with a hint until your "
          "code is right.")
    return 0


def register(sub) -> None:
    p = sub.add_parser("exercises", help="learner copies of the labs (solutions removed)")
    s = p.add_subparsers(dest="exercises_cmd", metavar="ACTION", required=True)
    e = s.add_parser("export", help="write learner copies of the labs",
                     description="Copy labs with every `# BEGIN SOLUTION … # END SOLUTION` "
                     "region replaced by its hints and a NotImplementedError, outputs cleared.")
    e.add_argument("labs", nargs="*", metavar="LAB", help="lab number or name (default: all)")
    e.add_argument("--out", default="exercises", help="output folder (default ./exercises)")
    e.set_defaults(func=cmd_export)
