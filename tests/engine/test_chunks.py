"""Chunks of raw lines parse, wherever they are parsed, into exactly what read_documents reads; a compiled
mapping pickles as its text and maps the same after the trip."""

from __future__ import annotations

import io
import itertools
import json
import pickle
from pathlib import Path

import pytest
from shipmap.engine import SourceError, load_mapping, read_documents
from shipmap.engine._chunks import read_chunks

ORDER = Path(__file__).parent.parent / "fixtures/real/shopify/order_rest_get_with_fulfillment.json"

# given: the bytes of an input file (name decides NDJSON or JSON); every chunk size must read the same.
CASES = {
    "lines with blanks, a bad line and a batch": (
        "events.ndjson",
        b'{"a": 1}\n\n{"a": 2}\nnot json\n[{"b": 1}, {"b": 2}]\n   \n{"a": 3}\n',
    ),
    "a line that is not UTF-8": ("events.jsonl", b'{"a": 1}\n\xff\xfe\n{"a": 2}\n'),
    "a BOM on the first line": ("events.ndjson", b'\xef\xbb\xbf{"a": 1}\n{"a": 2}\n'),
    "a pretty-printed document": ("order.json", b'{\n  "a": 1,\n  "b": [1, 2]\n}\n'),
    "a pretty-printed array": ("orders.json", b'[\n  {"a": 1},\n  {"a": 2}\n]\n'),
    "JSON lines in a .json file": ("lines.json", b'\n{"a": 1}\n{"a": 2}\nnope\n'),
    "a broken whole document": ("broken.json", b'{\n  "a": 1,\n  "b": \n}\n'),
    "a file with no documents": ("empty.ndjson", b"\n\n"),
    "CRLF line ends and a last line without one": ("crlf.ndjson", b'{"a": 1}\r\n{"a": 2}\r\n{"a": 3}'),
    # A lone carriage return ends no line: the JSON after it is extra data on the same line.
    "a carriage return inside a line": ("cr.ndjson", b'{"a": 1}\r{"a": 2}\n{"a": 3}\n'),
    "a line cut off at the end": ("cut.ndjson", b'{"a": 1}\n{"a": '),
}


def _same(chunked: list[object], whole: list[object]) -> None:
    assert [repr(d) for d in chunked] == [repr(d) for d in whole]


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("size", [1, 2, 256])
def test_chunks_read_what_read_documents_reads(tmp_path: Path, name: str, size: int) -> None:
    file_name, data = CASES[name]
    path = tmp_path / file_name
    path.write_bytes(data)
    chunks = list(read_chunks(path, lines=size))
    _same(
        [d for chunk in pickle.loads(pickle.dumps(chunks)) for d in chunk.documents()],
        list(read_documents(path)),
    )


@pytest.mark.parametrize("name", list(CASES))
def test_stdin_in_chunks_reads_what_read_documents_reads(name: str) -> None:
    data = CASES[name][1]
    for stream in (lambda: io.BytesIO(data), lambda: io.StringIO(data.decode("utf-8", "replace"))):
        chunked = [d for chunk in read_chunks("-", stdin=stream(), lines=2) for d in chunk.documents()]
        _same(chunked, list(read_documents("-", stdin=stream())))


def test_origins_count_lines_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps({"n": n}) + "\n" for n in range(7)), encoding="utf-8")
    chunks = list(read_chunks(path, lines=3))
    assert [(c.first_line, c.count) for c in chunks] == [(1, 3), (4, 3), (7, 1)]
    assert [d.origin for d in chunks[2].documents()] == [f"{path}:7"]


def test_a_file_is_chunked_as_byte_ranges_that_carry_no_lines(tmp_path: Path) -> None:
    """What a --jobs pool pickles to its workers is where the lines are, never the lines themselves."""
    path = tmp_path / "events.ndjson"
    lines = [json.dumps({"n": n, "pad": "x" * n}) + "\n" for n in range(7)]
    path.write_text("".join(lines), encoding="utf-8")
    chunks = list(read_chunks(path, lines=3))
    assert all(chunk.lines == () for chunk in chunks)
    ends = [len("".join(lines[:n])) for n in (0, 3, 6, 7)]
    assert [chunk.span for chunk in chunks] == list(itertools.pairwise(ends))
    stream = [c.count for c in read_chunks("-", stdin=io.BytesIO(path.read_bytes()), lines=3)]
    assert stream == [3, 3, 1]


def test_a_file_that_shrinks_after_chunking_is_a_located_error(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n', encoding="utf-8")
    last = list(read_chunks(path, lines=2))[-1]
    path.write_text('{"a": 1}\n', encoding="utf-8")
    with pytest.raises(SourceError) as raised:
        last.documents()
    assert "changed while it was read" in str(raised.value)
    assert (raised.value.location.line, raised.value.location.file) == (3, str(path))


def test_a_compiled_mapping_pickles_as_its_text_and_maps_the_same() -> None:
    mapping = load_mapping("shopify/order")
    source = json.loads(ORDER.read_text(encoding="utf-8"))
    data = pickle.dumps(mapping)
    assert b"shopify" in data and len(data) < 64 * 1024  # the YAML text, not compiled code
    copy = pickle.loads(data)
    assert copy(source) == mapping.transform(source)
    assert copy.file == mapping.file
    assert pickle.loads(data) is copy  # compiled once per process, however often it is unpickled
