"""Compiling a target's fields: each field spec of a mapping (a path, a template, a literal, an object, a
list, ``use:``, ``each:``, ``let:`` and the finishing steps lookup, type, default and required) becomes one
closure, built once. Every closure knows its YAML location and its target field path, so the errors it
raises at transform time point at the line that produced them. ``_compiler`` adds the document and its
targets; ``_codegen`` writes the same fields as one generated function, with these closures as reference.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._allowance import Stopped
from ._allowance import current as current_allowance
from ._errors import CompileError, Location, TransformError, internal_message
from ._expressions import ExpressionCompiler
from ._functions import MISSING, FunctionError, FunctionSet, LookupTable, lookup_key
from ._jmespath_direct import is_truthy
from ._scope import SCOPE_NAMES, Evaluator, Scope
from ._target import _COLLECT, StaticPath, static_field_name
from ._trace import ACTIVE, ARRAY, runtime_field, scope_chain
from ._yaml import LocatedDocument, PathKey

__all__ = ["OMIT", "CompileReport", "FieldCompiler", "Site"]

OMIT: Any = object()  # a field that produced nothing and has no default: left out of the payload
_CLOSURE, _ONE_KEY, _TWO_KEYS, _CONSTANT, _KEY_THEN_FINISH = range(5)
_FINISH_OPTIONS = frozenset({"path", "default", "required", "type", "lookup", "description"})
_SOURCE_KEYS = ("path", "template", "literal", "use", "each", "fields")


@dataclass
class Site:
    """What compiling one field needs to know about where it stands."""

    yaml_path: PathKey  # where the spec is in the YAML document
    static: StaticPath  # where the value goes in the payload, arrays as "[]"
    target: str

    @property
    def field_name(self) -> str:
        return static_field_name(self.target, self.static)

    def child(self, yaml_key: str | int, static_key: str | None) -> Site:
        static = self.static if static_key is None else (*self.static, static_key)
        return Site((*self.yaml_path, yaml_key), static, self.target)


@dataclass
class CompileReport:
    """What ``shipmap validate`` needs beyond compiling: what each target maps, and what went unused."""

    mapped: dict[str, dict[StaticPath, set[str]]] = field(default_factory=dict)
    opaque: dict[str, set[StaticPath]] = field(default_factory=dict)
    used_fragments: set[str] = field(default_factory=set)


class FieldCompiler:
    """Compiles field specs into closures. Holds what one target's fields share while they compile (the
    locations of its fields, what each object maps, the let names in view) and what the whole mapping
    shares (its expressions, functions and lookup tables, which the caller sets before compiling)."""

    expressions: ExpressionCompiler
    functions: FunctionSet
    lookups: dict[str, LookupTable]

    def __init__(self, document: LocatedDocument, *, tracing: bool = False) -> None:
        self.document = document
        self.tracing = tracing
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

    def _expression(self, text: str, site: Site, *, navigate: bool = False) -> Evaluator:
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
        place = self.document.text_place(yaml_path)
        evaluate = self.expressions.compile(
            text, place.start, field_name, template=template, names=self._visible, place=place
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

    def _field(self, spec: Any, site: Site) -> Callable[[Scope], Any]:
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

    def _list(self, specs: list[Any], site: Site) -> Callable[[Scope], Any]:
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

    def _object(self, fields: dict[str, Any], site: Site) -> Callable[[Scope], Any]:
        self._locations.setdefault(site.static, self.where(site.yaml_path))
        self._mapped.setdefault(site.static, set()).update(fields)
        # The commonest fields (a literal, a path of one or two keys) are done inline in the loop below:
        # no call per field. Everything else is a compiled closure.
        frozen = tuple(self._slot(key, spec, site.child(key, key)) for key, spec in fields.items())

        def build_object(scope: Scope) -> Any:
            out = {}
            data = scope.data
            is_dict = type(data) is dict
            # A tool's stop (_allowance.py): one payload's fields can run for minutes.
            allowance = current_allowance()
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
                    else:  # a computed field (a template, an expression, an object): where time goes
                        if allowance is not None and allowance.stopped():
                            raise Stopped
                        value = first(scope)
                        if value is not OMIT:
                            out[key] = value
                except TransformError as error:
                    _collect_or_raise(error, scope)
            return out if out else OMIT

        return build_object

    def _slot(self, key: str, spec: Any, site: Site) -> tuple[str, int, Any, Any]:
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

    def _inline(self, site: Site, slot: tuple[str, int, Any, Any]) -> tuple[str, int, Any, Any]:
        self._locations.setdefault(site.static, self.where(site.yaml_path))
        return slot

    def _finished_key(self, spec: Any, site: Site) -> tuple[str, Callable[[Any, Scope], Any]] | None:
        """For ``{path: key, default/type/lookup/required}``: the key and its finishing steps, to run inline."""
        if not isinstance(spec, dict) or "path" not in spec or not set(spec) <= _FINISH_OPTIONS:
            return None
        keys = self.expressions.plain_keys(spec["path"])
        if keys is None or len(keys) != 1:
            return None
        return keys[0], self._finisher(spec, site, spec["path"])

    def _spec(self, spec: dict[str, Any], site: Site) -> Callable[[Scope], Any]:
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

    def _source(self, spec: dict[str, Any], site: Site) -> tuple[Callable[[Scope], Any], str]:
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

    def _use(self, spec: dict[str, Any], site: Site) -> Callable[[Scope], Any]:
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
            return self._object(fragments[name], Site(("fragments", name), site.static, site.target))
        finally:
            self._fragment_stack.pop()

    def _each(self, spec: dict[str, Any], site: Site) -> Callable[[Scope], Any]:
        label = spec["each"]
        items_of = self._expression(label, site.child("each", None), navigate=True)
        element_site = Site(site.yaml_path, (*site.static, ARRAY), site.target)
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
            allowance = current_allowance()
            try:
                for index, item in enumerate(items):
                    if allowance is not None and allowance.stopped():
                        raise Stopped
                    value = element(Scope(item, scope, scope.root, label, index))
                    if value is not OMIT:
                        out.append(value)
            except TransformError as error:
                if error.field and error.field.startswith(array_prefix):
                    error.field = f"{field_name}[{index}]{error.field[len(array_prefix) :]}"
                raise
            return out

        return build_array

    def _finisher(self, spec: dict[str, Any], site: Site, label: str) -> Callable[[Any, Scope], Any]:
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
                    except Exception as error:  # a builtin's FunctionError; anything else is a bug, named
                        message = str(error) if isinstance(error, FunctionError) else internal_message(error)
                        raise TransformError(
                            message,
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


def _omit_null(evaluate: Evaluator) -> Callable[[Scope], Any]:
    def produce(scope: Scope) -> Any:
        value = evaluate(scope)
        return OMIT if value is None else value

    return produce


def _none_if_omit(value: Any) -> Any:
    return None if value is OMIT else value
