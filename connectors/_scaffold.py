"""Scaffolding a new retailer from a sample source document: what ``shipmap init`` writes.

``plan_scaffold`` reads the sample and returns every file as text (nothing is written); ``write_scaffold``
writes them and refuses to overwrite. Both are usable without the command line.

The matcher is deliberately plain, so its guesses are easy to check: a target field's name, and a table of
common synonyms (``number`` <- ``name``/``order_number``, ``zip`` <- ``postal_code``, ...), against the key
names of the sample's leaves, preferring keys inside the matching object (a ``shipping_address`` field from a
shipping-address-like object, never from the billing one) and near the top. Arrays take the source array whose
elements match the most item fields. Each guess is listed with the value it read from the sample. A required
field with no guess becomes ``{path: TODO, required: true}``: it fails loudly at preview and test time
("required field has no value", pointing at its line) instead of sending a made-up value.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shipmap.engine import ShipmapError, TargetKind, builtin_kinds, parse_mapping, read_documents

from ._errors import ConnectorError

_log = logging.getLogger("shipmap.connectors.scaffold")

TODO = "TODO"
DEFAULT_TIMEZONE = "UTC"
SANDBOX_URL = "http://127.0.0.1:8765"
# Target names the ready mappings use for each kind, so scaffolds read like them.
TARGET_NAMES: Mapping[str, str] = {
    "fenix.order": "order",
    "fenix.order_cancel": "cancel",
    "fenix.order_partial_cancel": "partial_cancel",
    "fenix.fulfillment": "fulfillment",
    "dg.execution": "shipment",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLAIN_YAML = re.compile(r"^[A-Za-z_$][A-Za-z0-9_.$]*$")
_YAML_WORDS = frozenset({"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"})
_NAIVE_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")
_MAX_DEPTH = 6
_SHOWN_CHARS = 40

# Source key names that may hold a target field, best first. A dotted entry matches the last keys of a path
# ("image.src"). Fields not listed match their own name only.
SYNONYMS: Mapping[str, tuple[str, ...]] = {
    "id": ("id",),
    "number": ("name", "order_name", "order_number", "number", "order_no"),
    "order_id": ("order_id", "order_key", "order_number", "order.id"),
    "shipment_id": ("shipment_id", "fulfillment_id", "id"),
    "email": ("email", "contact_email", "customer_email", "email_address", "buyer_email"),
    "phone": ("phone", "phone_number", "telephone", "mobile", "contact_phone"),
    "first_name": ("first_name", "firstname", "given_name"),
    "last_name": ("last_name", "lastname", "surname", "family_name"),
    "name": ("name", "full_name"),
    "company": ("company", "company_name"),
    "address1": ("address1", "address_1", "street1", "address_line1", "line1", "street"),
    "address2": ("address2", "address_2", "street2", "address_line2", "line2"),
    "city": ("city", "town", "locality"),
    "province": ("province", "state", "region", "county"),
    "province_code": ("province_code", "state_code", "region_code"),
    "country": ("country", "country_name"),
    "country_code": ("country_code", "country_iso2", "country"),
    "zip": ("zip", "postal_code", "postcode", "zip_code", "zipcode"),
    "sku": ("sku", "product_sku", "variant_sku", "item_sku", "seller_sku", "sku_code"),
    "quantity": ("quantity", "qty", "quantity_ordered", "qty_ordered", "quantity_shipped"),
    "title": ("title", "name", "product_name", "item_name", "product_title", "description"),
    "price": ("price", "unit_price", "item_price", "price_per_unit", "amount"),
    "image_url": ("image_url", "image_src", "image.src", "image", "thumbnail_url", "image_link"),
    "product_id": ("product_id", "productid"),
    "variant_id": ("variant_id", "variation_id"),
    "currency": ("currency", "currency_code"),
    "created_at": ("created_at", "create_date", "date_created", "created", "creation_date", "order_date"),
    "updated_at": ("updated_at", "modify_date", "date_modified", "modified_at", "last_updated_at", "updated"),
    "cancelled_at": ("cancelled_at", "canceled_at", "cancel_date", "date_cancelled", "cancelled_date"),
    "cancel_reason": ("cancel_reason", "cancellation_reason", "cancel_note"),
    "closed_at": ("closed_at", "completed_at", "date_completed"),
    "promised_delivery_date": (
        "promised_delivery_date",
        "order_promised_delivery_date",
        "promised_date",
        "delivery_date",
        "expected_delivery_date",
    ),
    "tracking_number": ("tracking_number", "tracking_code", "tracking_no", "tracking_numbers", "tracking_id"),
    "tracking_company": (
        "tracking_company",
        "carrier",
        "carrier_name",
        "carrier_code",
        "slug",
        "courier",
        "courier_name",
        "shipping_carrier",
    ),
    "carrier_code": (
        "carrier_code",
        "carrier",
        "slug",
        "courier_code",
        "courier",
        "tracking_company",
        "carrier_name",
    ),
    "tracking_url": (
        "tracking_url",
        "tracking_urls",
        "tracking_link",
        "courier_tracking_link",
        "tracking_page",
    ),
    "shipping_service": ("shipping_service", "service_code", "service", "service_level", "shipping_method"),
    "shipcost": ("shipcost", "shipment_cost", "shipping_cost", "label_cost", "postage"),
    "total_weight": ("total_weight", "weight.value", "weight", "total_grams", "shipment_weight"),
    "weight": ("weight.value", "weight", "grams"),
    "units": ("units", "unit", "weight_unit", "weight_units"),
    "code": ("code", "method_id", "service_code"),
    "source": ("source",),
    "subtotal_price": ("subtotal_price", "subtotal"),
    "total_tax": ("total_tax", "tax_total", "tax_amount"),
    "total_discounts": ("total_discounts", "discount_total", "total_discount"),
    "total_price": ("total_price", "total", "order_total", "grand_total"),
    "taxes_included": ("taxes_included", "prices_include_tax", "tax_included"),
    "financial_status": ("financial_status", "payment_status"),
    "gateway": ("gateway", "payment_method_title", "payment_method", "payment_gateway_names"),
    "line_items": (
        "line_items",
        "items",
        "order_items",
        "lines",
        "shipment_items",
        "products",
        "fulfillment_line_items",
    ),
    "items": ("items", "line_items", "shipment_items", "order_items", "lines", "products"),
    "properties": ("properties", "note_attributes"),
}
# Per kind and top-level field, where the general table would mislead.
KIND_SYNONYMS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("fenix.order", "id"): ("id", "order_id"),
    ("fenix.order_cancel", "id"): ("id", "order_id"),
    ("fenix.order_partial_cancel", "id"): ("id", "order_id"),
    ("fenix.fulfillment", "id"): ("id", "shipment_id", "fulfillment_id"),
}
# Inside one target object, some fields go by other names: a shipping line's amount is its price.
CONTEXT_SYNONYMS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("shipping_info", "title"): ("title", "method_title", "name", "service_name", "shipping_method"),
    ("shipping_info", "code"): ("code", "method_id", "service_code", "carrier_identifier"),
    ("shipping_info", "price"): ("price", "total", "cost", "amount", "shipping_total", "shipping_cost"),
}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(frozen=True, slots=True)
class _Context:
    """Source object names that hold a target object's fields; ``strict``: only keys under one of them."""

    name: str
    names: frozenset[str]
    strict: bool


def _context(name: str, *names: str, strict: bool) -> _Context:
    return _Context(name, frozenset(_norm(n) for n in (name, *names)), strict)


_CONTEXTS: Mapping[str, _Context] = {
    c.name: c
    for c in (
        _context(
            "shipping_address",
            "shipping",
            "ship_to",
            "destination",
            "delivery_address",
            "recipient",
            strict=True,
        ),
        _context("billing_address", "billing", "bill_to", strict=True),
        _context("address", "default_address", "customer_address", strict=True),
        _context("customer", "buyer", "billing", "bill_to", "contact", strict=False),
        _context(
            "shipping_info", "shipping_lines", "shipping_line", "shipping", "shipping_method", strict=False
        ),
    )
}


class ScaffoldError(ConnectorError):
    """``shipmap init`` cannot scaffold: a bad argument, an unreadable sample, or files already there."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class FieldSuggestion:
    """One target field of the scaffolded mapping: the source path guessed for it, or a TODO (``source`` None).

    ``field`` is the target field path (``order.customer.email``, ``order.line_items[].sku``), ``sample`` the
    value the guess reads in the sample (the first element, inside arrays), ``line`` its line in the mapping.
    """

    target: str
    field: str
    source: str | None
    required: bool
    sample: Any = None
    line: int = 0

    @property
    def todo(self) -> bool:
        return self.source is None


@dataclass(frozen=True, slots=True)
class ScaffoldFile:
    path: Path
    text: str
    role: str  # mapping, cases, config, env, gitignore, sample


@dataclass(frozen=True)
class Scaffold:
    """Everything ``shipmap init`` would write, as text, and what the matcher found."""

    directory: Path
    name: str
    kinds: tuple[str, ...]
    files: tuple[ScaffoldFile, ...]
    suggestions: tuple[FieldSuggestion, ...]
    targets: tuple[tuple[str, str], ...] = ()  # (target name, kind) in mapping order
    select: str | None = None  # the JMESPath a test case uses to take one document out of the sample

    def file(self, role: str) -> Path:
        return next(f.path for f in self.files if f.role == role)

    @property
    def mapping_path(self) -> Path:
        return self.file("mapping")

    @property
    def cases_path(self) -> Path:
        return self.file("cases")

    @property
    def config_path(self) -> Path:
        return self.file("config")

    @property
    def sample_path(self) -> Path:
        return self.file("sample")

    @property
    def todos(self) -> tuple[FieldSuggestion, ...]:
        return tuple(s for s in self.suggestions if s.todo)

    @property
    def matched(self) -> tuple[FieldSuggestion, ...]:
        return tuple(s for s in self.suggestions if not s.todo)

    def existing(self) -> list[Path]:
        """The files that are already there (``write_scaffold`` refuses them without ``force``)."""
        return [f.path for f in self.files if f.path.exists() and not _same_file(f)]


def _same_file(item: ScaffoldFile) -> bool:
    # The sample may already sit where the scaffold puts it: that is not an overwrite.
    return item.role == "sample" and item.path.read_bytes() == item.text.encode("utf-8")


def plan_scaffold(
    sample: str | Path,
    *,
    name: str,
    kinds: Sequence[str],
    directory: str | Path | None = None,
    timezone: str = DEFAULT_TIMEZONE,
) -> Scaffold:
    """The files of a new retailer ``name`` for target ``kinds``, from one sample document (JSON, or the first
    line of an NDJSON file). ``directory`` defaults to ``./<name>``. Raises ScaffoldError."""
    if not _NAME.match(name):
        raise ScaffoldError(f"--name {name!r}: use letters, digits, '_', '.' and '-', starting with one")
    if not kinds:
        raise ScaffoldError("give at least one --kind")
    known = builtin_kinds()
    for kind in kinds:
        if kind not in known:
            raise ScaffoldError(f"unknown kind {kind!r}; known kinds: {', '.join(sorted(known))}")
    if len(set(kinds)) != len(kinds):
        raise ScaffoldError("a kind is given twice; each kind becomes one target")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScaffoldError(
            f"--timezone {timezone!r}: not an IANA time zone such as America/New_York"
        ) from None
    sample_file = Path(sample)
    document, sample_text = _read_sample(sample_file)
    folder = Path(directory) if directory is not None else Path(name)
    copied = folder / "samples" / sample_file.name
    try:
        inside = sample_file.resolve().is_relative_to(folder.resolve())
    except OSError:
        inside = False
    if sample_file.suffix.lower() in (".ndjson", ".jsonl"):
        # A test case reads one JSON document: keep the first line's, pretty-printed.
        sample_text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        copied, inside = folder / "samples" / f"{sample_file.stem}.json", False
    sample_target = sample_file if inside else copied
    sample_rel = _relative(sample_target, folder)
    mapping_file = folder / f"{name}.yaml"
    target_kinds = [known[k] for k in kinds]
    select, selected = _pick_document(document, target_kinds)
    builders = [_TargetBuilder(TARGET_NAMES[k.name], k, selected) for k in target_kinds]
    lookups: dict[str, list[str]] = {}
    naive = False
    for builder in builders:
        builder.build(lookups)
        naive = naive or builder.naive_datetimes
    mapping_text, suggestions = _render_mapping(
        name, builders, lookups, sample_rel, select, timezone, naive, len(_list_elements(document, select))
    )
    try:
        parse_mapping(mapping_text, file=str(mapping_file))
    except ShipmapError as error:  # pragma: no cover - a scaffold that does not load is a bug here
        raise ScaffoldError(f"the scaffolded mapping does not load: {error.message}") from error
    expected = _probe(name, builders, lookups, selected)
    files = [
        ScaffoldFile(mapping_file, mapping_text, "mapping"),
        ScaffoldFile(
            folder / f"{name}.cases.yaml",
            _render_cases(name, sample_rel, select, expected, builders),
            "cases",
        ),
        ScaffoldFile(sample_target, sample_text, "sample"),
        ScaffoldFile(folder / "config.yaml", _render_config(name, target_kinds), "config"),
        ScaffoldFile(folder / ".env.example", _render_env(target_kinds), "env"),
        ScaffoldFile(folder / ".gitignore", ".env\n.shipmap/\n", "gitignore"),
    ]
    _log.debug("scaffold %s: %d suggestions", name, len(suggestions))
    targets = tuple((b.name, b.kind.name) for b in builders)
    return Scaffold(folder, name, tuple(kinds), tuple(files), tuple(suggestions), targets, select)


def write_scaffold(scaffold: Scaffold, *, force: bool = False) -> list[Path]:
    """Write every file of ``scaffold``; without ``force`` nothing is written if any of them exists."""
    existing = scaffold.existing()
    if existing and not force:
        listed = ", ".join(str(p) for p in existing)
        raise ScaffoldError(
            f"not overwriting {listed}", hint="use --force to overwrite, or --dir to scaffold elsewhere"
        )
    written: list[Path] = []
    for item in scaffold.files:
        if item.role == "sample" and item.path.exists() and _same_file(item):
            continue
        item.path.parent.mkdir(parents=True, exist_ok=True)
        item.path.write_text(item.text, encoding="utf-8")
        written.append(item.path)
    return written


# --- reading the sample -------------------------------------------------------------------------------------


def _read_sample(path: Path) -> tuple[Any, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ScaffoldError(f"cannot read sample {path}: {error}") from None
    try:
        first = next(read_documents(path), None)
        document = first.unwrap() if first is not None else None
    except ShipmapError as error:
        raise ScaffoldError(f"sample {path} is not JSON: {error.message}") from None
    if not isinstance(document, dict | list) or not document:
        raise ScaffoldError(f"sample {path} holds no JSON object to learn from")
    return document, text


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


# --- leaves and arrays of the sample ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Leaf:
    parts: tuple[str | int, ...]
    value: Any

    @property
    def names(self) -> list[str]:
        return [p for p in self.parts if isinstance(p, str)]


def _leaves(node: Any, prefix: tuple[str | int, ...] = ()) -> Iterator[_Leaf]:
    """Scalar values under ``node``; arrays are entered at their first element (``[0]``)."""
    if len(prefix) > _MAX_DEPTH or not isinstance(node, dict):
        return
    for key, value in node.items():
        here = (*prefix, str(key))
        if isinstance(value, dict):
            yield from _leaves(value, here)
        elif isinstance(value, list):
            if value and isinstance(value[0], dict):
                yield from _leaves(_merged(value), (*here, 0))
            elif value and not isinstance(value[0], list):
                yield _Leaf((*here, 0), value[0])
        else:
            yield _Leaf(here, value)


def _merged(elements: list[Any]) -> dict[str, Any]:
    """One element standing for them all: every key any element has, with its first non-null value."""
    merged: dict[str, Any] = {}
    for element in elements[:50]:
        if not isinstance(element, dict):
            continue
        for key, value in element.items():
            if merged.get(key) is None:
                merged[key] = value
    return merged


def _arrays(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], list[Any]]]:
    """Arrays of objects reachable from ``node`` through objects only (``each:`` takes a path, not [0])."""
    if len(prefix) > 4 or not isinstance(node, dict):
        return
    for key, value in node.items():
        here = (*prefix, str(key))
        if isinstance(value, list) and value and isinstance(value[0], dict):
            yield here, value
        elif isinstance(value, dict):
            yield from _arrays(value, here)


def _path(parts: Sequence[str | int]) -> str:
    """A JMESPath expression for ``parts``; keys that are not identifiers are quoted."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = part if _IDENTIFIER.match(part) else json.dumps(part)
            text += f".{key}" if text else key
    return text


def _jinja_path(parts: Sequence[str | int]) -> str | None:
    if not all(isinstance(p, int) or _IDENTIFIER.match(p) for p in parts):
        return None
    return "this" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _list_elements(document: Any, select: str | None) -> list[Any]:
    if select is None:
        return []
    owner = document
    if select != "[0]":
        for part in select.removesuffix("[0]").split("."):
            owner = owner.get(part) if isinstance(owner, dict) else None
    return owner if isinstance(owner, list) else []


# --- schema helpers -----------------------------------------------------------------------------------------


def _types(schema: Mapping[str, Any]) -> set[str]:
    found: set[str] = set()
    kind = schema.get("type")
    if isinstance(kind, str):
        found.add(kind)
    elif isinstance(kind, list):
        found.update(str(k) for k in kind)
    for option in schema.get("anyOf", ()):
        found |= _types(option)
    return found


def _is_datetime(schema: Mapping[str, Any]) -> bool:
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and "T" in pattern and "\\d{4}" in pattern:
        return True
    return any(_is_datetime(option) for option in schema.get("anyOf", ()))


def _shape(schema: Mapping[str, Any]) -> str:
    props = schema.get("properties")
    items = schema.get("items")
    if isinstance(items, Mapping) and isinstance(items.get("properties"), Mapping):
        return "array"
    if isinstance(props, Mapping):
        if "value" in props and "currency" in props:
            return "money"
        if "value" in props and ("units" in props or "unit" in props):
            return "measure"
        return "object"
    return "leaf"


def _ordered(schema: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any], bool]]:
    """The properties of an object schema, required ones first (in the schema's required order)."""
    props: Mapping[str, Any] = schema.get("properties", {})
    required = [r for r in schema.get("required", ()) if r in props]
    rest = [p for p in props if p not in required]
    return [(p, props[p], True) for p in required] + [(p, props[p], False) for p in rest]


def _field_names(schema: Mapping[str, Any]) -> set[str]:
    """A kind's field names, nested objects included, array items not: what a source root should hold."""
    names: set[str] = set()
    for prop, sub, _ in _ordered(schema):
        names.add(prop)
        if _shape(sub) in ("object", "money", "measure"):
            names |= _field_names(sub)
    return names


# --- choosing the document inside the sample ----------------------------------------------------------------


def _pick_document(document: Any, kinds: Sequence[TargetKind]) -> tuple[str | None, Any]:
    """The part of the sample one event would be. A list (top level, or one array beside page counters) whose
    elements look more like the target than anything else is a batch: a case selects its first element."""
    wanted: set[str] = set()
    for kind in kinds:
        for name in _field_names(kind.inlined):
            wanted |= {_norm(s.rsplit(".", 1)[-1]) for s in _synonyms(name, kind.name, top=False)}

    def score(node: Any) -> int:
        return sum(1 for key in node if _norm(str(key)) in wanted) if isinstance(node, dict) else 0

    if isinstance(document, list):
        first = next((e for e in document if isinstance(e, dict)), None)
        if first is None:
            raise ScaffoldError("the sample is a list without objects: nothing to map")
        return "[0]", first
    best_dict = max(_dict_nodes(document), key=lambda item: (score(item[1]), -len(item[0])))
    lists = [
        (key, value)
        for key, value in document.items()
        if isinstance(value, list) and value and isinstance(value[0], dict)
    ]
    for key, value in sorted(lists, key=lambda item: -score(item[1][0])):
        if score(value[0]) > score(best_dict[1]) and score(value[0]) >= 3 and _IDENTIFIER.match(key):
            return f"{key}[0]", value[0]
    return None, document


def _dict_nodes(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    if not isinstance(node, dict) or len(prefix) > 3:
        return
    yield prefix, node
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _dict_nodes(value, (*prefix, str(key)))


def _synonyms(name: str, kind: str, *, top: bool) -> tuple[str, ...]:
    if top and (kind, name) in KIND_SYNONYMS:
        return KIND_SYNONYMS[(kind, name)]
    return SYNONYMS.get(name, (name,))


# --- building one target ------------------------------------------------------------------------------------


@dataclass
class _Out:
    """One line (or block) of the mapping's field tree."""

    name: str
    spec: str | None = None  # flow YAML after "name: "; None for a block with children
    children: list[_Out] = field(default_factory=list)
    each: str | None = None
    comment: str = ""
    suggestion: FieldSuggestion | None = None
    note: bool = False  # a comment line only


@dataclass
class _Match:
    leaf: _Leaf
    path: str
    score: int
    fallback: _Leaf | None = None  # a non-null alternative when the best leaf is null in the sample

    @property
    def expression(self) -> str:
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


class _TargetBuilder:
    def __init__(self, name: str, kind: TargetKind, document: Any) -> None:
        self.name = name
        self.kind = kind
        self.from_parts, self.node = self._pick_from(document)
        self.scope = _Scope(list(_leaves(self.node)), self.node)
        self.fields: list[_Out] = []
        self.not_found: list[str] = []
        self.naive_datetimes = False
        self.lookups: dict[str, list[str]] = {}
        self.line_array: tuple[str, list[Any]] | None = None
        self.matched_paths: dict[str, tuple[str | int, ...]] = {}

    def _pick_from(self, document: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
        wanted = {
            _norm(s.rsplit(".", 1)[-1])
            for n in _field_names(self.kind.inlined)
            for s in _synonyms(n, self.kind.name, top=False)
        }
        nodes = list(_dict_nodes(document))

        def score(node: dict[str, Any]) -> int:
            return sum(1 for key in node if _norm(str(key)) in wanted)

        parts, node = max(nodes, key=lambda item: (score(item[1]), -len(item[0])))
        if score(node) <= score(document):
            return (), document
        return parts, node

    @property
    def from_expression(self) -> str | None:
        return _path(self.from_parts) if self.from_parts else None

    def build(self, lookups: dict[str, list[str]]) -> None:
        self.lookups = lookups
        schema = self.kind.inlined
        line_schema = schema.get("properties", {}).get("line_items")
        if isinstance(line_schema, Mapping) and _shape(line_schema) == "array":
            self.line_array = self._best_array("line_items", line_schema["items"], self.node)
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
                return self._suggest(prop, dotted, _yaml(expression), required, total, expression)
        if isinstance(enum, list) and enum:
            return self._enum(prop, enum, required, dotted, scope, context, top)
        match = self._match(prop, context, scope, top=top)
        if match is None:
            return self._todo(prop, dotted) if required else None
        spec = self._leaf_spec(prop, schema, match, required)
        self.matched_paths[dotted] = match.leaf.parts
        return self._suggest(prop, dotted, spec, required, match.sample, _path(match.leaf.parts))

    def _leaf_spec(self, prop: str, schema: Mapping[str, Any], match: _Match, required: bool) -> str:
        types = _types(schema)
        value = match.sample
        expression = match.expression
        options: list[str] = []
        if _is_datetime(schema):
            options.append("type: datetime")
            if isinstance(value, str) and _NAIVE_DATETIME.match(value.strip()):
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
            return self._suggest(prop, dotted, _yaml(match.expression), required, match.sample, match.path)
        # A source status rarely uses the target's words: a lookup table, its values to fill in.
        table = prop
        seen = self.lookups.setdefault(table, [])
        key = match.sample
        text_key = "null" if key is None else _yaml(str(key))
        if text_key not in seen:
            seen.append(text_key)
        spec = "{path: " + _yaml(match.expression) + f", lookup: {table}}}"
        out = self._suggest(prop, dotted, spec, required, key, _path(match.leaf.parts))
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
        currency_required = "currency" in schema.get("required", ())
        if match is None:
            if not required:
                return None
            value = self._todo("value", f"{dotted}.value")
            children = [value]
            if currency_required:
                children.append(self._currency(f"{dotted}.currency", scope))
            return _Out(prop, children=children)
        value = self._suggest(
            "value", f"{dotted}.value", _yaml(f"money({match.expression})"), True, match.sample, match.path
        )
        return _Out(prop, children=[value, self._currency(f"{dotted}.currency", scope)])

    def _currency(self, dotted: str, scope: _Scope) -> _Out:
        # Prefer the document's own currency: inside an array that is $parent.<path>.
        outer = scope.parent_leaves if scope.parent_leaves is not None else scope.leaves
        found = self._best(outer, ("currency", "currency_code"), None)
        if found is not None and isinstance(found.sample, str):
            expression = found.path
            if scope.parent_leaves is not None:
                expression = "$parent." + expression
            return self._suggest("currency", dotted, _yaml(expression), True, found.sample, expression)
        if scope.parent_leaves is not None:
            inner = self._best(scope.leaves, ("currency", "currency_code"), None)
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
        units = self._best(beside, SYNONYMS["units"], None)
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
            found = self._best_array(prop, item, scope.node, exact_only=not required)
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
        out.suggestion = FieldSuggestion(self.name, dotted, each, self._needed(dotted), len(elements))
        return out

    def _best_array(
        self, prop: str, item: Mapping[str, Any], node: dict[str, Any], *, exact_only: bool = False
    ) -> tuple[str, list[Any]] | None:
        names = {_norm(s) for s in SYNONYMS.get(prop, (prop,))}
        best: tuple[int, int, str, list[Any]] | None = None
        for parts, elements in _arrays(node):
            named = _norm(parts[-1]) in names
            if exact_only and not named:
                continue
            leaves = list(_leaves(_merged(elements)))
            score = 5 if named else 0
            required_hits = 0
            for field_name, _, needed in _ordered(item):
                if self._best(leaves, SYNONYMS.get(field_name, (field_name,)), None) is not None:
                    score += 3 if needed else 1
                    required_hits += 1 if needed else 0
            if required_hits == 0 or score < 3:
                continue
            candidate = (score, -len(parts), _path(parts), elements)
            if best is None or candidate[:2] > best[:2]:
                best = candidate
        return None if best is None else (best[2], best[3])

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
        return self._best(scope.leaves, synonyms or _synonyms(name, self.kind.name, top=top), context)

    def _best(self, leaves: Sequence[_Leaf], names: Sequence[str], context: _Context | None) -> _Match | None:
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

    def _suggest(self, prop: str, dotted: str, spec: str, required: bool, sample: Any, source: str) -> _Out:
        suggestion = FieldSuggestion(self.name, dotted, source, required and self._needed(dotted), sample)
        comment = ""
        if source != "a literal":
            comment = f"<- {_show(sample)}"
            if sample is None and "required: true" in spec:
                comment += " in the sample: add a default if null is normal"
        return _Out(prop, spec=spec, comment=comment, suggestion=suggestion)

    def _todo(self, prop: str, dotted: str) -> _Out:
        suggestion = FieldSuggestion(self.name, dotted, None, True)
        comment = f"TODO: required by {self.kind.name}; nothing in the sample matched"
        if dotted.endswith(".action_id"):
            comment = "TODO: the flow id Digital Genius gives you"
        return _Out(prop, spec="{path: TODO, required: true}", comment=comment, suggestion=suggestion)


def _score(leaf: _Leaf, names: Sequence[str], context: _Context | None) -> int | None:
    keys = leaf.names
    if not keys:
        return None
    index: int | None = None
    width = 1
    for position, name in enumerate(names):
        segments = [_norm(s) for s in name.split(".")]
        if [_norm(k) for k in keys[-len(segments) :]] == segments:
            index, width = position, len(segments)
            break
    if index is None:
        return None
    parents = keys[:-width]
    score = 100 - 5 * index
    inside = context is not None and any(_norm(p) in context.names for p in parents)
    if context is not None and context.strict and not inside:
        return None
    if inside:
        score += 40
    outside = [p for p in parents if context is None or _norm(p) not in context.names]
    score -= 15 * len(outside)
    # A value inside an array of objects is one element's: right for shipping_info from shipping_lines[0],
    # wrong for most else (a subtotal from line_items[0]), so only an array the context names is entered.
    for position, part in enumerate(leaf.parts):
        if isinstance(part, int) and position < len(leaf.parts) - 1:
            owner = leaf.parts[position - 1]
            if not (context is not None and isinstance(owner, str) and _norm(owner) in context.names):
                return None
    if leaf.value is None:
        score -= 5
    return score


def _is_amount(value: Any) -> bool:
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return True
    return isinstance(value, str) and re.fullmatch(r"\s*-?\d+(\.\d+)?\s*", value) is not None


def _sum(elements: list[Any], parts: tuple[str | int, ...]) -> Any:
    total = 0
    for element in elements:
        value: Any = element
        for part in parts:
            value = value.get(part) if isinstance(value, dict) and isinstance(part, str) else None
        if isinstance(value, int) and not isinstance(value, bool):
            total += value
    return total


def _walk(outs: list[_Out]) -> Iterator[_Out]:
    for out in outs:
        yield out
        yield from _walk(out.children)


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def _yaml(value: Any) -> str:
    """A YAML scalar that reads back as ``value``, plain when that is safe."""
    if isinstance(value, str):
        if _PLAIN_YAML.match(value) and value.lower() not in _YAML_WORDS:
            return value
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False)


# --- rendering ----------------------------------------------------------------------------------------------


def _render_mapping(
    name: str,
    builders: list[_TargetBuilder],
    lookups: dict[str, list[str]],
    sample_rel: str,
    select: str | None,
    timezone: str,
    naive: bool,
    batch: int,
) -> tuple[str, list[FieldSuggestion]]:
    suggestions: list[FieldSuggestion] = []
    lines = [
        f"# {name}: scaffolded by `shipmap init` from {sample_rel}.",
        "#",
        "# Every field of each target kind is laid out, required fields first. Paths after a field are guesses",
        "# from key names, with the value they read in the sample (`<- value`): check each one.",
        "# `{path: TODO, required: true}` marks a required field nothing matched: it fails loudly",
        '# ("required field has no value") until you map it. Docs: docs/mapping-language.md, docs/functions.md.',
    ]
    if select is not None:
        owner = select.removesuffix("[0]") or "the top level"
        lines += [
            "#",
            f"# The sample is a list ({owner}, {batch} elements): this mapping maps ONE element. Feed each",
            f"# element as its own event; the test case picks one with `select: {select}`.",
        ]
    lines += [
        "#",
        f"# next: fill the TODOs, then `shipmap validate {name}.yaml` and `shipmap test {name}.yaml`.",
        "shipmap: 1",
        f"name: {_yaml(name)}",
        f"timezone: {_yaml(timezone)}"
        + (
            "   # the sample has datetimes without an offset: set the zone they are in"
            if naive
            else "   # the zone of source datetimes that carry no offset"
        ),
    ]
    if lookups:
        lines.append("")
        lines.append("lookups:                 # source value -> target value; unknown values are an error")
        for table, keys in lookups.items():
            lines.append(f"  {table}:")
            entries = ", ".join(f"{key}: {TODO}" for key in keys)
            lines.append(f"    map: {{{entries}}}   # TODO: the target's word for each source value")
            suggestions.append(FieldSuggestion("", f"lookups.{table}", None, True, None, len(lines)))
    lines.append("")
    lines.append("targets:")
    for builder in builders:
        lines.append(f"  {builder.name}:")
        lines.append(f"    kind: {builder.kind.name}")
        if builder.from_expression:
            wrapper = (
                "".join('{"' + str(p) + '": ' for p in builder.from_parts)
                + "…"
                + "}" * len(builder.from_parts)
            )
            lines.append(
                f"    from: {_yaml(builder.from_expression)}   # the sample wraps the document: {wrapper}"
            )
        lines.append("    fields:")
        _render_fields(builder.fields, 6, lines, suggestions)
    return "\n".join(lines) + "\n", suggestions


def _render_fields(outs: list[_Out], indent: int, lines: list[str], found: list[FieldSuggestion]) -> None:
    pad = " " * indent
    for out in outs:
        if out.note:
            lines.append(f"{pad}# {out.comment}")
            continue
        tail = f"   # {out.comment}" if out.comment else ""
        if out.spec is not None:
            lines.append(f"{pad}{out.name}: {out.spec}{tail}")
        elif out.each is not None:
            lines.append(f"{pad}{out.name}:{tail}")
            lines.append(f"{pad}  each: {out.each}")
            lines.append(f"{pad}  fields:")
        else:
            lines.append(f"{pad}{out.name}:{tail}")
        if out.suggestion is not None:
            found.append(_at_line(out.suggestion, len(lines) - (2 if out.each is not None else 0)))
        if out.each is not None:
            _render_fields(out.children, indent + 4, lines, found)
        elif out.children:
            _render_fields(out.children, indent + 2, lines, found)


def _at_line(suggestion: FieldSuggestion, line: int) -> FieldSuggestion:
    return FieldSuggestion(
        suggestion.target, suggestion.field, suggestion.source, suggestion.required, suggestion.sample, line
    )


def _without_todos(outs: list[_Out]) -> list[_Out]:
    kept: list[_Out] = []
    for out in outs:
        if out.note or (out.suggestion is not None and out.suggestion.todo and not out.children):
            continue
        if out.each == TODO:
            continue
        if out.children:
            children = _without_todos(out.children)
            if not children:
                continue
            kept.append(_Out(out.name, out.spec, children, out.each, "", out.suggestion))
        else:
            # A null the sample has for a required field must not hide the other fields' values.
            spec = out.spec.replace(", required: true}", "}") if out.spec else out.spec
            kept.append(_Out(out.name, spec, [], out.each, "", out.suggestion))
    return kept


def _probe(
    name: str, builders: list[_TargetBuilder], lookups: dict[str, list[str]], document: Any
) -> dict[str, Any]:
    """What the suggested paths read from the sample, per target: the seed of the test case's ``expect``."""
    expected: dict[str, Any] = {}
    for builder in builders:
        outs = [o for o in _without_todos(builder.fields) if "lookup:" not in (o.spec or "")]
        if not outs:
            continue
        lines = [
            "shipmap: 1",
            f"name: {_yaml(name)}",
            "targets:",
            "  probe:",
            f"    kind: {builder.kind.name}",
        ]
        if builder.from_expression:
            lines.append(f"    from: {_yaml(builder.from_expression)}")
        lines.append("    fields:")
        _render_fields(outs, 6, lines, [])
        try:
            payload = parse_mapping("\n".join(lines) + "\n").target("probe").produce(document)
        except ShipmapError as error:
            _log.debug("probe of %s failed: %s", builder.name, error.message)
            continue
        if isinstance(payload, dict):
            expected[builder.name] = _expectation(payload)
    return expected


_KEY_FIELDS = ("id", "number", "order_id", "shipment_id", "tracking_number")


def _expectation(payload: dict[str, Any]) -> dict[str, Any]:
    """The identifying part of a payload: what a person checks first against the sample."""
    picked: dict[str, Any] = {k: payload[k] for k in _KEY_FIELDS if isinstance(payload.get(k), str | int)}
    inputs = payload.get("inputs")
    if isinstance(inputs, dict) and isinstance(inputs.get("shipment_data"), dict):
        data = inputs["shipment_data"]
        picked["inputs"] = {
            "shipment_data": {k: data[k] for k in _KEY_FIELDS if isinstance(data.get(k), str)}
        }
    info = payload.get("shipment_info")
    if isinstance(info, dict) and isinstance(info.get("tracking_number"), str):
        picked["shipment_info"] = {"tracking_number": info["tracking_number"]}
    for array in ("line_items",):
        lines = payload.get(array)
        if isinstance(lines, list) and lines:
            picked[array] = [
                {k: line[k] for k in ("sku", "quantity") if k in line}
                for line in lines
                if isinstance(line, dict)
            ]
    return picked


def _render_cases(
    name: str, sample_rel: str, select: str | None, expected: dict[str, Any], builders: list[_TargetBuilder]
) -> str:
    lines = [
        f"# Cases for {name}.yaml (run: shipmap test {name}.yaml; format: docs/testing-mappings.md).",
        "# Scaffolded by shipmap init: `expect` holds what the suggested paths read from the sample, the",
        "# identifying fields only. Check them, add the fields you care about (partial match: only the keys",
        "# written are compared). The case fails until every TODO of the mapping is filled.",
        "cases:",
        f"  - name: the sample {Path(sample_rel).name}",
        f"    source: {_yaml(sample_rel)}",
    ]
    if select is not None:
        lines.append(f"    select: {_yaml(select)}")
    lines.append("    expect:")
    for builder in builders:
        payload = expected.get(builder.name, {})
        lines.append(f"      {builder.name}:" + ("" if payload else " {}"))
        if payload:
            lines.extend(_yaml_block(payload, 8))
    return "\n".join(lines) + "\n"


def _yaml_block(value: dict[str, Any], indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for key, item in value.items():
        if isinstance(item, dict):
            lines.append(f"{pad}{key}:")
            lines.extend(_yaml_block(item, indent + 2))
        elif isinstance(item, list):
            lines.append(f"{pad}{key}:")
            for element in item:
                flow = ", ".join(f"{k}: {_quoted(v)}" for k, v in element.items())
                lines.append(f"{pad}  - {{{flow}}}")
        else:
            lines.append(f"{pad}{key}: {_quoted(item)}")
    return lines


def _quoted(value: Any) -> str:
    # Expected values are data: strings are always quoted so "450789469" stays text.
    return json.dumps(value, ensure_ascii=False)


def _render_config(name: str, kinds: Sequence[TargetKind]) -> str:
    apis = {k.api for k in kinds}
    lines = [
        f"# shipmap runtime config for {name}, scaffolded by `shipmap init` (docs/runtime.md).",
        "# It delivers to the local sandbox: `shipmap sandbox` in another terminal, then",
        "#   shipmap run config.yaml --input samples/          (from this directory)",
        "# Secrets are ${VAR} references, filled from the environment, then from .env beside this file:",
        "#   cp .env.example .env      (.env.example holds the sandbox's demo credentials; never commit .env)",
        "# For production, put the real base URLs and credentials in .env (DG: or `region: eu|us`).",
        "version: 1",
        "connections:",
    ]
    if "fenix" in apis:
        lines += [
            "  fenix:",
            "    api: fenix",
            "    base_url: ${FENIX_BASE_URL}",
            "    auth:",
            "      scheme: fenix_session",
            "      username: ${FENIX_USERNAME}",
            "      password: ${FENIX_PASSWORD}",
            "      api_key: ${FENIX_API_KEY}",
            "      store_name: ${FENIX_STORE_NAME}",
        ]
    if "dg" in apis:
        lines += [
            "  dg:",
            "    api: dg",
            "    base_url: ${DG_BASE_URL}",
            "    auth:",
            "      scheme: basic",
            "      key: ${DG_API_KEY}",
            "      secret: ${DG_API_SECRET}",
        ]
    lines += [
        "mappings:",
        f"  - mapping: ./{name}.yaml",
        "    # every event goes to this mapping; to route by topic, set events.topic and a topic: here",
        "journal:",
        "  path: .shipmap/journal.db",
    ]
    return "\n".join(lines) + "\n"


def _render_env(kinds: Sequence[TargetKind]) -> str:
    apis = {k.api for k in kinds}
    lines = [
        "# Values for the ${VAR} references of config.yaml: cp .env.example .env (.env is git-ignored).",
        "# These are the local sandbox's public demo credentials (docs/sandbox.md), not real ones.",
    ]
    if "fenix" in apis:
        lines += [
            f"FENIX_BASE_URL={SANDBOX_URL}",
            "FENIX_USERNAME=demo-user",
            "FENIX_PASSWORD=demo-pass",
            "FENIX_API_KEY=demo-api-key",
            "FENIX_STORE_NAME=demo-store",
        ]
    if "dg" in apis:
        lines += [f"DG_BASE_URL={SANDBOX_URL}", "DG_API_KEY=demo-key", "DG_API_SECRET=demo-secret"]
    return "\n".join(lines) + "\n"
