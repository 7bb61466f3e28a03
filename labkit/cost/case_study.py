"""The case study: "I reduced monthly spend by X %", with X computed from the run's records.

Every step of the waterfall is a monthly bill for the *same* traffic profile:

    baseline       lab 23's baseline config at its measured capacity (capacity search)
    engine switch  lab 23's cheapest config on the same workload            measured
    spot           the new fleet on spot: spot/on-demand price ratio from the catalog,
                   over-provisioned by 1 / availability (an assumption)     modelled

X = 1 − final / baseline. The measured part (engine and config) and the modelled part
(spot) are reported separately, and the sentence quotes the measured X; a modelled step is
labelled wherever it appears. The page refuses a number it cannot trace: a missing record
makes that step (and the X that needs it) say "not measured" with the reason.

A capacity that is only a lower bound (the SLO still held at the search's highest load)
gives a bill that is an *upper* bound: the config needs at most that many replicas. So:

    both capacities bracketed               X exact
    only the new config's is a lower bound  X is a lower bound: "by at least X %"
    the baseline's is a lower bound         no X (the old bill could be lower: the saving
                                            could be smaller, or negative)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from labkit import runs
from labkit.cost import monthly


@dataclass
class Step:
    name: str
    usd_month: float | None
    kind: str  # measured | modelled
    source: str
    why_not: str = ""
    upper_bound: bool = False  # the bill is at most this (a capacity was a lower bound)


def _scalar(res: dict | None, name: str):
    s = (res or {}).get("scalars", {}).get(name)
    return None if s is None else s["value"]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def capacity_of(lab23: dict | None, config: str,
                workload: str) -> tuple[float | None, str, bool]:
    """A config's capacity on a workload from lab 23's records: (tok/s, source, is it only a
    lower bound), or (None, why not, False)."""
    if lab23 is None:
        return None, "lab 23 has not run in this run directory", False
    name = f"{_slug(config)}__{_slug(workload)}"
    tok = _scalar(lab23, f"capacity_tok_s__{name}")
    status = _scalar(lab23, f"capacity_status__{name}")
    if tok is None:
        return None, (lab23.get("not_measured", {}).get(f"capacity_tok_s__{name}")
                      or f"lab 23 recorded no capacity_tok_s__{name}"), False
    if status == "lower bound":
        return float(tok), (f"lab 23, capacity_tok_s__{name} (a lower bound: the SLO still "
                            "held at the highest load searched)"), True
    if status != "bracketed":
        return None, (f"{config}'s capacity on {workload} is {status or 'of unknown status'}: "
                      "no bill without a capacity"), False
    return float(tok), f"lab 23, capacity_tok_s__{name} (bracketed)", False


def build(run_dir, traffic: monthly.Traffic, price_per_hour: float, price_source: str,
          workload: str = "shared-prefix", headroom: float = 0.2,
          spot_ratio: float | None = None, availability: float = 0.9) -> dict:
    """The waterfall steps, X measured and X with the modelled steps, and their sources."""
    run_dir = Path(run_dir)
    lab23 = runs.read_json(run_dir / "23_engine_comparison" / "results.json")
    w = _slug(workload)
    baseline, best = _scalar(lab23, "baseline"), _scalar(lab23, f"best__{w}")
    steps = []

    def bill(config: str | None, label: str) -> Step:
        if config is None:
            return Step(label, None, "measured", "", "lab 23 recorded no such config")
        tok, src, lower = capacity_of(lab23, config, workload)
        if tok is None:
            return Step(label, None, "measured", "", src)
        m = monthly.monthly_spend(traffic, monthly.Fleet(tok, price_per_hour, headroom))
        return Step(label, m["usd_per_month"], "measured",
                    f"{src}; {'at most ' if lower else ''}{m['replicas']} replica(s) × "
                    f"${price_per_hour:.4g}/h × 730 h", upper_bound=lower)

    steps.append(bill(baseline, f"baseline: {baseline}"))
    steps.append(bill(best, f"engine and config: {best}"))
    steps.append(_spot(steps[-1], spot_ratio, availability, traffic, price_per_hour,
                       headroom, lab23, best, workload))
    first = steps[0]
    measured = _saving(first, steps[1], workload)
    total = _saving(first, steps[-1], workload)
    return {"steps": steps, "x_measured_pct": measured["exact"],
            "x_measured_at_least_pct": measured["at_least"],
            "x_with_modelled_pct": total["exact"],
            "x_with_modelled_at_least_pct": total["at_least"],
            "workload": workload, "price_source": price_source, "baseline": baseline,
            "best": best, "why_not": measured["why_not"],
            "why_not_with_modelled": total["why_not"]}


def _saving(old: Step, new: Step, workload: str) -> dict:
    """X = 1 − new / old in %, exact or as a lower bound, or why there is none."""
    out = {"exact": None, "at_least": None, "why_not": ""}
    missing = next((s for s in (old, new) if s.usd_month is None), None)
    if missing is not None:
        out["why_not"] = missing.why_not or f"{missing.name} has no number"
    elif old.upper_bound:
        out["why_not"] = (f"the capacity of '{old.name}' on {workload} is only a lower bound, so its "
                          "bill may be lower and the saving smaller or negative: no X is quoted")
    elif new.upper_bound:
        out["at_least"] = (1 - new.usd_month / old.usd_month) * 100
        out["why_not"] = (f"the capacity of '{new.name}' on {workload} is only a lower bound (the SLO "
                          f"held at the highest load searched): X is at least "
                          f"{out['at_least']:.1f} %, not an exact figure")
    else:
        out["exact"] = (1 - new.usd_month / old.usd_month) * 100
    return out


def _spot(prev: Step, ratio, availability, traffic, price, headroom, lab23, config,
          workload) -> Step:
    """The same fleet on spot: replicas / availability, each at ratio × the on-demand price."""
    from labkit.cost.spot import serving_replicas

    if ratio is None or prev.usd_month is None:
        return Step("spot instances", None, "modelled", "",
                    "no spot price in the catalog" if ratio is None else "no measured bill")
    tok, _, lower = capacity_of(lab23, config, workload)
    m = monthly.monthly_spend(traffic, monthly.Fleet(tok, price, headroom))
    n = serving_replicas(m["replicas"], availability)
    return Step("spot instances", n * price * ratio * monthly.HOURS_PER_MONTH, "modelled",
                f"{'at most ' if lower else ''}{n} spot replicas ({m['replicas']} / availability "
                f"{availability:g}, assumed) at {ratio:.2f} × the on-demand price (catalog)",
                upper_bound=lower)


def rows(case: dict) -> list[dict]:
    out, prev = [], None
    for s in case["steps"]:
        delta = None if s.usd_month is None or prev is None else s.usd_month - prev
        out.append({"step": s.name, "usd_per_month": None if s.usd_month is None
                    else round(s.usd_month, 2), "change": None if delta is None
                    else round(delta, 2), "kind": s.kind,
                    "bound": "" if s.usd_month is None else
                    ("upper bound" if s.upper_bound else "exact"),
                    "source": s.source or s.why_not})
        prev = s.usd_month if s.usd_month is not None else prev
    return out


def waterfall_figure(case: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    prev = None
    for i, s in enumerate(case["steps"]):
        if s.usd_month is None:
            ax.text(i, 0, "not measured", ha="center", va="bottom", fontsize=8, color="gray")
            continue
        color = "tab:blue" if prev is None else ("tab:green" if s.kind == "measured"
                                                 else "tab:olive")
        bottom, height = (0, s.usd_month) if prev is None else \
            (min(prev, s.usd_month), abs(prev - s.usd_month))
        ax.bar(i, height, bottom=bottom, color=color, hatch="//" if s.kind == "modelled" else "",
               edgecolor="black", lw=0.5)
        down = prev is not None and s.usd_month < prev  # label at the level the step reaches
        ax.text(i, s.usd_month, f"{'≤ ' if s.upper_bound else ''}${s.usd_month:,.2f}",
                ha="center",
                va="top" if down else "bottom", fontsize=8)
        prev = s.usd_month
    ax.set_xticks(range(len(case["steps"])),
                  [f"{s.name}\n({s.kind})" for s in case["steps"]], fontsize=7)
    ax.set_ylabel("$ per month")
    ax.set_title(f"Monthly bill, {case['workload']} traffic ({case['price_source']})",
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
