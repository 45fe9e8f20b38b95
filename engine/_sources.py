"""Reading source documents: a JSON file (one document, or an array of them), an NDJSON file read line by
line so memory stays flat, a directory of JSON files, or standard input. Every document comes with the
location it was read from, and a bad one becomes a :class:`SourceError` naming its file and line."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ._errors import Location, SourceError

NDJSON_SUFFIXES = (".ndjson", ".jsonl")


@dataclass(frozen=True, slots=True)
class SourceDocument:
    """One source document, or the error that stands where it should have been."""

    location: Location
    data: Any = None
    error: SourceError | None = None

    def unwrap(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.data


def read_documents(
    source: str | os.PathLike[str], *, stdin: IO[str] | None = None
) -> Iterator[SourceDocument]:
    """Every document in ``source`` (a path, or ``-`` for standard input), in order.

    A malformed NDJSON line yields a document holding its error and reading goes on, so one bad line never
    hides the rest. A file that cannot be read at all raises :class:`SourceError`.
    """
    if str(source) == "-":
        yield from _read_stream(stdin or sys.stdin, "<stdin>")
        return
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".json", *NDJSON_SUFFIXES) and p.is_file())
        for file in files:
            yield from read_documents(file)
        return
    try:
        handle = path.open(encoding="utf-8")
    except OSError as error:
        raise SourceError(
            f"cannot read source: {error.strerror}", location=Location(str(source), 1, 1)
        ) from None
    with handle:
        if path.suffix in NDJSON_SUFFIXES:
            yield from _read_lines(handle, str(source), first_line=1)
        else:
            yield from _read_whole(handle.read(), str(source))


def _read_stream(handle: IO[str], name: str) -> Iterator[SourceDocument]:
    # NDJSON when the first line is a JSON document by itself: then stream; else read one whole document.
    first = handle.readline()
    while first and not first.strip():
        first = handle.readline()
    if not first:
        return
    try:
        data = json.loads(first)
    except json.JSONDecodeError:
        yield from _read_whole(first + handle.read(), name)
        return
    yield SourceDocument(Location(name, 1, 1), data)
    yield from _read_lines(handle, name, first_line=2)


def _read_lines(handle: IO[str], name: str, first_line: int) -> Iterator[SourceDocument]:
    for number, line in enumerate(handle, start=first_line):
        if not line.strip():
            continue
        location = Location(name, number, 1)
        try:
            yield SourceDocument(location, json.loads(line))
        except json.JSONDecodeError as error:
            yield SourceDocument(
                location,
                error=SourceError(
                    f"line {number} is not JSON: {error.msg}", location=Location(name, number, error.colno)
                ),
            )
        except RecursionError:
            yield SourceDocument(
                location, error=SourceError(f"line {number} is nested too deeply", location=location)
            )


def _read_whole(text: str, name: str) -> Iterator[SourceDocument]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":
            # Several documents, one per line, in a file not named .ndjson.
            yield from _read_lines(iter(text.splitlines(keepends=True)), name, first_line=1)  # type: ignore[arg-type]
            return
        raise SourceError(
            f"not JSON: {error.msg}", location=Location(name, error.lineno, error.colno)
        ) from None
    except RecursionError:
        raise SourceError("JSON is nested too deeply", location=Location(name, 1, 1)) from None
    if isinstance(data, list):
        for index, item in enumerate(data):
            yield SourceDocument(Location(f"{name}[{index}]", 1, 1), item)
    else:
        yield SourceDocument(Location(name, 1, 1), data)
