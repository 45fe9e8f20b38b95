"""The built-in functions of the mapping language, defined once and served to JMESPath and to Jinja alike.

Each function is one plain Python callable. :class:`FunctionSet` binds the ones that need the mapping's
context (default time zone, lookup tables) and hands the same callables to both engines: as JMESPath custom
functions through :attr:`FunctionSet.jmespath_options`, and as Jinja globals and filters. Every problem with a
value raises :class:`FunctionError`; the compiler adds the YAML location. ``docs/functions.md`` is the
user-facing reference.
"""

from __future__ import annotations

import copy
import math
import re
import types
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final, TypeVar

import jinja2.filters
import jmespath
import jmespath.functions
from jinja2 import Undefined

from ._errors import preview_value

__all__ = [
    "MISSING",
    "FunctionContext",
    "FunctionError",
    "FunctionSet",
    "FunctionSpec",
    "LookupTable",
    "coerce_boolean",
    "coerce_date",
    "coerce_datetime",
    "coerce_integer",
    "coerce_number",
    "coerce_string",
    "lookup_key",
]


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


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"  # unpickles as the module's singleton


MISSING: Final[Any] = _Missing()
"""Sentinel: a lookup table without a default."""


# ------------------------------------------------------------------------------------------------------------
# Describing values in errors


def _describe(value: Any) -> str:
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


def _fail(expected: str, value: Any) -> FunctionError:
    return FunctionError(f"expected {expected}, found {_describe(value)}")


# ------------------------------------------------------------------------------------------------------------
# Lookup tables


def lookup_key(value: Any) -> str:
    """The canonical text of a scalar for lookup matching (case-sensitive).

    str as-is, True -> "true", False -> "false", None -> "null", int -> decimal digits, integral float -> as
    the int (2.0 -> "2"), other floats -> repr. Arrays and objects raise :class:`FunctionError`.
    """
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return _int_text(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    raise _fail("a string, number, boolean or null as lookup key", value)


class LookupTable:
    """An immutable table from canonical key text (see :func:`lookup_key`) to values."""

    __slots__ = ("_default", "_entries", "name")

    name: str
    _entries: Mapping[str, Any]
    _default: Any

    def __init__(self, name: str, entries: Mapping[Any, Any], default: Any = MISSING) -> None:
        normalized: dict[str, Any] = {}
        originals: dict[str, Any] = {}
        for key, value in entries.items():
            text = lookup_key(key)
            if text in normalized:
                raise FunctionError(
                    f"lookup table '{name}' has the key {preview_value(text)} twice "
                    f"(as {preview_value(originals[text])} and {preview_value(key)})"
                )
            normalized[text] = value
            originals[text] = key
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_entries", types.MappingProxyType(normalized))
        object.__setattr__(self, "_default", default)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("LookupTable is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("LookupTable is immutable")

    @property
    def entries(self) -> Mapping[str, Any]:
        """The entries by canonical key text (read-only)."""
        return self._entries

    @property
    def default(self) -> Any:
        """The default value, or :data:`MISSING`."""
        return self._default

    def get(self, value: Any) -> Any:
        """The entry matching ``lookup_key(value)``, else the default, else :class:`FunctionError`.

        Arrays and objects in the table come back as copies, so a payload that is changed later cannot
        change the table.
        """
        try:
            key = lookup_key(value)
        except FunctionError as error:
            raise FunctionError(f"lookup table '{self.name}': {error.message}") from None
        found = self._entries.get(key, MISSING)
        if found is MISSING:
            if self._default is MISSING:
                raise FunctionError(
                    f"lookup table '{self.name}' has no entry for {preview_value(value)} and no default"
                )
            found = self._default
        if isinstance(found, list | dict):
            return copy.deepcopy(found)
        return found

    def __repr__(self) -> str:
        default = "" if self._default is MISSING else f", default={self._default!r}"
        return f"LookupTable({self.name!r}, {len(self._entries)} entries{default})"


@dataclass(frozen=True)
class FunctionContext:
    """What the context-dependent builtins need from the loaded mapping."""

    default_zone: zoneinfo.ZoneInfo  # used for naive datetimes
    lookups: Mapping[str, LookupTable]


# ------------------------------------------------------------------------------------------------------------
# Numbers

# Plain decimal text, optionally with thousands commas ("1,234.50") and an exponent. Decimal() alone would
# also take "NaN", "Infinity" and "1_000", which are not amounts.
_NUMBER_TEXT: Final = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d*)?(?:[eE][+-]?\d+)?", re.ASCII)
_MAX_ADJUSTED_EXPONENT: Final = 308  # float's range; also keeps int() of "1e999999" from eating memory
_NUMBER_EXPECTED: Final = 'a number or numeric text such as "14.99"'
# Digits, an optional fraction and sign, short enough to stay far inside float's range.
_PLAIN_AMOUNT: Final = re.compile(r"(-?\d{1,15})(?:\.(\d{1,15}))?", re.ASCII)


def decimal_from_text(text: str, expected: str) -> Decimal:
    stripped = text.strip()
    if _NUMBER_TEXT.fullmatch(stripped) is None:
        raise _fail(expected, text)
    try:
        number = Decimal(stripped.replace(",", "") if "," in stripped else stripped)
    except InvalidOperation:  # a sign or a dot without digits
        raise _fail(expected, text) from None
    if number.adjusted() > _MAX_ADJUSTED_EXPONENT:
        raise FunctionError(f"number {preview_value(text)} is out of range")
    return number


def decimal_result(number: Decimal) -> int | float:
    """int when integral (so "15.00" becomes 15), else the float nearest the exact decimal."""
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
        raise _fail(_NUMBER_EXPECTED, value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail("a finite number", value)
        # repr(float) round-trips, so float(Decimal(repr(value))) == value: nothing to convert.
        return int(value) if value.is_integer() else value
    if isinstance(value, str):
        return decimal_result(decimal_from_text(value, _NUMBER_EXPECTED))
    raise _fail(_NUMBER_EXPECTED, value)


_INTEGER_EXPECTED: Final = 'an integer or integer text such as "007"'


def coerce_integer(value: Any) -> int | None:
    """``integer()``: ints, integral floats (3.0) and integral numeric text ("007", "3.0", "1,000")."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _fail(_INTEGER_EXPECTED, value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise _fail("a whole number", value)
    if isinstance(value, str):
        number = decimal_from_text(value, _INTEGER_EXPECTED)
        if number == number.to_integral_value():
            return int(number)
        raise _fail("a whole number", value)
    raise _fail(_INTEGER_EXPECTED, value)


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
        return _int_text(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail("a finite number", value)
        if value.is_integer() and abs(value) < _FLOAT_DIGITS_LIMIT:
            return str(int(value))
        return repr(value)
    raise _fail("a string, number or boolean", value)


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
        raise _fail(_BOOLEAN_EXPECTED, value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise _fail(_BOOLEAN_EXPECTED, value)


_EXACT_FLOAT_LIMIT: Final = 2**53


def _int_text(value: int) -> str:
    try:
        return str(int(value))
    except ValueError:  # Python refuses str() of ints past 4,300 digits; no real id or amount has that many
        raise FunctionError(
            f"an integer of {value.bit_length()} bits is too large to write as text"
        ) from None


def _fn_id(value: Any) -> str | None:
    """``id()``: an identifier as text, keeping every digit."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _fail("an id (text or integer)", value)
    if isinstance(value, int):
        return _int_text(value)
    if isinstance(value, str):
        text = value.strip()
        if text:
            return text
        raise _fail("a non-empty id", value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < _EXACT_FLOAT_LIMIT:
            return str(int(value))
        raise FunctionError(
            f"the number {preview_value(value)} would lose digits as an id; the source should send ids as "
            "integers or text"
        )
    raise _fail("an id (text or integer)", value)


# ------------------------------------------------------------------------------------------------------------
# Arrays


def _elements(value: Any, expected: str) -> Sequence[Any]:
    """The elements of an array. Jinja may pass tuples or generators (``map``); JMESPath passes lists."""
    if isinstance(value, list | tuple):
        return value
    if isinstance(value, str | bytes | Mapping | Undefined) or not isinstance(value, Iterable):
        raise _fail(expected, value)
    return list(value)


def _fn_sum(array: Any) -> int | float:
    """``sum()``: numbers and numeric text added exactly; nulls skipped; null or [] gives 0."""
    if array is None:
        return 0
    whole = 0  # ints stay exact Python ints whatever their size
    fraction: Decimal | None = None
    for index, element in enumerate(_elements(array, "an array of numbers")):
        if element is None:
            continue
        if isinstance(element, bool):
            raise _fail_element("an array of numbers", element, index)
        if isinstance(element, int):
            whole += element
            continue
        if isinstance(element, float):
            if not math.isfinite(element):
                raise _fail_element("an array of finite numbers", element, index)
            number = Decimal(repr(element))
        elif isinstance(element, str):
            try:
                number = decimal_from_text(element, "an array of numbers or numeric text")
            except FunctionError as error:
                raise FunctionError(f"{error.message} at index {index}") from None
        else:
            raise _fail_element("an array of numbers", element, index)
        fraction = number if fraction is None else fraction + number
    if fraction is None:
        return whole
    return decimal_result(fraction + whole)


def _fail_element(expected: str, element: Any, index: int) -> FunctionError:
    return FunctionError(f"expected {expected}, found {_describe(element)} at index {index}")


def _fn_count(array: Any) -> int:
    """``count()``: the number of elements; null gives 0."""
    if array is None:
        return 0
    return len(_elements(array, "an array"))


def _fn_join(glue: Any, array: Any) -> str | None:
    """``join()``: JMESPath's join, plus: null array -> null, null elements skipped."""
    if not isinstance(glue, str):
        raise _fail("a string as glue", glue)
    if array is None:
        return None
    parts: list[str] = []
    for index, element in enumerate(_elements(array, "an array of strings")):
        if isinstance(element, str):
            parts.append(element)
        elif element is not None:
            raise _fail_element("an array of strings", element, index)
    return glue.join(parts)


def _fn_coalesce(*values: Any) -> Any:
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


# ------------------------------------------------------------------------------------------------------------
# Strings


def _fn_upper(text: Any) -> str | None:
    if text is None:
        return None
    if isinstance(text, str):
        return text.upper()
    raise _fail("a string", text)


def _fn_lower(text: Any) -> str | None:
    if text is None:
        return None
    if isinstance(text, str):
        return text.lower()
    raise _fail("a string", text)


# The same word boundaries as Jinja's own title filter, so title(x) and x | title agree.
_WORD_START: Final = re.compile(r"([-\s({\[<]+)")


def _fn_title(text: Any) -> str | None:
    if text is None:
        return None
    if isinstance(text, str):
        return "".join(part[0].upper() + part[1:].lower() for part in _WORD_START.split(text) if part)
    raise _fail("a string", text)


def _fn_trim(text: Any, chars: Any = None) -> str | None:
    if chars is not None and not isinstance(chars, str):
        raise _fail("a string of characters to trim", chars)
    if text is None:
        return None
    if isinstance(text, str):
        return text.strip(chars)
    raise _fail("a string", text)


def _fn_split(text: Any, separator: Any) -> list[str] | None:
    if not isinstance(separator, str) or not separator:
        raise _fail("a non-empty string as separator", separator)
    if text is None:
        return None
    if isinstance(text, str):
        return text.split(separator)
    raise _fail("a string", text)


def _fn_replace(text: Any, old: Any, new: Any) -> str | None:
    if not isinstance(old, str):
        raise _fail("a string to replace", old)
    if not isinstance(new, str):
        raise _fail("a string as replacement", new)
    if text is None:
        return None
    if isinstance(text, str):
        return text.replace(old, new)
    raise _fail("a string", text)


class _Bound:
    """The builtin that needs the mapping's lookup tables. One per FunctionSet; read-only."""

    __slots__ = ("_lookups",)

    def __init__(self, context: FunctionContext) -> None:
        self._lookups = context.lookups

    def lookup(self, table: Any, value: Any) -> Any:
        if isinstance(table, dict):  # an object built by index_by/group_by: its entry for value, or null
            from ._joins import join_key

            key = join_key(value)
            return None if key is None else table.get(key)
        if not isinstance(table, str):
            raise _fail("a lookup table name, or an object from index_by()", table)
        found = self._lookups.get(table)
        if found is None:
            known = ", ".join(sorted(self._lookups)[:20]) or "none"
            raise FunctionError(f"no lookup table named {preview_value(table)} (defined: {known})")
        return found.get(value)


# ------------------------------------------------------------------------------------------------------------
# The function table


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """The shape of one builtin, for arity checks, ``validate`` and docs."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    variadic: bool = False  # the last required parameter repeats
    value_first: bool = True  # the first argument is "the value": usable as a Jinja filter

    @property
    def min_args(self) -> int:
        return len(self.required)

    @property
    def max_args(self) -> int | None:
        """None when variadic."""
        return None if self.variadic else len(self.required) + len(self.optional)

    @property
    def signature(self) -> str:
        """As written in the docs: ``datetime(value[, zone])``, ``coalesce(value, ...)``."""
        text = ", ".join(self.required) + "".join(f"[, {name}]" for name in self.optional)
        if self.variadic:
            text += ", ..."
        return f"{self.name}({text})"

    def accepts(self, count: int) -> bool:
        maximum = self.max_args
        return count >= self.min_args and (maximum is None or count <= maximum)

    def check_arity(self, count: int) -> None:
        """Raise :class:`FunctionError` unless ``count`` arguments fit (the compiler can call this early)."""
        if self.accepts(count):
            return
        maximum = self.max_args
        if maximum is None:
            wanted = f"at least {self.min_args}"
        elif maximum == self.min_args:
            wanted = str(maximum)
        else:
            wanted = (
                f"{self.min_args} or {maximum}"
                if maximum == self.min_args + 1
                else f"{self.min_args}-{maximum}"
            )
        plural = "" if wanted.endswith(" 1") or wanted == "1" else "s"
        raise FunctionError(
            f"{self.signature} takes {wanted} argument{plural}, got {count}", function=self.name
        )


_SPECS: Final[Mapping[str, FunctionSpec]] = types.MappingProxyType(
    {
        spec.name: spec
        for spec in (
            FunctionSpec("datetime", ("value",), ("zone",)),
            FunctionSpec("datetime_in", ("value", "zone")),
            FunctionSpec("date", ("value",), ("zone",)),
            FunctionSpec("money", ("value",)),
            FunctionSpec("id", ("value",)),
            FunctionSpec("integer", ("value",)),
            FunctionSpec("number", ("value",)),
            FunctionSpec("string", ("value",)),
            FunctionSpec("boolean", ("value",)),
            FunctionSpec("upper", ("s",)),
            FunctionSpec("lower", ("s",)),
            FunctionSpec("title", ("s",)),
            FunctionSpec("trim", ("s",), ("chars",)),
            FunctionSpec("split", ("s", "sep")),
            FunctionSpec("replace", ("s", "old", "new")),
            FunctionSpec("join", ("glue", "array"), value_first=False),
            FunctionSpec("sum", ("array",)),
            FunctionSpec("count", ("array",)),
            FunctionSpec("coalesce", ("value",), variadic=True),
            FunctionSpec("lookup", ("table", "value"), value_first=False),
            FunctionSpec("find", ("array", "key", "value")),
            FunctionSpec("index_by", ("array", "key")),
            FunctionSpec("group_by", ("array", "key")),
            FunctionSpec("add", ("a", "b")),
            FunctionSpec("subtract", ("a", "b")),
            FunctionSpec("multiply", ("a", "b")),
            FunctionSpec("divide", ("a", "b")),
            FunctionSpec("round", ("value",), ("places",)),
            FunctionSpec("split_name", ("full",)),
            FunctionSpec("unescape_html", ("s",)),
            FunctionSpec("strip_html", ("s",)),
            FunctionSpec("country_name", ("code",)),
            FunctionSpec("country_code", ("name",)),
            FunctionSpec("from_minor", ("amount", "currency")),
            FunctionSpec("carrier_code", ("name",)),
        )
    }
)

_PURE: Final[Mapping[str, Callable[..., Any]]] = types.MappingProxyType(
    {
        "money": coerce_number,
        "id": _fn_id,
        "integer": coerce_integer,
        "number": coerce_number,
        "string": coerce_string,
        "boolean": coerce_boolean,
        "upper": _fn_upper,
        "lower": _fn_lower,
        "title": _fn_title,
        "trim": _fn_trim,
        "split": _fn_split,
        "replace": _fn_replace,
        "join": _fn_join,
        "sum": _fn_sum,
        "count": _fn_count,
        "coalesce": _fn_coalesce,
    }
)

# Jinja's own filters keep their names (x | join(", ") stays Jinja's join); ours are still globals.
_JINJA_BUILTIN_FILTERS: Final = frozenset(jinja2.filters.FILTERS)


def _checked(spec: FunctionSpec, impl: Callable[..., Any]) -> Callable[..., Any]:
    """``impl`` behind an arity check, its FunctionErrors prefixed with ``name(): ``."""
    name = spec.name
    minimum = spec.min_args
    maximum = spec.max_args if spec.max_args is not None else 1 << 30

    def call(*args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise FunctionError(
                f"{spec.signature} takes positional arguments only, got {', '.join(kwargs)}=", function=name
            )
        if not minimum <= len(args) <= maximum:
            spec.check_arity(len(args))
        try:
            return impl(*args)
        except FunctionError as error:
            if error.function is not None:  # from a nested builtin or the arity check: already named
                raise
            raise FunctionError(f"{name}(): {error.message}", function=name) from None

    call.__name__ = name
    call.__qualname__ = name
    call.__doc__ = f"shipmap builtin {spec.signature}; see docs/functions.md"
    return call


# ------------------------------------------------------------------------------------------------------------
# JMESPath

_F = TypeVar("_F", bound=Callable[..., Any])


def _any_args(method: _F) -> _F:
    """JMESPath's signature decorator, typed: any number (at least one) of arguments of any type."""
    decorated: _F = jmespath.functions.signature({"types": [], "variadic": True})(method)
    return decorated


class _JmespathBase(jmespath.functions.Functions):  # type: ignore[misc]  # jmespath ships no types
    """JMESPath's Functions with shipmap's builtins (which replace JMESPath's ``sum`` and ``join``).

    shipmap names are dispatched before JMESPath's own signature check: our functions check their arguments
    themselves and raise FunctionError, which JMESPath lets through untouched.
    """

    def __init__(self, callables: Mapping[str, Callable[..., Any]]) -> None:
        super().__init__()
        self._shipmap = callables

    def call_function(self, function_name: str, resolved_args: list[Any]) -> Any:
        found = self._shipmap.get(function_name)
        if found is None:
            return super().call_function(function_name, resolved_args)
        return found(*resolved_args)


def _jmespath_method(name: str) -> Callable[..., Any]:
    # Registered so FUNCTION_TABLE lists shipmap's functions; it runs the same callable as call_function.
    def method(self: _JmespathBase, *args: Any) -> Any:
        return self._shipmap[name](*args)

    method.__name__ = f"_func_{name}"
    return _any_args(method)


def _fill_jmespath_namespace(namespace: dict[str, Any]) -> None:
    for name in _SPECS:
        namespace[f"_func_{name}"] = _jmespath_method(name)


# new_class runs jmespath's metaclass, which builds FUNCTION_TABLE from the _func_ methods.
_JmespathFunctions: Final = types.new_class(
    "ShipmapJmespathFunctions", (_JmespathBase,), exec_body=_fill_jmespath_namespace
)


# ------------------------------------------------------------------------------------------------------------
# The public entry point


class FunctionSet:
    """Built once per loaded mapping (no global state); thread-safe after construction.

    ``jinja_globals[name]`` (or :meth:`call`) is the one callable behind a builtin, whichever engine runs it.
    """

    def __init__(self, context: FunctionContext) -> None:
        self.context = context
        bound = _Bound(context)
        dates = Dates(context.default_zone)  # its zone cache belongs to this mapping
        impls: dict[str, Callable[..., Any]] = dict(_PURE)
        impls.update(_MORE)
        impls.update(
            datetime=dates.datetime, datetime_in=dates.datetime_in, date=dates.date, lookup=bound.lookup
        )
        joins = Joins()  # its index cache belongs to this mapping
        impls.update(find=joins.find, index_by=joins.index_by, group_by=joins.group_by)
        self._callables: dict[str, Callable[..., Any]] = {
            name: _checked(spec, impls[name]) for name, spec in _SPECS.items()
        }
        # Generated code calls these directly: arity is checked at load, and any error it meets sends the
        # document back through the interpreter, which words it.
        self.unchecked: Mapping[str, Callable[..., Any]] = types.MappingProxyType(impls)
        self.specs: Mapping[str, FunctionSpec] = _SPECS
        self.names: frozenset[str] = frozenset(self._callables)
        self.jinja_globals: Mapping[str, Callable[..., Any]] = types.MappingProxyType(dict(self._callables))
        self.jinja_filters: Mapping[str, Callable[..., Any]] = types.MappingProxyType(
            {
                name: function
                for name, function in self._callables.items()
                if _SPECS[name].value_first and name not in _JINJA_BUILTIN_FILTERS
            }
        )
        self.jmespath_options: jmespath.Options = jmespath.Options(
            custom_functions=_JmespathFunctions(types.MappingProxyType(self._callables))
        )

    def call(self, name: str, *args: Any) -> Any:
        """Run builtin ``name`` directly (the compiler's fast path); same checks and errors as in engines."""
        function = self._callables.get(name)
        if function is None:
            raise FunctionError(f"unknown function {name}()")
        return function(*args)


# Builtins that live in their own modules (they import FunctionError and the number helpers from here).
from ._arithmetic import add, divide, multiply, round_number, subtract  # noqa: E402
from ._dates import Dates, coerce_date, coerce_datetime  # noqa: E402
from ._joins import Joins  # noqa: E402
from ._tables import carrier_code, country_code, country_name, from_minor  # noqa: E402
from ._text import split_name, strip_html, unescape_html  # noqa: E402

_MORE: Final[Mapping[str, Callable[..., Any]]] = types.MappingProxyType(
    {
        "add": add,
        "subtract": subtract,
        "multiply": multiply,
        "divide": divide,
        "round": round_number,
        "split_name": split_name,
        "unescape_html": unescape_html,
        "strip_html": strip_html,
        "country_name": country_name,
        "country_code": country_code,
        "from_minor": from_minor,
        "carrier_code": carrier_code,
    }
)
