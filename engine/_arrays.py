"""The array builtins: ``sum()``, ``count()``, ``join()`` and ``coalesce()``. Jinja may hand them tuples or
generators (its ``map`` filter), JMESPath lists; null gives 0 or null, as each says.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from jinja2 import Undefined

from ._coerce import EXACT, decimal_from_text, decimal_result, int_in_range, int_result
from ._function_errors import FunctionError, fail, fail_element

__all__ = ["array_count", "array_join", "array_sum", "coalesce"]


def _elements(value: Any, expected: str) -> Sequence[Any]:
    """The elements of an array. Jinja may pass tuples or generators (``map``); JMESPath passes lists."""
    if isinstance(value, list | tuple):
        return value
    if isinstance(value, str | bytes | Mapping | Undefined) or not isinstance(value, Iterable):
        raise fail(expected, value)
    return list(value)


def array_sum(array: Any) -> int | float:
    """``sum()``: numbers and numeric text added exactly; nulls skipped; null or [] gives 0. Numbers past
    309 digits are refused, as by the arithmetic builtins."""
    if array is None:
        return 0
    whole = 0  # ints stay exact Python ints whatever their size
    fraction: Decimal | None = None
    for index, element in enumerate(_elements(array, "an array of numbers")):
        if element is None:
            continue
        if isinstance(element, bool):
            raise fail_element("an array of numbers", element, index)
        if isinstance(element, int):
            try:
                int_in_range(element)
            except FunctionError as error:
                raise FunctionError(f"{error.message} at index {index}") from None
            whole += element
            continue
        if isinstance(element, float):
            if not math.isfinite(element):
                raise fail_element("an array of finite numbers", element, index)
            number = Decimal(repr(element))
        elif isinstance(element, str):
            try:
                number = decimal_from_text(element, "an array of numbers or numeric text")
            except FunctionError as error:
                raise FunctionError(f"{error.message} at index {index}") from None
        else:
            raise fail_element("an array of numbers", element, index)
        fraction = number if fraction is None else EXACT.add(fraction, number)
    if fraction is None:
        return int_result(whole)
    return decimal_result(EXACT.add(fraction, Decimal(whole)))


def array_count(array: Any) -> int:
    """``count()``: the number of elements; null gives 0."""
    if array is None:
        return 0
    return len(_elements(array, "an array"))


def array_join(glue: Any, array: Any) -> str | None:
    """``join()``: JMESPath's join, plus: null array -> null, null elements skipped."""
    if not isinstance(glue, str):
        raise fail("a string as glue", glue)
    if array is None:
        return None
    parts: list[str] = []
    for index, element in enumerate(_elements(array, "an array of strings")):
        if isinstance(element, str):
            parts.append(element)
        elif element is not None:
            raise fail_element("an array of strings", element, index)
    return glue.join(parts)


def coalesce(*values: Any) -> Any:
    """``coalesce()``: the first argument that is neither null nor "" (nor Jinja's Undefined)."""
    for value in values:
        if value is None:
            continue
        if isinstance(value, str):
            if value:
                return value
            continue
        if isinstance(value, Undefined):
            continue
        return value
    return None
