"""Reading sources in chunks of lines, so that the parsing happens wherever the chunk is mapped.

A process pool (``--jobs``) or a batch engine gains little if one process parses every document and pickles
it to the others: parsing costs about as much as mapping. :func:`read_chunks` hands out NDJSON as chunks of
lines, with the file name and the number of their first line, and :meth:`SourceChunk.documents` parses a
chunk where it is used, with the very reader of :func:`read_documents`: the same documents, the same
``file:line`` origins, the same errors for a line that is not JSON. A source that is one JSON document (a
pretty-printed object or array) is parsed whole, here, and comes out as one chunk of documents.

An NDJSON *file* is handed out as byte ranges (``span``): this process only looks for the newlines, and the
process that maps a chunk reads its lines from the file itself, so no line crosses a process boundary (a
pool that pickled every line to its workers spent a sixth more CPU than one process). A stream (stdin, a
pipe) cannot be read twice: its chunks carry their raw lines.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from ._errors import Location, SourceError
from ._sources import NDJSON_SUFFIXES, STDIN, SourceDocument, expand_sources, open_input, read_stream

_BOM = b"\xef\xbb\xbf"
_BLOCK = 1 << 20  # bytes read at a time while looking for the newlines of a file's chunks


@dataclass(frozen=True, slots=True)
class SourceChunk:
    """``count`` consecutive lines of one NDJSON source, from line ``first_line``: the bytes ``span`` of the
    file ``name`` (read by :meth:`documents`), or the raw ``lines`` of a stream; or documents already read
    (``parsed``)."""

    name: str
    first_line: int = 1
    lines: tuple[str | bytes, ...] = ()
    parsed: tuple[SourceDocument, ...] = ()
    span: tuple[int, int] | None = None  # [start, end) byte offsets in the file ``name``
    count: int = 0

    def documents(self) -> list[SourceDocument]:
        if self.parsed:
            return list(self.parsed)
        lines = self.lines if self.span is None else self._read_span(self.span)
        return list(read_stream(lines, self.name, ndjson=True, first_line=self.first_line))

    def _read_span(self, span: tuple[int, int]) -> Iterator[bytes]:
        start, end = span
        with open_input(Path(self.name)) as handle:
            handle.seek(start)
            data = handle.read(end - start)
        if len(data) != end - start:
            raise SourceError(
                f"input {self.name} changed while it was read (it is shorter than when it was opened)",
                location=Location(self.name, self.first_line, 1),
            )
        return iter(io.BytesIO(data))  # split at b"\n" only, as iterating the file splits it


def read_chunks(
    sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    stdin: IO[str] | IO[bytes] | None = None,
    lines: int = 256,
) -> Iterator[SourceChunk]:
    """Every source as chunks of at most ``lines`` lines, in order. Opening errors raise SourceError first."""
    paths = expand_sources(sources, stdin)
    return _chunks(paths, stdin, lines)


def _chunks(
    paths: Sequence[str | Path], stdin: IO[str] | IO[bytes] | None, size: int
) -> Iterator[SourceChunk]:
    for path in paths:
        if path == STDIN:
            assert stdin is not None
            yield from _stream_chunks(iter(cast(IO[Any], stdin)), "<stdin>", size, ndjson=False)
            continue
        assert isinstance(path, Path)
        with open_input(path) as handle:
            ndjson = path.suffix.lower() in NDJSON_SUFFIXES
            if ndjson and stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                yield from _span_chunks(handle, str(path), size)
            else:
                yield from _stream_chunks(iter(handle), str(path), size, ndjson=ndjson)


def _stream_chunks(
    lines: Iterator[str | bytes], name: str, size: int, *, ndjson: bool
) -> Iterator[SourceChunk]:
    head: list[str | bytes] = []
    if not ndjson:
        # Decide as read_stream does: lines, unless the first record is not a whole JSON line.
        for line in lines:
            head.append(line)
            if line.strip():
                break
        if head and not _is_json_line(head[-1], first=len(head) == 1):
            yield SourceChunk(name, parsed=tuple(read_stream(itertools.chain(head, lines), name)))
            return
    rest: Iterator[str | bytes] = itertools.chain(head, lines)
    number = 1
    while chunk := tuple(itertools.islice(rest, size)):
        yield SourceChunk(name, number, chunk, count=len(chunk))
        number += len(chunk)


def _span_chunks(handle: IO[bytes], name: str, size: int) -> Iterator[SourceChunk]:
    """A regular file's chunks of ``size`` lines as byte ranges: only its newlines are looked for here."""
    # A bytearray, searched from where the last search stopped: a line of many blocks costs linear time.
    window = bytearray()  # the file's bytes from offset ``base`` that no chunk has taken yet
    base = 0
    scan = 0  # where the next newline is looked for, in window
    lines = 0  # the complete lines in window
    number = 1
    while True:
        found = window.find(b"\n", scan)
        if found < 0:
            block = handle.read(_BLOCK)
            if not block:
                break
            scan = len(window)
            window += block
            continue
        scan = found + 1
        lines += 1
        if lines == size:
            yield SourceChunk(name, number, span=(base, base + scan), count=lines)
            number += lines
            base += scan
            del window[:scan]
            scan, lines = 0, 0
    if scan < len(window):  # a last line without its newline
        lines += 1
    if lines:
        yield SourceChunk(name, number, span=(base, base + len(window)), count=lines)


def _is_json_line(line: str | bytes, *, first: bool) -> bool:
    if isinstance(line, bytes):
        try:
            line = (line[3:] if first and line.startswith(_BOM) else line).decode("utf-8")
        except UnicodeDecodeError:
            return True  # read_stream reports the line and reads the rest as lines
    elif first:
        line = line.removeprefix("\ufeff")
    try:
        json.loads(line)
    except RecursionError:
        return False  # rare; the reader itself decides what follows
    except ValueError:
        return False
    return True
