"""Reading events: a JSON file (one object, or an array of events), an NDJSON file (streamed line by line, so
memory stays flat however long it is), a directory of such files, or a stream such as stdin (``-``).

A record that is not JSON never stops the run: it comes out as an ``InputRecord`` with ``error`` set, naming
its file and line, and the runtime reports it. Only an input that cannot be opened at all raises InputError.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ._errors import InputError

STDIN = "-"
NDJSON_SUFFIXES = (".ndjson", ".jsonl")
JSON_SUFFIXES = (".json", *NDJSON_SUFFIXES)
_EXCERPT_CHARS = 200


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One event read from an input, or the reason it could not be read. ``origin`` is ``file:line``."""

    origin: str
    document: Any = None
    error: str | None = None
    excerpt: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def read_inputs(
    sources: Sequence[str | os.PathLike[str]], *, stdin: IO[str] | IO[bytes] | None = None
) -> Iterator[InputRecord]:
    """Every event of every source, in order. Opening errors raise InputError before anything is read."""
    paths: list[str | Path] = []
    for source in sources:
        if str(source) == STDIN:
            if stdin is None:
                raise InputError("input '-' (stdin) was given but no stdin stream is available")
            paths.append(STDIN)
            continue
        path = Path(source)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in JSON_SUFFIXES)
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise InputError(f"input {path} does not exist")
    return _read_all(paths, stdin)


def _read_all(paths: Sequence[str | Path], stdin: IO[str] | IO[bytes] | None) -> Iterator[InputRecord]:
    for path in paths:
        if path == STDIN:
            assert stdin is not None
            yield from read_stream(stdin, "<stdin>")
            continue
        assert isinstance(path, Path)
        try:
            # Bytes, decoded line by line: one line that is not UTF-8 must not stop the rest of the file.
            handle = path.open("rb")
        except OSError as error:
            raise InputError(f"cannot open input {path}: {error.strerror}") from None
        with handle:
            yield from read_stream(handle, str(path), ndjson=path.suffix.lower() in NDJSON_SUFFIXES)


def read_stream(
    handle: Iterable[str] | Iterable[bytes], name: str, *, ndjson: bool = False
) -> Iterator[InputRecord]:
    """Events from a text stream. NDJSON unless the first record is not a complete JSON line, in which case
    the whole stream is one JSON document (a pretty-printed object or array). ``ndjson=True`` forces lines."""
    lines = _decoded(handle)
    number = 0
    lines_mode = ndjson
    for raw in lines:
        number += 1
        if isinstance(raw, UnicodeDecodeError):
            yield InputRecord(f"{name}:{number}", error=f"not UTF-8 text ({raw.reason})")
            lines_mode = True
            continue
        text = raw.strip()
        if not text:
            continue
        try:
            value = json.loads(text)
        except ValueError as error:
            if lines_mode:
                yield _bad(name, number, error, text)
                continue
            rest = (line for line in lines if isinstance(line, str))
            yield from _whole_document(name, raw, rest, number)
            return
        lines_mode = True  # the first record was a whole line: the rest are lines too
        yield from _events(value, f"{name}:{number}")


def _decoded(lines: Iterable[str] | Iterable[bytes]) -> Iterator[str | UnicodeDecodeError]:
    first = True
    for line in lines:
        if isinstance(line, str):
            yield line.removeprefix("\ufeff") if first else line
        else:
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as error:
                yield error
            else:
                yield text.removeprefix("\ufeff") if first else text
        first = False


def _whole_document(name: str, first: str, rest: Iterator[str], first_line: int) -> Iterator[InputRecord]:
    text = first + "".join(rest)
    try:
        value = json.loads(text)
    except ValueError as error:
        relative = getattr(error, "lineno", 1)
        lines = text.splitlines()
        bad_text = lines[relative - 1].strip() if 0 < relative <= len(lines) else ""
        yield _bad(name, first_line + relative - 1, error, bad_text)
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield InputRecord(f"{name}[{index}]", document=item)
    else:
        yield InputRecord(name, document=value)


def _events(value: Any, origin: str) -> Iterator[InputRecord]:
    if isinstance(value, list):  # an array on one line is a batch of events
        for index, item in enumerate(value):
            yield InputRecord(f"{origin}[{index}]", document=item)
    else:
        yield InputRecord(origin, document=value)


def _bad(name: str, line: int, error: ValueError, text: str) -> InputRecord:
    detail = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
    column = f", column {error.colno}" if isinstance(error, json.JSONDecodeError) else ""
    excerpt = text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 1] + "…"
    return InputRecord(f"{name}:{line}", error=f"not JSON: {detail}{column}", excerpt=excerpt)


def estimate_total(sources: Sequence[str | os.PathLike[str]]) -> int | None:
    """How many events the inputs hold, when cheap to know (NDJSON line counts), for a progress bar."""
    total = 0
    for source in sources:
        if str(source) == STDIN:
            return None
        path = Path(source)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.suffix.lower() not in NDJSON_SUFFIXES:
                return None
            try:
                with file.open("rb") as handle:
                    while chunk := handle.read(1 << 20):
                        total += chunk.count(b"\n")
            except OSError:
                return None
    return total
