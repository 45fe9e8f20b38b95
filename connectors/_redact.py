"""The one redaction module: logs, dry runs, errors, the journal and dead letters all go through a Redactor.

Two rules. A header whose *name* is sensitive (Authorization, authToken, x-api-key, x-identity, password,
cookies, anything naming a token/secret) is masked whatever its value. And every secret *value* the runtime
knows of (configured passwords and keys, Basic credentials, the newest tokens a login returned) is replaced
wherever it appears in text. A Redactor belongs to one runtime; there is no process-wide registry.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

MASK = "***"
# Shorter values would mask ordinary words; config validation refuses secrets this short.
MIN_SECRET_CHARS = 4

_SENSITIVE_HEADER_WORDS = (
    "auth",
    "token",
    "secret",
    "passw",
    "api-key",
    "apikey",
    "api_key",
    "identity",
    "cookie",
)


def is_sensitive_name(name: str) -> bool:
    """Whether a header or config key names a credential (``Idempotency-Key`` does not)."""
    lowered = name.lower()
    return any(word in lowered for word in _SENSITIVE_HEADER_WORDS)


# The newest values a slot (a login's token, its identity) keeps masked. A token expires and the next login
# replaces it, so a service that logs in every four hours for months, or at every probe while its token is
# refused, must not mask (and match against) every token it ever had.
SLOT_KEEP = 4


class Redactor:
    """The secret values a runtime knows, and the functions that mask them. Thread-safe; cheap when unchanged.

    A secret added without a slot (a configured key, a rotated-out credential) stays masked for good; one added
    to a slot stays masked while it is among that slot's ``SLOT_KEEP`` newest."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._kept: set[str] = set()  # the forms of the secrets added without a slot
        self._slots: dict[object, deque[frozenset[str]]] = {}
        self._secrets: frozenset[str] = frozenset()  # every form masked now
        self._pattern: re.Pattern[str] | None = None
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None, *, slot: object = None) -> None:
        """Remember a secret, with the forms it takes inside JSON and URLs; with ``slot``, in place of that
        slot's oldest once it holds ``SLOT_KEEP``."""
        if not secret or len(secret) < MIN_SECRET_CHARS:
            return
        forms = frozenset({secret, json.dumps(secret)[1:-1], quote(secret, safe="")})
        with self._lock:
            if slot is None:
                if forms <= self._kept:
                    return
                self._kept |= forms
            else:
                newest = self._slots.setdefault(slot, deque(maxlen=SLOT_KEEP))
                if forms in newest:
                    return
                newest.append(forms)
            secrets = frozenset(self._kept.union(*(f for kept in self._slots.values() for f in kept)))
            if secrets == self._secrets:
                return
            self._secrets = secrets
            # Longest first, so a secret that contains another is masked whole.
            ordered = sorted(secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def __contains__(self, value: object) -> bool:
        return value in self._secrets

    def redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def redact_headers(self, headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
        """Headers safe to show: sensitive names masked (Authorization keeps its scheme), values redacted."""
        items = headers.items() if isinstance(headers, Mapping) else headers
        shown: dict[str, str] = {}
        for name, value in items:
            if name.lower() in ("authorization", "proxy-authorization") and " " in value:
                shown[name] = f"{value.split(' ', 1)[0]} {MASK}"
            elif is_sensitive_name(name):
                shown[name] = MASK
            else:
                shown[name] = self.redact(value)
        return shown

    def redact_json(self, value: Any) -> Any:
        """A copy of a JSON value with every known secret masked in every string (keys are left alone:
        payload fields such as ``checkout_token`` are data, not credentials)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list):
            return [self.redact_json(item) for item in value]
        if isinstance(value, dict):
            return {self.redact(str(key)): self.redact_json(item) for key, item in value.items()}
        return value

    def excerpt(self, text: str, limit: int) -> str:
        """Redacted, then cut to ``limit`` characters (redacting first, so a cut never splits a secret)."""
        text = self.redact(text)
        if len(text) > limit:
            return text[: max(limit - 1, 0)] + "…"
        return text


# The attribute a RedactingLogger sets on its records: the Redactor that already masked them.
_REDACTED_BY = "_shipmap_redacted_by"
_LOGGING_SOURCE = logging.Logger.makeRecord.__code__.co_filename


class RedactingFilter(logging.Filter):
    """A logging filter that masks a Redactor's secrets in the formatted message and any traceback.

    Attach it to a *handler* (``handler.addFilter(RedactingFilter(runtime.redactor))``) to cover records from
    other libraries too (httpx logs request lines). The runtime's own records are redacted before logging.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _REDACTED_BY, None) is self.redactor:
            return True  # a RedactingLogger's record, masked with these very secrets as it was made
        record.msg = self.redactor.redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        return True


class LineWriter:
    """A handler that can write a runtime record's line without the record: the command line's, on stderr.

    A RedactingLogger whose records would reach such a handler and nothing else (no other handler, no filter
    but a RedactingFilter of its own redactor, on the way from its logger to the root) hands it the line's
    parts instead of making a record nobody else could see: a fifth of the CPU of a log line. With any other
    handler or filter in the way (an embedding program's, pytest's), records are made and handled as usual.
    """

    def write_line(
        self, name: str, level: int, created: float, text: str, fields: Mapping[str, object] | None
    ) -> bool:
        """Write the line of a record of ``name`` at ``level`` made at ``created`` (``time.time()``) with
        message ``text`` and ``extra=fields``; False when this handler cannot (a record is made then)."""
        raise NotImplementedError


# The attribute each record of a named runtime carries: its name (``Runtime(config, name=...)``), for a
# filter or a format (``%(shipmap_runtime)s``) to tell two runtimes of one process apart.
RUNTIME_ATTRIBUTE = "shipmap_runtime"


class RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger whose messages are formatted and redacted before any handler sees them; with
    ``runtime_name``, its records carry that name as their ``shipmap_runtime`` attribute."""

    def __init__(
        self, logger: logging.Logger, redactor: Redactor, *, runtime_name: str | None = None
    ) -> None:
        super().__init__(logger, {RUNTIME_ATTRIBUTE: runtime_name} if runtime_name is not None else {})
        self.redactor = redactor
        self.runtime_name = runtime_name

    def for_runtime(self, runtime_name: str | None) -> RedactingLogger:
        """This logger, its records marked with ``runtime_name`` instead."""
        return RedactingLogger(self.logger, self.redactor, runtime_name=runtime_name)

    def sibling(self, name: str) -> RedactingLogger:
        """The ``shipmap.connectors.<name>`` logger of the same runtime: its redactor, its name."""
        return get_logger(name, self.redactor, runtime_name=self.runtime_name)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        text = self.redactor.redact(str(msg) % args if args else str(msg))
        if self.extra:  # the runtime's name, under the call's own fields
            kwargs["extra"] = {**self.extra, **(kwargs.get("extra") or {})}
        if kwargs and (len(kwargs) > 1 or "extra" not in kwargs):  # exc_info, stack_info, stacklevel
            # This frame, then the caller: logging skips its own frames (LoggerAdapter.debug and the like).
            kwargs.setdefault("stacklevel", 2)
            self.logger.log(level, text, **kwargs)
            return
        extra = kwargs.get("extra")
        writer = self._sole_line_writer(level)
        if writer is not None and writer.write_line(self.logger.name, level, time.time(), text, extra):
            return
        # A record, made here, naming the caller without logging's frame walk, and marked as redacted so
        # that the handler's RedactingFilter does not redact it again.
        caller = sys._getframe(1)
        if caller.f_code.co_filename == _LOGGING_SOURCE and caller.f_back is not None:
            caller = caller.f_back  # called through LoggerAdapter.info(), .warning()...
        code = caller.f_code
        logger = self.logger
        record = logger.makeRecord(
            logger.name, level, code.co_filename, caller.f_lineno, text, (), None, code.co_name, extra
        )
        setattr(record, _REDACTED_BY, self.redactor)
        logger.handle(record)

    def _sole_line_writer(self, level: int) -> LineWriter | None:
        """The one handler a record of this logger would reach, if it is a LineWriter that would take it and
        nothing on the way would look at the record (as ``Logger.handle`` and ``callHandlers`` walk)."""
        logger = self.logger
        if logger.disabled:
            return None
        found: logging.Handler | None = None
        current: logging.Logger | None = logger
        while current is not None:
            if current.filters:
                return None
            for handler in current.handlers:
                if found is not None or not isinstance(handler, LineWriter):
                    return None
                found = handler
            if not current.propagate:
                break
            current = current.parent
        if found is None or level < found.level:
            return None
        for item in found.filters:
            if not isinstance(item, RedactingFilter) or item.redactor is not self.redactor:
                return None
        assert isinstance(found, LineWriter)
        return found


DELIVERIES_LOGGER = "deliveries"  # shipmap.connectors.deliveries: a line per delivery sent or re-sent


def get_logger(name: str, redactor: Redactor, *, runtime_name: str | None = None) -> RedactingLogger:
    """A ``shipmap.connectors.<name>`` logger bound to a runtime's redactor (and its name, if it has one)."""
    return RedactingLogger(
        logging.getLogger(f"shipmap.connectors.{name}"), redactor, runtime_name=runtime_name
    )
