"""The one exception type for problems a learner can fix.

Raise `UserError("what is wrong; what to do next")` for a bad parameter, a missing binary, a
busy port or a dead server. The CLI prints it without a traceback and exits 2.
"""


class UserError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


def under_ci() -> bool:
    """True in CI (env CI=true, as GitHub Actions and most CI systems set it).

    A lab may turn a failure into `not_measured` for a learner (the page then says what could
    not be measured here), but in CI the same failure must fail the build: otherwise a lab that
    measures nothing stays green.
    """
    import os

    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")
