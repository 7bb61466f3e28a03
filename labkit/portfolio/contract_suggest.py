"""Draft a lab's record contract from a real CPU-tier run (for a new lab, or after a change).

    python -m labkit.portfolio.contract_suggest RUN_DIR LAB [--write]

Everything the run recorded becomes required; names the lab's template reads that the run did
not record become `optional` (GPU-only or behind a parameter). Read the draft before keeping
it: a record that only some CPU machines produce belongs in `optional`, and a `not_measured`
the CPU tier always has belongs in `allowed_not_measured` with the stable part of its reason.
`--write` stores it in the notebook's metadata (`labkit.records`), cells untouched.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from labkit import runs
from labkit.labs import PROJECT_ROOT, select
from labkit.portfolio.contract import KINDS
from labkit.portfolio.template_names import names_read


def suggest(run_dir: Path, lab) -> dict:
    results = runs.read_json(Path(run_dir) / lab.name / "results.json")
    if results is None:
        raise SystemExit(f"no {lab.name}/results.json in {run_dir}: run the lab first "
                         f"(labkit run {lab.number})")
    records = {k: sorted(results.get(k) or {}) for k in KINDS if results.get(k)}
    recorded = {n for names in records.values() for n in names}
    tpl = PROJECT_ROOT / "portfolio_templates" / f"{lab.name}.md.j2"
    read = names_read(tpl) if tpl.exists() else set()
    records["optional"] = sorted(n for n in read if n not in recorded)
    if lab.records.get("hero") in records.get("figures", []):
        records["hero"] = lab.records["hero"]
    return records


def write(lab, records: dict) -> None:
    """Into the notebook's metadata only, keeping the file's JSON layout (indent 1)."""
    nb = json.loads(lab.path.read_text())
    nb["metadata"].setdefault("labkit", {})["records"] = records
    runs.atomic_write_text(lab.path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m labkit.portfolio.contract_suggest",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="run directory (e.g. runs/latest) with the lab's results")
    p.add_argument("lab", help="lab number or name")
    p.add_argument("--write", action="store_true", help="store it in the notebook metadata")
    args = p.parse_args(argv)
    lab = select([args.lab])[0]
    records = suggest(runs.resolve_run_dir(args.run), lab)
    print(json.dumps(records, indent=1))
    if args.write:
        write(lab, records)
        print(f"written to {lab.path} (metadata labkit.records)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
