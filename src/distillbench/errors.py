"""The one exception type for problems the user can fix (bad input, bad config, missing data), the
exceptions for runs stopped from outside, and the exit statuses.

The CLI prints a UserError as a single line and exits 2, with no traceback; a RunFault (a run that
its disk or folder stopped) as one line, exit 4; a signal as one line, exit 128 + its number.
Anything else is a bug: it keeps its traceback and exits 3, so that CI never reads a crash as a
verdict (compare's 1).
"""

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)

EXIT_REGRESSION = 1  # a check failed: compare's regression (parity's difference, run --strict's failed job)
EXIT_USAGE = 2  # bad input: an option, a config, a run folder that cannot be read
EXIT_BUG = 3  # an unexpected exception: an internal error
EXIT_FAULT = 4  # a run stopped by a fault outside it (disk full, folder no longer writable)


class UserError(Exception):
    """A problem with the user's input; its message is shown as one line."""

    exit_code = EXIT_USAGE


class RunFault(UserError):
    """A run could not go on because of its environment (an OSError writing its folder): shown as one
    line; the run folder keeps what was written and says where it stopped, and `--resume` continues it."""

    exit_code = EXIT_FAULT


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM, raised in the main thread by the CLI's handler; exit 128 + signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """For a command: SIGINT and SIGTERM raise Interrupted in the main thread, so that it cleans up
    either way (a run marks its manifest); once one has arrived, more are ignored, for good (the
    process is ending: a second Ctrl-C can cut short neither the cleanup nor the exit with its
    status). Without a signal, the handlers are restored when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        for name in SIGNALS:
            signal.signal(name, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {name: signal.signal(name, interrupt) for name in SIGNALS}
    try:
        yield
    finally:
        for name, handler in previous.items():
            if signal.getsignal(name) is interrupt:  # no signal came
                signal.signal(name, handler)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block has run (e.g. a file written whole); the first one is
    raised then, as Interrupted, unless the block is already ending with an exception. A signal
    ignored before the block (a command already interrupted) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived = []
    previous = {name: signal.getsignal(name) for name in SIGNALS}
    for name, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(name, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(name, handler)
    if arrived:
        raise Interrupted(arrived[0])
