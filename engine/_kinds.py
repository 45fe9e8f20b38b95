"""Built-in target kinds: each one is a JSON Schema file in ``kinds/`` that also carries its default HTTP route.

The schema file is the single statement of a kind; the validator, the route and ``shipmap validate``'s
required-field check are all read from it.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

from ._errors import preview_value
from ._validator import Unsupported, compile_check

if TYPE_CHECKING:
    import jsonschema

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def format_path(parts: Iterator[Any] | tuple[Any, ...] | list[Any]) -> str:
    """``('line_items', 2, 'sku')`` -> ``line_items[2].sku``: the way every error names a field."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif text:
            text += f".{part}"
        else:
            text = str(part)
    return text


def json_problems(value: Any) -> list[tuple[tuple[Any, ...], str]]:
    """Where ``value`` is not strict JSON, as ``(field path parts, message)``: a number that is NaN or
    infinite, a string with a lone surrogate, a value of no JSON type. Empty when a strict encoder takes it,
    which is checked first, in C."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError, RecursionError):
        pass
    else:
        return []
    found: list[tuple[tuple[Any, ...], str]] = []
    stack: list[tuple[tuple[Any, ...], Any]] = [((), value)]
    while stack and len(found) < 20:
        parts, item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    found.append((parts, f"has a key of type {type(key).__name__}, not a string"))
                else:
                    stack.append(((*parts, key), child))
        elif isinstance(item, list | tuple):
            stack.extend(((*parts, index), child) for index, child in enumerate(item))
        elif isinstance(item, int) and not isinstance(item, bool) and item.bit_length() > 14_000:
            found.append((parts, "got an integer of more than 4,300 digits, which cannot be written as JSON"))
        elif isinstance(item, float) and not math.isfinite(item):
            found.append((parts, f"got {item}, which is not a JSON number (only finite numbers are)"))
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                found.append((parts, "the text holds a lone UTF-16 surrogate, which is not Unicode"))
        elif item is not None and not isinstance(item, bool | int | float):
            found.append((parts, f"got a value of type {type(item).__name__}, which JSON cannot hold"))
    if not found:
        found.append(((), "the payload is not JSON (nested too deeply to encode)"))
    found.sort(key=lambda entry: [str(p) for p in entry[0]])
    return found


@dataclass(frozen=True, slots=True)
class Route:
    """Where a payload of a kind is sent by default: a method and a path template over payload fields."""

    method: str
    path: str

    def render(self, payload: Mapping[str, Any], path: str | None = None) -> str:
        """Fill the template (or an override) from the payload's top-level fields, each URL-quoted."""
        parts = _path_parts(path or self.path)
        text = parts[0]
        for at in range(1, len(parts), 2):
            name = parts[at]
            value = payload.get(name)
            if value is None or value == "":
                raise KeyError(name)
            piece = str(value)
            # Letters and digits are what quote() leaves alone, and what ids mostly are.
            text += (piece if piece.isascii() and piece.isalnum() else quote(piece, safe="")) + parts[at + 1]
        return text


@lru_cache(maxsize=256)
def _path_parts(template: str) -> tuple[str, ...]:
    """A path template split at its placeholders: text, name, text, ..., name, text."""
    return tuple(_PLACEHOLDER.split(template))


class SchemaCheck:
    """A JSON Schema checked two ways. Code compiled by _validator (or fastjsonschema, for a schema beyond it)
    on first use decides, fast; jsonschema, imported only then, walks a value that failed to name every
    problem. Neither costs anything at import."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema
        # Terse deciding code raises bare exceptions, with no value, path or sub-schema attached: it is half
        # the size, so it compiles in half the time (most of a one-document preview's validation), and it
        # fails faster (anyOf tries its branches by failing them). fastjsonschema 2.22 cannot write it for a
        # `const` keyword (a KeyError while generating).
        self._terse = not _mentions(schema, "const")
        self._fast: Callable[[Any], Any] | None = None
        self._decides: Callable[[Any], bool] | None = None  # _validator's code: valid, or not
        self._strict: Callable[[Any], bool] | None = None  # the same, and strict JSON
        self._detailed: Callable[[Any], Any] | None = None
        self._explainer: jsonschema.Draft202012Validator | None = None
        self._lock = threading.Lock()

    def is_valid(self, value: Any) -> bool:
        decides = self._decides or self._compile_decider()
        if decides is not _fastjsonschema:
            return decides(value)
        import fastjsonschema  # only for a schema beyond _validator (none of shipmap's own)

        fast = self._fast or self._compile()
        try:
            fast(value)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    def is_valid_json(self, value: Any) -> bool:
        """Valid, and strict JSON (``json_problems`` finds nothing), in one pass over the value. A False can
        be a false alarm: then ask ``json_problems`` and ``is_valid``, which decide exactly."""
        strict = self._strict or self._compile_decider(strict=True)
        if strict is _fastjsonschema:
            return not json_problems(value) and self.is_valid(value)
        return strict(value)

    def _compile_decider(self, *, strict: bool = False) -> Callable[[Any], bool]:
        with self._lock:
            decider = self._strict if strict else self._decides
            if decider is None:
                try:
                    decider = compile_check(self.schema, strict_json=strict)
                except Unsupported:
                    decider = _fastjsonschema
                if strict:
                    self._strict = decider
                else:
                    self._decides = decider
            return decider

    def first_problem(self, value: Any) -> tuple[tuple[Any, ...], str] | None:
        """fastjsonschema's own verdict: one problem, described without ever printing the value."""
        import fastjsonschema

        if not self._terse:
            detailed = self._fast or self._compile()
        else:
            with self._lock:
                if self._detailed is None:
                    self._detailed = self._generate(detailed=True)
                detailed = self._detailed
        try:
            detailed(value)
        except fastjsonschema.JsonSchemaValueException as error:
            parts = tuple(int(p) if isinstance(p, str) and p.isdigit() else p for p in (error.path or [])[1:])
            return parts, str(error.message).split(" ", 1)[-1]
        return None

    def errors(self, value: Any) -> Iterator[jsonschema.ValidationError]:
        if self._explainer is None:
            import jsonschema

            self._explainer = jsonschema.Draft202012Validator(self.schema)
        return self._explainer.iter_errors(value)

    def _compile(self) -> Callable[[Any], Any]:
        with self._lock:
            if self._fast is None:
                self._fast = self._generate(detailed=not self._terse)
            return self._fast

    def _generate(self, *, detailed: bool) -> Callable[[Any], Any]:
        import fastjsonschema

        # fastjsonschema speaks draft 7; these schemas use nothing of 2020-12 beyond it.
        draft7 = {**self.schema, "$schema": "http://json-schema.org/draft-07/schema#"}
        return fastjsonschema.compile(draft7, detailed_exceptions=detailed)


def _fastjsonschema(value: Any) -> bool:  # pragma: no cover - a marker: the schema is beyond _validator
    raise NotImplementedError


def _mentions(schema: Any, keyword: str) -> bool:
    if isinstance(schema, dict):
        return keyword in schema or any(_mentions(value, keyword) for value in schema.values())
    if isinstance(schema, list):
        return any(_mentions(value, keyword) for value in schema)
    return False


class TargetKind:
    """A built-in target kind: its name, the API it belongs to, its schema and its default route."""

    def __init__(self, name: str, api: str, route: Route, schema: Mapping[str, Any]) -> None:
        self.name = name
        self.api = api
        self.route = route
        self.schema = schema
        # Every $ref resolved in place once, so neither validator looks anything up per payload.
        self.inlined: Mapping[str, Any] = _inline(schema, schema)
        self._check = SchemaCheck(self.inlined)

    def __repr__(self) -> str:
        return f"<TargetKind {self.name} {self.route.method} {self.route.path}>"

    def is_valid(self, payload: Any) -> bool:
        return self._check.is_valid(payload)

    def payload_problems(self, payload: Any) -> list[tuple[tuple[Any, ...], str]]:
        """What keeps ``payload`` from being sent: not strict JSON (``json_problems``), else every violation
        of the kind (``problems``). A valid payload costs one call of the kind's compiled check."""
        if self._check.is_valid_json(payload):
            return []
        return json_problems(payload) or self.problems(payload)

    def problems(self, payload: Any) -> list[tuple[tuple[Any, ...], str]]:
        """Every violation as ``(field path parts, message)``, sorted by path; empty when valid."""
        if self.is_valid(payload):
            return []
        found: list[tuple[tuple[Any, ...], str]] = []
        try:
            for error in self._check.errors(payload):
                found.extend(_explain(error))
        except RecursionError:
            # jsonschema words its messages with repr() of the value, which a deeply nested value defeats.
            first = self._check.first_problem(payload)
            found = [first] if first is not None else [((), "the payload is nested too deeply to check")]
        found.sort(key=lambda item: [str(p) for p in item[0]])
        return found

    def is_known_field(self, parts: tuple[str | int, ...]) -> bool:
        """Whether a target field path exists in this kind's schema (for ``shipmap validate``)."""
        node: Any = self.inlined
        for part in parts:
            if isinstance(part, int):
                node = node.get("items")
                if node is None:
                    return False
                continue
            props = node.get("properties")
            if props is None or part not in props:
                # Objects without declared properties (DG's flow-specific inputs) take any field.
                return props is None and node.get("additionalProperties", True) is not False
            node = props[part]
        return True

    def refuses_unknown(self, parts: tuple[str | int, ...]) -> bool:
        """Whether the object holding the field at ``parts`` refuses keys it does not declare: then an unknown
        field there is an error (the payload fails its contract); elsewhere it is a warning."""
        node: Any = self.inlined
        for part in parts[:-1]:
            node = node.get("items") if isinstance(part, int) else node.get("properties", {}).get(part)
            if not isinstance(node, dict):
                return False
        return node.get("additionalProperties", True) is False

    def field_schema(self, parts: tuple[str | int, ...]) -> Mapping[str, Any] | None:
        """The schema of the target field at ``parts`` (an int part steps into array items), if declared."""
        node: Any = self.inlined
        for part in parts:
            node = node.get("items") if isinstance(part, int) else (node.get("properties") or {}).get(part)
            if node is None:
                return None
        return cast(Mapping[str, Any], node)

    def field_names(self, parts: tuple[str | int, ...]) -> tuple[str, ...]:
        """The declared field names of the object at ``parts``."""
        node = self.field_schema(parts)
        return tuple((node or {}).get("properties") or ())

    def required_children(self, parts: tuple[str | int, ...]) -> tuple[str, ...]:
        """The required field names of the object at ``parts`` (an int part steps into array items)."""
        node = self.field_schema(parts)
        return tuple((node or {}).get("required", ()))


def _explain(error: jsonschema.ValidationError) -> Iterator[tuple[tuple[Any, ...], str]]:
    path = tuple(error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        yield (*path, missing), "is required but missing"
    elif error.validator == "additionalProperties":
        schema: Any = error.schema
        instance: Any = error.instance
        extras = sorted(set(instance) - set(schema.get("properties", {})))
        for extra in extras:
            yield (*path, extra), "is not a field of this kind"
    elif error.validator in ("anyOf", "oneOf") and error.context:
        from jsonschema.exceptions import best_match

        best = best_match(error.context)
        if best is not None and best.validator not in ("type", "pattern"):
            yield from _explain(best)
        else:
            yield path, _value_message(error)
    else:
        yield path, _value_message(error)


def _value_message(error: jsonschema.ValidationError) -> str:
    found = preview_value(error.instance)
    schema: Any = error.schema if isinstance(error.schema, Mapping) else {}
    if error.validator in ("anyOf", "oneOf"):
        types = [branch.get("type", "a value") for branch in schema.get(error.validator, [])]
        return f"got {found}, expected one of {types}"
    if error.validator == "enum":
        return f"got {found}, expected one of {list(schema.get('enum', []))}"
    if error.validator == "pattern" and schema.get("pattern", "").startswith("^\\d{4}"):
        return f"got {found}, expected a datetime with a zone offset such as 2020-01-23T10:14:15-05:00"
    return f"got {found}: {error.message}"


def _inline(node: Any, document: Mapping[str, Any]) -> Any:
    """``node`` with every ``$ref`` replaced by what it points to (into this file or a sibling kind file)."""
    if isinstance(node, Mapping):
        if "$ref" in node:
            file, _, pointer = str(node["$ref"]).partition("#")
            target_document = _load_schema_file(file.removesuffix(".json")) if file else document
            target: Any = target_document
            for step in pointer.strip("/").split("/") if pointer else ():
                target = target[step]
            resolved = _inline(target, target_document)
            siblings = {key: _inline(value, document) for key, value in node.items() if key != "$ref"}
            # Keywords beside a $ref add to it (money_with_currency adds to money's required list).
            return {**resolved, **siblings}
        return {key: _inline(value, document) for key, value in node.items() if key != "$defs"}
    if isinstance(node, list):
        return [_inline(value, document) for value in node]
    return node


@cache
def _load_schema_file(stem: str) -> Mapping[str, Any]:
    text = resources.files(__package__).joinpath("kinds", f"{stem}.json").read_text(encoding="utf-8")
    loaded: Mapping[str, Any] = json.loads(text)
    return loaded


@cache
def builtin_kinds() -> Mapping[str, TargetKind]:
    """Every built-in kind by name. Read once: the files are package data and never change at run time."""
    kinds: dict[str, TargetKind] = {}
    for entry in sorted(resources.files(__package__).joinpath("kinds").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        stem = entry.name.removesuffix(".json")
        schema = _load_schema_file(stem)
        meta = schema.get("x-shipmap")
        if meta is None:  # fenix.common.json: shared definitions, not a kind
            continue
        route = Route(method=meta["route"]["method"], path=meta["route"]["path"])
        kinds[stem] = TargetKind(name=stem, api=meta["api"], route=route, schema=schema)
    return kinds


def get_kind(name: str) -> TargetKind:
    """The built-in kind called ``name``; ``KeyError`` names the known ones."""
    kinds = builtin_kinds()
    try:
        return kinds[name]
    except KeyError:
        raise KeyError(f"unknown target kind {name!r}; known kinds: {', '.join(sorted(kinds))}") from None
