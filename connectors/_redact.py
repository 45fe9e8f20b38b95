"""The one redaction module: logs, dry runs, errors, the journal and dead letters all go through a Redactor.

Two rules. A header whose *name* is sensitive (Authorization, authToken, x-api-key, x-identity, password,
cookies, anything naming a token/secret) is masked whatever its value. And every secret *value* the runtime
knows of (configured passwords and keys, Basic credentials, every token a login returned) is replaced wherever
it appears in text. A Redactor belongs to one runtime; there is no process-wide registry.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
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


class Redactor:
    """A growing set of secret values, and the functions that mask them. Thread-safe; cheap when unchanged."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Remember a secret, with the forms it takes inside JSON and URLs."""
        if not secret or len(secret) < MIN_SECRET_CHARS:
            return
        forms = {secret, json.dumps(secret)[1:-1], quote(secret, safe="")}
        with self._lock:
            if forms <= self._secrets:
                return
            self._secrets |= forms
            # Longest first, so a secret that contains another is masked whole.
            ordered = sorted(self._secrets, key=len, reverse=True)
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


class RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger whose messages are formatted and redacted before any handler sees them."""

    def __init__(self, logger: logging.Logger, redactor: Redactor) -> None:
        super().__init__(logger, {})
        self.redactor = redactor

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        text = self.redactor.redact(str(msg) % args if args else str(msg))
        if kwargs.keys() - {"extra"}:  # exc_info, stack_info, stacklevel: logging's own path
            kwargs.setdefault("stacklevel", 3)
            self.logger.log(level, text, **kwargs)
            return
        # The common case, once per delivery: the record is made here, naming the caller without logging's
        # frame walk, and marked as redacted so that the handler's RedactingFilter does not redact it again.
        caller = sys._getframe(1)
        if caller.f_code.co_filename == _LOGGING_SOURCE and caller.f_back is not None:
            caller = caller.f_back  # called through LoggerAdapter.info(), .warning()...
        code = caller.f_code
        logger = self.logger
        record = logger.makeRecord(
            logger.name, level, code.co_filename, caller.f_lineno, text, (), None, code.co_name,
            kwargs.get("extra"),
        )  # fmt: skip
        setattr(record, _REDACTED_BY, self.redactor)
        logger.handle(record)


def get_logger(name: str, redactor: Redactor) -> RedactingLogger:
    """A ``shipmap.connectors.<name>`` logger bound to a runtime's redactor."""
    return RedactingLogger(logging.getLogger(f"shipmap.connectors.{name}"), redactor)
