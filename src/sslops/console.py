"""What sslops writes on stderr, as plain lines or, with ``SSLOPS_LOG_FORMAT=json``, as one
JSON object a line for a log shipper (Loki, Elasticsearch, a CI log parser).

A JSON line holds ``time`` (UTC, ISO 8601, milliseconds), ``level`` (``info``, ``warning``,
``error``, ``critical``: a bug's traceback), ``logger`` (``sslops``), ``stage`` (the stage
command, or the ``sslops run`` task the line came from; else null), ``run`` (``sslops run``'s
output folder name; else null) and ``message`` (the plain line, without its indentation).
Everything written on stderr while it is on goes through :class:`JsonLines`: the stage's
progress, notes, library warnings (a warning and its source line are one object), errors,
argparse's usage errors (with the ``usage`` line as a key of its own). A process that runs
one stage's work on its own (a torchrun rank, a KFP component) puts itself under
:func:`json_stderr`; a rank's objects hold its ``rank`` as a key too.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

from sslops.errors import ConfigError

LOG_FORMAT_ENV = "SSLOPS_LOG_FORMAT"
LOG_FORMATS = ("text", "json")


def log_format() -> str:
    """``text`` (the default) or ``json``, from :data:`LOG_FORMAT_ENV`."""
    value = os.environ.get(LOG_FORMAT_ENV, "").strip().lower() or "text"
    if value not in LOG_FORMATS:
        raise ConfigError(
            f"{LOG_FORMAT_ENV}={os.environ[LOG_FORMAT_ENV]!r} is not a log format; expected "
            f"{' or '.join(LOG_FORMATS)}"
        )
    return value


def _level(message: str) -> str:
    head = message.split(":", 1)[0] if ":" in message else ""
    if message.startswith(("error:", "terminated", "interrupted")):
        return "error"
    if message.startswith("warning:") or head.endswith("Warning") or "Warning: " in message:
        return "warning"
    return "info"


class JsonLines(io.TextIOBase):
    """A text stream writing each line it is given to ``stream`` as one JSON object. Lines
    written in one call that start with white space (a warning's source line) belong to the
    line before them; a line that already is a JSON object is passed on as it is."""

    def __init__(
        self, stream: TextIO, stage: str | None = None, run: str | None = None,
        logger: str = "sslops", fields: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        self.stream, self.stage, self.run, self.logger = stream, stage, run, logger
        self.fields = dict(fields or {})  # after ``message`` in every object (a rank's rank)
        self._pending = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:  # progress bars redraw lines: a JSON log gets one line a step
        return False

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        record: list[str] = []
        for line in lines:
            if record and line[:1].isspace():
                record.append(line.strip())
                continue
            if record:
                self.emit("\n".join(record))
            record = [line] if line.strip() else []
        if record:
            self.emit("\n".join(record))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def finish(self) -> None:
        """Write what is left of a last line that did not end in a line break."""
        if self._pending.strip():
            self.emit(self._pending)
        self._pending = ""

    def emit(
        self, message: str, level: str | None = None, stage: str | None = None,
        fields: dict[str, Any] | None = None, logger: str | None = None,
    ) -> None:  # fmt: skip
        """Write ``message`` as one JSON object (``level`` guessed from it when not given),
        with ``fields`` after its usual keys."""
        message = message.strip()
        if message.startswith("{"):
            try:
                json.loads(message)
            except ValueError:
                pass
            else:
                self.stream.write(message + "\n")
                self.stream.flush()
                return
        level = level or _level(message)
        if level == "error":  # the level says it
            message = message.removeprefix("error: ")
        record: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": level,
            "logger": logger or self.logger,
            "stage": stage or self.stage,
            "run": self.run,
            "message": message,
        }
        record |= self.fields | (fields or {})
        self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.stream.flush()


class JsonLogHandler(logging.Handler):
    """A :mod:`logging` handler writing each record as one object of ``lines``, with the
    record's level and logger (``sslops.pretrain``: the loop's heartbeats)."""

    def __init__(self, lines: JsonLines) -> None:
        super().__init__()
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.emit(self.format(record), level=record.levelname.lower(),
                            logger=record.name)  # fmt: skip
        except Exception:  # logging's rule: a failing handler reports, never raises
            self.handleError(record)


def say(
    stream: TextIO | JsonLines, message: str, *, indent: str = "", level: str | None = None,
    stage: str | None = None,
) -> None:  # fmt: skip
    """One line on ``stream``: indented as text, or a JSON object naming ``stage``."""
    if isinstance(stream, JsonLines):
        stream.emit(message, level=level, stage=stage)
    else:
        print(f"{indent}{message}", file=stream, flush=True)


@contextmanager
def json_stderr(
    stage: str | None = None, *, stdout: bool = False, fields: dict[str, Any] | None = None
) -> Iterator[None]:  # fmt: skip
    """With ``SSLOPS_LOG_FORMAT=json``, ``sys.stderr`` is :class:`JsonLines` inside (a bug's
    traceback one ``critical`` object, then exit status 1, as the CLI does), and so is
    ``sys.stdout`` with ``stdout`` (a KFP component, whose stdout is its pod's log too, not
    results); ``fields`` are keys of every object (a rank's ``rank``). Otherwise, or when
    stderr already is, nothing changes. For a process that is not the CLI: a torchrun rank,
    a KFP component."""
    if log_format() != "json" or isinstance(sys.stderr, JsonLines):
        yield
        return
    streams, lines = (sys.stdout, sys.stderr), JsonLines(sys.stderr, stage=stage, fields=fields)
    sys.stderr = lines
    if stdout:
        sys.stdout = lines
    try:
        yield
    except Exception:
        lines.emit(traceback.format_exc(), level="critical")
        raise SystemExit(1) from None
    finally:
        lines.finish()
        sys.stdout, sys.stderr = streams


@contextmanager
def callers_root_logger() -> Iterator[None]:
    """The root logger's handlers and level given back as they were after the block.

    A library's module-level ``logging.info`` or ``logging.warning`` (kfp.local's "Cleaned
    up workspace" as ``sslops.run`` ends, onnxruntime's quantizer advice in export) calls
    ``logging.basicConfig()`` when the root logger has no handler. In a notebook that handler
    outlived the call: the program's own ``logging.basicConfig(level=..., format=...)``
    afterwards did nothing, and every later warning went to the stderr of that moment (under
    ``contextlib.redirect_stderr``, a buffer nobody reads)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
            handler.close()  # a StreamHandler's close leaves its stream open
        for handler in handlers:
            root.addHandler(handler)  # a no-op for one still there
        root.setLevel(level)
