"""How the command line logs: to stderr, a timestamp on every line, as text or as one JSON object a line.

``--log-format json`` gives ``{"time", "level", "logger", "message"}`` plus the event's fields when a record
carries them (``key``, ``target``, ``attempt``: the runtime passes them as ``extra``), and the members of a
record's ``record_fields`` mapping (``extra={"record_fields": {...}}``: a report that is data, such as
``serve``'s summary at stop, whose text form is a table); the text format leaves those out. Secrets are masked
before formatting, by the redacting filter ``shipmap run`` puts on the handler, so both forms are covered.

A run logs a line per delivery from its event loop. The handler writes the lines one event-loop iteration
logged in one write, at the start of the next iteration, before the loop can wait for I/O again: a kill
loses no line whose delivery the loop went on from (``StderrHandler``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from shipmap.connectors._redact import DELIVERIES_LOGGER, LineWriter

if TYPE_CHECKING:
    import asyncio

LOG_FORMATS = ("text", "json")
EVENT_FIELDS = ("key", "target", "attempt")  # set by the runtime through ``extra=``
RECORD_FIELDS = "record_fields"  # a record's attribute whose members a JSON line carries too


def timestamp(record: logging.LogRecord) -> str:
    """ISO 8601 in UTC with milliseconds: sortable, and the same on every machine of a fleet."""
    return _stamp(record.created, record.msecs)


def _stamp(created: float, msecs: float) -> str:
    return f"{_utc_second(int(created))}.{int(msecs):03d}Z"


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

    def line(
        self, name: str, level: int, created: float, text: str, fields: Mapping[str, object] | None
    ) -> str:
        """``format``'s line for a record that was never made (``StderrHandler.write_line``)."""
        stamp = _stamp(created, (created - int(created)) * 1000)
        return f"{stamp} {logging.getLevelName(level)} {name}: {text}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = _entry(
            timestamp(record), record.levelname, record.name, record.getMessage(),
            [getattr(record, name, None) for name in EVENT_FIELDS],
        )  # fmt: skip
        for name, value in getattr(record, RECORD_FIELDS, {}).items():
            entry.setdefault(name, value)  # never in place of time, level, logger or message
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)

    def line(
        self, name: str, level: int, created: float, text: str, fields: Mapping[str, object] | None
    ) -> str:
        """``format``'s line for a record that was never made (``StderrHandler.write_line``)."""
        stamp = _stamp(created, (created - int(created)) * 1000)
        values = [None] * len(EVENT_FIELDS) if fields is None else [fields.get(name) for name in EVENT_FIELDS]
        entry = _entry(stamp, logging.getLevelName(level), name, text, values)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _entry(time: str, level: str, logger: str, message: str, values: list[Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"time": time, "level": level, "logger": logger, "message": message}
    for name, value in zip(EVENT_FIELDS, values, strict=True):
        if value is not None:
            entry[name] = value
    return entry


class StderrHandler(LineWriter, logging.StreamHandler[TextIO]):
    """A StreamHandler that writes the lines an event loop's thread logs once per loop iteration.

    A line logged where an event loop runs is kept, and the loop is asked (``call_soon``) to write the
    iteration's lines in one write at the start of its next iteration: the loop never waits for I/O with a
    line unwritten, so a kill -9 loses no more than a write per line would, and a run's loop makes one write
    (and one release of the GIL) per iteration instead of one per delivery. Lines logged with no running loop
    (other threads, code before or after the run) are written at once, after any kept lines, as a
    StreamHandler writes them, as are warnings and errors (the kept lines first): they are few, and one may be
    the last before the loop's thread blocks (a wait for the database), which must be seen then. Bounded:
    past ``MAX_KEPT`` kept lines they are written at once; a write blocks on a full pipe as before. Everything runs under the handler's lock.

    As a LineWriter it also takes the runtime's lines without their records, when nothing else would see
    them (``RedactingLogger``).
    """

    MAX_KEPT = 256

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._kept: list[str] = []
        self._kept_for: asyncio.AbstractEventLoop | None = None  # the loop that will write them

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._write(self.format(record) + self.terminator, record.levelno)
        except RecursionError:  # as logging's handlers do: never swallowed
            raise
        except Exception:
            self.handleError(record)

    def write_line(
        self, name: str, level: int, created: float, text: str, fields: Mapping[str, object] | None
    ) -> bool:
        formatter = self.formatter
        if type(formatter) is not TextFormatter and type(formatter) is not JsonFormatter:
            return False
        self.acquire()
        try:
            self._write(formatter.line(name, level, created, text, fields) + self.terminator, level)
        except RecursionError:
            raise
        except Exception:
            self.handleError(logging.makeLogRecord({"name": name, "levelno": level, "msg": text}))
        finally:
            self.release()
        return True

    def _write(self, line: str, level: int) -> None:
        # Not imported here: a command that runs no event loop (preview, validate, --help) never imports asyncio
        # (~30 ms of its start-up), and without asyncio no loop can be running.
        running = sys.modules.get("asyncio")
        loop: asyncio.AbstractEventLoop | None = running._get_running_loop() if running is not None else None
        if loop is None or level >= logging.WARNING:
            self._write_kept()
            self.stream.write(line)
            super().flush()
            return
        if loop is not self._kept_for:
            self._write_kept()  # another loop's lines (a loop in another thread): theirs first
        kept = self._kept
        kept.append(line)
        if len(kept) == 1:
            self._kept_for = loop
            loop.call_soon(self._write_kept_locked)
        elif len(kept) >= self.MAX_KEPT:
            self._write_kept()

    def flush(self) -> None:
        self.acquire()
        try:
            self._write_kept()
        finally:
            self.release()
        super().flush()

    def _write_kept_locked(self) -> None:
        self.acquire()
        try:
            self._write_kept()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": "(the log lines of an event loop iteration)"}))
        finally:
            self.release()

    def _write_kept(self) -> None:
        kept = self._kept
        if not kept:
            return
        self._kept, self._kept_for = [], None
        self.stream.write(kept[0] if len(kept) == 1 else "".join(kept))
        super().flush()


@contextlib.contextmanager
def delivery_lines(verbose: int) -> Iterator[None]:
    """At the default verbosity, a command that logs its INFO lines (``run`` off a terminal, ``serve``) leaves
    out the line per delivery (``shipmap.connectors.deliveries``): at a few hundred events a second they would
    drown the warnings that matter, and a log collector's rate limit (journald's, 10,000 lines in 30 s) would
    drop those with them. ``-v`` adds them; the journal records every delivery either way."""
    logger = logging.getLogger(f"shipmap.connectors.{DELIVERIES_LOGGER}")
    level = logger.level
    if verbose == 0:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def configure(verbose: int, log_format: str) -> None:
    """The root logger's one handler, on stderr: WARNING, or INFO with -v, DEBUG with -vv. httpx's line per
    request comes with -vv only: at -v it would double shipmap's line per delivery (and the login's)."""
    if logging.getLogger().handlers:
        return  # a logging set-up already in place (an embedding program's, pytest's) is left alone
    handler = StderrHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), handlers=[handler])
    if verbose < 2:
        logging.getLogger("httpx").setLevel(logging.WARNING)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def root_formatter() -> logging.Formatter:
    """The formatter the command line chose, for a handler of its own (the progress bar's)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, TextFormatter | JsonFormatter):
            return handler.formatter
    return TextFormatter()
