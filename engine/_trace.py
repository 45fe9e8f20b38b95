"""Coverage of a mapping on a source document: which target fields fell back to their defaults, and which
source fields were never read. Only a separately compiled, instrumented copy of a mapping records anything,
so ordinary transforms pay nothing for it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jinja2.nodes

if TYPE_CHECKING:
    from ._scope import Scope

ARRAY = "[]"
Chain = tuple[str, ...]
_JOINS = frozenset({"find", "index_by", "group_by"})


@dataclass
class Trace:
    """What one traced transform did. Source paths show every array index as ``[]``."""

    payloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    defaulted: set[str] = field(default_factory=set)
    reads: set[Chain] = field(default_factory=set)
    unread: list[str] = field(default_factory=list)
    # id() of every object and array of the source -> its chain: where a let value or a re-rooted scope is.
    places: dict[int, Chain] = field(default_factory=dict)

    def index(self, source: Any) -> None:
        pending: list[tuple[Any, Chain]] = [(source, ())]
        while pending:
            value, chain = pending.pop()
            if isinstance(value, dict):
                self.places.setdefault(id(value), chain)
                pending.extend((child, (*chain, str(key))) for key, child in value.items())
            elif isinstance(value, list):
                self.places.setdefault(id(value), chain)
                pending.extend((child, (*chain, ARRAY)) for child in value)

    def locate(self, value: Any) -> Chain | None:
        """The chain of a part of the source (an object or array), or None for anything else."""
        if isinstance(value, (dict, list)):
            return self.places.get(id(value))
        return None

    @property
    def read(self) -> set[str]:
        return {join(chain) for chain in self.reads}


# Only the instrumented closures look at this; a plain transform never touches it.
ACTIVE: ContextVar[Trace | None] = ContextVar("shipmap_trace", default=None)


def join(chain: Chain) -> str:
    text = ""
    for step in chain:
        if step == ARRAY:
            text += ARRAY
        else:
            text = f"{text}.{step}" if text else step
    return text


def scope_chain(
    scope: Scope, chains: dict[str, Chain], locate: Callable[[Any], Chain | None] | None = None
) -> Chain:
    """The normalized source path of a scope: each from/each expression by its chain, each index as []."""
    parts: list[Chain] = []
    current: Scope | None = scope
    while current is not None:
        label = current.label_text()
        if label.startswith("$") and locate is not None:
            # Re-rooted on a variable ($product, $root.shipments): found by where the data sits.
            found = locate(current.data)
            if found is not None:
                parts.append(found)
                break
        if label:
            base = chains.get(label) or _text_chain(label)
            parts.append(base + ((ARRAY,) if current.index is not None else ()))
        current = current.parent
    chain: Chain = ()
    for part in reversed(parts):
        chain += part
    return chain


def _text_chain(label: str) -> Chain:
    """``a.b[0].c`` -> ``('a', 'b', '[]', 'c')``: the chain of a plain path written as text."""
    chain: list[str] = []
    for part in label.split("."):
        name, _, rest = part.partition("[")
        if name:
            chain.append(name)
        chain.extend(ARRAY for _ in range(rest.count("]")))
    return tuple(chain)


def runtime_field(static_field: str, scope: Scope) -> str:
    """A static field path (``t.lines[].sku``) with the indices of the scopes it was produced in."""
    indices: list[int] = []
    current: Scope | None = scope
    while current is not None:
        if current.index is not None:
            indices.append(current.index)
        current = current.parent
    text = static_field
    for index in reversed(indices):
        text = text.replace(ARRAY, f"[{index}]", 1)
    return text


def leaf_paths(value: Any, prefix: Chain = ()) -> Iterator[Chain]:
    """Every leaf of a JSON document, arrays as []. Empty objects and arrays count as leaves."""
    if isinstance(value, dict) and value:
        for key, child in value.items():
            yield from leaf_paths(child, (*prefix, str(key)))
    elif isinstance(value, list) and value:
        seen: set[Chain] = set()
        for child in value:
            for leaf in leaf_paths(child, (*prefix, ARRAY)):
                if leaf not in seen:
                    seen.add(leaf)
                    yield leaf
    else:
        yield prefix


def unread_paths(source: Any, read: set[Chain]) -> list[str]:
    """Leaves of ``source`` that no read covers (a read of an object covers everything under it)."""
    unread = []
    for leaf in leaf_paths(source):
        if not any(leaf[: len(chain)] == chain for chain in read if len(chain) <= len(leaf)):
            unread.append(join(leaf))
    return sorted(set(unread))


def jmespath_reads(node: Any) -> list[Chain]:
    """Source chains a JMESPath AST reads, relative to the node it is evaluated on (a close estimate)."""
    if not isinstance(node, dict):
        return []
    kind = node.get("type")
    children = node.get("children", [])
    if kind == "field":
        return [(node["value"],)]
    if kind in ("current", "identity"):
        return [()]
    if kind in ("literal", "index", "slice"):
        return []
    if kind == "variable":  # $root, $parent, a let name: the reader sorts these out by their first step
        return [(f"${node['value']}",)]
    if kind == "function_expression" and node["value"] in _JOINS and len(children) >= 2:
        # A join reads the key of each element, not the whole array it searches.
        key = children[1]
        if key.get("type") == "literal" and isinstance(key.get("value"), str):
            heads = [_element(chain) for chain in (jmespath_reads(children[0]) or [()])]
            keyed = [head + tuple(key["value"].split(".")) for head in heads]
            return keyed + [chain for child in children[2:] for chain in jmespath_reads(child)]
    if kind in ("subexpression", "pipe"):
        chains: list[Chain] = [()]
        for child in children:
            chains = [head + tail for head in chains for tail in (jmespath_reads(child) or [()])]
        return chains
    if kind in ("index_expression", "flatten"):
        return [_element(chain) for chain in (jmespath_reads(children[0]) or [()])]
    if kind in ("projection", "filter_projection", "value_projection"):
        # The left side navigates; the rest reads relative to each element it yields.
        heads = [_element(chain) for chain in (jmespath_reads(children[0]) or [()])]
        tails = [tail for child in children[1:] for tail in jmespath_reads(child)]
        return [head + tail for head in heads for tail in (tails or [()])]
    return [chain for child in children for chain in jmespath_reads(child)]


def _element(chain: Chain) -> Chain:
    return chain if chain[-1:] == (ARRAY,) else (*chain, ARRAY)


def jinja_reads(ast: jinja2.nodes.Template) -> list[tuple[str, Chain]]:
    """``(name, chain)`` for every attribute chain that starts at a name: this, parent, root or a let."""
    reads: list[tuple[str, Chain]] = []
    inner: set[int] = set()
    for node in ast.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
        inner.add(id(getattr(node, "node", None)))
    for node in ast.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem, jinja2.nodes.Name)):
        if id(node) in inner:
            continue
        chain: list[str] = []
        current: Any = node
        while isinstance(current, (jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
            if isinstance(current, jinja2.nodes.Getattr):
                chain.append(current.attr)
            else:
                arg = current.arg
                chain.append(
                    str(arg.value)
                    if isinstance(arg, jinja2.nodes.Const) and isinstance(arg.value, str)
                    else ARRAY
                )
            current = current.node
        if isinstance(current, jinja2.nodes.Name) and current.name != "index":
            # this, parent, root, or a let name (the tracer finds where its value sits; other names, such
            # as loop variables, find nothing and are skipped)
            reads.append((current.name, tuple(reversed(chain))))
    return reads
