"""An error inside a template written over many lines points at its own line of the mapping file, on a real
order: the cases in cases/template_lines.yaml break one line of tests/fixtures/engine/template_packing_slip.yaml
(or one value of the order) and give the whole error as it renders."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from shipmap.engine import ShipmapError, load_mapping, parse_mapping

FIXTURES = Path(__file__).parent.parent / "fixtures"
MAPPING = FIXTURES / "engine/template_packing_slip.yaml"
ORDER = json.loads(
    (FIXTURES / "real/shopify/order_rest_get_with_fulfillment.json").read_text(encoding="utf-8")
)
CASES = yaml.safe_load((Path(__file__).parent / "cases" / "template_lines.yaml").read_text(encoding="utf-8"))


def test_the_fixture_maps_the_order_whole() -> None:
    payload = load_mapping(MAPPING).transform(ORDER, validate=False)["order"]
    assert payload["properties"] == {
        "packing_slip": "Order #1001 for Bob Norman\n"
        "- 1 x IPod Nano - 8gb (EAST)\n- 1 x IPod Nano - 8gb (EAST)\n- 1 x IPod Nano - 8gb (WEST)\n"
        "Weight: 0 g",
        "gift_note": "\nCUSTOM ENGRAVING: Happy Birthday\nCOLOUR: green",
    }


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_an_error_in_a_template_points_at_its_line(case: dict[str, Any]) -> None:
    text = MAPPING.read_text(encoding="utf-8")
    if "replace" in case:
        old, new = case["replace"]
        assert text.count(old) == 1, f"the case's text is not in the fixture once: {old!r}"
        text = text.replace(old, new)
    order = copy.deepcopy(ORDER)
    if "order" in case:
        path, value = case["order"]
        place: Any = order
        for step in path[:-1]:
            place = place[step]
        place[path[-1]] = value
    with pytest.raises(ShipmapError) as caught:
        parse_mapping(text, file=MAPPING.name).transform(order, validate=False)
    assert caught.value.render() == case["rendered"].rstrip("\n")
