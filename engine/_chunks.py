"""Reading sources in chunks of raw lines, so that the parsing happens wherever the chunk is mapped.

A process pool (``--jobs``) or a batch engine gains little if one process parses every document and pickles
it to the others: parsing costs about as much as mapping. :func:`read_chunks` hands out NDJSON as chunks of
raw lines, with the file name and the number of their first line, and :meth:`SourceChunk.documents` parses
a chunk where it is used, with the very reader of :func:`read_documents`: the same documents, the same
``file:line`` origins, the same errors for a line that is not JSON. A source that is one JSON document (a
pretty-printed object or array) is parsed whole, here, and comes out as one chunk of documents.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from ._sources import NDJSON_SUFFIXES, STDIN, SourceDocument, expand_sources, open_input, read_stream

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SourceChunk:
    """Consecutive lines of one NDJSON source (``lines``), or documents already read (``parsed``)."""

    name: str
    first_line: int = 1
    lines: tuple[str | bytes, ...] = ()
    parsed: tuple[SourceDocument, ...] = ()

    def documents(self) -> list[SourceDocument]:
        if self.parsed:
            return list(self.parsed)
        return list(read_stream(self.lines, self.name, ndjson=True, first_line=self.first_line))


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
        yield SourceChunk(name, number, chunk)
        number += len(chunk)


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
