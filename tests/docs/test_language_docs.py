"""The mapping-language.md snippets for let, fan-out and several documents per event run as the page says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from shipmap.engine import TransformError, parse_mapping

PAGE = (Path(__file__).parents[2] / "docs" / "mapping-language.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", PAGE, re.S)


def _block(language: str, starts: str, after: str = "") -> str:
    section = PAGE.split(after, 1)[1] if after else PAGE
    for found_language, body in re.findall(r"```(\w*)\n(.*?)```", section, re.S):
        if found_language == language and body.startswith(starts):
            return str(body)
    raise AssertionError(f"no {language} block starting {starts!r}")


def _let_mapping() -> str:
    snippet = _block("yaml", "line_items:\n  each: items\n  let:")
    fields = "".join(f"        {line}\n" for line in snippet.splitlines())
    return (
        "shipmap: 1\nfragments:\n  product_details: {sku: sku}\ntargets:\n  shipment:\n    kind: fenix.fulfillment\n"
        "    each: $root.shipments\n    fields:\n" + fields
    )


def test_the_whole_file_compiles() -> None:
    parse_mapping(_block("yaml", "shipmap: 1"), file="docs/mapping-language.md")


def test_the_let_snippet_joins_once_per_item() -> None:
    mapping = parse_mapping(_let_mapping(), file="bc.yaml")
    event = {
        "currency_code": "EUR",
        "products": [{"id": 5, "sku": "MUG", "name": "Mug &amp; Co", "price": "8.50"}],
        "shipments": [{"items": [{"order_product_id": 5}]}],
    }
    [line] = mapping.transform(event, validate=False)["shipment[0]"]["line_items"]
    assert line == {
        "sku": "MUG", "title": "Mug & Co", "price": {"value": 8.5, "currency": "EUR"}, "details": {"sku": "MUG"}
    }  # fmt: skip


def test_a_failed_let_reads_as_the_page_shows() -> None:
    mapping = parse_mapping(_let_mapping(), file="mappings/bc.yaml")
    event = {"products": {"id": 1}, "shipments": [{"items": [{"order_product_id": 5}]}]}
    with pytest.raises(TransformError) as caught:
        mapping.transform(event, validate=False)
    shown = _block("", "mappings/bc.yaml:", after="## Variables: let")
    first, second = shown.splitlines()[:2]
    rendered = caught.value.render().splitlines()
    assert re.sub(r":\d+:\d+:", ":L:C:", rendered[0]) == re.sub(r":\d+:\d+:", ":L:C:", first)
    assert rendered[1] == second


def test_the_fan_out_and_documents_snippets_map_the_event_shown() -> None:
    text = _block("yaml", "targets:\n  fulfillment:", after="## Several documents per event")
    event = json.loads(_block("json", '{"order"', after="## Several documents per event"))
    mapping = parse_mapping("shipmap: 1\n" + text, file="docs/mapping-language.md")
    assert mapping.transform(event, validate=False) == {"fulfillment[7]": {"order_id": "100"}}
    fan_out = _block("yaml", "targets:\n  fulfillment:", after="## Fan-out")
    mapping = parse_mapping("shipmap: 1\n" + fan_out, file="docs/mapping-language.md")
    shipments = [{"id": 7, "tracking_number": "1Z"}, {"id": 8, "tracking_number": None}]
    result = mapping.transform({"order": {"id": 9}, "shipments": shipments}, validate=False)
    assert result == {"fulfillment[7]": {"id": "7", "order_id": "9"}}


def test_the_error_in_a_many_line_template_is_the_one_the_page_shows() -> None:
    snippet = _block("yaml", "    fields:\n      properties:\n        packing_slip: |-", after="## Errors")
    shown = _block("", "mappings/acme.yaml:11:", after="## Errors")
    mapping = parse_mapping(
        'shipmap: 1\ntargets:\n  order:\n    kind: fenix.order\n    from: "order || @"\n' + snippet,
        file="mappings/acme.yaml",
    )
    order = {"order": {"name": "#1", "line_items": [{"quantity": 1, "title": "a"}, {"quantity": "two"}]}}
    with pytest.raises(TransformError) as caught:
        mapping.transform(order, validate=False)
    assert caught.value.render() == shown.rstrip("\n")
