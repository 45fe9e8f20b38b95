"""The exception tree of shipmap. Every error carries where it happened as attributes and renders like a compiler.

    ShipmapError                    root; exit code 1
    ├── MappingError                a mapping file is wrong; exit code 2
    │   ├── MappingSyntaxError      not YAML, or YAML that shipmap refuses (tags, alias bombs, sizes)
    │   ├── MappingStructureError   valid YAML, but not the mapping format
    │   └── CompileError            an expression, template, lookup or fragment that does not compile
    ├── SourceError                 a source document cannot be read; exit code 3
    ├── TransformError              a field failed on one source document; exit code 4
    ├── PayloadValidationError      a payload breaks its target kind's contract; exit code 5
    └── (shipmap.connectors adds ConfigError, DeliveryError and their kin)

The CLI alone turns these into exit codes, through each class's ``exit_code``.
"""

from __future__ import annotations

import json
import logging
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_VALUE_PREVIEW_CHARS = 80
_INTERNAL_MESSAGE_CHARS = 200
_log = logging.getLogger("shipmap.engine")


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a text file: 1-based line and column, and the text of that line for the caret display."""

    file: str
    line: int
    column: int
    line_text: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


def file_order(location: Location | None) -> tuple[bool, str, int, int]:
    """A sort key that lists findings as a compiler does: by file, line and column; one with no place last.
    Sorting is stable, so findings at one place keep the order the checks found them in."""
    if location is None:
        return (True, "", 0, 0)
    return (False, location.file, location.line, location.column)


def _short_repr() -> reprlib.Repr:
    shown = reprlib.Repr()  # Python 3.11's Repr takes no constructor arguments
    shown.maxlevel = 3
    shown.maxstring = shown.maxother = _VALUE_PREVIEW_CHARS
    return shown


_SHORT_REPR = _short_repr()  # read-only after this: only its limits are set


def preview_value(value: Any) -> str:
    """A short JSON rendering of a value found in source data: errors show it, but never a whole document.
    It never fails: a value too deep or too large for JSON is shown by a bounded repr or by its size."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        try:
            text = _SHORT_REPR.repr(value)
        except (ValueError, RecursionError):  # an int past Python's 4,300-digit str() limit
            size = f"{value.bit_length()} bits" if isinstance(value, int) else type(value).__name__
            text = f"<too large to show: {size}>"
    if len(text) > _VALUE_PREVIEW_CHARS:
        text = text[: _VALUE_PREVIEW_CHARS - 1] + "…"
    return text


def internal_message(error: BaseException) -> str:
    """The message of an exception that nothing in the engine words, met while mapping one document: named
    as an internal error with its type kept (it is likely a bug in shipmap), never a traceback, which is
    logged at debug level."""
    _log.debug("internal error while mapping a document", exc_info=error)
    text = str(error)
    if len(text) > _INTERNAL_MESSAGE_CHARS:
        text = text[: _INTERNAL_MESSAGE_CHARS - 1] + "…"
    return f"internal error: {type(error).__name__}: {text}"


class ShipmapError(Exception):
    """Root of every error shipmap raises on purpose."""

    exit_code = 1
    kind = "error"

    def __init__(
        self,
        message: str,
        *,
        location: Location | None = None,
        field: str | None = None,
        source_path: str | None = None,
        value: Any = None,
        has_value: bool = False,
        hint: str | None = None,
        found: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.field = field
        self.source_path = source_path
        self.value = value
        self.has_value = has_value
        self.hint = hint
        # ``path = value`` for the source fields an expression's failing function was given.
        self.found = tuple(found)

    @property
    def file(self) -> str | None:
        return self.location.file if self.location else None

    @property
    def line(self) -> int | None:
        return self.location.line if self.location else None

    @property
    def column(self) -> int | None:
        return self.location.column if self.location else None

    def __str__(self) -> str:
        return self.render()

    def render(self) -> str:
        """The compiler-style text: ``file:line:col: error: message``, then the field, source and caret."""
        head = f"{self.location}: " if self.location else ""
        lines = [f"{head}{self.kind}: {self.message}"]
        if self.field:
            lines.append(f"  target field: {self.field}")
        if self.has_value:
            lines.append(f"  source: {self.source_path or '@'} = {preview_value(self.value)}")
        elif self.source_path is not None:
            # An expression that failed has no value: the message says what it found ('found string "abc"').
            lines.append(f"  source: {self.source_path}")
        if self.found:
            lines.append(f"  found: {', '.join(self.found)}")
        if self.location and self.location.line_text:
            number = str(self.location.line)
            gutter = " " * len(number)
            lines.append(f"  {number} | {self.location.line_text}")
            lines.append(f"  {gutter} | {' ' * max(self.location.column - 1, 0)}^")
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


class MappingError(ShipmapError):
    """A mapping file is wrong: the error names its file, line and column."""

    exit_code = 2


class MappingSyntaxError(MappingError):
    """The file is not YAML, or uses YAML that shipmap refuses."""


class MappingStructureError(MappingError):
    """The YAML is fine but does not follow the mapping format (see ``shipmap schema``)."""


class CompileError(MappingError):
    """An expression, template, lookup or fragment does not compile."""


class SourceError(ShipmapError):
    """A source document cannot be read."""

    exit_code = 3


class TransformError(ShipmapError):
    """A field failed on one source document; names the field, the source path and the value found."""

    exit_code = 4


@dataclass(frozen=True, slots=True)
class Problem:
    """One way a payload breaks its kind's contract."""

    field: str
    message: str
    location: Location | None = None
    severity: str = "error"

    def render(self) -> str:
        where = f"{self.location}: " if self.location else ""
        return f"{where}{self.field}: {self.message}"


class PayloadValidationError(ShipmapError):
    """A payload breaks its target kind's JSON Schema. ``problems`` lists every violation found."""

    exit_code = 5
    kind = "invalid"

    def __init__(self, target: str, kind_name: str, problems: Sequence[Problem]) -> None:
        first = problems[0]
        super().__init__(
            f"target '{target}' is not a valid {kind_name}: {first.field}: {first.message}",
            location=first.location,
            field=first.field,
        )
        self.target = target
        self.kind_name = kind_name
        self.problems = tuple(problems)

    def render(self) -> str:
        head = f"{self.location}: " if self.location else ""
        lines = [f"{head}{self.kind}: target '{self.target}' is not a valid {self.kind_name}"]
        lines.extend(f"  - {problem.render()}" for problem in self.problems)
        return "\n".join(lines)
