"""A kind's schema compiled to one Python function that only decides: valid or not, no exception raised.

fastjsonschema's code raises an exception to say a value fails, and for a nullable field (``anyOf`` of a type
and null) it tries the first branch by failing it: on a valid order payload, half of the checking time goes to
raising and catching. This compiler writes the same decisions as plain conditions (``x is None or
isinstance(x, str) and ...``), key sets compared in C (``payload.keys() >= required``), and a helper function
only where a sub-schema is reused under ``anyOf``. Its verdicts are fastjsonschema's, keyword by keyword (types,
integers that are floats, booleans that are not numbers, ``$`` matching only at the very end); the tests hold
the two to the same answers on every ready mapping's payloads and on mutations of them. It covers the keywords
the kinds use; a schema with any other keyword raises Unsupported, and fastjsonschema decides for it.

Only the verdict comes from here. What a failing payload did wrong is still worded by jsonschema, and
fastjsonschema's detailed code remains the fallback, as before (``_kinds.SchemaCheck``).
"""

from __future__ import annotations

import decimal
import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

# Ignored when deciding ($defs only holds what a $ref points to).
_ANNOTATIONS = frozenset(
    ("$schema", "$id", "$comment", "$defs", "title", "description", "default", "examples")
)
_PYTHON_TYPES = {
    "null": "NoneType",
    "boolean": "bool",
    "number": "int, float, Decimal",
    "integer": "int",
    "string": "str",
    "array": "list, tuple",
    "object": "dict",
}
_UNESCAPED_DOLLAR = re.compile(
    r"(?<!\\)\$"
)  # as fastjsonschema: `$` means the very end, not before a newline


class Unsupported(Exception):
    """The schema uses a keyword this compiler does not decide; fastjsonschema does instead."""


def compile_check(schema: Mapping[str, Any], *, strict_json: bool = False) -> Callable[[Any], bool]:
    """``check(value) -> bool`` for a schema whose ``$ref``s are already inlined.

    With ``strict_json``, True also promises that ``json.dumps(value, allow_nan=False)`` succeeds and its text
    is valid UTF-8 (what ``_kinds.json_problems`` asks): leaves are tested by exact type (a str without a lone
    surrogate, a finite float, an int that prints, no Decimal), and a value the schema leaves open (an object
    without ``additionalProperties: false``, an array without ``items``) is checked whole. False may then
    be a false alarm (a str subclass, say): the caller asks the slow, exact questions after a False."""
    writer = CheckWriter(strict_json, root=schema)
    body = writer.statements(schema, "v", 1)
    source = "\n".join([*writer.helpers, "def check(v):", *body, "    return True"])
    namespace = writer.namespace()
    exec(compile(source, "<shipmap kind check>", "exec"), namespace)
    check: Callable[[Any], bool] = namespace["check"]
    return check


def object_shape(schema: Any) -> tuple[Mapping[str, Any], frozenset[str], bool] | None:
    """``(properties, required, closed)`` of a schema that only describes an object's fields, so that a dict
    built field by field can be checked as it is built; None for anything else (it is checked whole)."""
    if not isinstance(schema, Mapping) or _keywords(schema) - {"type", "properties", "required"} - {
        "additionalProperties"
    }:
        return None
    types = schema.get("type", "object")
    if types != "object" and not (isinstance(types, list) and "object" in types):
        return None
    extra = schema.get("additionalProperties", True)
    properties = schema.get("properties", {})
    if extra not in (True, False) or not isinstance(properties, Mapping):
        return None
    return properties, frozenset(schema.get("required", ())), extra is False


def array_shape(schema: Any) -> tuple[Any, int] | None:
    """``(items, minItems)`` of a schema that only describes a list's elements and length; else None."""
    if not isinstance(schema, Mapping) or _keywords(schema) - {"type", "items", "minItems"}:
        return None
    types = schema.get("type", "array")
    if types != "array" and not (isinstance(types, list) and "array" in types):
        return None
    items = schema.get("items", True)
    if not isinstance(items, Mapping | bool):
        return None
    return items, int(schema.get("minItems", 0))


def _keywords(schema: Mapping[str, Any]) -> set[str]:
    return {key for key in schema if key not in _ANNOTATIONS and not key.startswith("x-")}


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean(value: Any) -> bool:
    """Whether a strict JSON encoder takes ``value`` (the first, fast step of json_problems)."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError, RecursionError):
        return False
    return True


# Exact types for strict JSON: each implies fastjsonschema's isinstance test and a value json.dumps prints.
_STRICT_TYPES = {
    "null": "{v} is None",
    "boolean": "({v} is True or {v} is False)",
    "number": "(type({v}) is int and -_BIG < {v} < _BIG or type({v}) is float and _isfinite({v}))",
    "integer": "(type({v}) is int and -_BIG < {v} < _BIG or type({v}) is float and {v}.is_integer())",
    "string": "(type({v}) is str and ({v}.isascii() or _utf8({v})))",
    "array": "(type({v}) is list or type({v}) is tuple)",
    "object": "type({v}) is dict",
}


class CheckWriter:
    """Writes the checks of schemas as Python source: the statements of a whole check function
    (``statements``), or one expression for one value (``test``), with the helper functions and constants they
    use. Its names start with an underscore, so they can share a namespace with other generated code."""

    def __init__(self, strict: bool = False, root: Mapping[str, Any] | None = None) -> None:
        self.strict = strict
        self.root = root  # what a local $ref (#/$defs/name) points into
        self.helpers: list[str] = []
        self.constants: dict[str, Any] = {}
        self._names = 0
        self._refs: dict[str, str] = {}  # a $ref's pointer -> the helper that decides it (recursion-safe)

    def namespace(self) -> dict[str, Any]:
        """The globals that the written code runs in."""
        limit = sys.get_int_max_str_digits()
        return {
            "Decimal": decimal.Decimal,
            "NoneType": type(None),
            "_BIG": 10**limit if limit else math.inf,
            "_isfinite": math.isfinite,
            "_utf8": _utf8,
            "_clean": _clean,
            **self.constants,
        }

    def test(self, schema: Any, var: str) -> str:
        """An expression that is true when ``var`` (a plain name) is valid under ``schema`` (and, for a strict
        writer, strict JSON, as ``compile_check`` promises). ``True`` and ``{}`` accept anything, ``False``
        nothing."""
        if schema is False:
            return "False"
        if schema is True or (isinstance(schema, Mapping) and not _keywords(schema)):
            return f"_clean({var})" if self.strict else "True"
        if isinstance(schema, Mapping) and self._inline(schema):
            return f"({self.condition(schema, var) or 'True'})"
        branches = schema.get("anyOf") if isinstance(schema, Mapping) else None
        if (
            isinstance(branches, list)
            and _keywords(schema) == {"anyOf"}
            and all(self._inline(branch) for branch in branches)
        ):
            return (
                "(" + " or ".join(f"({self.condition(branch, var) or 'True'})" for branch in branches) + ")"
            )
        return f"{self.helper(schema)}({var})"

    def _inline(self, schema: Any) -> bool:
        """Whether ``condition`` alone decides ``schema`` (no object, array or anyOf, nothing left open)."""
        return (
            isinstance(schema, Mapping)
            and _keywords(schema) <= _EXPRESSIONS
            and not (self.strict and _open(schema))
        )

    def _name(self, prefix: str) -> str:
        self._names += 1
        return f"{prefix}{self._names}"

    def constant(self, value: Any) -> str:
        name = self._name("_c")
        self.constants[name] = value
        return name

    def helper(self, schema: Mapping[str, Any]) -> str:
        """A function deciding ``schema`` on its own: for the branches of anyOf and for contains."""
        name = self._name("_s")
        body = self.statements(schema, "v", 1)
        self.helpers += [f"def {name}(v):", *body, "    return True"]
        return name

    def statements(self, schema: Any, var: str, depth: int) -> list[str]:
        """Lines that ``return False`` when ``var`` fails ``schema``, indented ``depth`` levels."""
        if schema is True or schema == {}:
            return []
        if not isinstance(schema, Mapping):
            raise Unsupported(f"a schema that is not an object: {schema!r}")
        unknown = set(schema) - _ANNOTATIONS - _KEYWORDS - {key for key in schema if key.startswith("x-")}
        if unknown:
            raise Unsupported(", ".join(sorted(unknown)))
        if self.strict and set(schema) & _NOT_STRICT:  # _open() does not know them
            raise Unsupported(", ".join(sorted(set(schema) & _NOT_STRICT)))
        pad = "    " * depth
        lines: list[str] = []
        if "$ref" in schema:
            lines.append(f"{pad}if not {self._ref(schema['$ref'])}({var}): return False")
        if "if" in schema:
            lines += self._conditional(schema, var, depth)
        if self.strict and _open(schema):
            lines.append(f"{pad}if not _clean({var}): return False")
        condition = self.condition(schema, var)
        if condition:
            lines.append(f"{pad}if not ({condition}): return False")
        if "items" in schema or "contains" in schema or "minItems" in schema:
            lines += self._array(schema, var, depth)
        if _OBJECT_KEYWORDS & set(schema):
            lines += self._object(schema, var, depth)
        if "anyOf" in schema:
            branches = [self._branch(branch, var) for branch in schema["anyOf"]]
            lines.append(f"{pad}if not ({' or '.join(branches)}): return False")
        return lines

    def condition(self, schema: Mapping[str, Any], var: str) -> str:
        """The keywords that test ``var`` itself, as one expression (empty when there are none)."""
        parts: list[str] = []
        only = schema.get("type") if isinstance(schema.get("type"), str) else None
        if "type" in schema:
            parts.append(_type_test(schema["type"], var, self.strict))
        if "enum" in schema:
            values = schema["enum"]
            texts = [value for value in values if isinstance(value, str)]
            tests = [_equals(var, value) for value in values if not isinstance(value, str)]
            if texts:  # one set lookup for all the strings (after the type test: a list is not hashable)
                tests.insert(0, f"(isinstance({var}, str) and {var} in {self.constant(frozenset(texts))})")
            parts.append("(" + " or ".join(tests) + ")" if tests else "False")
        if "const" in schema:
            parts.append(_equals(var, schema["const"]))
        if "minLength" in schema:
            test = f"len({var}) >= {int(schema['minLength'])!r}"
            parts.append(test if only == "string" else f"(not isinstance({var}, str) or {test})")
        if "pattern" in schema:
            regex = self.constant(re.compile(_UNESCAPED_DOLLAR.sub(r"\\Z", schema["pattern"])))
            test = f"{regex}.search({var}) is not None"
            parts.append(test if only == "string" else f"(not isinstance({var}, str) or {test})")
        if "minimum" in schema:
            minimum = schema["minimum"]
            if isinstance(minimum, bool) or not isinstance(minimum, int | float):
                raise Unsupported("a minimum that is not a number")
            number = f"isinstance({var}, (int, float, Decimal)) and not isinstance({var}, bool)"
            test = f"{var} >= {minimum!r}"
            parts.append(test if only in ("integer", "number") else f"(not ({number}) or {test})")
        return " and ".join(parts)

    def _branch(self, schema: Any, var: str) -> str:
        if isinstance(schema, Mapping) and _keywords(schema) <= _EXPRESSIONS:
            return f"({self.condition(schema, var) or 'True'})"
        return f"{self.helper(schema)}({var})"

    def _array(self, schema: Mapping[str, Any], var: str, depth: int) -> list[str]:
        guarded = schema.get("type") != "array"  # else the type test has returned already
        pad = "    " * (depth - (0 if guarded else 1))
        lines = [f"{pad}if isinstance({var}, (list, tuple)):" if guarded else ""]
        if "minItems" in schema:
            lines.append(f"{pad}    if len({var}) < {int(schema['minItems'])!r}: return False")
        if "contains" in schema:
            test = self._branch(schema["contains"], "x")
            lines.append(f"{pad}    if not any({test} for x in {var}): return False")
        items = schema.get("items", True)
        if not isinstance(items, Mapping | bool):
            raise Unsupported("items as a list of schemas")
        item = self._name("i")
        checks = self.statements(items, item, depth + (2 if guarded else 1))
        if checks:
            lines += [f"{pad}    for {item} in {var}:", *checks]
        return [line for line in lines if line] if len(lines) > 1 else []

    def _ref(self, pointer: Any) -> str:
        """The helper deciding a local ``$ref``, written once (a schema may refer to itself)."""
        name = self._refs.get(pointer)
        if name is not None:
            return name
        if self.root is None or not isinstance(pointer, str) or not pointer.startswith("#/"):
            raise Unsupported(f"$ref {pointer!r}")
        target: Any = self.root
        for step in pointer[2:].split("/"):
            step = step.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, Mapping) or step not in target:
                raise Unsupported(f"$ref {pointer!r}")
            target = target[step]
        name = self._name("_d")
        self._refs[pointer] = name  # before its body: a recursive reference finds it
        body = self.statements(target, "v", 1)
        self.helpers += [f"def {name}(v):", *body, "    return True"]
        return name

    def _conditional(self, schema: Mapping[str, Any], var: str, depth: int) -> list[str]:
        """if/then/else: ``then`` applies when ``if`` holds, ``else`` when it does not."""
        pad = "    " * depth
        then = self.statements(schema.get("then", True), var, depth + 1)
        otherwise = self.statements(schema.get("else", True), var, depth + 1)
        if not then and not otherwise:
            return []
        return [
            f"{pad}if {self._branch(schema['if'], var)}:",
            *(then or [f"{pad}    pass"]),
            f"{pad}else:",
            *(otherwise or [f"{pad}    pass"]),
        ]

    def _object(self, schema: Mapping[str, Any], var: str, depth: int) -> list[str]:
        guarded = schema.get("type") != "object"
        pad = "    " * (depth - (0 if guarded else 1))
        lines = [f"{pad}if isinstance({var}, dict):" if guarded else ""]
        properties: Mapping[str, Any] = schema.get("properties", {})
        required = schema.get("required", [])
        if required:
            lines.append(
                f"{pad}    if not {var}.keys() >= {self.constant(frozenset(required))}: return False"
            )
        if "minProperties" in schema:
            lines.append(f"{pad}    if len({var}) < {int(schema['minProperties'])!r}: return False")
        extra = schema.get("additionalProperties", True)
        if extra is False:
            lines.append(
                f"{pad}    if not {var}.keys() <= {self.constant(frozenset(properties))}: return False"
            )
        # Each key against propertyNames, and each value of an undeclared key against additionalProperties.
        key, item = self._name("k"), self._name("x")
        inner = depth + (1 if guarded else 0)
        name_checks = self.statements(schema.get("propertyNames", True), key, inner + 1)
        extra_checks = [] if extra in (True, False) else self.statements(extra, item, inner + 2)
        if name_checks or extra_checks:
            lines.append(f"{pad}    for {key}, {item} in {var}.items():")
            lines += name_checks
            if extra_checks:
                lines.append(f"{pad}        if {key} not in {self.constant(frozenset(properties))}:")
                lines += extra_checks
        for name, sub in properties.items():
            child = self._name("p")
            inner = depth + (1 if guarded else 0)
            if name in required:  # present: checked above
                checks = self.statements(sub, child, inner)
                if checks:
                    lines += [f"{pad}    {child} = {var}[{name!r}]", *checks]
            else:
                checks = self.statements(sub, child, inner + 1)
                if checks:
                    lines += [
                        f"{pad}    if {name!r} in {var}:",
                        f"{pad}        {child} = {var}[{name!r}]",
                        *checks,
                    ]
        return [line for line in lines if line] if len(lines) > 1 else []


# The keywords ``condition`` writes as one expression; a branch of anyOf made of these needs no helper.
_EXPRESSIONS = frozenset(("type", "enum", "const", "minLength", "pattern", "minimum"))
_OBJECT_KEYWORDS = frozenset(
    ("properties", "required", "additionalProperties", "minProperties", "propertyNames")
)
# Decided here for the mapping format's schema; not for strict JSON, whose _open() does not know them.
_NOT_STRICT = frozenset(("$ref", "if", "then", "else", "minProperties", "propertyNames"))
_KEYWORDS = _NOT_STRICT | frozenset(
    (
        "type",
        "enum",
        "const",
        "minLength",
        "pattern",
        "minimum",
        "items",
        "contains",
        "minItems",
        "properties",
        "required",
        "additionalProperties",
        "anyOf",
    )
)


def _open(schema: Mapping[str, Any]) -> bool:
    """Whether a value valid under ``schema`` may hold something that is not strict JSON without the
    schema's own tests (with strict types) noticing: then the value is checked whole."""
    if "enum" in schema or "const" in schema:
        return False
    if "anyOf" in schema and "type" not in schema:
        return any(not isinstance(branch, Mapping) or _open(branch) for branch in schema["anyOf"])
    types = schema.get("type")
    if types is None:
        return True
    names = [types] if isinstance(types, str) else list(types)
    if "object" in names and schema.get("additionalProperties", True) is not False:
        return True
    return "array" in names and not isinstance(schema.get("items"), Mapping)


def _type_test(types: Any, var: str, strict: bool = False) -> str:
    names = [types] if isinstance(types, str) else list(types)
    if any(name not in _PYTHON_TYPES for name in names):
        raise Unsupported(f"type {types!r}")
    if strict:
        return "(" + " or ".join(_STRICT_TYPES[name].format(v=var) for name in names) + ")"
    test = f"isinstance({var}, ({', '.join(_PYTHON_TYPES[name] for name in names)},))"
    if "integer" in names:  # since draft 6 a float without a fractional part is an integer
        test = f"({test} or isinstance({var}, float) and {var}.is_integer())"
    if ("number" in names or "integer" in names) and "boolean" not in names:
        test = f"({test} and not isinstance({var}, bool))"
    return test


def _equals(var: str, value: Any) -> str:
    """fastjsonschema's equality for enum and const: True is not 1, and 1 is not "1"."""
    if isinstance(value, bool):
        return f"({var} is {value!r})"
    if value is None:
        return f"({var} is None)"
    if isinstance(value, int | float):
        return f"(isinstance({var}, (int, float)) and not isinstance({var}, bool) and {var} == {value!r})"
    if isinstance(value, str):
        return f"(isinstance({var}, str) and {var} == {value!r})"
    raise Unsupported(f"an enum or const value of type {type(value).__name__}")
