"""Building one target's field tree: each field of the kind's schema, the source path guessed for it or a TODO.

:class:`_TargetBuilder` walks the kind's schema (objects, arrays, money, measures, enums, leaves) and turns each
field into an ``_Out`` of the tree (``_tree``) with its suggestion: the match chosen for it (``_match``),
written as the mapping's YAML, or a TODO where the sample has nothing for a required field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from shipmap.engine import TargetKind
from shipmap.engine._paths import path_text as _path

from ._guess import (
    _CONTEXTS,
    CONTEXT_SYNONYMS,
    MINOR_UNITS,
    SYNONYMS,
    _Context,
    _is_amount,
    _is_datetime,
    _norm,
    _ordered,
    _shape,
    _sum,
    _synonyms,
    _types,
    snake,
)
from ._match import (
    _NAIVE_DATETIME,
    _best,
    _best_array,
    _confidence,
    _country,
    _Match,
    _minor_units,
    _parent_key,
    _pick_root,
    _Scope,
    _utc_twin,
)
from ._model import TODO, FieldSuggestion
from ._sample import _jinja_path, _leaves, _merged
from ._tree import _Out, _show, _walk, _yaml


class _TargetBuilder:
    def __init__(self, name: str, kind: TargetKind, document: Any) -> None:
        self.name = name
        self.kind = kind
        self.from_parts, self.node = _pick_root(kind, document)
        self.scope = _Scope(list(_leaves(self.node)), self.node)
        self.fields: list[_Out] = []
        self.not_found: list[str] = []
        self.naive_datetimes = False
        self.lookups: dict[str, list[str]] = {}
        self.line_array: tuple[str, list[Any]] | None = None
        self.matched_paths: dict[str, tuple[str | int, ...]] = {}
        self.child_filter: str | None = None

    @property
    def from_expression(self) -> str | None:
        return _path(self.from_parts) if self.from_parts else None

    def build(self, lookups: dict[str, list[str]]) -> None:
        self.lookups = lookups
        schema = self.kind.inlined
        line_schema = schema.get("properties", {}).get("line_items")
        if isinstance(line_schema, Mapping) and _shape(line_schema) == "array":
            self.line_array = _best_array("line_items", line_schema["items"], self.node)
            if self.line_array is not None:
                each, elements = self.line_array
                parent = _parent_key(elements)
                if parent is not None:
                    # Children (a bundle's parts, a configurable's simple product) repeat their parent's
                    # quantity: only top-level lines are items, and only they are summed.
                    top = [e for e in elements if isinstance(e, dict) and not e.get(parent)]
                    self.line_array = (f"{each}[?!{parent}]", top or elements)
                    self.child_filter = parent
        self.fields = self._object(schema, (self.name,), None, self.scope, top=True)
        if self.kind.api == "dg":
            self._external_ids()

    def _external_ids(self) -> None:
        """DG wants a unique external_id per request: build one from the order and shipment ids if found."""
        data = f"{self.name}.inputs.shipment_data"
        order = self.matched_paths.get(f"{data}.order_id")
        shipment = self.matched_paths.get(f"{data}.shipment_id")
        if order is None or shipment is None:
            return
        first, second = _jinja_path(order), _jinja_path(shipment)
        if first is None or second is None:
            return
        template = f"{{{{ {first} }}}}-{{{{ {second} }}}}"
        for out in _walk(self.fields):
            suggestion = out.suggestion
            if out.name == "external_id" and suggestion is not None and suggestion.todo:
                out.spec = json.dumps(template)
                out.comment = "unique per request: add a status if one shipment sends several"
                out.suggestion = FieldSuggestion(self.name, suggestion.field, template, True)

    # --- objects -------------------------------------------------------------------------------------------

    def _object(
        self,
        schema: Mapping[str, Any],
        path: tuple[str, ...],
        context: _Context | None,
        scope: _Scope,
        *,
        top: bool = False,
    ) -> list[_Out]:
        required_out: list[_Out] = []
        optional_out: list[_Out] = []
        missing: list[str] = []
        for prop, sub, required in _ordered(schema):
            built = self._field(prop, sub, required, (*path, prop), context, scope, top=top)
            if built is None:
                missing.append(prop)
            elif required:
                required_out.append(built)
            else:
                optional_out.append(built)
        out = list(required_out)
        if optional_out:
            if required_out:
                out.append(_Out("", note=True, comment="optional fields the sample seems to have"))
            out.extend(optional_out)
        if missing:
            out.append(
                _Out("", note=True, comment="not found in the sample (optional): " + ", ".join(missing))
            )
        return out

    def _field(
        self,
        prop: str,
        schema: Mapping[str, Any],
        required: bool,
        path: tuple[str, ...],
        context: _Context | None,
        scope: _Scope,
        *,
        top: bool,
    ) -> _Out | None:
        shape = _shape(schema)
        dotted = ".".join(path)
        if shape == "array":
            return self._array(prop, schema, required, path, scope)
        if shape in ("object", "money", "measure"):
            inner = _CONTEXTS.get(prop, context)
            if shape == "money":
                return self._money(prop, schema, required, path, inner, scope)
            if shape == "measure":
                return self._measure(prop, schema, required, path, inner, scope)
            children = self._object(schema, path, inner, scope)
            if all(c.suggestion is None or c.suggestion.todo for c in _walk(children)):
                if not required:
                    return None  # listed as not found
                if not any(c.suggestion is not None for c in _walk(children)):
                    # Nothing matched and nothing inside is required: the object as a whole is the TODO.
                    return self._todo(prop, dotted)
            return _Out(prop, children=children)
        # a leaf
        const = schema.get("const")
        enum = schema.get("enum")
        if const is not None:
            return self._suggest(prop, dotted, f"{{literal: {_yaml(const)}}}", required, const, "a literal")
        if prop == "item_quantity" and self.line_array is not None:
            each, elements = self.line_array
            quantity = self._match("quantity", None, _Scope(list(_leaves(_merged(elements))), {}))
            if quantity is not None:
                expression = f"sum({each}[].{quantity.path})"
                total = _sum(elements, quantity.leaf.parts)
                return self._suggest(
                    prop, dotted, _yaml(expression), required, total, expression, quantity.score
                )
        if isinstance(enum, list) and enum:
            return self._enum(prop, enum, required, dotted, scope, context, top)
        match = self._match(prop, context, scope, top=top)
        if match is not None and _is_datetime(schema):
            match = _utc_twin(match, scope)
        if match is not None and prop in ("country", "country_name", "country_code"):
            match, note = _country(prop, match, scope)
            if match is None:
                return _Out("", note=True, comment=note) if note else None
        if match is None:
            return self._todo(prop, dotted) if required else None
        spec = self._leaf_spec(prop, schema, match, required)
        self.matched_paths[dotted] = match.leaf.parts
        source = match.expression if match.utc_of or match.call else _path(match.leaf.parts)
        out = self._suggest(prop, dotted, spec, required, match.sample, source, match.score)
        if match.utc_of:
            out.comment += f"; the UTC twin of {match.utc_of} (a local time)"
        if match.call == "country_name":
            out.comment += "; a code: country_name() gives the name Fenix wants"
        return out

    def _leaf_spec(self, prop: str, schema: Mapping[str, Any], match: _Match, required: bool) -> str:
        types = _types(schema)
        value = match.sample
        expression = match.expression
        options: list[str] = []
        if _is_datetime(schema):
            options.append("type: datetime")
            if isinstance(value, str) and _NAIVE_DATETIME.match(value.strip()) and not match.utc_of:
                self.naive_datetimes = True
        elif (prop == "id" or prop.endswith("_id")) and "string" in types:
            options.append("type: id")
        elif isinstance(value, int | float) and not isinstance(value, bool) and "string" in types:
            if not types & {"number", "integer"}:
                options.append("type: string")
        elif isinstance(value, str) and "integer" in types and "string" not in types:
            options.append("type: integer")
        elif isinstance(value, str) and "number" in types and "string" not in types:
            options.append("type: number")
        elif isinstance(value, str) and types == {"boolean"}:
            options.append("type: boolean")
        if value is None and required:
            # Null in the sample: say so where it fails ("required field has no value"), not in the payload.
            options.append("required: true")
        if not options:
            return _yaml(expression)
        return "{path: " + _yaml(expression) + ", " + ", ".join(options) + "}"

    def _enum(
        self,
        prop: str,
        enum: list[Any],
        required: bool,
        dotted: str,
        scope: _Scope,
        context: _Context | None,
        top: bool,
    ) -> _Out | None:
        allowed = ", ".join(json.dumps(v) if v in ("", None) else str(v) for v in enum)
        match = self._match(prop, context, scope, top=top)
        if match is not None and match.score < 80:
            match = None  # a status inside some array (fulfillments[0].status) is not the document's
        if match is None:
            if not required:
                return None
            first = next(v for v in enum if v not in ("", None))
            out = self._suggest(prop, dotted, f"{{literal: {_yaml(first)}}}", True, first, "a literal")
            out.comment = f"one of {allowed}"
            return out
        if match.sample in enum and match.sample not in ("", None):
            return self._suggest(
                prop, dotted, _yaml(match.expression), required, match.sample, match.path, match.score
            )
        # A source status rarely uses the target's words: a lookup table, its values to fill in.
        table = prop
        seen = self.lookups.setdefault(table, [])
        key = match.sample
        text_key = "null" if key is None else _yaml(str(key))
        if text_key not in seen:
            seen.append(text_key)
        spec = "{path: " + _yaml(match.expression) + f", lookup: {table}}}"
        out = self._suggest(prop, dotted, spec, required, key, _path(match.leaf.parts), match.score)
        out.comment = f"fill lookups.{table}: {allowed}"
        return out

    def _money(
        self,
        prop: str,
        schema: Mapping[str, Any],
        required: bool,
        path: tuple[str, ...],
        context: _Context | None,
        scope: _Scope,
    ) -> _Out | None:
        dotted = ".".join(path)
        match = self._match(prop, context, scope)
        if match is not None and not _is_amount(match.sample):
            match = None
        if match is None:
            match = _minor_units(prop, scope)
        currency_required = "currency" in schema.get("required", ())
        if match is None:
            if not required:
                return None
            value = self._todo("value", f"{dotted}.value")
            children = [value]
            if currency_required:
                children.append(self._currency(f"{dotted}.currency", scope))
            return _Out(prop, children=children)
        currency = self._currency(f"{dotted}.currency", scope)
        key = match.leaf.parts[-1]
        if isinstance(key, str) and MINOR_UNITS.search(snake(key)):
            # Cents are not units: 1999 is 19.99 USD but 1999 JPY. The currency's ISO 4217 exponent decides.
            code = currency.suggestion.source if currency.suggestion else None
            if code and code != "a literal":
                expression = f"from_minor({match.expression}, {code})"
                value = self._suggest(
                    "value", f"{dotted}.value", _yaml(expression), True, match.sample, match.path, match.score
                )
                value.comment += "; in minor units (cents)"
            else:
                value = self._todo("value", f"{dotted}.value")
                value.comment = (
                    f"TODO: {match.path} ({_show(match.sample)}) counts minor units (cents): divide by the"
                    " currency's 10^exponent (100 for USD, 1 for JPY)"
                )
            return _Out(prop, children=[value, currency])
        value = self._suggest(
            "value",
            f"{dotted}.value",
            _yaml(f"money({match.expression})"),
            True,
            match.sample,
            match.path,
            match.score,
        )
        return _Out(prop, children=[value, currency])

    def _currency(self, dotted: str, scope: _Scope) -> _Out:
        # Prefer the document's own currency: inside an array that is $parent.<path>.
        outer = scope.parent_leaves if scope.parent_leaves is not None else scope.leaves
        found = _best(outer, SYNONYMS["currency"], None)
        if found is not None and isinstance(found.sample, str):
            expression = found.path
            if scope.parent_leaves is not None:
                expression = "$parent." + expression
            return self._suggest(
                "currency", dotted, _yaml(expression), True, found.sample, expression, found.score
            )
        if scope.parent_leaves is not None:
            inner = _best(scope.leaves, SYNONYMS["currency"], None)
            if inner is not None and isinstance(inner.sample, str):
                return self._suggest("currency", dotted, _yaml(inner.path), True, inner.sample, inner.path)
        out = self._suggest("currency", dotted, "{literal: USD}", True, "USD", "a literal")
        out.comment = "no currency in the sample; USD is Fenix's default"
        return out

    def _measure(
        self,
        prop: str,
        schema: Mapping[str, Any],
        required: bool,
        path: tuple[str, ...],
        context: _Context | None,
        scope: _Scope,
    ) -> _Out | None:
        dotted = ".".join(path)
        match = self._match(prop, context, scope)
        if match is not None and (not _is_amount(match.sample) or (match.sample is None and not required)):
            match = None  # a null says nothing about the shape: it may be an object elsewhere
        if match is None:
            if not required:
                return None
            return _Out(
                prop,
                children=[self._todo("value", f"{dotted}.value"), self._todo("units", f"{dotted}.units")],
            )
        spec = _yaml(match.expression)
        if isinstance(match.sample, str):
            spec = "{path: " + spec + ", type: number}"
        value = self._suggest("value", f"{dotted}.value", spec, True, match.sample, match.path)
        # Units sit beside the value ("weight": {"value", "units"}) or beside the field ("weight_unit").
        owner = match.leaf.parts[:-1]
        beside = [leaf for leaf in scope.leaves if leaf.parts[:-1] == owner]
        units = _best(beside, SYNONYMS["units"], None)
        if units is not None and isinstance(units.sample, str):
            unit_out = self._suggest(
                "units", f"{dotted}.units", _yaml(units.path), True, units.sample, units.path
            )
        elif "gram" in match.leaf.names[-1].lower():
            # The Fenix seed spells grams "grms" (oz or grms).
            unit_out = self._suggest("units", f"{dotted}.units", "{literal: grms}", True, "grms", "a literal")
            unit_out.comment = f"{match.leaf.names[-1]} counts grams; Fenix takes oz or grms"
        elif "units" in schema.get("required", ()):
            unit_out = self._todo("units", f"{dotted}.units")
        else:
            return _Out(prop, children=[value])
        return _Out(prop, children=[value, unit_out])

    # --- arrays --------------------------------------------------------------------------------------------

    def _array(
        self, prop: str, schema: Mapping[str, Any], required: bool, path: tuple[str, ...], scope: _Scope
    ) -> _Out | None:
        dotted = ".".join(path)
        item = schema["items"]
        if prop == "line_items" and scope.each is None and self.line_array is not None:
            found: tuple[str, list[Any]] | None = self.line_array
        else:
            found = _best_array(prop, item, scope.node, exact_only=not required)
        if found is None:
            if not required:
                return None
            children = [
                self._todo(name, f"{dotted}[].{name}") for name, _, needed in _ordered(item) if needed
            ]
            out = _Out(prop, each=TODO, children=children, comment="TODO: the source array of these items")
            out.suggestion = FieldSuggestion(self.name, dotted, None, True)
            return out
        each, elements = found
        inner = _Scope(
            list(_leaves(_merged(elements))),
            _merged(elements),
            each=each,
            parent_leaves=scope.leaves if scope.parent_leaves is None else scope.parent_leaves,
        )
        children = self._object(item, (*path[:-1], f"{prop}[]"), None, inner)
        out = _Out(prop, each=_yaml(each), children=children)
        out.comment = f"{len(elements)} element{'s' if len(elements) != 1 else ''} in the sample"
        named = _norm(each.split("[")[0].rsplit(".", 1)[-1]) in {
            _norm(s) for s in SYNONYMS.get(prop, (prop,))
        }
        confidence = "sure" if named else "a guess"
        out.suggestion = FieldSuggestion(
            self.name, dotted, each, self._needed(dotted), len(elements), confidence=confidence
        )
        return out

    # --- matching ------------------------------------------------------------------------------------------

    def _match(
        self,
        name: str,
        context: _Context | None,
        scope: _Scope,
        *,
        top: bool = False,
        synonyms: Sequence[str] | None = None,
    ) -> _Match | None:
        if synonyms is None and context is not None:
            synonyms = CONTEXT_SYNONYMS.get((context.name, name))
        return _best(scope.leaves, synonyms or _synonyms(name, self.kind.name, top=top), context)

    # --- output --------------------------------------------------------------------------------------------

    def _needed(self, dotted: str) -> bool:
        """Whether the payload must have this field: it and every object around it are required."""
        node: Mapping[str, Any] = self.kind.inlined
        for part in dotted.split(".")[1:]:
            name = part.removesuffix("[]")
            if name not in node.get("required", ()):
                return False
            node = node.get("properties", {}).get(name, {})
            if part.endswith("[]"):
                node = node.get("items", {})
        return True

    def _suggest(
        self,
        prop: str,
        dotted: str,
        spec: str,
        required: bool,
        sample: Any,
        source: str,
        score: int | None = None,
    ) -> _Out:
        confidence = "" if score is None else _confidence(score)
        needed = required and self._needed(dotted)
        suggestion = FieldSuggestion(self.name, dotted, source, needed, sample, confidence=confidence)
        comment = ""
        if source != "a literal":
            comment = f"<- {_show(sample)}"
            if sample is None and "required: true" in spec:
                comment += " in the sample: add a default if null is normal"
            if confidence:
                comment += f" ({confidence})"
        return _Out(prop, spec=spec, comment=comment, suggestion=suggestion)

    def _todo(self, prop: str, dotted: str) -> _Out:
        suggestion = FieldSuggestion(self.name, dotted, None, True)
        comment = f"TODO: required by {self.kind.name}; nothing in the sample matched"
        if dotted.endswith(".action_id"):
            comment = "TODO: the flow id Digital Genius gives you"
        return _Out(prop, spec="{path: TODO, required: true}", comment=comment, suggestion=suggestion)
