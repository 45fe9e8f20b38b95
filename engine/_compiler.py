"""Turning a loaded mapping document into compiled targets: one closure tree per target, built once.

Every compiled field knows its YAML location and its target field path, so the errors it raises at transform
time point at the line that produced them.
"""

from __future__ import annotations

import difflib
import logging
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import jsonschema

from ._codegen import generate
from ._errors import (
    CompileError,
    Location,
    MappingStructureError,
    PayloadValidationError,
    Problem,
    TransformError,
)
from ._expressions import Evaluator, ExpressionCompiler, Scope, is_truthy
from ._functions import MISSING, FunctionContext, FunctionError, FunctionSet, LookupTable, lookup_key
from ._kinds import SchemaCheck, TargetKind, format_path, get_kind, json_problems
from ._trace import ACTIVE, ARRAY, runtime_field, scope_chain
from ._yaml import LocatedDocument, PathKey

_log = logging.getLogger("shipmap.engine.codegen")

OMIT: Any = object()  # a field that produced nothing and has no default: left out of the payload

StaticPath = tuple[str, ...]
_CLOSURE, _ONE_KEY, _TWO_KEYS, _CONSTANT, _KEY_THEN_FINISH = range(5)
_FINISH_OPTIONS = frozenset({"path", "default", "required", "type", "lookup", "description"})
_SOURCE_KEYS = ("path", "template", "literal", "use", "each", "fields")


@cache
def mapping_format_schema() -> Mapping[str, Any]:
    """The JSON Schema of the mapping file format (what ``shipmap schema`` prints)."""
    import json

    text = resources.files(__package__).joinpath("mapping.schema.json").read_text(encoding="utf-8")
    loaded: Mapping[str, Any] = json.loads(text)
    return loaded


@cache
def _format_check() -> SchemaCheck:
    return SchemaCheck(mapping_format_schema())


@dataclass
class CompiledTarget:
    """One named target of a mapping: its kind, its guard and its compiled field tree."""

    name: str
    kind: TargetKind
    location: Location
    _produce: Callable[[Any], Any] = field(repr=False)
    _locations: dict[StaticPath, Location] = field(repr=False)
    _reference: Callable[[Any], Any] = field(repr=False)  # the closure tree
    _generated: Callable[[Any], Any] | None = field(default=None, repr=False)  # the same, as generated code

    def produce(self, source: Any) -> dict[str, Any] | None:
        """The payload for ``source``, or None when the target's ``when`` guard does not hold."""
        try:
            result: dict[str, Any] | None = self._produce(source)
        except RecursionError:
            # A source nested thousands of levels deep (JMESPath and Jinja walk it recursively).
            raise TransformError(
                "the source document is nested too deeply to map", location=self.location, field=self.name
            ) from None
        return result

    def problems(self, payload: Any) -> list[Problem]:
        """Every way ``payload`` breaks this target's kind, each located at the mapping line that made it."""
        found = json_problems(payload) or self.kind.problems(payload)
        return [
            Problem(field=self._field_name(parts), message=message, location=self.where(parts))
            for parts, message in found
        ]

    def validate(self, payload: Any) -> None:
        problems = self.problems(payload)
        if problems:
            raise PayloadValidationError(self.name, self.kind.name, problems)

    def where(self, parts: tuple[Any, ...]) -> Location:
        static = tuple(ARRAY if isinstance(part, int) else str(part) for part in parts)
        while static:
            found = self._locations.get(static)
            if found is not None:
                return found
            static = static[:-1]
        return self._locations.get((), self.location)

    def _field_name(self, parts: tuple[Any, ...]) -> str:
        return f"{self.name}.{format_path(parts)}" if parts else self.name


def static_field_name(target: str, static: StaticPath) -> str:
    """``('line_items', '[]', 'sku')`` of target ``order`` -> ``order.line_items[].sku``."""
    text = target
    for part in static:
        text += part if part == ARRAY else f".{part}"
    return text


@dataclass
class _Site:
    """What compiling one field needs to know about where it stands."""

    yaml_path: PathKey  # where the spec is in the YAML document
    static: StaticPath  # where the value goes in the payload, arrays as "[]"
    target: str

    @property
    def field_name(self) -> str:
        return static_field_name(self.target, self.static)

    def child(self, yaml_key: str | int, static_key: str | None) -> _Site:
        static = self.static if static_key is None else (*self.static, static_key)
        return _Site((*self.yaml_path, yaml_key), static, self.target)


@dataclass
class CompileReport:
    """What ``shipmap validate`` needs beyond compiling: what each target maps, and what went unused."""

    mapped: dict[str, dict[StaticPath, set[str]]] = field(default_factory=dict)
    opaque: dict[str, set[StaticPath]] = field(default_factory=dict)
    used_fragments: set[str] = field(default_factory=set)


class MappingCompiler:
    def __init__(
        self, document: LocatedDocument, *, tracing: bool = False, default_zone: str | None = None
    ) -> None:
        self.document = document
        self.tracing = tracing
        self.default_zone = default_zone
        self._label_chains: dict[str, tuple[str, ...]] = {}
        self.spec: dict[str, Any] = document.value
        self.report = CompileReport()
        self._fragment_stack: list[str] = []
        self._locations: dict[StaticPath, Location] = {}
        self._mapped: dict[StaticPath, set[str]] = {}
        self._opaque: set[StaticPath] = set()
        # The plain evaluator of each expression text, for the generated code to call.
        self._evaluators: dict[tuple[str, bool | None], Evaluator] = {}

    def where(self, path: PathKey) -> Location:
        return self.document.where(path)

    # -- document level -----------------------------------------------------------------------------------

    def check_structure(self) -> None:
        if not isinstance(self.spec, dict):
            raise MappingStructureError(
                "a mapping file must be a YAML object with 'shipmap: 1' and 'targets'",
                location=self.where(()),
            )
        check = _format_check()
        if check.is_valid(self.spec):
            return
        # An unknown key explains a missing one (a typo), so it is reported first.
        errors = sorted(
            check.errors(self.spec),
            key=lambda e: (list(map(str, e.absolute_path)), e.validator != "additionalProperties"),
        )
        if errors:
            raise _structure_error(errors[0], self.document)

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
        site = _Site((*base, "fields"), (), name)
        body = self._object(spec["fields"], site)
        when = self._expression(spec["when"], _Site((*base, "when"), (), name)) if "when" in spec else None
        rebase = (
            self._expression(spec["from"], _Site((*base, "from"), (), name), navigate=True)
            if "from" in spec
            else None
        )
        label = self.expressions.source_label(spec["from"]) if "from" in spec else ""
        self.report.mapped[name] = self._mapped
        self.report.opaque[name] = self._opaque
        location = self.document.key_location(base)

        def produce(source: Any) -> Any:
            scope = Scope(source, None, source)
            if rebase is not None:
                scope = Scope(rebase(scope), scope, source, label)
            # The guard sees what the fields see: the from part, with $root for the whole document.
            if when is not None and not is_truthy(when(scope)):
                return None
            payload = body(scope)
            return {} if payload is OMIT else payload

        generated = None if self.tracing else generate(self, name)
        if generated is None:
            return CompiledTarget(name, kind, location, produce, self._locations, produce)

        def run(source: Any) -> Any:
            try:
                return generated(source)
            except Exception as error:  # the reference runs it again, and words any error
                _log.debug("target %s: the reference takes over (%s)", name, type(error).__name__)
                return produce(source)

        return CompiledTarget(name, kind, location, run, self._locations, produce, generated)

    # -- fields ---------------------------------------------------------------------------------------------

    def _expression(self, text: str, site: _Site, *, navigate: bool = False) -> Evaluator:
        return self._compile(text, site.yaml_path, site.field_name, navigate=navigate)

    def _compile(
        self,
        text: str,
        yaml_path: PathKey,
        field_name: str,
        *,
        template: bool | None = None,
        navigate: bool = False,
    ) -> Evaluator:
        evaluate = self.expressions.compile(text, self.where(yaml_path), field_name, template=template)
        if not self.tracing:
            self._evaluators.setdefault((text, template), evaluate)
            return evaluate
        reads = self.expressions.reads_of(text, template=template)
        if navigate:
            # from/each only move through the source; what is read below them is recorded there.
            label = self.expressions.source_label(text)
            if isinstance(label, str):
                self._label_chains[label] = reads[0][1] if reads else ()
            return evaluate
        return _traced_reads(evaluate, reads, self._label_chains)

    def evaluator(self, text: str, template: bool | None) -> Evaluator:
        """The evaluator compiled for ``text`` (as a template or not, as the field said)."""
        return self._evaluators[(text, template)]

    def _field(self, spec: Any, site: _Site) -> Callable[[Scope], Any]:
        self._locations.setdefault(site.static, self.where(site.yaml_path))
        if isinstance(spec, str):
            return _omit_null(self._expression(spec, site))
        if not isinstance(spec, dict):
            value = spec
            self._opaque.add(site.static)
            return lambda scope: value
        if not any(key in spec for key in _SOURCE_KEYS):
            return self._object(spec, site)
        return self._spec(spec, site)

    def _object(self, fields: dict[str, Any], site: _Site) -> Callable[[Scope], Any]:
        self._locations.setdefault(site.static, self.where(site.yaml_path))
        self._mapped.setdefault(site.static, set()).update(fields)
        # The commonest fields (a literal, a path of one or two keys) are done inline in the loop below:
        # no call per field. Everything else is a compiled closure.
        frozen = tuple(self._slot(key, spec, site.child(key, key)) for key, spec in fields.items())

        def build_object(scope: Scope) -> Any:
            out = {}
            data = scope.data
            is_dict = type(data) is dict
            for key, mode, first, second in frozen:
                if mode == _ONE_KEY:
                    if is_dict:
                        value = data.get(first)
                        if value is not None:
                            out[key] = value
                elif mode == _TWO_KEYS:
                    if is_dict:
                        value = data.get(first)
                        if type(value) is dict:
                            value = value.get(second)
                            if value is not None:
                                out[key] = value
                elif mode == _KEY_THEN_FINISH:
                    value = second(data.get(first) if is_dict else None, scope)
                    if value is not OMIT:
                        out[key] = value
                elif mode == _CONSTANT:
                    out[key] = first
                else:
                    value = first(scope)
                    if value is not OMIT:
                        out[key] = value
            return out if out else OMIT

        return build_object

    def _slot(self, key: str, spec: Any, site: _Site) -> tuple[str, int, Any, Any]:
        """How the object builder makes one field: inline for a literal or a path of one or two keys (with
        or without finishing steps), else through the field's compiled closure. Tracing needs the closures."""
        if not self.tracing:
            if isinstance(spec, str):
                keys = self.expressions.plain_keys(spec)
                if keys is not None and len(keys) == 1:
                    return self._inline(site, (key, _ONE_KEY, keys[0], None))
                if keys is not None and len(keys) == 2:
                    return self._inline(site, (key, _TWO_KEYS, keys[0], keys[1]))
            elif not isinstance(spec, dict):
                return self._inline(site, (key, _CONSTANT, spec, None))
            finished = self._finished_key(spec, site)
            if finished is not None:
                return self._inline(site, (key, _KEY_THEN_FINISH, *finished))
        return key, _CLOSURE, self._field(spec, site), None

    def _inline(self, site: _Site, slot: tuple[str, int, Any, Any]) -> tuple[str, int, Any, Any]:
        self._locations.setdefault(site.static, self.where(site.yaml_path))
        return slot

    def _finished_key(self, spec: Any, site: _Site) -> tuple[str, Callable[[Any, Scope], Any]] | None:
        """For ``{path: key, default/type/lookup/required}``: the key and its finishing steps, to run inline."""
        if not isinstance(spec, dict) or "path" not in spec or not set(spec) <= _FINISH_OPTIONS:
            return None
        keys = self.expressions.plain_keys(spec["path"])
        if keys is None or len(keys) != 1:
            return None
        return keys[0], self._finisher(spec, site, spec["path"])

    def _spec(self, spec: dict[str, Any], site: _Site) -> Callable[[Scope], Any]:
        location = self.where(site.yaml_path)
        sources = [key for key in _SOURCE_KEYS if key in spec]
        if "each" in spec:
            element_sources = [key for key in sources if key != "each" and key != "literal"]
            if len(element_sources) != 1 or "literal" in spec:
                raise CompileError(
                    "'each' needs exactly one of fields, path, template or use to build each element",
                    location=location,
                    field=site.field_name,
                )
        elif len(sources) != 1:
            raise CompileError(
                f"a field takes one source, but this one has {' and '.join(sources)}",
                location=location,
                field=site.field_name,
            )
        if ("from" in spec and not ({"use", "fields"} & set(spec))) or ("from" in spec and "each" in spec):
            raise CompileError(
                "'from' goes with 'use' or 'fields'",
                location=self.where((*site.yaml_path, "from")),
                field=site.field_name,
            )
        for option in ("lookup", "type"):
            if option in spec and ({"use", "fields"} & set(spec)):
                raise CompileError(
                    f"'{option}' applies to a single value, not to an object",
                    location=self.where((*site.yaml_path, option)),
                    field=site.field_name,
                )
        source, label = self._source(spec, site)
        finish = self._finisher(spec, site, label)
        guard = self._expression(spec["when"], site.child("when", None)) if "when" in spec else None
        if guard is None:
            return lambda scope: finish(source(scope), scope)

        def guarded(scope: Scope) -> Any:
            if not is_truthy(guard(scope)):
                return OMIT
            return finish(source(scope), scope)

        return guarded

    def _source(self, spec: dict[str, Any], site: _Site) -> tuple[Callable[[Scope], Any], str]:
        """The raw value of a field spec (None when absent) and the label its source path is shown with."""
        if "each" in spec:
            return self._each(spec, site), spec["each"]
        if "literal" in spec:
            value = spec["literal"]
            if isinstance(value, (dict, list)):
                self._opaque.add(site.static)
            return (lambda scope: value), "literal"
        if "path" in spec:
            text = spec["path"]
            return self._compile(text, (*site.yaml_path, "path"), site.field_name, template=False), text
        if "template" in spec:
            text = spec["template"]
            return self._compile(text, (*site.yaml_path, "template"), site.field_name, template=True), text
        body = (
            self._use(spec, site)
            if "use" in spec
            else self._object(spec["fields"], site.child("fields", None))
        )
        if "from" not in spec:
            return (lambda scope: _none_if_omit(body(scope))), "@"
        rebase = self._expression(spec["from"], site.child("from", None), navigate=True)
        scope_label = self.expressions.source_label(spec["from"])

        def from_source(scope: Scope) -> Any:
            data = rebase(scope)
            if data is None:
                return None
            return _none_if_omit(body(Scope(data, scope, scope.root, scope_label)))

        return from_source, spec["from"]

    def _use(self, spec: dict[str, Any], site: _Site) -> Callable[[Scope], Any]:
        name = spec["use"]
        fragments = self.spec.get("fragments") or {}
        if name not in fragments:
            close = difflib.get_close_matches(name, sorted(fragments), n=1)
            raise CompileError(
                f"unknown fragment '{name}'",
                location=self.where((*site.yaml_path, "use")),
                field=site.field_name,
                hint=f"did you mean '{close[0]}'?" if close else "declare it under fragments:",
            )
        if name in self._fragment_stack:
            raise CompileError(
                f"fragment '{name}' uses itself ({' -> '.join([*self._fragment_stack, name])})",
                location=self.where((*site.yaml_path, "use")),
                field=site.field_name,
            )
        self.report.used_fragments.add(name)
        self._fragment_stack.append(name)
        try:
            # Compiled per use so that errors name the field path of this use, with the fragment's lines.
            return self._object(fragments[name], _Site(("fragments", name), site.static, site.target))
        finally:
            self._fragment_stack.pop()

    def _each(self, spec: dict[str, Any], site: _Site) -> Callable[[Scope], Any]:
        label = spec["each"]
        items_of = self._expression(label, site.child("each", None), navigate=True)
        element_site = _Site(site.yaml_path, (*site.static, ARRAY), site.target)
        element_spec = {key: spec[key] for key in ("fields", "path", "template", "use") if key in spec}
        if "fields" in element_spec:
            element = self._object(element_spec["fields"], element_site.child("fields", None))
        else:
            element = self._field(element_spec, element_site)
        location = self.where((*site.yaml_path, "each"))
        field_name = site.field_name
        array_prefix = field_name + ARRAY

        def build_array(scope: Scope) -> Any:
            items = items_of(scope)
            if items is None:
                return None
            if type(items) is not list:
                raise TransformError(
                    f"'each' needs an array, found {type(items).__name__}",
                    location=location,
                    field=field_name,
                    source_path=scope.child_path(label),
                    value=items,
                    has_value=True,
                )
            out = []
            index = 0
            try:
                for index, item in enumerate(items):
                    value = element(Scope(item, scope, scope.root, label, index))
                    if value is not OMIT:
                        out.append(value)
            except TransformError as error:
                if error.field and error.field.startswith(array_prefix):
                    error.field = f"{field_name}[{index}]{error.field[len(array_prefix) :]}"
                raise
            return out

        return build_array

    def _finisher(self, spec: dict[str, Any], site: _Site, label: str) -> Callable[[Any, Scope], Any]:
        """lookup, then type, then default / required / omit: only the steps this field asks for."""
        steps: list[Callable[[Any], Any]] = []
        # A table that maps null explicitly (Shopify's fulfillment_status: null) is consulted for null too.
        null_entry: Any = MISSING
        if "lookup" in spec:
            table_name = spec["lookup"]
            self.expressions._use_lookup(table_name, self.where((*site.yaml_path, "lookup")), site.field_name)
            null_entry = self.lookups[table_name].entries.get(lookup_key(None), MISSING)
            lookup = self.functions.jinja_globals["lookup"]
            steps.append(lambda value: lookup(table_name, value))
        if "type" in spec:
            steps.append(self.functions.jinja_globals[spec["type"]])
        default = spec.get("default", MISSING)
        required = bool(spec.get("required", False))
        location = self.where(site.yaml_path)
        field_name = site.field_name
        tracing = self.tracing

        def finish(value: Any, scope: Scope) -> Any:
            if value is None and null_entry is not MISSING:
                value = null_entry
            elif value is not None:
                for step in steps:
                    try:
                        value = step(value)
                    except FunctionError as error:
                        raise TransformError(
                            str(error),
                            location=location,
                            field=field_name,
                            source_path=scope.child_path(label),
                            value=value,
                            has_value=True,
                        ) from None
                    if value is None:
                        break
            if value is None:
                if default is not MISSING:
                    if tracing:
                        _record_default(field_name, scope)
                    return default
                if required:
                    raise TransformError(
                        "required field has no value",
                        location=location,
                        field=field_name,
                        source_path=scope.child_path(label),
                        value=None,
                        has_value=True,
                        hint="map it from another source path, or give it a default",
                    )
                return OMIT
            return value

        return finish


def _traced_reads(
    evaluate: Evaluator, reads: list[tuple[str, tuple[str, ...]]], label_chains: dict[str, tuple[str, ...]]
) -> Evaluator:
    def traced(scope: Scope) -> Any:
        trace = ACTIVE.get()
        if trace is not None:
            for scope_name, chain in reads:
                if scope_name == "root":
                    base: tuple[str, ...] = ()
                elif scope_name == "parent":
                    base = scope_chain(scope.parent, label_chains) if scope.parent is not None else ()
                else:
                    base = scope_chain(scope, label_chains)
                trace.reads.add(base + chain)
        return evaluate(scope)

    return traced


def _record_default(field_name: str, scope: Scope) -> None:
    trace = ACTIVE.get()
    if trace is not None:
        trace.defaulted.add(runtime_field(field_name, scope))


def _omit_null(evaluate: Evaluator) -> Callable[[Scope], Any]:
    def produce(scope: Scope) -> Any:
        value = evaluate(scope)
        return OMIT if value is None else value

    return produce


def _none_if_omit(value: Any) -> Any:
    return None if value is OMIT else value


def _stem(file: str) -> str:
    name = file.replace("\\", "/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def _structure_error(error: jsonschema.ValidationError, document: LocatedDocument) -> MappingStructureError:
    path = tuple(error.absolute_path)
    where = ".".join(str(part) for part in path) or "the top level"
    if error.validator == "additionalProperties":
        schema: Any = error.schema
        allowed = sorted(schema.get("properties", {}))
        instance: Any = error.instance
        extras = sorted(set(instance) - set(allowed))
        key = extras[0] if extras else "?"
        close = difflib.get_close_matches(key, allowed, n=1)
        return MappingStructureError(
            f"unknown key '{key}' in {where}",
            location=document.key_location((*path, key)),
            hint=(f"did you mean '{close[0]}'? " if close else "") + f"known keys: {', '.join(allowed)}",
        )
    if error.validator == "required":
        return MappingStructureError(f"{where}: {error.message}", location=document.where(path))
    if error.validator == "enum":
        return MappingStructureError(
            f"{where}: {error.instance!r} is not one of {', '.join(map(str, cast(list[Any], error.validator_value)))}",
            location=document.where(path),
        )
    if error.validator == "const" and path == ("shipmap",):
        return MappingStructureError(
            "unsupported format version; this shipmap reads 'shipmap: 1'", location=document.where(path)
        )
    return MappingStructureError(f"{where}: {error.message}", location=document.where(path))


__all__ = [
    "ARRAY",
    "OMIT",
    "CompileReport",
    "CompiledTarget",
    "MappingCompiler",
    "mapping_format_schema",
    "static_field_name",
]
