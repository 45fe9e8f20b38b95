"""The built-in functions of the mapping language, defined once and served to JMESPath and to Jinja alike.

Each function is one plain Python callable. :class:`FunctionSet` binds the ones that need the mapping's
context (default time zone, lookup tables) and hands the same callables to both engines: as JMESPath custom
functions through :attr:`FunctionSet.jmespath_options`, and as Jinja globals and filters. Every problem with a
value raises :class:`FunctionError`; the compiler adds the YAML location. ``docs/functions.md`` is the
user-facing reference.

This module is the table (each builtin's :class:`FunctionSpec`, its callable, the JMESPath and Jinja
adapters); the builtins live by kind: ``_coerce`` (number, integer, string, boolean, id), ``_text``,
``_arrays``, ``_arithmetic``, ``_dates``, ``_lookups``, ``_joins`` and ``_tables``, each raising
``_function_errors.FunctionError``.
"""

from __future__ import annotations

import types
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

import jinja2.filters
import jmespath
import jmespath.functions

from ._arithmetic import add, divide, multiply, round_number, subtract
from ._arrays import array_count, array_join, array_sum, coalesce
from ._coerce import (
    coerce_boolean,
    coerce_id,
    coerce_integer,
    coerce_number,
    coerce_string,
    text_number_in_range,
)
from ._dates import Dates, coerce_date, coerce_datetime
from ._function_errors import FunctionError
from ._joins import Joins
from ._lookups import MISSING, Lookups, LookupTable, lookup_key
from ._tables import carrier_code, country_code, country_name, from_minor
from ._text import lower, replace, split, split_name, strip_html, title, trim, unescape_html, upper

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


@dataclass(frozen=True)
class FunctionContext:
    """What the context-dependent builtins need from the loaded mapping."""

    default_zone: zoneinfo.ZoneInfo  # used for naive datetimes
    lookups: Mapping[str, LookupTable]


# ------------------------------------------------------------------------------------------------------------
# The function table


Result = Literal["text", "number", "boolean", "array", "object", "any"]


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """The shape of one builtin, for arity checks, ``validate`` and docs."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    variadic: bool = False  # the last required parameter repeats
    value_first: bool = True  # the first argument is "the value": usable as a Jinja filter
    # What it returns for a value it accepts (null aside): a `{% filter f %}` block must get text back, so
    # one of a function that never returns text is refused at load.
    result: Result = "any"

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

    def check_call(self, count: int, keywords: Sequence[str] = ()) -> None:
        """Raise :class:`FunctionError` unless a call with ``count`` positional arguments and the keyword
        arguments ``keywords`` fits: run time checks each call with it, and the compiler a call whose
        arguments it can count at load."""
        if keywords:
            raise FunctionError(
                f"{self.signature} takes positional arguments only, got {', '.join(keywords)}=",
                function=self.name,
            )
        self.check_arity(count)


_SPECS: Final[Mapping[str, FunctionSpec]] = types.MappingProxyType(
    {
        spec.name: spec
        for spec in (
            FunctionSpec("datetime", ("value",), ("zone",), result="text"),
            FunctionSpec("datetime_in", ("value", "zone"), result="text"),
            FunctionSpec("date", ("value",), ("zone",), result="text"),
            FunctionSpec("money", ("value",), result="number"),
            FunctionSpec("id", ("value",), result="text"),
            FunctionSpec("integer", ("value",), result="number"),
            FunctionSpec("number", ("value",), result="number"),
            FunctionSpec("string", ("value",), result="text"),
            FunctionSpec("boolean", ("value",), result="boolean"),
            FunctionSpec("upper", ("s",), result="text"),
            FunctionSpec("lower", ("s",), result="text"),
            FunctionSpec("title", ("s",), result="text"),
            FunctionSpec("trim", ("s",), ("chars",), result="text"),
            FunctionSpec("split", ("s", "sep"), result="array"),
            FunctionSpec("replace", ("s", "old", "new"), result="text"),
            FunctionSpec("join", ("glue", "array"), value_first=False, result="text"),
            FunctionSpec("sum", ("array",), result="number"),
            FunctionSpec("count", ("array",), result="number"),
            FunctionSpec("coalesce", ("value",), variadic=True),
            FunctionSpec("lookup", ("table", "value"), value_first=False),
            FunctionSpec("find", ("array", "key", "value")),
            FunctionSpec("index_by", ("array", "key"), result="object"),
            FunctionSpec("group_by", ("array", "key"), result="object"),
            FunctionSpec("add", ("a", "b"), result="number"),
            FunctionSpec("subtract", ("a", "b"), result="number"),
            FunctionSpec("multiply", ("a", "b"), result="number"),
            FunctionSpec("divide", ("a", "b"), result="number"),
            FunctionSpec("round", ("value",), ("places",), result="number"),
            FunctionSpec("split_name", ("full",), result="object"),
            FunctionSpec("unescape_html", ("s",), result="text"),
            FunctionSpec("strip_html", ("s",), result="text"),
            FunctionSpec("country_name", ("code",), result="text"),
            FunctionSpec("country_code", ("name",), result="text"),
            FunctionSpec("from_minor", ("amount", "currency"), result="number"),
            FunctionSpec("carrier_code", ("name",), result="text"),
        )
    }
)

# The builtins that need nothing of the mapping; FunctionSet binds the others (dates, lookups, joins).
_PURE: Final[Mapping[str, Callable[..., Any]]] = types.MappingProxyType(
    {
        "money": coerce_number,
        "id": coerce_id,
        "integer": coerce_integer,
        "number": coerce_number,
        "string": coerce_string,
        "boolean": coerce_boolean,
        "upper": upper,
        "lower": lower,
        "title": title,
        "trim": trim,
        "split": split,
        "replace": replace,
        "join": array_join,
        "sum": array_sum,
        "count": array_count,
        "coalesce": coalesce,
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

# Jinja's own filters keep their names (x | join(", ") stays Jinja's join); ours are still globals.
_JINJA_BUILTIN_FILTERS: Final = frozenset(jinja2.filters.FILTERS)


def _checked(spec: FunctionSpec, impl: Callable[..., Any]) -> Callable[..., Any]:
    """``impl`` behind an arity check, its FunctionErrors prefixed with ``name(): ``."""
    name = spec.name
    minimum = spec.min_args
    maximum = spec.max_args if spec.max_args is not None else 1 << 30

    def call(*args: Any, **kwargs: Any) -> Any:
        if kwargs or not minimum <= len(args) <= maximum:
            spec.check_call(len(args), tuple(kwargs))
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


def _signature(*arguments: dict[str, Any]) -> Callable[[_F], _F]:
    """JMESPath's signature decorator, typed."""

    def decorate(method: _F) -> _F:
        decorated: _F = jmespath.functions.signature(*arguments)(method)
        return decorated

    return decorate


_any_args = _signature({"types": [], "variadic": True})  # any number (at least one) of any type


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

    @_signature({"types": []})
    def _func_to_number(self, value: Any) -> Any:
        """JMESPath's own, but text past a float's range ("1e400", which float() reads as inf) is refused as
        ``number()`` refuses it, not let through as a number JSON cannot hold."""
        number = super()._func_to_number(value)
        if not isinstance(value, str) or number is None:
            return number
        try:
            return text_number_in_range(number, value)
        except FunctionError as error:
            raise FunctionError(f"to_number(): {error.message}", function="to_number") from None


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
        lookups = Lookups(context.lookups)
        dates = Dates(context.default_zone)  # its zone cache belongs to this mapping
        impls: dict[str, Callable[..., Any]] = dict(_PURE)
        impls.update(
            datetime=dates.datetime, datetime_in=dates.datetime_in, date=dates.date, lookup=lookups.lookup
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

    def literal_call_error(self, name: str, arguments: Sequence[Any]) -> str | None:
        """What builtin ``name`` says when called with ``arguments``, all of them literals of the mapping
        (``integer('x')``): the builtins are pure, so such a call fails on every document or on none, and the
        compiler refuses it at load in the words of run time. None when it succeeds, or ``name`` is no builtin."""
        function = self._callables.get(name)
        if function is None:
            return None
        try:
            function(*arguments)
        except FunctionError as error:
            return str(error)
        except Exception:
            return None  # not a value the builtin words: run time reports it, as it would without this check
        return None
