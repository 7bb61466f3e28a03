"""Which record names a portfolio template reads — found from the Jinja2 syntax tree.

A page reads records with `lab.scalar("x")`, `lab.value(...)`, `lab.table(...)`,
`lab.figure(...)`, `lab.text(...)`, `lab.note(...)`, `lab.has(...)`. A renamed record would
quietly print "not measured", so tests check that every name read here is declared in the
lab's record contract (labkit.portfolio.contract). Names are resolved statically:

- a string literal: `lab.scalar("matmul_gflops")`;
- `~` concatenation: each part resolved; a loop variable over a literal list expands to each
  item (`{% for c in ["radix", "hash"] %}…"ttft_ms_" ~ c` → ttft_ms_radix, ttft_ms_hash);
  anything else becomes `*` (`"saving_pct__" ~ w` → the pattern `saving_pct__*`, which the
  contract must declare as such);
- a macro parameter: resolved at each call of the macro;
- a loop variable over `lab.results…` (the generic page lists what was recorded): skipped.

Any other dynamic name (a `set` variable, a filter…) is reported as unresolvable: write the
name out, or build it with `~` so the pattern can be declared.
"""

from __future__ import annotations

import itertools
from pathlib import Path

READERS = {"scalar", "value", "table", "figure", "text", "note", "has"}
RECORDED = object()  # marker: name comes from the lab's own recorded results


class Unresolvable(ValueError):
    pass


def _parents(tree):
    parent = {}
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in node.iter_child_nodes():
            parent[id(child)] = node
            stack.append(child)
    return parent


def _reads_results(expr, nodes) -> bool:
    """`lab.results…` (possibly with .items() / .get()) as a loop's iterable."""
    for n in expr.find_all(nodes.Getattr):
        if n.attr == "results" and isinstance(n.node, nodes.Name) and n.node.name == "lab":
            return True
    return False


def _resolve(expr, ctx) -> set:
    """Set of names (strings, possibly with '*') or {RECORDED}."""
    from jinja2 import nodes

    tree, parent, where = ctx
    if isinstance(expr, nodes.Const) and isinstance(expr.value, str):
        return {expr.value}
    if isinstance(expr, nodes.Concat):
        parts = []
        for p in expr.nodes:
            try:
                got = _resolve(p, ctx)
            except Unresolvable:
                got = {"*"}
            if RECORDED in got:
                return {RECORDED}
            parts.append(got)
        return {"".join(c) for c in itertools.product(*parts)}
    if isinstance(expr, nodes.Name):
        node = expr
        while id(node) in parent:
            node = parent[id(node)]
            if isinstance(node, nodes.For):
                # find_all yields descendants only: a plain `for c in …` target is itself
                # the Name.
                found = [node.target, *node.target.find_all(nodes.Name)]
                targets = [t.name for t in found if isinstance(t, nodes.Name)]
                if expr.name in targets:
                    if _reads_results(node.iter, nodes):
                        return {RECORDED}
                    if isinstance(node.iter, (nodes.List, nodes.Tuple)) and all(
                            isinstance(i, nodes.Const) for i in node.iter.items):
                        return {str(i.value) for i in node.iter.items}
                    raise Unresolvable(f"{where}: loop variable {expr.name!r} runs over a "
                                       "computed list")
            if isinstance(node, nodes.Macro):
                params = [a.name for a in node.args]
                if expr.name in params:
                    i = params.index(expr.name)
                    out = set()
                    for call in tree.find_all(nodes.Call):
                        if isinstance(call.node, nodes.Name) and call.node.name == node.name \
                                and len(call.args) > i:
                            out |= _resolve(call.args[i], ctx)
                    return out
    raise Unresolvable(f"{where}: cannot tell which record {_src(expr)} names; write the name "
                       "as a string literal or build it with ~ from literals")


def _src(expr) -> str:
    return type(expr).__name__ + (f" {expr.name!r}" if hasattr(expr, "name") else "")


def names_read(template: Path, env=None) -> set[str]:
    """Every record name (or `*` pattern) `template` and the templates it includes or
    extends read."""
    import jinja2
    from jinja2 import nodes

    template = Path(template)
    env = env or jinja2.Environment(loader=jinja2.FileSystemLoader(template.parent))
    tree = env.parse(template.read_text())
    ctx = (tree, _parents(tree), template.name)
    names: set = set()
    for call in tree.find_all(nodes.Call):
        f = call.node
        if isinstance(f, nodes.Getattr) and f.attr in READERS and isinstance(f.node, nodes.Name) \
                and f.node.name == "lab":
            if not call.args:
                raise Unresolvable(f"{template.name}: lab.{f.attr}() without a name")
            names |= _resolve(call.args[0], ctx)
    for inc in [*tree.find_all(nodes.Include), *tree.find_all(nodes.Extends)]:
        if isinstance(inc.template, nodes.Const):
            names |= names_read(template.parent / inc.template.value, env)
    names.discard(RECORDED)
    return names
