"""The lint behind ``shipmap validate``: one typo, one error, with the nearest name."""

from __future__ import annotations

from pathlib import Path

import pytest
from shipmap.engine import MappingError, parse_mapping, resolve_mapping_path
from shipmap.engine._lint import spec_keys

ROOT = Path(__file__).resolve().parents[2]
ORDER = (ROOT / "mappings/shopify/order.yaml").read_text(encoding="utf-8")
ID_LINE = "      id: {path: id, type: id, required: true}"


def lint(text: str) -> list[str]:
    return [
        f"{p.location.line if p.location else '-'}: {p.field} {p.message}" for p in parse_mapping(text).lint()
    ]


def line_of(text: str, fragment: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if fragment in line)


def test_the_ready_mapping_is_clean() -> None:
    assert lint(ORDER) == []


@pytest.mark.parametrize(
    "typo",
    [
        "      id: {pth: id, type: id, required: true}",
        "      id: {pth: id}",
        "      id: {paht: id, type: id}",
    ],
)
def test_a_misspelled_field_spec_key_is_one_error_naming_the_key(typo: str) -> None:
    assert ID_LINE in ORDER
    text = ORDER.replace(ID_LINE, typo)
    key = typo.split("{")[1].split(":")[0]
    assert lint(text) == [
        f"{line_of(text, typo)}: order.id unknown key '{key}' in a field spec; did you mean 'path'?"
    ]


def test_a_misspelled_target_field_is_one_error_not_a_missing_one_too() -> None:
    text = ORDER.replace("      number: name", "      numbr: name")
    assert lint(text) == [
        f"{line_of(text, 'numbr')}: order.numbr is not a field of fenix.order; did you mean 'number'?"
    ]


def test_a_misspelled_nested_field_inside_each() -> None:
    text = ORDER.replace("quantity: quantity", "quantty: quantity", 1)
    problems = lint(text)
    assert len(problems) == 1
    assert "quantty is not a field of fenix.order; did you mean 'quantity'?" in problems[0]


def test_a_nested_object_where_the_kind_wants_a_value_without_a_near_spec_key() -> None:
    text = ORDER.replace(ID_LINE, "      id: {value: id}")
    (problem,) = lint(text)
    assert "order.id is string in fenix.order, but the mapping builds an object of fields (value)" in problem


def test_field_spec_keys_come_from_the_mapping_schema() -> None:
    # So keys the language gains (let, each, ...) are known to the lint without a list kept beside it.
    from shipmap.engine import mapping_format_schema

    assert spec_keys() == sorted(mapping_format_schema()["$defs"]["field_spec"]["properties"])
    assert {"path", "template", "literal", "each", "fields", "default"} <= set(spec_keys())


def test_an_unknown_packaged_mapping_suggests_the_nearest_names() -> None:
    with pytest.raises(MappingError) as raised:
        resolve_mapping_path("shopify/ordr")
    hint = raised.value.hint or ""
    assert hint.startswith("did you mean shopify/order or ") and "shopify/order_cancelled" in hint
    with pytest.raises(MappingError) as raised:
        resolve_mapping_path("nothing/like/it")
    assert raised.value.hint is None
