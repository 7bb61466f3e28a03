"""The record contract: what a lab promises to record on the CPU tier, checked against a run.

Each notebook declares, in its metadata block `labkit.records`, the records a CPU-tier run
must leave in `<run>/<lab>/results.json`:

    "records": {"scalars": ["matmul_gflops"], "tables": ["labs"], "figures": ["roofline"],
                "texts": [], "optional": ["gpu_*"],
                "allowed_not_measured": {"peak_bf16_tflops": "no CUDA GPU"},
                "hero": "roofline"}

- a name in scalars/tables/figures/texts must be recorded under that kind, or be
  `not_measured` with a reason that contains the allowed substring for that name;
- `hero` names the figure the portfolio's index may lead with (labkit.portfolio.highlights);
- `optional` names (a trailing or inner `*` is a pattern) may be read by the template but
  need not appear on the CPU tier (GPU-only results, results behind a parameter).

Why: nbval only checks that cells run. A lab that quietly stops measuring (an engine that no
longer starts, a renamed record) still runs green, and the portfolio prints "not measured".
The contract turns that into a failure CI sees. The template side is checked by
labkit.portfolio.template_names: every name a page reads must be declared here.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

from labkit import runs
from labkit.labs import all_labs

KINDS = ("scalars", "tables", "figures", "texts")


@dataclass
class Contract:
    lab: str
    required: dict[str, list[str]] = field(default_factory=dict)  # kind -> names
    optional: list[str] = field(default_factory=list)
    allowed_not_measured: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_metadata(cls, lab: str, records: dict | None) -> Contract:
        records = records or {}
        unknown = set(records) - set(KINDS) - {"optional", "allowed_not_measured", "hero"}
        if unknown:
            raise ValueError(f"lab {lab}: labkit.records has unknown key(s) {sorted(unknown)}; "
                             f"allowed: {', '.join(KINDS)}, optional, allowed_not_measured, hero")
        return cls(lab, {k: list(records.get(k, [])) for k in KINDS},
                   list(records.get("optional", [])),
                   dict(records.get("allowed_not_measured", {})))

    @property
    def declared(self) -> set[str]:
        return {n for names in self.required.values() for n in names} | set(self.optional)

    def covers(self, name: str) -> bool:
        """Is `name` (or a template pattern like 'saving_pct__*') declared?"""
        if name in self.declared:
            return True
        return "*" not in name and any(fnmatch.fnmatchcase(name, d) for d in self.declared
                                       if "*" in d)

    def check(self, results: dict) -> list[str]:
        """Problems with one lab's results.json, as sentences; [] when the contract holds."""
        problems = []
        skipped = results.get("not_measured", {})
        for kind, names in self.required.items():
            for name in names:
                if name in results.get(kind, {}):
                    continue
                if name in skipped:
                    allowed = self.allowed_not_measured.get(name)
                    if allowed is not None and allowed.lower() in str(skipped[name]).lower():
                        continue
                    problems.append(f"{kind[:-1]} {name!r} is not_measured ({skipped[name]!r})"
                                    + (f" but the allowed reason is {allowed!r}" if allowed
                                       else " and the contract allows no reason for it"))
                else:
                    problems.append(f"{kind[:-1]} {name!r} was not recorded")
        return problems


def contract_of(lab) -> Contract:
    """The contract of a labkit.labs.Lab (empty when its notebook declares none)."""
    return Contract.from_metadata(lab.name, getattr(lab, "records", None))


def check_lab_dir(lab, lab_dir: Path) -> list[str]:
    results = runs.read_json(Path(lab_dir) / "results.json")
    if results is None:
        return [f"no results.json in {lab_dir}: the lab recorded nothing"]
    return contract_of(lab).check(results)


def check_run(run_dir: Path, lab_names: list[str] | None = None) -> dict[str, list[str]]:
    """lab name -> problems, for every lab (or the given ones) with a contract."""
    out = {}
    for lab in all_labs():
        if lab_names is not None and lab.name not in lab_names:
            continue
        if lab_names is None and not (Path(run_dir) / lab.name).is_dir():
            continue
        out[lab.name] = check_lab_dir(lab, Path(run_dir) / lab.name)
    return out


def format_report(problems: dict[str, list[str]]) -> str:
    lines = []
    for lab, found in problems.items():
        if found:
            lines.append(f"✘ {lab}: record contract broken (labkit.records in the notebook):")
            lines += [f"    - {p}" for p in found]
        else:
            lines.append(f"✔ {lab}: record contract holds")
    return "\n".join(lines)
