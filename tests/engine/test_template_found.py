"""A function failing inside a template's loop, on a real Shopify order: the error's found: line names the
loop's item by its place in the document, with its value (tests/fixtures/engine/template_loop_items.yaml)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from shipmap.engine import TransformError, load_mapping, parse_mapping

FIXTURES = Path(__file__).parent.parent / "fixtures"
MAPPING = FIXTURES / "engine/template_loop_items.yaml"
ORDER = json.loads(
    (FIXTURES / "real/shopify/order_rest_get_with_fulfillment.json").read_text(encoding="utf-8")
)


def _line(order: dict[str, Any], index: int) -> dict[str, Any]:
    line: dict[str, Any] = order["order"]["line_items"][index]
    return line


def _no_sku(order: dict[str, Any]) -> None:
    _line(order, 2)["sku"] = None


def _quantity_as_words(order: dict[str, Any]) -> None:
    _line(order, 1)["quantity"] = "two"


def _numeric_engraving(order: dict[str, Any]) -> None:
    _line(order, 0)["properties"][0]["value"] = 5


def test_the_fixture_maps_the_order_whole() -> None:
    payload = load_mapping(MAPPING).transform(ORDER, validate=False)["order"]
    assert payload["properties"] == {"picking": "EAST:1, EAST:1, WEST:1", "engraving": "HAPPY BIRTHDAY "}


@pytest.mark.parametrize(
    ("breaks", "message", "field", "found"),
    [
        (
            _no_sku,
            "lookup(): lookup table 'warehouse' has no entry for null and no default",
            "order.properties.picking",
            "order.line_items[2].sku = null",
        ),
        (
            _quantity_as_words,
            'integer(): expected an integer or integer text such as "007", found string "two"',
            "order.properties.picking",
            'order.line_items[1].quantity = "two"',
        ),
        (
            _numeric_engraving,
            "upper(): expected a string, found number 5",
            "order.properties.engraving",
            "order.line_items[0].properties[0].value = 5",
        ),
    ],
    ids=["lookup of a missing sku", "integer of words", "nested loop"],
)
def test_a_function_failing_on_one_line_item_names_that_item(
    breaks: Callable[[dict[str, Any]], None], message: str, field: str, found: str
) -> None:
    order = copy.deepcopy(ORDER)
    breaks(order)
    mapping = load_mapping(MAPPING)
    with pytest.raises(TransformError) as caught:
        mapping.transform(order, validate=False)
    error = caught.value
    assert error.message == message
    assert error.field == field
    assert error.found == (found,)
    assert f"\n  found: {found}\n" in error.render()
    # The same mapping, the same error, once the template has failed before (its replay is compiled then).
    with pytest.raises(TransformError) as again:
        mapping.transform(order, validate=False)
    assert again.value.render() == error.render()
    assert (
        mapping.transform(ORDER, validate=False)["order"]["properties"]["picking"] == "EAST:1, EAST:1, WEST:1"
    )


def test_the_replay_that_finds_the_item_has_a_budget_of_its_own() -> None:
    """The failing run spent 90,300 of its 100,000 loop iterations; the replay spends as many again."""
    mapping = parse_mapping(
        "shipmap: 1\n"
        "targets:\n"
        "  t:\n"
        "    kind: fenix.order\n"
        "    fields:\n"
        '      x: "{% for a in this.items %}{% for b in this.items %}{% endfor %}{{ integer(a) }}{% endfor %}"\n',
        file="budget.yaml",
    )
    items = ["1"] * 299 + ["x"]
    with pytest.raises(TransformError) as caught:
        mapping.transform({"items": items}, validate=False)
    assert caught.value.found == ('items[299] = "x"',)
    with pytest.raises(TransformError) as over:  # 20 more items: the first run itself is over budget
        mapping.transform({"items": ["1"] * 20 + items}, validate=False)
    assert "loop iterations (its budget)" in over.value.message
    assert over.value.found == ()


SET_FILTER = FIXTURES / "engine/template_set_filter.yaml"


@pytest.mark.parametrize(
    ("breaks", "message", "found"),
    [
        (
            _no_sku,
            "lookup(): lookup table 'warehouse' has no entry for null and no default",
            "order.line_items[2].sku = null",
        ),
        (
            _quantity_as_words,
            'integer(): expected an integer or integer text such as "007", found string "two"',
            'order.line_items[1].quantity = "two"',
        ),
    ],
    ids=["a set variable of a loop's item", "a function used as a filter"],
)
def test_set_variables_and_filters_name_the_line_item(
    breaks: Callable[[dict[str, Any]], None], message: str, found: str
) -> None:
    """template_set_filter.yaml: a loop over `{% set lines = this.line_items %}`, each line's sku read through
    `{% set sku = line.sku %}`, each quantity through `| integer`."""
    mapping = load_mapping(SET_FILTER)
    assert mapping.transform(ORDER, validate=False)["order"]["properties"] == {
        "picking": "EAST:1, EAST:1, WEST:1",
        "shipped": "199 199 199 ",
    }
    order = copy.deepcopy(ORDER)
    breaks(order)
    with pytest.raises(TransformError) as caught:
        mapping.transform(order, validate=False)
    error = caught.value
    assert error.message == message
    assert error.field == "order.properties.picking"
    assert error.found == (found,)
    assert f"\n  found: {found}\n" in error.render()


def test_a_loop_over_the_line_items_that_ship_names_the_item_in_the_order() -> None:
    """The first line does not ship: the loop over `this.line_items | selectattr('requires_shipping')` fails
    on its second item, which is the order's third line."""
    order = copy.deepcopy(ORDER)
    _line(order, 0)["requires_shipping"] = False
    _line(order, 2)["price"] = "n/a"
    with pytest.raises(TransformError) as caught:
        load_mapping(SET_FILTER).transform(order, validate=False)
    error = caught.value
    assert error.message == 'money(): expected a number or numeric text such as "14.99", found string "n/a"'
    assert error.field == "order.properties.shipped"
    assert error.found == ('order.line_items[2].price = "n/a"',)


WITH_MACRO_MAP = FIXTURES / "engine/template_with_macro_map.yaml"
_DATE_EXPECTED = (
    'date(): expected a date-time such as "2020-01-23T10:14:15-05:00" (accepted: ISO 8601 with offset, Z or no '
    'offset; "YYYY-MM-DD HH:MM:SS[.fff][ ±HH:MM]"; RFC 2822 such as "Mon, 20 Nov 2023 10:00:00 -0500"; '
    '"YYYY-MM-DD"; Unix epoch seconds as a number)'
)


def _latitude_unknown(order: dict[str, Any]) -> None:
    order["order"]["shipping_address"]["latitude"] = "unknown"


def _placed_yesterday(order: dict[str, Any]) -> None:
    order["order"]["created_at"] = "yesterday"


def _price_on_request(order: dict[str, Any]) -> None:
    _line(order, 2)["price"] = "on request"


@pytest.mark.parametrize(
    ("breaks", "message", "line", "column", "field", "found"),
    [
        (
            _latitude_unknown,
            'number(): expected a number or numeric text such as "14.99", found string "unknown"',
            13,
            18,
            "order.properties.ship_to",
            'order.shipping_address.latitude = "unknown"',
        ),
        (
            _quantity_as_words,
            'integer(): expected an integer or integer text such as "007", found string "two"',
            15,
            16,
            "order.properties.units",
            'order.line_items[1].quantity = "two"',
        ),
        (
            _price_on_request,
            'money(): expected a number or numeric text such as "14.99", found string "on request"',
            17,
            17,
            "order.properties.prices",
            'order.line_items[2].price = "on request"',
        ),
        (
            _placed_yesterday,
            f'{_DATE_EXPECTED}, found string "yesterday"',
            18,
            17,
            "order.properties.placed",
            'order.created_at = "yesterday"',
        ),
    ],
    ids=[
        "a with target",
        "a macro's argument",
        "a function mapped over the items",
        "a function's filter block",
    ],
)
def test_with_macro_map_and_filter_block_name_the_value_in_the_order(
    breaks: Callable[[dict[str, Any]], None], message: str, line: int, column: int, field: str, found: str
) -> None:
    """template_with_macro_map.yaml: `{% with address = this.shipping_address %}`, a macro given each line,
    `this.line_items | map(attribute='price') | map('money')` and `{% filter date %}` on a real Shopify order,
    each broken in one value."""
    mapping = load_mapping(WITH_MACRO_MAP)
    assert mapping.transform(ORDER, validate=False)["order"]["properties"] == {
        "ship_to": "Louisville 45.41634",
        "units": "IPOD2008GREENx1 IPOD2008REDx1 IPOD2008BLACKx1 ",
        "prices": "199, 199, 199",
        "placed": "2008-01-10",
    }
    order = copy.deepcopy(ORDER)
    breaks(order)
    with pytest.raises(TransformError) as caught:
        mapping.transform(order, validate=False)
    error = caught.value
    assert error.found == (found,)
    assert Path(error.file).resolve() == WITH_MACRO_MAP.resolve()
    assert error.render().startswith(
        f"{error.file}:{line}:{column}: error: {message}\n  target field: {field}\n  source: order\n"
        f"  found: {found}\n"
    ), error.render()


# Two uses of integer in one template: the order's weight, and each line's grams and quantity.
WEIGHTS = (
    "shipmap: 1\n"
    "targets:\n"
    "  order:\n"
    "    kind: fenix.order\n"
    '    from: "order"\n'
    "    fields:\n"
    "      weights: >-\n"
    "        {{ integer(this.total_weight) }}:{% for line in this.line_items %}"
    "{{ line.grams | integer }}x{{ integer(line.quantity) }} {% endfor %}\n"
)


def _weight_as_words(order: dict[str, Any]) -> None:
    order["order"]["total_weight"] = "light"


def _grams_as_words(order: dict[str, Any]) -> None:
    _line(order, 2)["grams"] = "two hundred"


@pytest.mark.parametrize(
    ("breaks", "value", "found"),
    [
        (_quantity_as_words, '"two"', 'order.line_items[1].quantity = "two"'),
        (_weight_as_words, '"light"', 'order.total_weight = "light"'),
        (_grams_as_words, '"two hundred"', 'order.line_items[2].grams = "two hundred"'),
    ],
    ids=["a line's quantity", "the order's weight", "a line's grams, as a filter"],
)
def test_of_several_uses_of_a_function_only_the_one_that_fails_is_named(
    breaks: Callable[[dict[str, Any]], None], value: str, found: str
) -> None:
    """The uses that do not fail on what they were given (the weight, every line's grams and quantity but
    the broken one) are not named."""
    mapping = parse_mapping(WEIGHTS, file="weights.yaml")
    assert mapping.transform(ORDER, validate=False)["order"]["weights"] == "0:200x1 200x1 200x1 "
    order = copy.deepcopy(ORDER)
    breaks(order)
    with pytest.raises(TransformError) as caught:
        mapping.transform(order, validate=False)
    error = caught.value
    message = f'integer(): expected an integer or integer text such as "007", found string {value}'
    assert error.render().startswith(
        f"weights.yaml:7:16: error: {message}\n  target field: order.weights\n  source: order\n"
    ), error.render()
    assert error.found == (found,)
