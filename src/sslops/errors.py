"""User-facing errors: one message that names what is wrong and what was expected."""


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
    """A policy gate failed."""


def describe_os_error(exc: OSError) -> str:
    """One line for a file-system failure (not writable, disk full, ...): why, and where."""
    reason = " ".join((exc.strerror or str(exc) or type(exc).__name__).split())
    return f"{reason}: {exc.filename}" if exc.filename else reason
