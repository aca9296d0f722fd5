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
