"""The labs: finding the notebooks (here), and each lab's glue code (`lNN_topic.py` beside this
file, one module per notebook `labs/NN_topic.ipynb`):

    l10_collectives.py             lab 10: tables, alpha-beta fits and prediction plots
    l11_ddp_training.py            lab 11: step logs, scaling/comm tables, drill comparison
    l11_ddp_training_plots.py      lab 11's figures
    l12_cluster_networking.py      lab 12: NCCL variable table, manifest checks, log rows
    l20_paged_attention.py         lab 20: waste study, block-table demos, figures
    l21_radix_attention.py         lab 21: radix vs hash demos and figures
    l21_engine_ttft.py             lab 21: TTFT with and without a prefix cache, on a server
    l22_deploy_and_bench.py        lab 22's readout: fault checks, machine load, tables
    l23_engine_comparison.py       lab 23: one server per config, capacity per workload
    l30_metrics_and_dashboards.py  Prometheus + engine + exporter, client vs server TTFT
    l40_cost_model.py              lab 23's capacities priced, checkpoint timing, figures
    l42_case_study.py              the case study's records: X exact, "at least X", or why not
                                   (the waterfall itself is labkit/cost/case_study.py)

This file finds the lab notebooks, their roadmap order, parameters and requirements.

A lab is `labs/NN_topic.ipynb`. The number is its place in the roadmap (00 orientation,
1x distributed, 2x inference, 3x observability, 4x cost), so sorting by name is roadmap
order. Each notebook carries a `labkit` block in its metadata:

    {"title": "Orientation", "step": 0,
     "requires": {"cpu": ["torch"], "gpu": ["torch", "cuda_gpu"]},
     "records": {"scalars": ["matmul_gflops"], "figures": ["roofline"], ...}}

`records` is the lab's record contract (labkit.portfolio.contract): what a CPU-tier run must
record, checked in CI. `labkit doctor` evaluates those requirements against this machine;
`labkit run` reads the cell tagged `parameters` to validate overrides before anything starts.
"""

from __future__ import annotations

import ast
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from labkit.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def labs_dir() -> Path:
    d = Path(os.environ.get("LABKIT_LABS_DIR", PROJECT_ROOT / "labs"))
    if not d.is_dir():
        raise UserError(f"no labs folder at {d}: run labkit from a clone of the kit "
                        "(pip install -e .), or set LABKIT_LABS_DIR")
    return d


@dataclass
class Lab:
    name: str  # "00_orientation"
    path: Path
    title: str = ""
    step: int = 0
    requires: dict[str, list[str]] = field(default_factory=dict)
    # The record contract: what a CPU-tier run must record (labkit.portfolio.contract).
    records: dict = field(default_factory=dict)

    @property
    def number(self) -> str:
        return self.name.split("_", 1)[0]

    def parameters(self) -> dict[str, dict]:
        """Declared parameters: name -> {default, type, help, choices}."""
        return parameters_of(self.path)


def all_labs() -> list[Lab]:
    labs = []
    for p in sorted(labs_dir().glob("[0-9][0-9]_*.ipynb")):
        meta = json.loads(p.read_text()).get("metadata", {}).get("labkit", {})
        labs.append(Lab(name=p.stem, path=p, title=meta.get("title", p.stem),
                        step=int(meta.get("step", 0)), requires=meta.get("requires", {}),
                        records=meta.get("records", {})))
    return labs


def select(names: list[str] | None) -> list[Lab]:
    """Labs by number ("00"), full name ("00_orientation") or topic ("orientation"),
    always returned in roadmap order."""
    labs = all_labs()
    if not names:
        return labs
    chosen = []
    for n in names:
        hits = [lab for lab in labs if n in (lab.name, lab.number, lab.name.split("_", 1)[-1])]
        if not hits:
            raise UserError(f"no lab {n!r}; labs are: {', '.join(lab.name for lab in labs)}")
        chosen += [h for h in hits if h not in chosen]
    return sorted(chosen, key=lambda lab: lab.name)


def parameter_names(path: Path) -> list[str]:
    """The names the cell tagged `parameters` assigns, in order (no papermill needed: this
    runs in every lab's kernel, through labkit.runs.lab)."""
    nb = json.loads(Path(path).read_text())
    for cell in nb.get("cells", []):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            names: list[str] = []
            for node in ast.parse(src).body:
                targets = node.targets if isinstance(node, ast.Assign) else \
                    [node.target] if isinstance(node, ast.AnnAssign) else []
                names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
            return names
    raise ValueError(f"{path} has no cell tagged 'parameters'")


def parameters_of(path: Path) -> dict[str, dict]:
    """Parse the `parameters` cell with papermill's own inspector, plus `# one of: a, b`."""
    import papermill

    found = papermill.inspect_notebook(str(path))
    out = {}
    for name, p in found.items():
        help_ = (p.get("help") or "").strip()
        choices = None
        if "one of:" in help_:
            choices = [c.strip() for c in help_.split("one of:", 1)[1].split(",") if c.strip()]
        default = _literal(p.get("default"))
        # papermill infers a type only from an annotation (`size: int = 3`); without one, the
        # default's own type is the contract (`size = 3` takes ints).
        kind = p.get("inferred_type_name")
        if kind in (None, "None") and default is not None:
            kind = type(default).__name__
        out[name] = {"default": default, "type": kind, "help": help_, "choices": choices}
    return out


def _literal(src: str | None):
    try:
        return ast.literal_eval(src) if src is not None else None
    except (ValueError, SyntaxError):
        return src
