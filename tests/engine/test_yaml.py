"""The located YAML loader (engine/_yaml.py): libyaml composes the node tree when it can, PyYAML's Python
reader otherwise. Both must give the same document and the same locations, and every error is PyYAML's."""

from __future__ import annotations

from pathlib import Path

import pytest
from shipmap.engine import MappingSyntaxError, _yaml
from shipmap.engine._functions import lookup_key
from shipmap.engine._yaml import load_located

ROOT = Path(__file__).parents[2]
YAML_FILES = sorted(
    path
    for folder in ("mappings", "examples", "tests/fixtures", "tests/engine/cases")
    for path in (ROOT / folder).rglob("*.yaml")
)


def _python_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_yaml, "_compose_in_c", lambda text: _yaml._FAILED)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_libyaml_and_the_python_reader_give_the_same_located_document(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = path.read_text(encoding="utf-8")
    assert _yaml._compose_in_c(text) is not _yaml._FAILED  # the fast reader is the one that ran
    fast = load_located(text, path.name, lookup_key)
    _python_reader(monkeypatch)
    slow = load_located(text, path.name, lookup_key)
    assert fast.value == slow.value
    assert fast.locations == slow.locations


@pytest.mark.parametrize(
    "text",
    [
        "a: [1, 2\n",
        "a: b: c\n",
        "a:\n  - x\n - y\n",
        'k: "\\ud800"\n',  # libyaml refuses the escape; PyYAML reads it
        "a: " + "[" * 5000 + "]" * 5000 + "\n",
        "x: 1\n\tz: 2\n",
    ],
    ids=["unclosed flow", "nested mapping value", "bad indentation", "surrogate escape", "deep", "tab"],
)
def test_what_libyaml_refuses_is_read_or_worded_by_the_python_reader(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def outcome() -> object:
        try:
            document = load_located(text, "t.yaml", lookup_key)
        except MappingSyntaxError as error:
            return error.render()
        return document.value, document.locations

    first = outcome()
    _python_reader(monkeypatch)
    assert first == outcome()


# Where line N of a text value is written: (YAML, the line of the value, the file's line and column expected,
# or None where the value's lines have no exact place and the start is given with a note).
_TEXT_PLACES = [
    pytest.param("x: |\n  a\n  {{ b }}\n", 2, (3, 3), id="literal block"),
    pytest.param(
        "x: |2\n     a\n   b\n", 1, (2, 6), id="an indentation indicator keeps the first line's spaces"
    ),
    pytest.param("x: |\n  a\n\n  b\n", 3, (4, 3), id="a blank line with no indentation is still a line"),
    pytest.param("x: |\r\n  a\r\n  b\r\n", 2, (3, 3), id="CRLF line ends"),
    pytest.param("x: |+\n  a\n\n\ny: 1\n", 3, (2, 3), id="kept trailing line breaks: no line past the text"),
    pytest.param("x:\n  - |-\n      a\n      b\n", 2, (4, 7), id="in a list"),
    pytest.param("x: >\n  a\n\n  b\n", 2, None, id="folded"),
    pytest.param('x: "a\n\n  b"\n', 2, None, id="double-quoted"),
    pytest.param("x: a\n\n  b\n", 2, None, id="plain"),
]


@pytest.mark.parametrize(("text", "line", "expected"), _TEXT_PLACES)
def test_a_line_of_a_text_value_is_placed_where_it_is_written(
    text: str, line: int, expected: tuple[int, int] | None
) -> None:
    document = load_located(text, "m.yaml", str)
    path: tuple[str | int, ...] = ("x", 0) if isinstance(document.value["x"], list) else ("x",)
    value = document.value["x"][0] if path[-1] == 0 else document.value["x"]
    place, note = document.text_place(path).locate(value, line)
    if expected is None:
        assert (place, note) == (document.where(path), f" (at line {line} in the template starting here)")
        return
    assert (place.line, place.column, note) == (*expected, "")
    assert place.line_text == text.splitlines()[expected[0] - 1]


# Where a character of a value folded over several lines is written: (YAML, the text of the value the character
# starts, the file's line and column expected, or None where the file's characters are not the value's).
_FOLDED_CHARACTERS = [
    pytest.param("x: >-\n  join(', ',\n    [upper(a), integer(b)])\n", "integer", (3, 16), id="folded"),
    pytest.param("x: >-\n  upper(a) ||\n  upper(a, b)\n", "upper(a) ", (2, 3), id="folded, first line"),
    pytest.param("x: >\n  a ||\n\n    b ||\n  c\n", "c", (5, 3), id="folded, blank and more-indented lines"),
    pytest.param("x: b ||\n  nope(a)\n", "nope", (2, 3), id="plain"),
    pytest.param("- b ||\n  nope(a)\n", "nope", (2, 3), id="plain, in a list"),
    pytest.param('x: "b ||\n  nope(a)"\n', "nope", (2, 3), id="double-quoted"),
    pytest.param('x: "a == \\"q\\" ||\n  nope(a)"\n', "nope", (2, 3), id="double-quoted, escaped quotes"),
    pytest.param("x: 'a == ''q'' ||\n  nope(a)'\n", "nope", (2, 3), id="single-quoted, doubled quotes"),
    pytest.param(
        'x: "a\\tb ||\n  nope(a)"\n', "nope", None, id="double-quoted, an escape that changes the text"
    ),
    pytest.param("x: |\n  a ||\n  nope(a)\n", "nope", None, id="literal block: locate() places its lines"),
]


@pytest.mark.parametrize(("text", "starting", "expected"), _FOLDED_CHARACTERS)
def test_a_character_of_a_folded_value_is_placed_where_it_is_written(
    text: str, starting: str, expected: tuple[int, int] | None
) -> None:
    document = load_located(text, "m.yaml", str)
    path: tuple[str | int, ...] = (0,) if isinstance(document.value, list) else ("x",)
    value = document.value[0] if path == (0,) else document.value["x"]
    place = document.text_place(path).character(value, value.index(starting))
    if expected is None:
        assert place is None
        return
    assert place is not None and (place.line, place.column) == expected
    assert place.line_text == text.splitlines()[expected[0] - 1]
    assert place.line_text[place.column - 1 :].startswith(starting.split(" ")[0][:4])


def test_a_text_that_is_not_the_blocks_own_is_placed_at_its_start() -> None:
    document = load_located("x: |\n  a\n  b\n", "m.yaml", str)
    assert document.text_place(("x",)).locate("a\nc\n", 2) == (
        document.where(("x",)),
        " (at line 2 in the template starting here)",
    )
