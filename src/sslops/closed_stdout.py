"""A reader of stdout that went away (``| head -1``): the command ends quietly with 141.

Shared by the ``sslops`` command line and ``python -m sslops.audit.reproduce`` (which runs
where the command line's config machinery is not installed), so it imports nothing but
the standard library.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import signal
import sys
from collections.abc import Callable
from typing import ParamSpec

EXIT_SIGPIPE = 128 + signal.SIGPIPE  # stdout's reader went away (`| head -1`)


def stdout_gone() -> bool:
    """stdout is a pipe or socket with no reader left (poll reports an error on it), so a
    broken pipe was stdout's, not a task's or a server's."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's capture)
        return False


def stdout_closed() -> int:
    """The reader of stdout went away. Quietly, as ``cat`` or ``gzip`` end when SIGPIPE
    kills them, with the status a shell reports for that (141), which ``set -o pipefail``
    counts as a failure, so a job learns that not every row was taken. Python would try
    to flush stdout again on the way out and print a traceback; it flushes to nothing."""
    with contextlib.suppress(OSError, ValueError):  # no file descriptor (a test's capture)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return EXIT_SIGPIPE


P = ParamSpec("P")


def stdout_flushed_at_the_end(entry: Callable[P, int]) -> Callable[P, int]:
    """What a command printed that still sits in stdout's buffer (help, config, a --json
    report: anything short) is written before the command returns, not at interpreter exit,
    where a reader that went away (| head -c1) shows as Python's 'Exception ignored ...
    BrokenPipeError' and status 120. A print that meets the closed pipe itself (stdout
    unbuffered) ends the same way, not in a traceback."""

    @functools.wraps(entry)
    def run(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            status = entry(*args, **kwargs)
        except SystemExit as done:  # argparse's --help, --version and usage errors
            if isinstance(done.code, int | None):
                done.code = flush_stdout(done.code or 0)
            raise
        except BrokenPipeError:
            if not stdout_gone():  # a task's or a server's pipe: a bug, or theirs to report
                raise
            return stdout_closed()
        return flush_stdout(status)

    return run


def flush_stdout(status: int) -> int:
    """``status``, or, when stdout's reader went away, 141 for a command that succeeded (as
    predict's stream ends: not all output was taken); a failure keeps its own status (its
    error line is on stderr)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # stdout's own flush: its reader, no task's or server's
        closed = stdout_closed()  # the exit's own flush now writes to nothing
        return closed if status == 0 else status
    return status
