"""The one exception type for problems a learner can fix.

Raise `UserError("what is wrong; what to do next")` for a bad parameter, a missing binary, a
busy port or a dead server. The CLI prints it without a traceback and exits 2.
"""


class UserError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""
