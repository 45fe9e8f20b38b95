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
    TransformError,
)
from ._expressions import Evaluator, ExpressionCompiler, is_truthy
from ._functions import MISSING, FunctionContext, FunctionError, FunctionSet, LookupTable, lookup_key
from ._kinds import SchemaCheck, get_kind
from ._scope import SCOPE_NAMES, Scope
from ._target import _COLLECT, CompiledTarget, StaticPath, static_field_name
from ._trace import ACTIVE, ARRAY, runtime_field, scope_chain
from ._yaml import LocatedDocument, PathKey

_log = logging.getLogger("shipmap.engine.codegen")

OMIT: Any = object()  # a field that produced nothing and has no default: left out of the payload
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
        self._visible: frozenset[str] = frozenset()  # the let names the expression being compiled sees
        self._has_lets = False
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
        self._visible = frozenset()
        self._has_lets = False
        # In a fan-out, field names start name[] (name[3].id once the element is known).
        label_name = f"{name}{ARRAY}" if "each" in spec else name
        top = _Site(base, (), name)
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
            self._expression(spec["when"], _Site((*base, "when"), (), label_name)) if "when" in spec else None
        )
        body = self._object(spec["fields"], _Site((*base, "fields"), (), label_name))
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
            for index, item in enumerate(items):
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
            return out

        return fan_out

    def _lets(self, lets: dict[str, Any], yaml_path: PathKey, field_name: str) -> Callable[[Scope], Scope]:
        """Compile a ``let:`` block: each name computed once per scope, in order (a name sees the ones before
        it), visible to every expression below as ``$name`` and to templates as ``name``. The names stay
        visible (``self._visible``) until the caller restores the set it had."""
        self._has_lets = True
        compiled: list[tuple[str, Callable[[Scope], Any]]] = []
        reserved = set(SCOPE_NAMES) | set(self.functions.names) | {"namespace", "loop"}
        for let_name, text in lets.items():
            where = self.document.key_location((*yaml_path, let_name))
            if not isinstance(let_name, str) or not let_name.isidentifier() or let_name in reserved:
                raise CompileError(
                    f"'{let_name}' cannot be a let name",
                    location=where,
                    field=field_name,
                    hint="use a plain name (letters, digits, _) that is not this, parent, root, index or a function",
                )
            if isinstance(text, str):
                evaluate: Callable[[Scope], Any] = self._compile(
                    text, (*yaml_path, let_name), f"{field_name} (let {let_name})"
                )
            else:
                evaluate = _constant(text)
            compiled.append((let_name, evaluate))
            self._visible = self._visible | {let_name}

        def bind(scope: Scope) -> Scope:
            values = dict(scope.lets)
            inner = scope.with_lets(values)
            for let_name, evaluate in compiled:
                try:
                    values[let_name] = evaluate(inner)
                except TransformError as error:
                    if not error.message.startswith("in let "):
                        error.message = f"in let {let_name}: {error.message}"
                        error.args = (error.message,)
                    raise
            return inner

        return bind

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
        evaluate = self.expressions.compile(
            text, self.where(yaml_path), field_name, template=template, names=self._visible
        )
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
        if isinstance(spec, list):
            return self._list(spec, site)
        if not isinstance(spec, dict):
            value = spec
            self._opaque.add(site.static)
            return lambda scope: value
        if not any(key in spec for key in _SOURCE_KEYS):
            return self._object(spec, site)
        return self._spec(spec, site)

    def _list(self, specs: list[Any], site: _Site) -> Callable[[Scope], Any]:
        """A field written as a YAML list: each element is a field of its own (``[{name: …, value: …}]``);
        elements that give nothing are left out."""
        elements = [self._field(spec, site.child(position, ARRAY)) for position, spec in enumerate(specs)]

        def build_list(scope: Scope) -> Any:
            out = []
            for element in elements:
                value = element(scope)
                if value is not OMIT and value is not None:
                    out.append(value)
            return out

        return build_list

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
                try:
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
                except TransformError as error:
                    _collect_or_raise(error, scope)
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
            elif not isinstance(spec, (dict, list)):
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
        if "let" in spec and not ({"use", "fields", "each"} & set(spec)):
            raise CompileError(
                "'let' goes with fields, use or each: it names values for the fields below it",
                location=self.where((*site.yaml_path, "let")),
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
        rebase = (
            self._expression(spec["from"], site.child("from", None), navigate=True)
            if "from" in spec
            else None
        )
        saved = self._visible
        bind = self._lets(spec["let"], (*site.yaml_path, "let"), site.field_name) if "let" in spec else None
        body = (
            self._use(spec, site)
            if "use" in spec
            else self._object(spec["fields"], site.child("fields", None))
        )
        self._visible = saved
        if bind is not None:
            unbound = body
            body = lambda scope: unbound(bind(scope))  # noqa: E731
        if rebase is None:
            return (lambda scope: _none_if_omit(body(scope))), "@"
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
        saved = self._visible
        bind = (
            self._lets(spec["let"], (*site.yaml_path, "let"), element_site.field_name)
            if "let" in spec
            else None
        )
        if "fields" in element_spec:
            element = self._object(element_spec["fields"], element_site.child("fields", None))
        else:
            element = self._field(element_spec, element_site)
        self._visible = saved
        if bind is not None:
            unbound = element
            element = lambda scope: unbound(bind(scope))  # noqa: E731
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
                    base: tuple[str, ...] | None = ()
                elif scope_name == "parent":
                    base = (
                        scope_chain(scope.parent, label_chains, trace.locate)
                        if scope.parent is not None
                        else ()
                    )
                elif scope_name == "this":
                    base = scope_chain(scope, label_chains, trace.locate)
                elif scope_name == "index":
                    continue
                else:  # a let name: where its value sits in the source, when it is a part of it
                    base = trace.locate(scope.lets.get(scope_name))
                if base is not None:
                    trace.reads.add(base + chain)
        return evaluate(scope)

    return traced


def _record_default(field_name: str, scope: Scope) -> None:
    trace = ACTIVE.get()
    if trace is not None:
        trace.defaulted.add(runtime_field(field_name, scope))


def _collect_or_raise(error: TransformError, scope: Scope) -> None:
    """Raise ``error``, unless a collect() is running: then record it (with the array indices of where it
    happened) and carry on without the field."""
    sink = _COLLECT.get()
    if sink is None:
        raise error
    if error.field and ARRAY in error.field:
        error.field = runtime_field(error.field, scope)
    sink.append(error)


def _constant(value: Any) -> Callable[[Scope], Any]:
    return lambda scope: value


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
