"""How a builtin says what is wrong with a value: :class:`FunctionError`, whose message names what was expected
and what was found (``expected a string, found number 5``), short and never a whole document.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import Undefined

from ._errors import preview_value

__all__ = ["FunctionError", "describe", "fail", "fail_element"]


class FunctionError(Exception):
    """A builtin got a value it cannot handle. The message says what was expected and what was found (short,
    no whole documents). The compiler wraps it into a TransformError with the YAML location.

    ``function`` names the builtin once the error has left it (the message then starts with ``name(): ``);
    it is None for errors raised by the plain ``coerce_*`` functions and by :func:`lookup_key`.
    """

    def __init__(self, message: str, *, function: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.function = function


def describe(value: Any) -> str:
    """``string "abc"``, ``number 3``, ``null``...: the JSON type and a short preview."""
    if value is None:
        return "null"
    if isinstance(value, Undefined):
        # Jinja's missing value: let StrictUndefined raise its own, better error.
        value._fail_with_undefined_error()
    if isinstance(value, bool):
        kind = "boolean"
    elif isinstance(value, str):
        kind = "string"
    elif isinstance(value, int | float):
        kind = "number"
    elif isinstance(value, list | tuple):
        kind = "array"
    elif isinstance(value, Mapping):
        kind = "object"
    else:
        kind = type(value).__name__
    return f"{kind} {preview_value(value)}"


def fail(expected: str, value: Any) -> FunctionError:
    return FunctionError(f"expected {expected}, found {describe(value)}")


def fail_element(expected: str, element: Any, index: int) -> FunctionError:
    return FunctionError(f"expected {expected}, found {describe(element)} at index {index}")
