"""Where each call of a JMESPath expression is written (engine/_jmespath_calls.py): the Nth call of the tree
the compiler checks is the Nth that call_offsets places, at its own name, whatever the expression's shape."""

from __future__ import annotations

import jmespath
import pytest
from shipmap.engine._jmespath_calls import call_offsets, calls

EXPRESSIONS = [
    "length(a)",
    "join(', ', map(&sku, items(@)))",
    "a.b | foo(bar(@), `1`, 'x', &c) || baz(d)",
    "[length(a), keys(b)] | max(@)",
    "{n: count(items), s: sum(items[?qty > `0`].qty)}",
    "items[?contains(tags, 'gift')].sku | sort(@)",
    "f(\n  g(a),\n    h(b, i(c)))",
    "a  ||  not_null  (b)",
    "items[*].price",
    "items[?starts_with(sku, 'A')].length(name)",  # a filter's tree holds its test last, after what follows it
]


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_each_call_is_placed_at_its_name_in_the_order_the_checks_meet_it(expression: str) -> None:
    checked = [call["value"] for call in calls(jmespath.compile(expression).parsed)]
    placed = call_offsets(expression)
    assert [name for name, _ in placed] == checked
    for name, offset in placed:
        assert expression[offset : offset + len(name)] == name
        assert expression[offset + len(name) :].lstrip().startswith("(")


def test_calls_are_met_outer_before_inner_and_left_before_right() -> None:
    expression = "f(g(h(a)), i(b)) | j(@)"
    assert [name for name, _ in call_offsets(expression)] == ["f", "g", "h", "i", "j"]
    assert call_offsets(expression) == [("f", 0), ("g", 2), ("h", 4), ("i", 11), ("j", 19)]


def test_a_tree_jmespath_cached_is_not_the_one_placed() -> None:
    """The placing parser builds a tree of its own: the positions it notes are of nodes no cache hands out."""
    expression = "upper(a) || lower(b)"
    jmespath.compile(expression)
    assert call_offsets(expression) == [("upper", 0), ("lower", 12)]
    assert call_offsets(expression) == [("upper", 0), ("lower", 12)]
