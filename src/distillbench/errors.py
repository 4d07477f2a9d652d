"""The one exception type for problems the user can fix (bad input, bad config, missing data).

The CLI prints it as a single line and exits non-zero, with no traceback. Anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input; its message is shown as one line."""

    exit_code = 2
