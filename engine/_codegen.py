"""A target's field tree written out as one generated Python function, compiled once at load.

The closure tree that ``_compiler.py`` builds is the reference. The generated function does the same work on
the happy path without a call per field: paths become inline dict lookups, shipmap functions are called
directly, scopes are local variables. Whenever it meets anything off that path (any exception, a required field
without a value, an ``each`` over something that is not an array) it stops, and the target runs the reference
on the same document, which returns the payload or raises the located error. Mappings are pure, so running a
document twice is safe. tests/engine/test_codegen.py holds both to the same output on every fixture.

Safety: the generated source holds no text from the mapping except object keys and constants written with
``repr`` of a str, int or bool; every other value (literals, evaluators, functions) is passed in the namespace
under a generated name.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import jmespath
import jmespath.exceptions

from ._fields import OMIT, FieldCompiler
from ._functions import MISSING, lookup_key
from ._jmespath_direct import flatten_once, is_truthy
from ._jmespath_variables import variables_in
from ._scope import SCOPE_PREFIX, Scope
from ._validator import CheckWriter, Unsupported, array_shape, compile_check, object_shape

_log = logging.getLogger("shipmap.engine.codegen")

_SOURCE_KEYS = ("path", "template", "literal", "use", "each", "fields")


class Deoptimize(Exception):
    """Raised by generated code where the reference must take over (it will word the error, if any)."""


class _Unsupported(Exception):
    """The generator does not handle this spec; the target keeps the reference alone."""


class _Level:
    """One scope of the source in the generated function: a node, where it came from and its index."""

    __slots__ = ("as_dict", "data", "index", "insert_at", "needs_scope", "parent", "scope", "width")

    def __init__(
        self, data: str, as_dict: str, parent: _Level | None, index: str, insert_at: int, width: int
    ):
        self.data = data
        self.as_dict = (
            as_dict  # the node if it is a dict, else an empty dict: JMESPath's null for a missing key
        )
        self.parent = parent
        self.index = index
        self.scope = "s" + data[1:]
        self.needs_scope = False
        self.insert_at = insert_at
        self.width = width


class TargetWriter:
    """Writes one target's produce function. ``compiler`` has already compiled the same target (and checked
    everything a compile error could come from), so the spec here is known to be valid.

    Given the kind's schema, it writes the checked variant instead: the same function, which also raises
    Deoptimize unless the payload it returns is valid under the schema and strict JSON (what
    ``TargetKind.payload_problems`` finds nothing in). It checks each value where it is written, so what the
    code guarantees by construction costs nothing: a dict or list it built itself has its exact type and only
    the keys it writes (an unknown key is refused where it is written), a field it never leaves out needs no
    required-key test, and a value is tested once, in a local variable, not looked up again in the payload."""

    def __init__(self, compiler: FieldCompiler, schema: Any = None) -> None:
        self.compiler = compiler
        self.schema = schema
        self.checks = CheckWriter(strict=True)
        self.functions = compiler.functions.unchecked
        self.lines: list[str] = []
        self.indent = 1
        self.counter = 0
        self.levels: list[_Level] = []
        self.namespace: dict[str, Any] = {
            "EMPTY": {},
            "OMIT": OMIT,
            "Scope": Scope,
            "Deoptimize": Deoptimize,
            "truthy": is_truthy,
            "flatten": flatten_once,
        }
        self._shared: dict[int, str] = {}

    # -- small helpers --------------------------------------------------------------------------------------

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def share(self, value: Any, prefix: str = "c") -> str:
        """A namespace name for ``value`` (the same object gets the same name)."""
        found = self._shared.get(id(value))
        if found is not None:
            return found
        name = self.fresh(prefix)
        self.namespace[name] = value
        self._shared[id(value)] = name
        return name

    def constant(self, value: Any) -> str:
        if value is None or type(value) in (bool, int, str):
            return repr(value)
        return self.share(value)

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.indent + line)

    def enter(self, data_expression: str, parent: _Level | None, index: str) -> _Level:
        data = self.fresh("d")
        as_dict = "m" + data[1:]
        self.emit(f"{data} = {data_expression}")
        self.emit(f"{as_dict} = {data} if type({data}) is dict else EMPTY")
        level = _Level(data, as_dict, parent, index, len(self.lines), self.indent)
        self.levels.append(level)
        return level

    def scope_of(self, level: _Level) -> str:
        """The Scope object of ``level`` (built only for levels whose fields need one)."""
        walk: _Level | None = level
        while walk is not None and not walk.needs_scope:
            walk.needs_scope = True
            walk = walk.parent
        return level.scope

    # -- the function ---------------------------------------------------------------------------------------

    def write(self, name: str, spec: dict[str, Any]) -> Callable[[Any], Any]:
        self.lines.append("def produce(source):")
        self.emit("root = source")
        level = self.enter("source", None, "None")
        if "each" in spec or "let" in spec:
            raise _Unsupported("a fan-out or a let block")
        if "from" in spec:
            level = self.enter(self.expression(spec["from"], level, None), level, "None")
            self.emit(f"if {level.data} is None:")  # from: found nothing: no payload
            self.emit("    return None")
        if "when" in spec:
            self.emit(f"if not truthy({self.expression(spec['when'], level, None)}):")
            self.emit("    return None")
        out = self.object(spec["fields"], level, self.schema, top=True)
        self.emit(f"return {out}")
        for scoped in sorted(self.levels, key=lambda each: each.insert_at, reverse=True):
            if scoped.needs_scope:
                parent = scoped.parent.scope if scoped.parent is not None else "None"
                line = f"{scoped.scope} = Scope({scoped.data}, {parent}, root, '', {scoped.index})"
                self.lines.insert(scoped.insert_at, "    " * scoped.width + line)
        if self.schema is not None:
            self.lines[:0] = self.checks.helpers
            self.namespace.update(self.checks.namespace())
        source = "\n".join(self.lines) + "\n"
        code = compile(source, f"<shipmap target {name}>", "exec")
        exec(code, self.namespace)
        produce: Callable[[Any], Any] = self.namespace["produce"]
        produce.__doc__ = source  # what ran, for anyone debugging a difference
        return produce

    def object(self, fields: dict[str, Any], level: _Level, schema: Any = None, top: bool = False) -> str:
        """Code that builds the object of ``fields``, checked against ``schema`` unless it is None (only a
        non-empty object is checked unless ``top``: an empty one is left out of its parent)."""
        out = self.fresh("o")
        self.emit(f"{out} = {{}}")
        shape = object_shape(schema)
        for key, spec in fields.items():
            if type(key) is not str:
                raise _Unsupported("a non-text key")
            child = None
            if shape is not None:
                properties, _, closed = shape
                child = properties.get(key, not closed)
            self.field(key, spec, level, out, child)
        if schema is not None:
            guard = "" if top else f"{out} and "
            if shape is None:
                self.emit(f"if {guard}not {self.checks.test(schema, out)}:")
                self.emit("    raise Deoptimize")
            elif shape[1]:
                self.emit(f"if {guard}not {out}.keys() >= {self.share(shape[1], '_r')}:")
                self.emit("    raise Deoptimize")
        return out

    def check(self, schema: Any, value: str) -> None:
        """Raise Deoptimize unless ``value`` (a variable) is valid under ``schema`` (None: no check)."""
        if schema is not None:
            self.emit(f"if not {self.checks.test(schema, value)}:")
            self.emit("    raise Deoptimize")

    def field(self, key: str, spec: Any, level: _Level, out: str, schema: Any = None) -> None:
        target = f"{out}[{key!r}]"
        if isinstance(spec, str):
            value = self.fresh("v")
            self.emit(f"{value} = {self.expression(spec, level, None)}")
            self.emit(f"if {value} is not None:")
            self.indent += 1
            self.check(schema, value)
            self.emit(f"{target} = {value}")
            self.indent -= 1
        elif isinstance(spec, list):
            holder, items = self.fresh("o"), self.fresh("l")
            self.emit(f"{holder} = {{}}")
            self.emit(f"{items} = []")
            for element in spec:
                self.field("k", element, level, holder)
                self.emit(f"if {holder}.get('k') is not None:")
                self.emit(f"    {items}.append({holder}.pop('k'))")
            self.check(schema, items)
            self.emit(f"{target} = {items}")
        elif not isinstance(spec, dict):
            self.constant_field(target, spec, schema)
        elif not any(source in spec for source in _SOURCE_KEYS):
            inner = self.object(spec, level, schema)
            self.emit(f"if {inner}:")
            self.emit(f"    {target} = {inner}")
        elif set(spec) <= {"literal", "description"}:
            if spec["literal"] is not None:
                self.constant_field(target, spec["literal"], schema)
        else:
            value, omitted, checked = self.spec(spec, level, schema)
            if omitted:
                self.emit(f"if {value} is not {omitted}:")
                self.indent += 1
            if not checked:
                self.check(schema, value)
            self.emit(f"{target} = {value}")
            if omitted:
                self.indent -= 1

    def constant_field(self, target: str, value: Any, schema: Any) -> None:
        if schema is None or _always_valid(schema, value):  # decided once, here, not for every payload
            self.emit(f"{target} = {self.constant(value)}")
            return
        held = self.fresh("t")  # a name: the test may call a method on it (5.is_integer() is no Python)
        self.emit(f"{held} = {self.constant(value)}")
        self.check(schema, held)
        self.emit(f"{target} = {held}")

    def spec(self, spec: dict[str, Any], level: _Level, schema: Any = None) -> tuple[str, str, bool]:
        """Code that leaves the field's value in a variable: its name, what it holds when the field is left
        out ("None", or "OMIT" where null is a value: a default of null; "" when it is never left out), and
        whether the value, when it is not left out, has been checked against ``schema`` already."""
        value = self.fresh("v")
        guarded = "when" in spec
        omitted = ("OMIT" if guarded else "") if "default" in spec else "None"
        if guarded:
            self.emit(f"if not truthy({self.expression(spec['when'], level, None)}):")
            self.emit(f"    {value} = {omitted}")
            self.emit("else:")
            self.indent += 1
        # A lookup, a type or a default may replace what the source built: then the final value is checked.
        as_built = not any(step in spec for step in ("lookup", "type", "default"))
        checked = self.source(spec, level, value, schema if as_built else None)
        self.finish(spec, value)
        if guarded:
            self.indent -= 1
        return value, omitted, checked

    def source(self, spec: dict[str, Any], level: _Level, value: str, schema: Any = None) -> bool:
        """Code that leaves the source's value in ``value``; True when it checked it against ``schema``."""
        if "each" in spec:
            return self.each(spec, level, value, schema)
        if "literal" in spec:
            self.emit(f"{value} = {self.constant(spec['literal'])}")
        elif "path" in spec:
            self.emit(f"{value} = {self.expression(spec['path'], level, False)}")
        elif "template" in spec:
            self.emit(f"{value} = {self.expression(spec['template'], level, True)}")
        elif "from" not in spec:
            body = self.body(spec, level, schema)
            self.emit(f"{value} = {body} if {body} else None")
            return schema is not None
        else:
            found = self.fresh("f")
            self.emit(f"{found} = {self.expression(spec['from'], level, None)}")
            self.emit(f"if {found} is None:")
            self.emit(f"    {value} = None")
            self.emit("else:")
            self.indent += 1
            inner = self.enter(found, level, "None")
            body = self.body(spec, inner, schema)
            self.emit(f"{value} = {body} if {body} else None")
            self.indent -= 1
            return schema is not None
        return False

    def body(self, spec: dict[str, Any], level: _Level, schema: Any = None) -> str:
        if "use" in spec:
            return self.object(self.compiler.spec["fragments"][spec["use"]], level, schema)
        return self.object(spec["fields"], level, schema)

    def each(self, spec: dict[str, Any], level: _Level, value: str, schema: Any = None) -> bool:
        shape = array_shape(schema)
        items_schema = None if shape is None else shape[0]
        items, index, item = self.fresh("i"), self.fresh("x"), self.fresh("e")
        self.emit(f"{items} = {self.expression(spec['each'], level, None)}")
        self.emit(f"if {items} is None:")
        self.emit(f"    {value} = None")
        self.emit(f"elif type({items}) is not list:")
        self.emit("    raise Deoptimize")
        self.emit("else:")
        self.indent += 1
        self.emit(f"{value} = []")
        self.emit(f"for {index}, {item} in enumerate({items}):")
        self.indent += 1
        inner = self.enter(item, level, index)
        if "fields" in spec:
            element = self.object(spec["fields"], inner, items_schema)
            self.emit(f"if {element}:")
        else:
            element_spec: dict[str, Any] = {
                key: spec[key] for key in ("path", "template", "use") if key in spec
            }
            element, omitted, checked = self.spec(element_spec, inner, items_schema)  # omitted: "None"
            self.emit(f"if {element} is not {omitted}:")
            if not checked:
                self.indent += 1
                self.check(items_schema, element)
                self.indent -= 1
        self.emit(f"    {value}.append({element})")
        self.indent -= 1
        if shape is not None and shape[1]:
            self.emit(f"if len({value}) < {shape[1]}:")
            self.emit("    raise Deoptimize")
        self.indent -= 1
        return shape is not None

    def finish(self, spec: dict[str, Any], value: str) -> None:
        """lookup, then type, then default / required / omit, as ``FieldCompiler._finisher`` does."""
        steps: list[str] = []
        null_entry: Any = MISSING
        if "lookup" in spec:
            table = spec["lookup"]
            null_entry = self.compiler.lookups[table].entries.get(lookup_key(None), MISSING)
            steps.append(f"{self.share(self.functions['lookup'], 'f')}({table!r}, {value})")
        if "type" in spec:
            steps.append(f"{self.share(self.functions[spec['type']], 'f')}({value})")
        if null_entry is not MISSING:
            self.emit(f"if {value} is None:")
            self.emit(f"    {value} = {self.constant(null_entry)}")
        if steps:
            self.emit(f"{'elif' if null_entry is not MISSING else 'if'} {value} is not None:")
            for position, step in enumerate(steps):
                prefix = "    " if position == 0 else "    " * 2
                if position:
                    self.emit(f"    if {value} is not None:")
                self.emit(f"{prefix}{value} = {step}")
        default = spec.get("default", MISSING)
        if default is not MISSING:
            if default is not None:
                self.emit(f"if {value} is None:")
                self.emit(f"    {value} = {self.constant(default)}")
        elif spec.get("required", False):
            self.emit(f"if {value} is None:")
            self.emit("    raise Deoptimize")

    # -- expressions ----------------------------------------------------------------------------------------

    def expression(self, text: str, level: _Level, template: bool | None) -> str:
        """A Python expression for ``text`` evaluated at ``level``."""
        is_template = ("{{" in text or "{%" in text) if template is None else template
        if is_template:
            evaluate = self.compiler.evaluator(text, template)
            return f"{self.share(evaluate, 'E')}({self.scope_of(level)})"
        expression = text.strip()
        prefix = SCOPE_PREFIX.match(expression)
        if variables_in(expression[prefix.end() :] if prefix else expression):
            # $root or $parent inside the expression: the reference's evaluator, on this level's scope.
            evaluate = self.compiler.evaluator(text, template)
            return f"{self.share(evaluate, 'E')}({self.scope_of(level)})"
        data, as_dict = level.data, level.as_dict
        if prefix:
            scope_name = prefix.group(1)
            expression = expression[prefix.end() :].lstrip(".")
            as_dict = ""
            if scope_name == "root":
                data, as_dict = "root", self.levels[0].as_dict
            elif scope_name == "parent":
                if level.parent is not None:
                    data, as_dict = level.parent.data, level.parent.as_dict
                else:
                    data = "None"
            elif scope_name == "index":
                data = level.index
            else:
                as_dict = level.as_dict
            if not expression:
                return data
        try:
            parsed = jmespath.compile(expression)
        except (jmespath.exceptions.JMESPathError, RecursionError):
            raise _Unsupported("an expression the reference reports") from None
        direct = self.jmespath(parsed.parsed, data, as_dict)
        if direct is not None:
            return direct
        search = functools.partial(parsed.search, options=self.compiler.functions.jmespath_options)
        return f"{self.share(search, 'J')}({data})"

    def jmespath(self, node: dict[str, Any], data: str, as_dict: str = "") -> str | None:
        """Python for the JMESPath shapes that ``_jmespath_direct.direct`` runs directly, with the same
        semantics; None for anything else (run by JMESPath's own interpreter)."""
        kind = node.get("type")
        children = node.get("children", [])
        simple = data.isidentifier() or data == "None"
        if kind in ("current", "identity"):
            return data
        if kind == "field":
            key = node["value"]
            if as_dict:
                return f"{as_dict}.get({key!r})"
            if simple:
                return f"({data}.get({key!r}) if type({data}) is dict else None)"
            held = self.fresh("t")
            return f"({held}.get({key!r}) if type({held} := {data}) is dict else None)"
        if kind == "subexpression":
            expression: str | None = data
            first = True
            for child in children:
                expression = self.jmespath(child, expression, as_dict if first else "")  # type: ignore[arg-type]
                first = False
                if expression is None:
                    return None
            return expression
        if kind == "index_expression":
            left, *indexes = children  # a[0][1] is one node with two indexes
            if any(index.get("type") != "index" for index in indexes):
                return None
            found = self.jmespath(left, data, as_dict)
            for index in indexes:
                if found is None:
                    return None
                position = int(index["value"])
                held = self.fresh("t")
                bound = f"{position} < len({held})" if position >= 0 else f"{-position} <= len({held})"
                found = f"({held}[{position}] if type({held} := {found}) is list and {bound} else None)"
            return found
        if kind == "literal":
            return self.constant(node["value"])
        if not simple:
            return None  # the shapes below read their input more than once
        if kind == "function_expression" and node["value"] in self.functions:
            args = [self.jmespath(child, data, as_dict) for child in children]
            if any(arg is None for arg in args):
                return None
            return f"{self.share(self.functions[node['value']], 'f')}({', '.join(args)})"  # type: ignore[arg-type]
        if kind == "or_expression":
            left, right = (self.jmespath(child, data, as_dict) for child in children)
            if left is None or right is None:
                return None
            held = self.fresh("t")
            truthy = f"{held} is not False and {held} != '' and {held} != [] and {held} != {{}}"
            return f"({held} if ({held} := {left}) is not None and {truthy} else {right})"
        if kind == "projection" and len(children) == 2:
            source, element = children
            flatten = source.get("type") == "flatten"
            items = self.jmespath(source["children"][0] if flatten else source, data, as_dict)
            if items is None:
                return None
            held, item, value = self.fresh("t"), self.fresh("e"), self.fresh("v")
            each = self.jmespath(element, item)
            if each is None:
                return None
            over = f"flatten({held})" if flatten else held
            return (
                f"(None if type({held} := {items}) is not list "
                f"else [{value} for {item} in {over} if ({value} := {each}) is not None])"
            )
        return None


def _always_valid(schema: Any, value: Any) -> bool:
    """Whether a constant of the mapping passes the check ``schema`` gives it (strict JSON included): then
    the generated code writes it unchecked. Anything uncertain keeps the check."""
    try:
        return compile_check(schema, strict_json=True)(value) is True
    except Exception:  # a schema the check writer does not decide: checked for each payload, as before
        return False


def generate(compiler: FieldCompiler, name: str, schema: Any = None) -> Callable[[Any], Any] | None:
    """The generated produce function of target ``name``, or None when the generator leaves it to the
    reference (it says why in the debug log). With the kind's ``schema``, the checked variant (see
    ``TargetWriter``), or None when its payloads are left to the kind's own check."""
    try:
        return TargetWriter(compiler, schema).write(name, compiler.spec["targets"][name])
    except (_Unsupported, Unsupported, RecursionError, SyntaxError, MemoryError) as reason:
        what = "runs on the reference only" if schema is None else "is checked by its kind alone"
        _log.debug("target %s %s: %s", name, what, type(reason).__name__)
        return None


__all__ = ["Deoptimize", "generate"]
