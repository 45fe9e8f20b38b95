"""Reading source documents (engine/_sources.py, used by preview, test and run): JSON files, NDJSON streamed
lazily, directories, stdin; bad records named by file and line."""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from shipmap.engine import SourceError
from shipmap.engine import read_documents as read_inputs
from shipmap.engine._sources import estimate_total, read_stream


def test_a_json_object_file_is_one_event(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"id": 1}, indent=2))
    [record] = read_inputs([path])
    assert (record.origin, record.document, record.ok) == (str(path), {"id": 1}, True)


def test_a_json_array_file_is_many_events(tmp_path: Path) -> None:
    path = tmp_path / "many.json"
    path.write_text(json.dumps([{"id": 1}, {"id": 2}], indent=2))
    assert [(r.origin, r.document) for r in read_inputs([path])] == [
        (f"{path}[0]", {"id": 1}),
        (f"{path}[1]", {"id": 2}),
    ]


def test_ndjson_lines_blank_lines_and_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    path.write_text('{"id": 1}\n\n{"id": 2,}\n[{"id": 3}, {"id": 4}]\n')
    records = list(read_inputs([path]))
    assert [r.origin for r in records] == [f"{path}:1", f"{path}:3", f"{path}:4[0]", f"{path}:4[1]"]
    bad = records[1]
    assert (
        not bad.ok and bad.error == "not JSON: Expecting property name enclosed in double quotes, column 10"
    )
    assert bad.excerpt == '{"id": 2,}'
    assert [r.document for r in records if r.ok] == [{"id": 1}, {"id": 3}, {"id": 4}]


def test_a_bad_pretty_printed_document_is_named_by_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "id": 1,\n  "name": oops\n}\n')
    [record] = read_inputs([path])
    assert record.origin == f"{path}:3" and record.error is not None and record.error.startswith("not JSON")


def test_a_directory_is_read_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text('{"n": 2}')
    (tmp_path / "a.ndjson").write_text('{"n": 1}\n')
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.json").write_text('[{"n": 3}]')
    assert [r.document["n"] for r in read_inputs([tmp_path])] == [1, 2, 3]


def test_stdin_is_sniffed_as_ndjson_or_one_document() -> None:
    lines = read_inputs(["-"], stdin=io.StringIO('{"a": 1}\n{"a": 2}\n'))
    assert [r.origin for r in lines] == ["<stdin>:1", "<stdin>:2"]
    whole = read_inputs(["-"], stdin=io.StringIO('[\n  {"a": 1},\n  {"a": 2}\n]\n'))
    assert [r.document for r in whole] == [{"a": 1}, {"a": 2}]


def test_ndjson_is_streamed_not_loaded() -> None:
    consumed = 0

    def endless() -> Iterator[str]:
        nonlocal consumed
        while True:
            consumed += 1
            yield json.dumps({"n": consumed}) + "\n"

    records = read_stream(endless(), "<pipe>")
    assert [next(records).document["n"] for _ in range(3)] == [1, 2, 3]
    assert consumed == 3  # one line read per event: memory stays flat however long the stream


def test_invalid_utf8_is_a_record_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.ndjson"
    path.write_bytes(b'{"a": 1}\n{"a": "\xe9"}\n')
    records = list(read_inputs([path]))
    assert records[0].ok and not records[1].ok and records[1].error is not None
    assert records[1].error.startswith("not UTF-8")


def test_missing_inputs_raise_before_reading(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist") as caught:
        read_inputs([tmp_path / "nope.ndjson"])
    assert caught.value.exit_code == 3
    with pytest.raises(SourceError, match="stdin"):
        read_inputs(["-"])


def test_a_pipe_is_read_as_a_stream_and_not_counted_ahead(tmp_path: Path) -> None:
    """``--input <(zcat day.ndjson.gz)`` or a FIFO: read once, as it is written, sniffed like stdin; the
    progress bar's count does not read it first (that would leave the run nothing)."""
    fifo = tmp_path / "events.ndjson"
    os.mkfifo(fifo)
    assert estimate_total([fifo]) is None

    def write() -> None:
        with fifo.open("w") as pipe:
            pipe.write('{"n": 1}\n{"n": 2}\n')

    writer = threading.Thread(target=write)
    writer.start()
    documents = list(read_inputs([fifo]))
    writer.join(timeout=10)
    assert [(d.origin, d.document) for d in documents] == [(f"{fifo}:1", {"n": 1}), (f"{fifo}:2", {"n": 2})]
    assert list(read_inputs([Path(os.devnull)])) == []


def test_estimated_totals(tmp_path: Path) -> None:
    (tmp_path / "a.ndjson").write_text('{"n": 1}\n{"n": 2}\n')
    assert estimate_total([tmp_path / "a.ndjson"]) == 2
    (tmp_path / "b.json").write_text("[]")
    assert estimate_total([tmp_path]) is None
    assert estimate_total(["-"]) is None


def test_a_bad_record_unwraps_to_a_located_source_error(tmp_path: Path) -> None:
    path = tmp_path / "lines.ndjson"
    path.write_text('{"id": 4}\n{"id": 5, \n')
    good, bad = read_inputs(path)
    assert good.unwrap() == {"id": 4}
    with pytest.raises(SourceError) as caught:
        bad.unwrap()
    assert (caught.value.file, caught.value.line, caught.value.exit_code) == (str(path), 2, 3)
    assert "not JSON" in caught.value.render()


def test_a_request_body_reads_as_strict_json_under_the_name_the_program_gives() -> None:
    # A web handler embedding shipmap has bytes, not a file: the public reader names its errors as it says.
    from shipmap.engine import read_stream as public_read_stream

    body = b'{\n  "id": 1,\n  "total": 1.5,,\n  "x": 2\n}'
    (bad,) = public_read_stream([body], "POST /hooks/orders")
    with pytest.raises(SourceError) as caught:
        bad.unwrap()
    assert str(caught.value.location) == "POST /hooks/orders:3:16"
    (nan,) = public_read_stream([b'{"a": NaN}'], "request 7")
    assert nan.location is not None and str(nan.location) == "request 7:1:7"
    assert [d.document for d in public_read_stream([b'{"id": 1}'], "request 8")] == [{"id": 1}]
