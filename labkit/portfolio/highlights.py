"""What the index page leads with: headline results, a hero figure, limitations.

A hiring manager reads the index for two minutes. It shows, in this order:

- headlines: each lab template may define `{% block headline %}` — one sentence with its
  number, rendered from recorded results like the rest of the page (so it is never typed in
  by hand) and linked to the page that holds the evidence;
- "what I built": each template's `{% block built %}` (one line), or the lab's title;
- a hero figure: the figure a lab names as `"hero"` in its record contract (labkit.records);
  the latest lab in the roadmap that recorded its hero wins;
- limitations, generated: every `not_measured` of the run, and every modelled (not measured)
  result — a name containing "modelled", or a note/caption that says "modelled".
"""

from __future__ import annotations

MAX_HEADLINES = 6


def render_block(env, template: str, block: str, context: dict) -> str:
    """One block of a template, rendered alone ('' when the template has no such block)."""
    tpl = env.get_template(template)
    if block not in tpl.blocks:
        return ""
    return "".join(tpl.blocks[block](tpl.new_context(context))).strip()


def headline(env, template: str, context: dict) -> str:
    """The template's headline sentence, or '' when it lacks its number on this run (a
    headline that says "not measured" is a limitation, listed as one, not a result)."""
    text = render_block(env, template, "headline", context)
    return "" if "not measured" in text else text


def _is_modelled(name: str, entry) -> str:
    """The reason a result is modelled rather than measured, or ''."""
    words = (entry.get("note") or entry.get("caption") or "") if isinstance(entry, dict) else ""
    if "modelled" in name.lower() or "modelled" in words.lower():
        return words or "computed from a model, not measured on this machine"
    return ""


def limitations(views) -> list[dict]:
    """Every not_measured and every modelled result of the views, with where to read more."""
    out = []
    for v in views:
        r = v.results
        for name, why in (r.get("not_measured") or {}).items():
            out.append({"view": v, "name": name, "kind": "not measured", "why": str(why)})
        for kind in ("scalars", "tables", "figures"):
            for name, entry in (r.get(kind) or {}).items():
                why = _is_modelled(name, entry)
                if why:
                    out.append({"view": v, "name": name, "kind": "modelled", "why": why})
    return out


def hero(views) -> tuple[object, str] | None:
    """(view, figure name) of the latest lab whose declared hero figure was recorded."""
    for v in reversed(views):
        name = (v.contract_records or {}).get("hero")
        if name and name in (v.results.get("figures") or {}):
            return v, name
    return None
