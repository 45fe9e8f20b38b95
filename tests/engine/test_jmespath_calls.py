"""Where each call of a JMESPath expression is written (engine/_jmespath_calls.py): the Nth call of the tree
the compiler checks is the Nth that call_offsets places, at its own name, whatever the expression's shape; and
which call raised an error at run time."""

from __future__ import annotations

import jmespath
import jmespath.exceptions
import pytest
from shipmap.engine._errors import Location
from shipmap.engine._expressions import _FailurePlace
from shipmap.engine._functions import FunctionError
from shipmap.engine._jmespath_calls import call_offsets, calls, raising_call

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


def _raised(expression: str, data: object) -> tuple[BaseException, dict[str, object]]:
    parsed = jmespath.compile(expression)
    with pytest.raises(jmespath.exceptions.JMESPathTypeError) as caught:
        parsed.search(data)
    return caught.value, parsed.parsed


@pytest.mark.parametrize(
    ("expression", "data", "raised_at"),
    [
        ("[abs(a), abs(b)]", {"a": 1, "b": "x"}, 9),
        ("[abs(a), abs(b)]", {"a": "x", "b": 1}, 1),
        ("map(&abs(@), items) || abs(a)", {"items": [1, "x"], "a": 1}, 5),
        ("abs(a) | [abs(@), length(abs(b))]", {"a": -1, "b": "x"}, 25),
    ],
)
def test_the_call_that_raised_is_the_one_jmespaths_interpreter_was_running(
    expression: str, data: object, raised_at: int
) -> None:
    error, tree = _raised(expression, data)
    number = raising_call(error, tree, "abs")
    assert number is not None
    assert call_offsets(expression)[number] == ("abs", raised_at)


def test_no_call_is_named_when_no_interpreter_ran_the_tree() -> None:
    """Plain Python raised it (an expression compiled to Python): which call did is not known here."""
    _, tree = _raised("[abs(a), abs(b)]", {"a": 1, "b": "x"})
    try:
        raise FunctionError("expected a number", function="abs")
    except FunctionError as error:
        assert raising_call(error, tree, "abs") is None


def test_an_error_no_call_can_be_told_for_stays_at_the_start_and_counts_the_calls() -> None:
    """The message of a failure whose call is unknown says how many calls of the function it may be."""
    tree = jmespath.compile("add(integer(a), integer(b))").parsed
    start = Location("case.yaml", 6, 10, "      x: add(integer(a), integer(b))")
    placed = _FailurePlace(tree, start, lambda number: Location("case.yaml", 6, 99, ""))
    try:
        raise FunctionError("integer(): expected an integer", function="integer")
    except FunctionError as error:
        assert placed(error, {}) == (start, " (in one of the 2 calls of integer())")
