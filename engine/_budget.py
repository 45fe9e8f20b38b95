"""The budget of one template evaluation: loop iterations and output size.

Every other bound in the template sandbox limits one operation (a repetition, a power, a concatenation);
nested loops multiply, so four nested ``{% for %}`` over 1,000 items would run 10^12 times. Each evaluation
of a template gets ``MAX_ITERATIONS`` loop iterations and ``MAX_OUTPUT_CHARS`` of output. Jinja charges a
loop through the ``_budget`` filter that each ``for`` is given, the fast path through ``spend`` before each
loop it runs; so both refuse the same templates, with the same located error.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from jinja2.exceptions import SecurityError

MAX_ITERATIONS = 100_000
MAX_OUTPUT_CHARS = 1_000_000

_REMAINING: ContextVar[list[int] | None] = ContextVar("shipmap_template_budget", default=None)


class BudgetExceeded(SecurityError):
    """A template evaluation went over its budget."""


def start() -> Any:
    """A fresh budget for one evaluation; give the token back to ``finish``."""
    return _REMAINING.set([MAX_ITERATIONS])


def finish(token: Any) -> None:
    _REMAINING.reset(token)


def spend(count: int) -> None:
    """Charge ``count`` loop iterations to the running evaluation."""
    remaining = _REMAINING.get()
    if remaining is None:
        return
    remaining[0] -= count
    if remaining[0] < 0:
        raise BudgetExceeded(
            f"the template runs more than {MAX_ITERATIONS:,} loop iterations (its budget); "
            "nested loops multiply: loop over less, or do the work in JMESPath"
        )


def budgeted(iterable: Any) -> Any:
    """The ``_budget`` filter: charge a loop's length up front (a list keeps Jinja's ``loop.length``), or
    each item of an iterator as it comes."""
    if hasattr(iterable, "__len__"):
        spend(len(iterable))
        return iterable
    return _counted(iterable)


def _counted(iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        spend(1)
        yield item


def check_output(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_OUTPUT_CHARS:
        raise BudgetExceeded(
            f"the template's output is longer than {MAX_OUTPUT_CHARS:,} characters (its budget)"
        )
    return value
