"""Lab 42 glue: the case study's records, whatever the capacity search found.

The waterfall itself is computed in labkit/cost/case_study.py; this module only decides what
is recorded and in which words. Three cases (see case_study's docstring):

    X exact         both capacities bracketed: the sentence quotes X
    X at least      the new config's capacity is a lower bound: "by at least X %",
                    and saving_pct_measured says why it has no exact figure
    no X            the baseline's capacity is a lower bound (or a number is missing):
                    the bills that exist are recorded, the saving and the sentence say why not
"""

from __future__ import annotations

from collections.abc import Callable

from labkit.cost import case_study
from labkit.runs import NotMeasured

SavingPct = Callable[[float, float], float]


def _bill(step: case_study.Step):
    """A waterfall step as a rec.scalars entry: ($, unit, note) or NotMeasured(why)."""
    if step.usd_month is None:
        return NotMeasured(step.why_not)
    note = ("at most (a capacity behind it is only a lower bound); " if step.upper_bound
            else "") + step.source
    return round(step.usd_month, 2), "$/month", note


def sentence(case: dict, requests_per_day: int) -> str | None:
    """The CV sentence, exact or "at least", or None when the records give no X."""
    base, after = case["steps"][0].usd_month, case["steps"][1].usd_month
    how = (f"by switching from {case['baseline']} to {case['best']}, at capacities measured "
           "at the SLO")
    if case["x_measured_pct"] is not None:
        return (f"I reduced the monthly bill for {requests_per_day:,} requests a day by "
                f"{case['x_measured_pct']:.0f} % (${base:,.2f} → ${after:,.2f}) {how}.")
    if case["x_measured_at_least_pct"] is not None:
        return (f"I reduced the monthly bill for {requests_per_day:,} requests a day by at least "
                f"{case['x_measured_at_least_pct']:.0f} % (${base:,.2f} → at most "
                f"${after:,.2f}) {how}; the new config still met the SLO at the highest load "
                "tried, so the real saving is larger.")
    return None


def record(rec, case: dict, requests_per_day: int, saving_pct: SavingPct) -> str:
    """Record the case's configs, bills, savings and sentence; returns what to print.

    `saving_pct` is the learner's exercise 1, held against the case's own X."""
    base, after = case["steps"][0], case["steps"][1]
    x = case["x_measured_pct"] if case["x_measured_pct"] is not None \
        else case["x_measured_at_least_pct"]
    if x is not None:  # the exercise must agree with the figure the sentence quotes
        assert abs(saving_pct(base.usd_month, after.usd_month) - x) < 1e-9, \
            "saving_pct disagrees with the case study's X: check exercise 1"
    no_config = NotMeasured("lab 23 recorded no such config")
    rec.scalars({
        "baseline_config": case["baseline"] or no_config,
        "best_config": case["best"] or no_config,
        "baseline_usd_month": _bill(base), "after_usd_month": _bill(after),
        "saving_pct_measured": _pct(case["x_measured_pct"], case["why_not"],
                                    f"{case['baseline']} → {case['best']}, capacities "
                                    "measured by lab 23"),
        "saving_pct_with_modelled": _pct(case["x_with_modelled_pct"],
                                         case["why_not_with_modelled"],
                                         "includes the modelled spot step (catalog price "
                                         "ratio, assumed availability)")})
    lower = "a lower bound: the new config's capacity is one"
    at_least = {"saving_pct_at_least": (case["x_measured_at_least_pct"], lower),
                "saving_pct_with_modelled_at_least": (case["x_with_modelled_at_least_pct"],
                                                      lower + "; includes the modelled spot")}
    rec.scalars({name: (round(v, 1), "%", note) for name, (v, note) in at_least.items()
                 if v is not None})
    text = sentence(case, requests_per_day)
    if text is None:
        rec.not_measured("sentence", case["why_not"])
        return "no X: " + case["why_not"]
    rec.text("sentence", text)
    return text


def _pct(value: float | None, why_not: str, note: str):
    return NotMeasured(why_not) if value is None else (round(value, 1), "%", note)
