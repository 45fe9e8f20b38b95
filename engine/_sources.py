"""Reading source documents: a JSON file (one document, or an array of them), an NDJSON file streamed line by
line so memory stays flat however long it is, a directory of such files, or a stream such as stdin (``-``).

A record that is not JSON never stops the reading: it comes out as a ``SourceDocument`` with ``error`` set,
naming its file and line, and the caller decides (preview reports it, run dead-letters it). Only an input that
cannot be opened at all raises :class:`SourceError`. Preview, test and run all read through here.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from . import _jsontext
from ._errors import Location, SourceError

STDIN = "-"
NDJSON_SUFFIXES = (".ndjson", ".jsonl")
JSON_SUFFIXES = (".json", *NDJSON_SUFFIXES)
_EXCERPT_CHARS = 200
# A JSON escape of a UTF-16 surrogate: legal in a pair, but a lone one is not Unicode text (RFC 8259 sec. 8.2).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class NotStrictJSON(ValueError):
    """A JSON text that Python's parser accepts but a strict one refuses (NaN, Infinity, 1e400, lone
    surrogates). ``token`` is the offending text, to locate it on its line."""

    def __init__(self, message: str, token: str) -> None:
        super().__init__(message)
        self.token = token


def _no_constant(name: str) -> Any:
    raise NotStrictJSON(f"{name} is not a JSON number (strict JSON has only finite numbers)", name)


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise NotStrictJSON(f"the number {text[:40]} is too large for a 64-bit float", text)
    return value


_DIGIT_RUN = re.compile(r"\d{4301,}")


def loads_strict(text: str) -> Any:
    """``json.loads``, refusing what strict parsers refuse: NaN, Infinity, numbers that overflow a float,
    integers past Python's 4,300 digits, and strings holding a lone surrogate. Raises ValueError
    (``NotStrictJSON`` for those)."""
    value = _jsontext.loads(text)  # orjson, where its value is json's: it refuses all of the above
    if value is not _jsontext.UNREAD:
        return value
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError:
        raise
    except ValueError:  # Python's own words name sys.set_int_max_str_digits(), no help to who sent the JSON
        digits = _DIGIT_RUN.search(text)
        if digits is None:
            raise
        message = f"an integer of {len(digits[0])} digits is longer than the 4,300 digits a number may have"
        raise NotStrictJSON(message, digits[0]) from None
    escape = _SURROGATE_ESCAPE.search(text)
    if escape is not None:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            message = "a string holds a lone UTF-16 surrogate (not Unicode text)"
            raise NotStrictJSON(message, escape.group(0)) from None
    return value


@dataclass(frozen=True, slots=True)
class SourceDocument:
    """One document read from an input, or the reason it could not be read. ``origin`` is ``file:line``
    (or ``file[index]`` for an element of an array)."""

    origin: str
    document: Any = None
    error: str | None = None
    excerpt: str | None = None
    location: Location | None = None
    # Read from JSON text by the strict reader (``loads_strict``): its numbers are finite, its keys strings.
    # Where a document came from, not what it is: equal documents compare equal however they were read.
    strict: bool = field(default=False, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> Any:
        """The document, or the :class:`SourceError` that stands in its place."""
        if self.error is not None:
            raise SourceError(self.error, location=self.location or Location(self.origin, 1, 1))
        return self.document


def read_documents(
    sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    stdin: IO[str] | IO[bytes] | None = None,
) -> Iterator[SourceDocument]:
    """Every document of every source, in order. Opening errors raise SourceError before anything is read."""
    return _read_all(expand_sources(sources, stdin), stdin)


def expand_sources(
    sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], stdin: IO[str] | IO[bytes] | None
) -> list[str | Path]:
    """The files to read, in order: directories expanded, ``-`` kept for stdin. Raises SourceError."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    paths: list[str | Path] = []
    for source in sources:
        if str(source) == STDIN:
            if stdin is None:
                raise SourceError(
                    "input '-' (stdin) was given but no stdin stream is available",
                    location=Location("-", 1, 1),
                )
            paths.append(STDIN)
            continue
        path = Path(source)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in JSON_SUFFIXES)
            paths.extend(found)
        elif path.exists() or path.is_symlink():  # a file, or a pipe read as a stream: <(zcat day.ndjson.gz),
            paths.append(path)  # a FIFO, /dev/null; a link that loops or dangles: opening it says so
        else:
            raise SourceError(f"input {path} does not exist", location=Location(str(path), 1, 1))
    return paths


def _read_all(paths: Sequence[str | Path], stdin: IO[str] | IO[bytes] | None) -> Iterator[SourceDocument]:
    for path in paths:
        if path == STDIN:
            assert stdin is not None
            yield from read_stream(stdin, "<stdin>")
            continue
        assert isinstance(path, Path)
        with open_input(path) as handle:
            yield from read_stream(handle, str(path), ndjson=path.suffix.lower() in NDJSON_SUFFIXES)


def open_input(path: Path) -> IO[bytes]:
    """An input file opened as bytes, or a located SourceError. Bytes, decoded line by line: one line that
    is not UTF-8 must not stop the rest of the file."""
    try:
        return path.open("rb")
    except OSError as error:
        raise SourceError(
            f"cannot open input {path}: {error.strerror}", location=Location(str(path), 1, 1)
        ) from None


def read_stream(
    handle: Iterable[str | bytes], name: str, *, ndjson: bool = False, first_line: int = 1
) -> Iterator[SourceDocument]:
    """Events from a text stream. NDJSON unless the first record is not a complete JSON line, in which case
    the whole stream is one JSON document (a pretty-printed object or array). ``ndjson=True`` forces lines.
    ``first_line``: the number of the stream's first line in its file (a chunk of a longer file).

    ``name`` is what errors call the stream, so a program reading text that is not a file (a webhook's
    body: ``read_stream([body], "POST /hooks/orders")``) gets strict JSON and ``name:line:col`` errors."""
    lines = _decoded(handle, first=first_line == 1)
    number = first_line - 1
    lines_mode = ndjson
    for raw in lines:
        number += 1
        if isinstance(raw, UnicodeDecodeError):
            yield SourceDocument(
                f"{name}:{number}", error=f"not UTF-8 text ({raw.reason})", location=Location(name, number, 1)
            )
            lines_mode = True
            continue
        text = raw.strip()
        if not text:
            continue
        try:
            value = loads_strict(text)
        except RecursionError:
            yield _too_deep(name, number, text)
            continue
        except ValueError as error:
            if lines_mode or isinstance(error, NotStrictJSON):
                yield _bad(name, number, error, text, cut_off=not raw.endswith("\n"))
                continue
            rest = (line for line in lines if isinstance(line, str))
            yield from _whole_document(name, raw, rest, number)
            return
        lines_mode = True  # the first record was a whole line: the rest are lines too
        yield from _events(value, f"{name}:{number}")


def _decoded(lines: Iterable[str | bytes], *, first: bool) -> Iterator[str | UnicodeDecodeError]:
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


def _whole_document(name: str, first: str, rest: Iterator[str], first_line: int) -> Iterator[SourceDocument]:
    text = first + "".join(rest)
    try:
        value = loads_strict(text)
    except RecursionError:
        yield _too_deep(name, first_line, first)
        return
    except ValueError as error:
        if isinstance(error, NotStrictJSON):  # json does not say where: its token does
            at = text.find(error.token)
            relative = text.count("\n", 0, at) + 1 if at >= 0 else 1
        else:
            relative = getattr(error, "lineno", 1)
        lines = text.splitlines()
        bad_text = lines[relative - 1] if 0 < relative <= len(lines) else ""  # as is: columns count from 1
        yield _bad(name, first_line + relative - 1, error, bad_text)
        return
    yield from _events(value, name)


def _events(value: Any, origin: str) -> Iterator[SourceDocument]:
    if isinstance(value, list):  # an array on one line is a batch of events
        for index, item in enumerate(value):
            yield SourceDocument(f"{origin}[{index}]", document=item, strict=True)
    else:
        yield SourceDocument(origin, document=value, strict=True)


def _bad(name: str, line: int, error: ValueError, text: str, *, cut_off: bool = False) -> SourceDocument:
    if isinstance(error, NotStrictJSON):
        at = max(text.find(error.token), 0) + 1
        return SourceDocument(
            f"{name}:{line}",
            error=f"not strict JSON: {error}, column {at}",
            excerpt=_excerpt(text),
            location=Location(name, line, at),
        )
    detail = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
    column = f", column {error.colno}" if isinstance(error, json.JSONDecodeError) else ""
    where = Location(name, line, error.colno if isinstance(error, json.JSONDecodeError) else 1)
    # A last line without its newline may still be being written: a later run reads it again.
    cut = "the last line is cut off (no newline yet), " if cut_off else ""
    return SourceDocument(
        f"{name}:{line}", error=f"{cut}not JSON: {detail}{column}", excerpt=_excerpt(text), location=where
    )


def _excerpt(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 1] + "…"


def read_input(path: str | os.PathLike[str]) -> Any:
    """One input file as preview, test and init read it: a JSON document is that document; a JSON array or
    an NDJSON file (several documents) is the list of them, so ``select: "[0]"`` picks one. A record that is
    not JSON raises :class:`SourceError` with its file and line."""
    documents = list(read_documents(path))
    if not documents:
        raise SourceError(f"{path} holds no JSON document", location=Location(str(path), 1, 1))
    for document in documents:
        document.unwrap()
    one_document = Path(path).suffix.lower() not in NDJSON_SUFFIXES and not documents[0].origin.endswith("]")
    if len(documents) == 1 and one_document:
        return documents[0].document
    return [document.document for document in documents]


def read_named(files: Iterable[tuple[str, str | os.PathLike[str]]]) -> dict[str, Any]:
    """An event of several named documents, ``{name: document}``, each read by :func:`read_input` (an array
    response such as a product list stays an array). The mapping reads them as ``$root.name``. This is also
    the shape ``shipmap serve`` hands the runtime after fetching enrichment documents."""
    event: dict[str, Any] = {}
    for name, path in files:
        if not name.isidentifier():
            raise SourceError(
                f"document name {name!r} must be a plain name (letters, digits, _)",
                location=Location(str(path), 1, 1),
            )
        if name in event:
            raise SourceError(f"document {name!r} is given twice", location=Location(str(path), 1, 1))
        event[name] = read_input(path)
    return event


def estimate_total(sources: Sequence[str | os.PathLike[str]]) -> int | None:
    """How many events the inputs hold, when cheap to know (NDJSON line counts), for a progress bar."""
    total = 0
    for source in sources:
        if str(source) == STDIN:
            return None
        path = Path(source)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.suffix.lower() not in NDJSON_SUFFIXES or not file.is_file():
                return None  # a pipe's lines can be read once, by the run
            try:
                with file.open("rb") as handle:
                    while chunk := handle.read(1 << 20):
                        total += chunk.count(b"\n")
            except OSError:
                return None
    return total


def _too_deep(name: str, line: int, text: str) -> SourceDocument:
    return SourceDocument(
        f"{name}:{line}",
        error="JSON nested too deeply to read",
        excerpt=_excerpt(text),
        location=Location(name, line, 1),
    )
