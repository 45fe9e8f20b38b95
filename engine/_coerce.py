"""Reading a value as a number, an integer, text, a boolean or an id: the builtins ``number()``, ``money()``,
``integer()``, ``string()``, ``boolean()`` and ``id()``, and the ``type:`` of a field. Numbers go through
Decimal, never float arithmetic; null gives null.
"""

from __future__ import annotations

import math
import re
from decimal import Context, Decimal, DivisionByZero, InvalidOperation, Overflow
from typing import Any, Final

from ._errors import preview_value
from ._function_errors import FunctionError, fail

__all__ = [
    "EXACT",
    "coerce_boolean",
    "coerce_id",
    "coerce_integer",
    "coerce_number",
    "coerce_string",
    "decimal_from_text",
    "decimal_result",
    "int_in_range",
    "int_result",
    "int_text",
    "text_number_in_range",
]

# Plain decimal text, optionally with thousands commas ("1,234.50") and an exponent. Decimal() alone would
# also take "NaN", "Infinity" and "1_000", which are not amounts.
_NUMBER_TEXT: Final = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d*)?(?:[eE][+-]?\d+)?", re.ASCII)
_MAX_ADJUSTED_EXPONENT: Final = 308  # float's range; also keeps int() of "1e999999" from eating memory
_MAX_DIGITS: Final = _MAX_ADJUSTED_EXPONENT + 1  # digits before the point of a number shipmap computes with
_INT_LIMIT: Final = 10**_MAX_DIGITS
# Exact for what the builtins compute on numbers in range: a sum spans at most 309 + 324 digits (a float's
# smallest exponent), a product of two integers 618, a rounding 309 + 12. The default context keeps 28
# digits, so 10**40 + 1 came back as 10**40. Shared: the builtins never read its flags, only its traps.
EXACT: Final = Context(prec=1000, traps=[InvalidOperation, DivisionByZero, Overflow])
_NUMBER_EXPECTED: Final = 'a number or numeric text such as "14.99"'
# Digits, an optional fraction and sign, short enough to stay far inside float's range.
_PLAIN_AMOUNT: Final = re.compile(r"(-?\d{1,15})(?:\.(\d{1,15}))?", re.ASCII)


def decimal_from_text(text: str, expected: str) -> Decimal:
    stripped = text.strip()
    if _NUMBER_TEXT.fullmatch(stripped) is None:
        raise fail(expected, text)
    try:
        number = Decimal(stripped.replace(",", "") if "," in stripped else stripped)
    except InvalidOperation:  # a sign or a dot without digits
        raise fail(expected, text) from None
    if number.adjusted() > _MAX_ADJUSTED_EXPONENT:
        raise _out_of_range(text)
    return number


def _out_of_range(text: str) -> FunctionError:
    return FunctionError(f"number {preview_value(text)} is out of range")


def text_number_in_range(number: int | float, text: str) -> int | float:
    """``number``, read from ``text`` by Python's int() or float() (JMESPath's ``to_number``), refused as
    :func:`decimal_from_text` refuses it past a float's range: float() gives inf for "1e400", int() a number
    of any size. Text float() reads as not finite ("nan", "inf") is no number."""
    if isinstance(number, float) and not math.isfinite(number):
        if _NUMBER_TEXT.fullmatch(text.strip()) is None:
            raise fail("a finite number", text)
        raise _out_of_range(text)
    if isinstance(number, int) and not -_INT_LIMIT < number < _INT_LIMIT:
        raise _out_of_range(text)
    return number


def _too_large(digits: int, *, result: bool = False) -> FunctionError:
    number = f"the result, a number of {digits} digits," if result else f"a number of {digits} digits"
    return FunctionError(f"{number} is too large (at most {_MAX_DIGITS} digits)")


def int_in_range(value: int) -> int:
    """``value``, unless it has more than 309 digits (a float's range), as text past that is refused: no
    amount is that large, and Decimal work on it would be slow or fail."""
    if -_INT_LIMIT < value < _INT_LIMIT:
        return value
    raise _too_large(Decimal(value).adjusted() + 1)  # str() would refuse past 4,300 digits


def int_result(value: int) -> int:
    """A builtin's int result, refused past 309 digits as its operands are."""
    if -_INT_LIMIT < value < _INT_LIMIT:
        return value
    raise _too_large(Decimal(value).adjusted() + 1, result=True)


def decimal_result(number: Decimal) -> int | float:
    """int when integral (so "15.00" becomes 15), else the float nearest the exact decimal. A result past
    309 digits (a float's range) is refused, as such an operand is."""
    if number.adjusted() > _MAX_ADJUSTED_EXPONENT:
        raise _too_large(number.adjusted() + 1, result=True)
    if number == number.to_integral_value():
        return int(number)
    return float(number)


def coerce_number(value: Any) -> int | float | None:
    """``number()`` and ``money()``: ints, floats and numeric text, through Decimal (never float arithmetic).

    Integral results are ints (15.0 -> 15, "15.00" -> 15); others the float of the exact decimal.
    """
    if type(value) is str:  # most amounts are plain text such as "199.00": no Decimal needed
        plain = _PLAIN_AMOUNT.fullmatch(value)
        if plain is not None:
            whole, fraction = plain.groups()
            # float() of decimal text is correctly rounded, so it is the float of the exact decimal.
            return int(whole) if fraction is None or not fraction.strip("0") else float(value)
    if value is None:
        return None
    if isinstance(value, bool):
        raise fail(_NUMBER_EXPECTED, value)
    if isinstance(value, int):
        return int_in_range(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise fail("a finite number", value)
        # repr(float) round-trips, so float(Decimal(repr(value))) == value: nothing to convert.
        return int(value) if value.is_integer() else value
    if isinstance(value, str):
        return decimal_result(decimal_from_text(value, _NUMBER_EXPECTED))
    raise fail(_NUMBER_EXPECTED, value)


_INTEGER_EXPECTED: Final = 'an integer or integer text such as "007"'


def coerce_integer(value: Any) -> int | None:
    """``integer()``: ints, integral floats (3.0) and integral numeric text ("007", "3.0", "1,000")."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise fail(_INTEGER_EXPECTED, value)
    if isinstance(value, int):
        return int_in_range(int(value))
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise fail("a whole number", value)
    if isinstance(value, str):
        number = decimal_from_text(value, _INTEGER_EXPECTED)
        if number == number.to_integral_value():
            return int(number)
        raise fail("a whole number", value)
    raise fail(_INTEGER_EXPECTED, value)


# Below 1e21 an integral float prints as its digits, as in JavaScript; above, repr's exponent form is kept.
_FLOAT_DIGITS_LIMIT: Final = 1e21


def coerce_string(value: Any) -> str | None:
    """``string()``: text as-is, ints as digits, floats as their shortest form (2.0 -> "2"), booleans as
    "true"/"false". Arrays and objects raise."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int_text(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise fail("a finite number", value)
        if value.is_integer() and abs(value) < _FLOAT_DIGITS_LIMIT:
            return str(int(value))
        return repr(value)
    raise fail("a string, number or boolean", value)


_TRUE_WORDS: Final = frozenset({"true", "yes", "1"})
_FALSE_WORDS: Final = frozenset({"false", "no", "0"})
_BOOLEAN_EXPECTED: Final = 'a boolean, 0, 1 or one of "true", "false", "yes", "no", "1", "0"'


def coerce_boolean(value: Any) -> bool | None:
    """``boolean()``: booleans, the numbers 0 and 1, and the words true/false/yes/no/1/0 in any case."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if value == 1:
            return True
        if value == 0:
            return False
        raise fail(_BOOLEAN_EXPECTED, value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise fail(_BOOLEAN_EXPECTED, value)


_EXACT_FLOAT_LIMIT: Final = 2**53


def int_text(value: int) -> str:
    try:
        return str(int(value))
    except ValueError:  # Python refuses str() of ints past 4,300 digits; no real id or amount has that many
        raise FunctionError(
            f"an integer of {value.bit_length()} bits is too large to write as text"
        ) from None


def coerce_id(value: Any) -> str | None:
    """``id()``: an identifier as text, keeping every digit."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise fail("an id (text or integer)", value)
    if isinstance(value, int):
        return int_text(value)
    if isinstance(value, str):
        text = value.strip()
        if text:
            return text
        raise fail("a non-empty id", value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < _EXACT_FLOAT_LIMIT:
            return str(int(value))
        raise FunctionError(
            f"the number {preview_value(value)} would lose digits as an id; the source should send ids as "
            "integers or text"
        )
    raise fail("an id (text or integer)", value)
