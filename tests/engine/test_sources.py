"""Reading source documents: JSON, arrays, NDJSON (streamed, bad lines reported in place), directories, stdin."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from shipmap.engine import SourceError, read_documents


def test_json_object_array_and_ndjson(tmp_path: Path) -> None:
    (tmp_path / "one.json").write_text('{"id": 1}')
    (tmp_path / "many.json").write_text('[{"id": 2}, {"id": 3}]')
    (tmp_path / "lines.ndjson").write_text('{"id": 4}\n\n{"id": 5, \n{"id": 6}\n')
    assert [d.data for d in read_documents(tmp_path / "one.json")] == [{"id": 1}]
    assert [(str(d.location), d.data) for d in read_documents(tmp_path / "many.json")] == [
        (f"{tmp_path / 'many.json'}[0]:1:1", {"id": 2}),
        (f"{tmp_path / 'many.json'}[1]:1:1", {"id": 3}),
    ]
    lines = list(read_documents(tmp_path / "lines.ndjson"))
    assert [d.data for d in lines] == [{"id": 4}, None, {"id": 6}]
    bad = lines[1].error
    assert bad is not None and bad.line == 3 and "line 3 is not JSON" in bad.message
    with pytest.raises(SourceError):
        lines[1].unwrap()


def test_directory_reads_every_json_file_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text('{"n": "b"}')
    (tmp_path / "a.json").write_text('{"n": "a"}')
    (tmp_path / "notes.txt").write_text("ignored")
    assert [d.data["n"] for d in read_documents(tmp_path)] == ["a", "b"]


def test_stdin_streams_ndjson_and_reads_a_whole_document() -> None:
    assert [d.data for d in read_documents("-", stdin=io.StringIO('{"a":1}\n{"a":2}\n'))] == [
        {"a": 1},
        {"a": 2},
    ]
    pretty = '{\n  "a": {\n    "b": 1\n  }\n}\n'
    assert [d.data for d in read_documents("-", stdin=io.StringIO(pretty))] == [{"a": {"b": 1}}]


def test_a_broken_json_file_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "id": 1,\n  "x": tru\n}')
    with pytest.raises(SourceError) as caught:
        list(read_documents(path))
    assert (caught.value.line, caught.value.column) == (3, 8)
    assert caught.value.exit_code == 3


def test_a_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot read source"):
        list(read_documents(tmp_path / "nope.json"))
