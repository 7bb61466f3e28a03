"""Check for lab 31: the error budget and the burn rate that a page alert fires on.

The learner writes

    burn_rate(error_ratio, objective)          how fast the budget burns (1 = on plan)
    budget_spent(burn_rate, window_h, period_days)   share of the whole budget it spends

With objective 0.99 the budget is 1 % of requests; an error ratio of 14.4 % burns it 14.4x;
burning 14.4x for 1 hour of a 30-day period spends 14.4 / 720 = 2 % of the budget — the
first row of the SRE workbook's table.
"""

from __future__ import annotations

from labkit.checks import check_cases


def reference_burn_rate(error_ratio: float, objective: float) -> float:
    return error_ratio / (1 - objective)


def reference_budget_spent(burn_rate: float, window_h: float, period_days: float) -> float:
    return burn_rate * window_h / (period_days * 24)


def check_burn_rate(fn) -> int:
    return check_cases("burn_rate", fn, reference_burn_rate,
                       [(0.144, 0.99), (0.01, 0.99), (0.0, 0.999), (0.5, 0.9), (0.006, 0.999)],
                       rel=1e-9)


def check_budget_spent(fn) -> int:
    return check_cases("budget_spent", fn, reference_budget_spent,
                       [(14.4, 1, 30), (6, 6, 30), (3, 24, 30), (1, 72, 30), (2, 12, 28)],
                       rel=1e-9)
