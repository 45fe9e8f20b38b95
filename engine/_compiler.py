"""Turning a loaded mapping document into compiled targets: one closure tree per target, built once.

The document's format is checked first (``_format``); then each target's from, each and key, let and when
are compiled here, and its fields by :class:`FieldCompiler` (``_fields``). A target whose fields
``_codegen`` can write also gets a generated function, with the closure tree as its reference.
"""

from __future__ import annotations

import logging
import zoneinfo
from collections.abc import Callable
from typing import Any

from ._allowance import current as current_allowance
from ._codegen import generate
from ._errors import CompileError, Location, TransformError
from ._expressions import ExpressionCompiler
from ._fields import OMIT, FieldCompiler, Site
from ._format import check_structure
from ._functions import MISSING, FunctionContext, FunctionSet, LookupTable
from ._jmespath_direct import is_truthy
from ._kinds import get_kind
from ._scope import Evaluator, Scope
from ._target import _COLLECT, CompiledTarget
from ._trace import ARRAY
from ._yaml import LocatedDocument, PathKey

_log = logging.getLogger("shipmap.engine.codegen")


class MappingCompiler(FieldCompiler):
    """Compiles a loaded mapping document: its format, time zone, lookup tables and functions, then each
    target (from, each and key, let, when and the fields), with its generated fast path where one is
    written."""

    def __init__(
        self, document: LocatedDocument, *, tracing: bool = False, default_zone: str | None = None
    ) -> None:
        super().__init__(document, tracing=tracing)
        self.default_zone = default_zone

    # -- document level -----------------------------------------------------------------------------------

    def check_structure(self) -> None:
        check_structure(self.document)

    def build(self) -> tuple[str, zoneinfo.ZoneInfo, FunctionSet, ExpressionCompiler, list[CompiledTarget]]:
        self.check_structure()
        name = self.spec.get("name") or _stem(self.document.file)
        zone = self._zone()
        lookups = {
            table_name: LookupTable(table_name, table["map"], table.get("default", MISSING))
            for table_name, table in (self.spec.get("lookups") or {}).items()
        }
        self.lookups = lookups
        functions = FunctionSet(FunctionContext(default_zone=zone, lookups=lookups))
        self.functions = functions
        self.expressions = ExpressionCompiler(functions, frozenset(lookups))
        targets = [self._target(target_name) for target_name in self.spec["targets"]]
        return name, zone, functions, self.expressions, targets

    def _zone(self) -> zoneinfo.ZoneInfo:
        # A zone given by the caller (a run config reusing a packaged mapping) overrides the file's own.
        text = self.default_zone or self.spec.get("timezone", "UTC")
        try:
            return zoneinfo.ZoneInfo(text)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            given = " (given as default_zone)" if self.default_zone else ""
            raise CompileError(
                f"unknown time zone '{text}'{given}",
                location=self.where(("timezone",)),
                hint="use an IANA name such as America/New_York or Europe/London",
            ) from None

    def _target(self, name: str) -> CompiledTarget:
        spec = self.spec["targets"][name]
        base: PathKey = ("targets", name)
        kind = get_kind(spec["kind"])
        self._locations = {}
        self._mapped = {}
        self._opaque = set()
        self._visible = frozenset()
        self._has_lets = False
        # In a fan-out, field names start name[] (name[3].id once the element is known).
        label_name = f"{name}{ARRAY}" if "each" in spec else name
        top = Site(base, (), name)
        # from, then each, then let, when and the fields: each step reads what the step before it chose.
        rebase = (
            self._expression(spec["from"], top.child("from", None), navigate=True) if "from" in spec else None
        )
        label = self.expressions.source_label(spec["from"]) if "from" in spec else ""
        items_of = (
            self._expression(spec["each"], top.child("each", None), navigate=True) if "each" in spec else None
        )
        each_label = self.expressions.source_label(spec["each"]) if "each" in spec else ""
        key_of = self._expression(spec["key"], top.child("key", None)) if "key" in spec else None
        if "key" in spec and "each" not in spec:
            raise CompileError(
                "'key' names the element of a fan-out; it goes with 'each'",
                location=self.where((*base, "key")),
                field=name,
            )
        bind = self._lets(spec["let"], (*base, "let"), label_name) if "let" in spec else None
        when = (
            self._expression(spec["when"], Site((*base, "when"), (), label_name)) if "when" in spec else None
        )
        body = self._object(spec["fields"], Site((*base, "fields"), (), label_name))
        self._visible = frozenset()
        self.report.mapped[name] = self._mapped
        self.report.opaque[name] = self._opaque
        location = self.document.key_location(base)
        when_line = self.where((*base, "when")).line if "when" in spec else 0

        def start(source: Any) -> Scope | None:
            scope = Scope(source, None, source)
            if rebase is None:
                return scope
            data = rebase(scope)
            return None if data is None else Scope(data, scope, source, label)

        def produce(source: Any) -> Any:
            scope = start(source)
            if scope is None:
                return None
            if bind is not None:
                scope = bind(scope)
            # The guard sees what the fields see: the from part, with $root for the whole document.
            if when is not None and not is_truthy(when(scope)):
                return None
            payload = body(scope)
            return {} if payload is OMIT else payload

        def skip_reason(source: Any) -> str:
            scope = start(source)
            if scope is None:
                return f"from: {spec['from']} found nothing"
            if items_of is not None:
                items = items_of(scope)
                if not items:
                    return f"each: {spec['each']} found no elements"
                return f"when is false for every element (line {when_line})"
            if bind is not None:
                scope = bind(scope)
            if when is not None and not is_truthy(when(scope)):
                return f"when is false (line {when_line})"
            return "it produced nothing"

        if items_of is not None:
            fan_out = self._fan_out(name, spec, items_of, each_label, key_of, bind, when, body, start)
            return CompiledTarget(
                name, kind, location, produce, self._locations, produce, None, fan_out, skip_reason, "each"
            )
        generated = None if self.tracing or self._has_lets else generate(self, name)
        if generated is None:
            why = "let" if self._has_lets else ""
            return CompiledTarget(
                name, kind, location, produce, self._locations, produce, None, None, skip_reason, why
            )

        def run(source: Any) -> Any:
            try:
                return generated(source)
            except Exception as error:  # the reference runs it again, and words any error
                _log.debug("target %s: the reference takes over (%s)", name, type(error).__name__)
                return produce(source)

        return CompiledTarget(
            name,
            kind,
            location,
            run,
            self._locations,
            produce,
            generated,
            None,
            skip_reason,
            _write_checked=lambda: generate(self, name, kind.inlined),
        )

    def _fan_out(
        self,
        name: str,
        spec: dict[str, Any],
        items_of: Evaluator,
        each_label: Any,
        key_of: Evaluator | None,
        bind: Callable[[Scope], Scope] | None,
        when: Evaluator | None,
        body: Callable[[Scope], Any],
        start: Callable[[Any], Scope | None],
    ) -> Callable[[Any], list[tuple[str, dict[str, Any], Any]]]:
        """One payload per element of the target's ``each:`` array, each under a stable key."""
        each_location = self.where(("targets", name, "each"))
        key_location = self.where(("targets", name, "key")) if key_of is not None else each_location

        def fan_out(source: Any) -> list[tuple[str, dict[str, Any], Any]]:
            scope = start(source)
            if scope is None:
                return []
            items = items_of(scope)
            if items is None:
                return []
            if type(items) is not list:
                raise TransformError(
                    f"'each' needs an array, found {type(items).__name__}",
                    location=each_location,
                    field=name,
                    source_path=scope.child_path(spec["each"]),
                    value=items,
                    has_value=True,
                )
            out: list[tuple[str, dict[str, Any], Any]] = []
            seen: set[str] = set()
            sink = _COLLECT.get()
            allowance = current_allowance()  # a tool's limit on payloads, and its stop (_allowance.py)
            for index, item in enumerate(items):
                if allowance is not None and not allowance.admits(name, index, len(items)):
                    break
                element = Scope(item, scope, source, each_label, index)
                failed = len(sink) if sink is not None else 0
                try:
                    if bind is not None:
                        element = bind(element)
                    if when is not None and not is_truthy(when(element)):
                        continue
                    key = (
                        str(index)
                        if key_of is None
                        else _element_key(key_of(element), element, key_location, name)
                    )
                    if key in seen:
                        raise TransformError(
                            f"two elements have the key {key!r}; a fan-out key must tell elements apart",
                            location=key_location,
                            field=f"{name}[{index}]",
                            source_path=element.child_path(spec["key"]),
                            value=key,
                            has_value=True,
                            hint="key on a field that is unique per element (an id), or leave key: out",
                        )
                    seen.add(key)
                    payload = body(element)
                except TransformError as error:
                    if error.field and error.field.startswith(f"{name}{ARRAY}"):
                        error.field = f"{name}[{index}]{error.field[len(name) + len(ARRAY) :]}"
                    if sink is None:
                        raise
                    sink.append(error)
                    continue
                if sink is not None and len(sink) > failed:
                    continue  # a field of this element failed: no payload for it
                out.append((key, {} if payload is OMIT else payload, item))
                if allowance is not None:
                    allowance.made()
            return out

        return fan_out


def _element_key(value: Any, scope: Scope, location: Location, target: str) -> str:
    """A fan-out element's journal key: its ``key:`` value as text (an id keeps every digit)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value == "":
        raise TransformError(
            "a fan-out key must be a string or a number",
            location=location,
            field=f"{target}[{scope.index}]",
            source_path=scope.path() or None,
            value=value,
            has_value=True,
            hint="key on an id of the element, such as key: id",
        )
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _stem(file: str) -> str:
    name = file.replace("\\", "/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


__all__ = ["MappingCompiler"]
