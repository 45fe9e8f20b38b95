"""Arithmetic for mappings: ``add``, ``subtract``, ``multiply``, ``divide``, ``round`` and ``from_minor``.

JMESPath has no arithmetic and Python floats are wrong for money (0.1 + 0.2), so every operation reads its
operands as Decimal (a float through its shortest repr, which round-trips, numeric text as written), computes
exactly, and gives an int when the result is whole, else the float nearest the exact decimal. Null in, null
out, so a missing amount stays missing instead of becoming 0. Operands and results past 309 digits (a float's
range) are refused with a FunctionError, never a decimal exception.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal, DecimalException, localcontext
from typing import Any

from ._coerce import EXACT, decimal_from_text, decimal_result, int_in_range
from ._errors import preview_value
from ._function_errors import FunctionError

__all__ = ["add", "divide", "from_minor", "multiply", "round_number", "subtract", "to_decimal"]

_EXPECTED = 'a number or numeric text such as "14.99"'
_PRECISION = 34  # digits kept by a division; far beyond any amount


def to_decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise FunctionError(f"expected {_EXPECTED}, found boolean {preview_value(value)}")
    if isinstance(value, int):
        return Decimal(int_in_range(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FunctionError(f"expected a finite number, found {preview_value(value)}")
        return Decimal(repr(value))
    if isinstance(value, str):
        return decimal_from_text(value, _EXPECTED)
    raise FunctionError(f"expected {_EXPECTED}, found {type(value).__name__} {preview_value(value)}")


def add(left: Any, right: Any) -> int | float | None:
    if left is None or right is None:
        return None
    return decimal_result(EXACT.add(to_decimal(left), to_decimal(right)))


def subtract(left: Any, right: Any) -> int | float | None:
    if left is None or right is None:
        return None
    return decimal_result(EXACT.subtract(to_decimal(left), to_decimal(right)))


def multiply(left: Any, right: Any) -> int | float | None:
    if left is None or right is None:
        return None
    return decimal_result(EXACT.multiply(to_decimal(left), to_decimal(right)))


def divide(left: Any, right: Any) -> int | float | None:
    if left is None or right is None:
        return None
    divisor = to_decimal(right)
    if divisor == 0:
        raise FunctionError(f"division by zero ({preview_value(left)} / {preview_value(right)})")
    with localcontext() as context:
        context.prec = _PRECISION
        try:
            quotient = to_decimal(left) / divisor
        except DecimalException:  # a divisor such as "1e-999999999": the quotient's exponent overflows
            raise FunctionError(
                f"the result of {preview_value(left)} / {preview_value(right)} is too large"
            ) from None
    return decimal_result(quotient)


def round_number(value: Any, places: Any = 0) -> int | float | None:
    """Half away from zero (2.345 -> 2.35, -0.5 -> -1), as money is rounded, not Python's half-to-even."""
    if value is None:
        return None
    if isinstance(places, bool) or not isinstance(places, int) or not 0 <= places <= 12:
        raise FunctionError(f"expected a number of places from 0 to 12, found {preview_value(places)}")
    step = Decimal(1).scaleb(-places)
    return decimal_result(to_decimal(value).quantize(step, rounding=ROUND_HALF_UP, context=EXACT))


def from_minor(amount: Any, exponent: int) -> int | float | None:
    """An amount in minor units (cents) as the major amount: 1999 with exponent 2 is 19.99."""
    if amount is None:
        return None
    number = to_decimal(amount)
    return decimal_result(number.scaleb(-exponent, context=EXACT))
