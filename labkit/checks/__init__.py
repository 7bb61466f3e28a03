"""Exercise self-checks: run the learner's function on edge and random cases.

Each check prints one pass line, or raises ExerciseFailed naming the failing input, the
expected and the actual value. A stub that still raises NotImplementedError fails with the
exercise's own hint, so a learner copy tells the learner what to do next.

    from labkit.checks import orientation
    orientation.check_arithmetic_intensity(arithmetic_intensity)

One module per lab: orientation.py (00), collectives.py (10: the ring all_reduce, works
for functions defined in a notebook), ddp.py (11), networking.py (12), paged.py and
paged_op.py (20), radix.py (21), serving.py (22), cost.py (23, 40), observe.py (30),
slo.py (31).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable


class ExerciseFailed(AssertionError):
    """The learner's function gave a wrong answer (or is still a stub)."""


def _close(a: Any, b: Any, rel: float, abs_: float) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)
    return a == b


def check_cases(name: str, fn: Callable, reference: Callable, cases: Iterable[tuple],
                rel: float = 1e-9, abs_: float = 0.0) -> int:
    """Compare fn(*case) with reference(*case) on every case; print a pass line."""
    n = 0
    for case in cases:
        expected = reference(*case)
        try:
            actual = fn(*case)
        except NotImplementedError as e:
            raise ExerciseFailed(f"{name}: not implemented yet — {e}") from None
        except Exception as e:  # noqa: BLE001 - report any crash as the failing input
            raise ExerciseFailed(f"{name}{case} raised {type(e).__name__}: {e}") from None
        if not _close(actual, expected, rel, abs_):
            raise ExerciseFailed(f"{name}{case}: expected {expected!r}, got {actual!r}")
        n += 1
    print(f"✔ {name}: passed {n} cases")
    return n
