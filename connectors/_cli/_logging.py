"""How the command line logs: to stderr, a timestamp on every line, as text or as one JSON object a line.

``--log-format json`` gives ``{"time", "level", "logger", "message"}`` plus the event's fields when a record
carries them (``key``, ``target``, ``attempt``: the runtime passes them as ``extra``). Secrets are masked
before formatting, by the redacting filter ``shipmap run`` puts on the handler, so both forms are covered.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from typing import Any

LOG_FORMATS = ("text", "json")
EVENT_FIELDS = ("key", "target", "attempt")  # set by the runtime through ``extra=``


def timestamp(record: logging.LogRecord) -> str:
    """ISO 8601 in UTC with milliseconds: sortable, and the same on every machine of a fleet."""
    return f"{_utc_second(int(record.created))}.{int(record.msecs):03d}Z"


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    # A run logs a line per delivery, hundreds a second: each second is formatted once.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return timestamp(record)

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        # The common line (one per delivery), as the format above writes it, without its generic steps.
        record.message = record.getMessage()
        record.asctime = timestamp(record)
        return f"{record.asctime} {record.levelname} {record.name}: {record.message}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in EVENT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(verbose: int, log_format: str) -> None:
    """The root logger's one handler, on stderr: WARNING, or INFO with -v, DEBUG with -vv."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    # basicConfig leaves a logging set-up already in place alone (an embedding program's, pytest's).
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), handlers=[handler])


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def root_formatter() -> logging.Formatter:
    """The formatter the command line chose, for a handler of its own (the progress bar's)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, TextFormatter | JsonFormatter):
            return handler.formatter
    return TextFormatter()
