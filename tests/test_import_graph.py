"""The package's shape, checked from the source: no import cycles (function-local imports
included: they hide a cycle, they don't remove it), and every package's docstring names all
of its modules."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "labkit"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # labkit.x.y.func → labkit.x.y
                t = t.rpartition(".")[0]
            if t and t != name and t.startswith("labkit"):
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    known = set(files)
    g = {n: imports_of(p, n, known) for n, p in files.items()}
    # importing labkit.a.b runs labkit/a/__init__.py first: that edge is not a dependency of
    # the package's *docstring map*, so edges to parent packages are dropped
    return {n: {t for t in deps if not n.startswith(t + ".")} for n, deps in g.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, " → ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package", sorted(p.parent for p in ROOT.rglob("__init__.py")),
                         ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_every_package_docstring_lists_its_modules(package):
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    missing = [p.name for p in sorted(package.glob("*.py"))
               if p.name != "__init__.py" and p.name not in doc and p.stem not in doc]
    assert not missing, f"{package.name}/__init__.py docstring does not mention {missing}"


CORE = {"labkit", "labkit.errors", "labkit.atomic", "labkit.secrets", "labkit.runs",
        "labkit.labs", "labkit.kernel_transport", "labkit.env"}


def test_imports_point_down_the_layers():
    """ARCHITECTURE.md: core ← feature packages ← lab glue ← notebooks. Core imports only
    core; nothing but lab glue (and the CLI on top) imports lab glue."""
    g = graph()
    wrong = [f"{n} → {d}" for n, deps in g.items() for d in deps
             if (n in CORE and d not in CORE)
             or (d.startswith("labkit.labs.l") and not n.startswith("labkit.labs."))]
    assert not wrong, wrong


def test_the_engines_scheduler_depends_on_neither_attention_path():
    """Issue 16: the scheduler decides who runs; how attention is computed is not its business
    (it used to import a helper from the cascade module)."""
    g = graph()
    for part in ("scheduler", "sequence", "engine"):
        paths = {d for d in g[f"labkit.engine.{part}"]
                 if d.startswith(("labkit.engine.fast", "labkit.engine.plain_attention"))}
        assert not paths, f"labkit.engine.{part} imports {paths}"
    assert {"labkit.engine.fast.backend", "labkit.engine.plain_attention"} <= \
        g["labkit.engine.model_runner"]  # the one place the switch is read


# "One idea per folder" in numbers: about 15 modules a folder. The teaching engine was the
# largest (17) until its fast path moved to engine/fast/ (issue 16); the next module in a
# folder at the limit means splitting that folder.
MAX_MODULES_PER_FOLDER = 15


@pytest.mark.parametrize("folder", sorted({p.parent for p in ROOT.rglob("*.py")}),
                         ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_no_folder_holds_more_than_about_15_modules(folder):
    modules = [p.name for p in folder.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(modules) <= MAX_MODULES_PER_FOLDER, \
        f"{folder.name}/ holds {len(modules)} modules: split it into sub-packages by topic"
