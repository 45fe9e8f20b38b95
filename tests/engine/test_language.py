"""Runs the data-driven language cases in cases/language.yaml (given, mapping, then result or error)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import shipmap.engine as engine
import yaml

CASES = yaml.safe_load((Path(__file__).parent / "cases" / "language.yaml").read_text(encoding="utf-8"))


def _mapping_text(case: dict[str, Any]) -> str:
    if "mapping" in case:
        return str(case["mapping"])
    fields = yaml.safe_dump({"fields": case["fields"]}, sort_keys=False, default_flow_style=False)
    indented = "".join(f"    {line}\n" for line in fields.splitlines())
    return f"shipmap: 1\ntargets:\n  t:\n    kind: fenix.order\n{indented}"


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_case(case: dict[str, Any]) -> None:
    text = _mapping_text(case)
    if "error" in case:
        expected = case["error"]
        with pytest.raises(engine.ShipmapError) as caught:
            mapping = engine.parse_mapping(text, file="case.yaml")
            mapping.transform(case["given"], validate=False)
        error = caught.value
        assert type(error).__name__ == expected["type"], error.render()
        rendered = error.render()
        assert error.file == "case.yaml"
        if "message" in expected:
            assert expected["message"] in error.message, rendered
        for attribute in ("line", "column", "field", "source_path"):
            if attribute in expected:
                assert getattr(error, attribute) == expected[attribute], rendered
        if expected.get("located"):  # the whole message, its place and its field, as a user reads them
            where = f"{error.file}:{expected['line']}:{expected['column']}"
            head = f"{where}: error: {expected['message']}\n  target field: {expected['field']}\n"
            assert rendered.startswith(head), rendered
        if "rendered" in expected:  # the whole text a user reads, caret and all
            assert rendered == expected["rendered"].rstrip("\n"), rendered
        if "value" in expected:
            assert error.has_value and error.value == expected["value"], rendered
        if "hint" in expected:
            assert error.hint and expected["hint"] in error.hint, rendered
        if "found" in expected:  # the source fields a failing function was given, as rendered
            assert list(error.found) == expected["found"], rendered
            assert ("found: " + ", ".join(expected["found"]) in rendered) == bool(expected["found"]), rendered
        assert "Traceback" not in rendered
        return
    mapping = engine.parse_mapping(text, file="case.yaml")
    result = mapping.transform(case["given"], validate=False)
    if "results" in case:  # every payload by label: fan-out targets give name[key] per element
        assert result == case["results"]
        return
    assert result.get("t", result.get("created")) == case["result"]
