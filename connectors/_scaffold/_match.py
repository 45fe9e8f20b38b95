"""Where a target field's value is in the sample: the matches the target builder (``_builder``) chooses from.

A :class:`_Match` is a leaf chosen for a field, with the expression that reads it; a :class:`_Scope` is where
fields read from (the target's root object, or an array's elements). The functions choose: the best leaf for a
field's names (``_best``, scored by ``_guess``), the best source array for an array field, the object the
target reads from, and the leaf a field wants instead of the one matched (a UTC twin of a local time, a
country's name or code, an amount in minor units), and say how sure a guess is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shipmap.engine import TargetKind
from shipmap.engine._paths import path_text as _path

from ._guess import (
    MINOR_UNITS,
    PARENT_KEYS,
    SYNONYMS,
    UTC_SUFFIXES,
    _Context,
    _field_names,
    _norm,
    _ordered,
    _score,
    _synonyms,
    event_array,
    not_a_root,
    snake,
    thin,
)
from ._sample import _arrays, _dict_nodes, _Leaf, _leaves, _merged

_NAIVE_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")


@dataclass
class _Match:
    """A leaf chosen for a field: its path and score, and how the mapping reads it (``expression``)."""

    leaf: _Leaf
    path: str
    score: int
    fallback: _Leaf | None = None  # a non-null alternative when the best leaf is null in the sample
    utc_of: str = ""  # the local-time key this UTC twin stands in for
    call: str = ""  # a function the value goes through (country_name for a code where a name is wanted)

    @property
    def expression(self) -> str:
        if self.call:
            return f"{self.call}({self.path})"
        value = self.leaf.value
        if self.utc_of and not (isinstance(value, str) and not _NAIVE_DATETIME.match(value.strip())):
            # A *_gmt twin is UTC written without an offset: say so, whatever the mapping's timezone.
            return f"{self.path} && join('', [{self.path}, 'Z'])"
        if self.fallback is None:
            return self.path
        return f"coalesce({self.path}, {_path(self.fallback.parts)})"

    @property
    def sample(self) -> Any:
        return self.leaf.value if self.fallback is None else self.fallback.value


@dataclass
class _Scope:
    """Where fields read from: the target's root node, or one array element inside ``each``."""

    leaves: list[_Leaf]
    node: dict[str, Any]
    each: str | None = None  # the each path, inside an array
    parent_leaves: list[_Leaf] | None = None  # the root's leaves, for $parent.currency


def _pick_root(kind: TargetKind, document: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Where the target's fields are read from (its path, and the object): the document itself, or the
    content of an envelope around it that holds more of the target's fields."""
    wanted = {
        _norm(s.rsplit(".", 1)[-1])
        for n in _field_names(kind.inlined)
        for s in _synonyms(n, kind.name, top=False)
    }
    # Only an envelope's content can be the root ({"order": {...}}), never an address, ship-from or
    # to_address inside the document, however many target fields it holds.
    nodes = [
        (parts, node)
        for parts, node in _dict_nodes(document)
        if not any(not_a_root(p) for p in parts) and _thin_path(document, parts)
    ]

    def score(node: dict[str, Any]) -> int:
        return sum(1 for key in node if _norm(str(key)) in wanted)

    parts, node = max(nodes, key=lambda item: (score(item[1]), -len(item[0])))
    if score(node) <= score(document):
        return (), document
    return parts, node


def _thin_path(document: Any, parts: tuple[str, ...]) -> bool:
    """Whether every object above ``parts`` is an envelope around it (see ``thin``)."""
    node = document
    for part in parts:
        if not isinstance(node, dict) or not thin(node):
            return False
        node = node.get(part)
    return True


def _parent_key(elements: list[Any]) -> str | None:
    """The key by which an array's child lines name their parent line (a bundle's parts), if any."""
    merged = _merged(elements)
    return next((key for key in merged if snake(key) in PARENT_KEYS), None)


def _best(leaves: Sequence[_Leaf], names: Sequence[str], context: _Context | None) -> _Match | None:
    """The leaf whose key matches ``names`` best (in ``context``), with a non-null fallback for a null one."""
    scored: list[tuple[int, int, int, _Leaf]] = []
    for order, leaf in enumerate(leaves):
        score = _score(leaf, names, context)
        if score is not None:
            scored.append((score, -len(leaf.parts), -order, leaf))
    if not scored:
        return None
    scored.sort(key=lambda item: item[:3], reverse=True)
    best = scored[0][3]
    match = _Match(best, _path(best.parts), scored[0][0])
    if best.value is None:
        alternative = next((item[3] for item in scored[1:] if item[3].value is not None), None)
        match.fallback = alternative
    return match


def _best_array(
    prop: str, item: Mapping[str, Any], node: dict[str, Any], *, exact_only: bool = False
) -> tuple[str, list[Any]] | None:
    """The source array for the array field ``prop`` (its path and elements): the one whose elements match
    the most item fields, named like the field or not (``exact_only``: named like it)."""
    names = {_norm(s) for s in SYNONYMS.get(prop, (prop,))}
    best: tuple[int, int, str, list[Any]] | None = None
    for parts, elements in _arrays(node):
        named = _norm(parts[-1]) in names
        if exact_only and not named:
            continue
        goods = prop in ("line_items", "items")
        if goods and event_array(parts[-1]):
            continue  # tracking events and status history are what happened, not what was bought
        leaves = list(_leaves(_merged(elements)))
        score = 5 if named else 0
        required_hits = 0
        evidence = False
        for field_name, _, needed in _ordered(item):
            if _best(leaves, SYNONYMS.get(field_name, (field_name,)), None) is not None:
                score += 3 if needed else 1
                required_hits += 1 if needed else 0
                evidence = evidence or field_name in ("sku", "quantity", "price")
        if required_hits == 0 or score < 3 or (goods and not evidence):
            continue
        candidate = (score, -len(parts), _path(parts), elements)
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    return None if best is None else (best[2], best[3])


def _utc_twin(match: _Match, scope: _Scope) -> _Match:
    """``date_created_gmt`` rather than ``date_created``: a local time without an offset is ambiguous."""
    key = match.leaf.parts[-1]
    if not isinstance(key, str):
        return match
    owner = match.leaf.parts[:-1]
    for leaf in scope.leaves:
        if leaf.parts[:-1] == owner and any(leaf.parts[-1] == key + suffix for suffix in UTC_SUFFIXES):
            return _Match(leaf, _path(leaf.parts), match.score, utc_of=key)
    return match


def _country(prop: str, match: _Match, scope: _Scope) -> tuple[_Match | None, str]:
    """Fenix keeps a country's name and its ISO code apart: a code never fills ``country``, nor a name
    ``country_code``. A sibling key that holds the right one wins (country_iso2 beside country)."""
    want_code = prop == "country_code"
    if _is_code(match.sample) == want_code:
        return match, ""
    owner = match.leaf.parts[:-1]
    for leaf in scope.leaves:
        if (
            leaf.parts[:-1] == owner
            and "country" in snake(str(leaf.parts[-1]))
            and isinstance(leaf.value, str)
            and leaf.value
            and _is_code(leaf.value) == want_code
        ):
            return _Match(leaf, _path(leaf.parts), match.score - 10), ""
    if want_code:
        return None, ""
    # Only a code: the shipped ISO 3166 table names it.
    return _Match(match.leaf, match.path, match.score - 10, call="country_name"), ""


def _minor_units(prop: str, scope: _Scope) -> _Match | None:
    """``price_cents``, ``amount_in_cents``: an amount of this field counted in minor units."""
    starts = [snake(s) for s in SYNONYMS.get(prop, (prop,)) if "." not in s]
    for leaf in scope.leaves:
        key = snake(leaf.names[-1]) if leaf.names else ""
        if (
            len(leaf.names) == 1
            and MINOR_UNITS.search(key)
            and any(key.startswith(s + "_") for s in starts)
            and isinstance(leaf.value, int)
        ):
            return _Match(leaf, _path(leaf.parts), 70)
    return None


def _confidence(score: int) -> str:
    """How sure a guess is: its own name in the right place, a synonym or a nearby key, or a long shot."""
    if score >= 100:
        return "sure"
    if score >= 75:
        return "likely"
    return "a guess"


def _is_code(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[A-Z]{2,3}", value.strip()) is not None
