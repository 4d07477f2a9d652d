"""The one exception type for problems the user can fix (bad input, bad config, missing data), and
the exit statuses.

The CLI prints a UserError as a single line and exits 2, with no traceback. Anything else is a bug:
it keeps its traceback and exits 3, so that CI never reads a crash as a verdict (compare's 1).
"""

EXIT_REGRESSION = 1  # a check failed: compare's regression (parity's difference, run --strict's failed job)
EXIT_USAGE = 2  # bad input: an option, a config, a run folder that cannot be read
EXIT_BUG = 3  # an unexpected exception: an internal error


class UserError(Exception):
    """A problem with the user's input; its message is shown as one line."""

    exit_code = EXIT_USAGE
