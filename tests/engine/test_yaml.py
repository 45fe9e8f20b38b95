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
