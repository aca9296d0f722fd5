"""User-facing errors: one message that names what is wrong and what was expected."""

import errno
import json


class SslopsError(Exception):
    """An error caused by input, configuration or environment, not by a bug.

    The CLI prints its message as a single line and exits with status 2; no
    traceback is shown because the message already says what to fix.
    """


class ConfigError(SslopsError):
    """A configuration key or value is wrong."""


class DataError(SslopsError):
    """An input file is missing, unreadable or does not have the expected shape."""


class ArtifactError(SslopsError):
    """An artifact directory is missing, incomplete or has been modified."""


class GateError(SslopsError):
    """A policy gate failed: the input was fine, the model is not fit to ship. The CLI exits
    with :data:`EXIT_GATE`, so a CI job tells it from a broken config (status 2)."""


EXIT_GATE = 3


# What str.splitlines() (and a terminal or log reader) takes as a line break.
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(message: str) -> str:
    """The message as one line: a line break quoted from the input (a damaged cell, a column
    name) is shown escaped, as repr() would, so the error stays a single line."""
    return message.translate(_LINE_BREAKS)


# What to do about the file-system failures an output meets (disk full, read-only, ...).
_ADVICE = {
    **dict.fromkeys(
        (errno.ENOSPC, errno.EDQUOT, errno.EFBIG),
        "free space there (or write to another file system) and run again",
    ),
    **dict.fromkeys(
        (errno.EROFS, errno.EACCES, errno.EPERM),
        "write to a folder you may write to (or change its permissions) and run again",
    ),
}


def describe_os_error(exc: OSError) -> str:
    """One line for a file-system failure (not writable, disk full, ...): why, where, and,
    for a full or unwritable disk, what to do."""
    reason = " ".join((exc.strerror or str(exc) or type(exc).__name__).split())
    where = f"{reason}: {exc.filename}" if exc.filename else reason
    advice = _ADVICE.get(exc.errno) if exc.errno is not None else None
    return f"{where}; {advice}" if advice else where


def describe_json_error(exc: Exception) -> str:
    """One short line for why ``json.loads`` refused a text: its own message for malformed
    JSON or bytes that are not UTF-8, a plain one for what Python's reader cannot hold (a
    number of more than 4300 digits is a ValueError, nesting past the recursion limit a
    RecursionError)."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, ValueError) and not isinstance(exc, json.JSONDecodeError | UnicodeError):
        return "a number too long to read"
    return " ".join(str(exc).split())[:200]
