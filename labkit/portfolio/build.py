"""Render portfolio_templates/*.md.j2 from a run directory.

Templates see one `lab` object per page whose helpers read *only* recorded results:

    {{ lab.scalar("matmul_gflops") }}   → "13.4 GFLOP/s", or "*not measured in this run*"
    {{ lab.table("llm_intensity") }}    → a Markdown table
    {{ lab.figure("roofline") }}        → an image with its caption
    {{ lab.reproduce }}                 → the exact command that re-runs this lab

A lab with no template of its own gets `_lab.md.j2`, which lists everything it recorded.
The HTML file embeds every figure as a data: URI so it is one self-contained file.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from pathlib import Path

from labkit import runs, secrets
from labkit.labs import PROJECT_ROOT
from labkit.portfolio import highlights
from labkit.portfolio.evidence import publish, tier_of
from labkit.portfolio.references import reference

TEMPLATES = PROJECT_ROOT / "portfolio_templates"
NOT_MEASURED = "*not measured in this run*"


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        # 4 significant digits for small numbers, whole numbers with separators from 1,000 up
        # (`.4g` alone would print 62550.0 as 6.255e+04).
        return f"{value:,.4g}" if abs(value) < 1e3 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _cell(v) -> str:
    return _fmt(v).replace("|", "\\|").replace("\n", " ")


class LabView:
    """What one lab recorded, with helpers that never invent a missing result."""

    def __init__(self, name: str, title: str, results: dict | None, run: dict,
                 page: str | None = None, contract_records: dict | None = None):
        self.name, self.title, self.run = name, title, run
        self.page = page or name  # "00_orientation", or "00_orientation-gpu" in a merge
        self.tier = tier_of(run)
        self.contract_records = contract_records or {}
        self.results = results or {}
        self.status = self.results.get("status", {}).get("status", "not run")
        self.seconds = self.results.get("status", {}).get("seconds")
        self.evidence: dict[str, list[tuple[str, str]]] = {}  # filled by build (publish)
        self.run_dir: Path | None = None
        self.headline = self.built = ""  # the template's blocks, rendered by build

    def has(self, name: str) -> bool:
        r = self.results
        return any(name in r.get(k, {}) for k in ("scalars", "tables", "figures", "texts"))

    def _missing(self, name: str) -> str:
        why = self.results.get("not_measured", {}).get(name)
        return f"*not measured on this tier: {why}*" if why else NOT_MEASURED

    def value(self, name: str):
        """The raw recorded value (for arithmetic in a template), or None."""
        s = self.results.get("scalars", {}).get(name)
        return s["value"] if s else None

    def scalar(self, name: str, unit: bool = True) -> str:
        s = self.results.get("scalars", {}).get(name)
        if not s:
            return self._missing(name)
        return _fmt(s["value"]) + (f" {s['unit']}" if unit and s.get("unit") else "")

    def note(self, name: str) -> str:
        return (self.results.get("scalars", {}).get(name) or {}).get("note", "")

    def table(self, name: str, columns: list[str] | None = None) -> str:
        t = self.results.get("tables", {}).get(name)
        if not t or not t.get("rows"):
            return self._missing(name)
        cols = columns or t["columns"]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in t["rows"]]
        return "\n".join(lines) + (f"\n\n_{t['note']}_" if t.get("note") else "")

    def figure(self, name: str) -> str:
        f = self.results.get("figures", {}).get(name)
        if not f:
            return self._missing(name)
        cap = f.get("caption") or name
        where = f"measured on the {self.tier} tier, run `{self.run.get('run_id', '?')}`"
        return f"![{cap}](figures/{self.page}/{Path(f['path']).name})\n\n_{cap}_ ({where})"

    @property
    def limitations(self) -> list[dict]:
        """This page's not_measured and modelled results (labkit.portfolio.highlights)."""
        return highlights.limitations([self])

    @property
    def evidence_links(self) -> str:
        """Markdown links to this page's published tables and results.json."""
        items = [f"[{n}.csv]({rel})" for n, rel in self.evidence.get("tables", [])]
        items += [f"[{n}]({rel})" for n, rel in self.evidence.get("data", [])]
        return " · ".join(items) or "none published"

    def text(self, name: str) -> str:
        t = self.results.get("texts", {}).get(name)
        return f"```\n{t}\n```" if t else self._missing(name)

    @property
    def reproduce(self) -> str:
        params = self.results.get("status", {}).get("params") or self.results.get("params", {})
        # Lists and dicts as JSON, which `labkit run` reads back (values are YAML-typed).
        args = " ".join(
            f"-p {shlex.quote(f'{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}')}"
            for k, v in params.items())
        commit = self.run.get("git", {}).get("commit", "")
        checkout = f"git checkout {commit[:12]} && " if re.fullmatch(r"[0-9a-f]{40}", commit) else ""
        return f"{checkout}labkit run {self.name} --profile {self.run.get('profile', 'cpu')} {args}".strip()


def hardware_line(run: dict) -> str:
    m = run.get("machine", {})
    gpus = ", ".join(g["name"] for g in m.get("gpus", [])) or "no GPU"
    return (f"{m.get('cpu', '?')} ×{m.get('cpu_cores', '?')} cores, "
            f"{m.get('memory_total_gib', '?')} GiB RAM, {gpus}")


def versions_line(run: dict) -> str:
    v = run.get("versions", {})
    return ", ".join(f"{k} {val}" for k, val in v.items()) + f"; Python {run.get('python', '?')}"


def _views(run_dirs: list[Path]) -> list[LabView]:
    """One view per (lab, run) in roadmap order; a lab found in several runs gets one page
    per run, the later ones named `<lab>-<tier>` (`-<tier>2`… if tiers repeat)."""
    from labkit.labs import all_labs

    known = {lab.name: lab for lab in all_labs()}
    views, pages = [], set()
    for run_dir in run_dirs:
        run = runs.read_json(run_dir / "run.json", default={}) or {}
        recorded = runs.load_results(run_dir)
        names = sorted(set(known) | set(recorded)) if len(run_dirs) == 1 else sorted(recorded)
        for n in names:
            page, k = n, 1
            while page in pages:
                k += 1
                page = f"{n}-{tier_of(run).lower()}" + (str(k - 1) if k > 2 else "")
            lab = known.get(n)
            view = LabView(n, lab.title if lab else n, recorded.get(n), run, page,
                           lab.records if lab else {})
            view.run_dir = run_dir
            if view.status != "not run" or len(run_dirs) == 1:
                pages.add(page)
                views.append(view)
    return sorted(views, key=lambda v: (v.name, v.page))


def build(run_dir, out_dir: Path, templates: Path = TEMPLATES) -> list[Path]:
    """Render the portfolio of one run, or of several (a list: e.g. a CPU and a GPU run)."""
    import jinja2

    run_dirs = [Path(d) for d in (run_dir if isinstance(run_dir, (list, tuple)) else [run_dir])]
    out_dir = Path(out_dir)
    views = _views(run_dirs)
    run = runs.read_json(run_dirs[0] / "run.json", default={}) or {}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(templates),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    values = secrets.secret_values()
    out_dir.mkdir(parents=True, exist_ok=True)
    pages: list[tuple[str, str]] = []
    titles = {"index": "Overview"}
    for view in views:
        if view.status == "not run":
            continue
        common = _common(view.run)
        view.evidence = publish(view.page, view.results, view.run_dir / view.name, out_dir,
                                values)
        tpl = f"{view.name}.md.j2" if (templates / f"{view.name}.md.j2").exists() else "_lab.md.j2"
        ctx = {"lab": view, **common}
        view.headline = highlights.headline(env, tpl, ctx)
        view.built = highlights.render_block(env, tpl, "built", ctx) or view.title
        md = env.get_template(tpl).render(**ctx)
        pages.append((view.page, secrets.redact_text(md, values)))
        titles[view.page] = view.title + (f" ({view.tier})" if view.page != view.name else "")
    tiers = sorted({v.tier for v in views if v.status != "not run"}) or [tier_of(run)]
    index = env.get_template("index.md.j2").render(
        labs=views, tiers=tiers, hero=highlights.hero(views),
        limitations=highlights.limitations([v for v in views if v.status != "not run"]),
        max_headlines=highlights.MAX_HEADLINES, runs_merged=len(run_dirs),
        machines=_machines(run_dirs), **_common(run))
    index = secrets.redact_text(index, values)
    written = [runs.atomic_write_text(out_dir / "README.md", index)]
    written += [runs.atomic_write_text(out_dir / f"{n}.md", md) for n, md in pages]
    html = render_html([("index", index)] + pages, out_dir, env, run, titles)
    written.append(runs.atomic_write_text(out_dir / "portfolio.html", html))
    return written


def _machines(run_dirs: list[Path]) -> list[dict]:
    """Each merged run's id, tier and hardware, for the index."""
    out = []
    for d in run_dirs:
        r = runs.read_json(d / "run.json", default={}) or {}
        out.append({"run_id": r.get("run_id", d.name), "tier": tier_of(r),
                    "hardware": hardware_line(r), "profile": r.get("profile", "?")})
    return out


def _common(run: dict) -> dict:
    return {"run": run, "hardware": hardware_line(run), "versions": versions_line(run),
            "not_measured": NOT_MEASURED, "tier": tier_of(run), "reference": reference}


def render_html(pages: list[tuple[str, str]], out_dir: Path, env, run: dict,
                titles: dict[str, str] | None = None) -> str:
    """One self-contained HTML file: every page as a section, figures as data: URIs."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark").enable("table")
    sections = []
    for name, text in pages:
        body = md.render(text)
        body = re.sub(r'href="([0-9A-Za-z_-]+)\.md"', r'href="#\1"', body)
        body = re.sub(r'src="(figures/[^"]+)"', lambda m: f'src="{_data_uri(out_dir / m.group(1))}"',
                      body)
        sections.append({"id": name, "title": (titles or {}).get(name, name), "html": body})
    return env.get_template("page.html.j2").render(sections=sections, run=run)


def _data_uri(path: Path) -> str:
    if not path.exists():
        return ""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
