"""Logging as Cloud Logging reads it: one JSON object per line on stdout.

Each line has ``severity`` and ``message`` (plus any ``extra`` fields given as
``log.info("...", extra={"fields": {...}})``). When stdout is a terminal, and ``LOG_FORMAT`` is
``auto``, lines are readable text instead. Every line is kept under ``caps.MAX_RECORD_BYTES``
(a message quoting a huge value once made a 10 MB line): a JSON line is cut to its key fields
(``LOG_KEY_FIELDS``, the message cut) with a ``cut`` marker, a text line at its end.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Protocol

from shared.contracts import LogFormat
from shared.display import printable
from shared.record_caps import cut_line, fit_record

_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}

# What a JSON line over caps.MAX_RECORD_BYTES keeps (strings cut to caps.MAX_MESSAGE_CHARS).
LOG_KEY_FIELDS = (
    "severity",
    "message",
    "time",
    "logger",
    "object",
    "generation",
    "rule",
    "outcome",
    "version",
    "exception",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the fields Cloud Logging understands."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one line of JSON."""
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return fit_record(entry, LOG_KEY_FIELDS, _render)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL message key=value ...`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one readable line."""
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = getattr(record, "fields", None) or {}
        # Messages and fields carry object names and values from data: shown escaped.
        tail = "".join(f" {k}={printable(v)}" for k, v in fields.items())
        line = f"{when} {record.levelname:<7} {printable(record.getMessage())}{tail}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return cut_line(line)


def _render(entry: dict[str, Any]) -> str:
    return json.dumps(entry, default=str, ensure_ascii=False)


class LogStream(Protocol):
    """What the handler needs of a stream: a text file, or the ``prodml`` command's ``EscapingWriter``."""

    def write(self, text: str, /) -> int: ...
    def flush(self) -> None: ...
    def isatty(self) -> bool: ...


def setup_logging(
    log_format: str = LogFormat.AUTO, level: str = "info", stream: LogStream | None = None
) -> None:
    """Send the ``shared`` loggers to ``stream`` (stdout) as JSON lines or text.

    Idempotent: calling it again replaces the handler instead of adding a second one.
    """
    stream = stream or sys.stdout
    use_json = log_format == LogFormat.JSON or (log_format == LogFormat.AUTO and not stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    handler.set_name("prodml")
    root = logging.getLogger("shared")
    root.handlers = [h for h in root.handlers if h.get_name() != "prodml"] + [handler]
    root.setLevel(level.upper())
    root.propagate = False


def get_logger(name: str) -> logging.Logger:
    """A logger under ``shared`` (use ``__name__``)."""
    return logging.getLogger(name if name.startswith("shared") else f"shared.{name}")
