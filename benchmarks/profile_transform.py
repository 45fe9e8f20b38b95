"""Where shipmap's transform time goes, per field type, against the same work written in plain Python.

1. Field types one by one: for each kind of field the ready mapping uses, a mapping made of 20 copies of it
   and the same 20 fields written in plain Python (with the hand-written version's helpers) are timed,
   interleaved, on the real Shopify REST order; the cost of one field is (time of 20 - time of 1) / 19.
2. The ready mapping (mappings/shopify/order.yaml) is walked together with that sample, counting how many
   fields of each kind it evaluates; count x cost estimates where its time goes.
3. cProfile of the ready mapping: the engine's own functions by own time.

    .venv/bin/python benchmarks/profile_transform.py [--quick] [--json FILE]
"""

from __future__ import annotations

import cProfile
import pstats
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import _bench
import jmespath
import yaml
from _bench import ORDER_MAPPING, REAL_SHOPIFY, REPO, table, us

COPIES = 20


@dataclass(frozen=True)
class Kind:
    name: str
    yaml: str  # the field spec, as YAML flow text, read in the order (``from: order``)
    python: str  # the same value in Python over ``o`` (the order); None leaves the field out
    note: str = ""


# The order of the REST sample has 3 line items; prelude lines are YAML merged under the mapping's top level.
KINDS = (
    Kind("literal", "{literal: OPEN}", '"OPEN"'),
    Kind("path, 1 key", "name", 'o.get("name")'),
    Kind(
        "path, 2-3 keys",
        "customer.first_name",
        '(o.get("customer") or {}).get("first_name") if type(o.get("customer")) is dict else None',
    ),
    Kind("$parent/$root path", "$parent.order.currency", '(doc.get("order") or {}).get("currency")'),
    Kind("path + default", '{path: name, default: ""}', '"" if o.get("name") is None else o["name"]'),
    Kind("path + type: id", "{path: id, type: id}", '_id(o.get("id"))'),
    Kind("path + type: datetime", "{path: created_at, type: datetime}", '_datetime(o.get("created_at"))'),
    Kind(
        "path + lookup",
        "{path: fulfillment_status, lookup: fulfillment_status}",
        '"NOT_FILLED" if o.get("fulfillment_status") is None else _FULFILLMENT.get(str(o["fulfillment_status"]), "")',
    ),
    Kind("money(path)", "money(total_price)", '_money(o.get("total_price"))'),
    Kind(
        "sum(a[].b)",
        "sum(line_items[].quantity)",
        '_sum([l.get("quantity") for l in o["line_items"] if type(l) is dict]) if type(o.get("line_items")) is list else 0',
    ),
    Kind(
        "coalesce(a, b, c)",
        "coalesce(customer.phone, phone, customer.default_address.phone)",
        '_first((o.get("customer") or {}).get("phone"), o.get("phone"), '
        '((o.get("customer") or {}).get("default_address") or {}).get("phone"))',
    ),
    Kind(
        "object {value, units}",
        "{value: total_weight, units: {literal: grms}}",
        '{"value": o["total_weight"], "units": "grms"} if o.get("total_weight") is not None else {"units": "grms"}',
        "an object of one path and one literal",
    ),
    Kind(
        "use: fragment (16 paths), from:",
        "{use: address, from: shipping_address}",
        '_address(o.get("shipping_address"))',
        "the address fragment: 16 one-key paths",
    ),
    Kind(
        "each: 3 elements x 1 path",
        "{each: line_items, fields: {sku: sku}}",
        '[{"sku": l["sku"]} if l.get("sku") is not None else {} for l in o["line_items"]]'
        ' if o.get("line_items") is not None else None',
        "per array: 3 elements of one field",
    ),
    Kind("template, one expression", '"{{ this.name }}"', 'o.get("name")'),
    Kind(
        "template with text", '"{{ this.name }} / {{ this.currency }}"', "f\"{o['name']} / {o['currency']}\""
    ),
    Kind(
        "the status template",
        "STATUS",
        "_status(o)",
        "mappings/shopify/order.yaml's status: a loop over line items and refunds",
    ),
)

_PRELUDE = {
    "shipmap": 1,
    "name": "field-kinds",
    "timezone": "America/New_York",
    "lookups": {"fulfillment_status": None},
    "fragments": {"address": None},
}


def _ready() -> dict[str, Any]:
    with ORDER_MAPPING.open(encoding="utf-8") as handle:
        loaded: dict[str, Any] = yaml.safe_load(handle)
    return loaded


def kind_mapping(kind: Kind, copies: int) -> Any:
    """A compiled mapping of ``copies`` fields of ``kind`` (plus one literal, so that no object is empty)."""
    from shipmap.engine import parse_mapping

    ready = _ready()
    spec = (
        ready["targets"]["order"]["fields"]["status"] if kind.yaml == "STATUS" else yaml.safe_load(kind.yaml)
    )
    fields: dict[str, Any] = {"anchor": {"literal": 1}}
    for index in range(copies):
        fields[f"f{index}"] = spec
    document = dict(_PRELUDE)
    document["lookups"] = {"fulfillment_status": ready["lookups"]["fulfillment_status"]}
    document["fragments"] = {"address": ready["fragments"]["address"]}
    document["targets"] = {"order": {"kind": "fenix.order", "from": "order || @", "fields": fields}}
    return parse_mapping(yaml.safe_dump(document, sort_keys=False), file=f"<{kind.name}>").target("order")


def kind_python(kind: Kind, copies: int) -> Callable[[Any], Any]:
    lines = [
        "def produce(doc):",
        "    o = doc.get('order') or doc",
        "    out = {'anchor': 1}",
    ]
    for index in range(copies):
        lines.append(f"    v = {kind.python}")
        lines.append(f"    if v is not None: out['f{index}'] = v")
    lines.append("    return out")
    from transform import hand

    namespace: dict[str, Any] = {name: getattr(hand, name) for name in dir(hand) if name.startswith("_")}
    exec("\n".join(lines), namespace)  # generated from the constant table above, nothing else
    produce: Callable[[Any], Any] = namespace["produce"]
    return produce


def field_costs(document: Any, rounds: int) -> dict[str, dict[str, float]]:
    costs: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        many, one = kind_mapping(kind, COPIES), kind_mapping(kind, 1)
        py_many, py_one = kind_python(kind, COPIES), kind_python(kind, 1)
        if _bench.canonical(many.produce(document)) != _bench.canonical(py_many(document)):
            raise SystemExit(
                f"FAIL: the Python version of '{kind.name}' differs from shipmap's:\n"
                f"  shipmap: {_bench.canonical(many.produce(document))[:600]}\n"
                f"  python:  {_bench.canonical(py_many(document))[:600]}"
            )
        timings = _bench.interleaved(
            {
                "shipmap many": lambda m=many: m.produce(document),
                "shipmap one": lambda m=one: m.produce(document),
                "python many": lambda p=py_many: p(document),
                "python one": lambda p=py_one: p(document),
            },
            rounds=rounds,
            batch_s=0.01,
            warmup_s=0.05,
        )
        shipmap = (timings["shipmap many"].median_ns - timings["shipmap one"].median_ns) / (COPIES - 1)
        python = (timings["python many"].median_ns - timings["python one"].median_ns) / (COPIES - 1)
        costs[kind.name] = {"shipmap_ns": shipmap, "python_ns": python}
    return costs


# -- counting what the ready mapping evaluates on the sample --------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[\d+\])?(\.[A-Za-z_][A-Za-z0-9_]*(\[\d+\])?)*$")


def _classify_text(text: str) -> str:
    if "{{" in text or "{%" in text:
        return "the status template" if "{%" in text else "template, one expression"
    if text.startswith("$"):
        return "$parent/$root path"
    if _PLAIN.match(text):
        return "path, 1 key" if "." not in text and "[" not in text else "path, 2-3 keys"
    if text.startswith("money("):
        return "money(path)"
    if text.startswith("sum("):
        return "sum(a[].b)"
    return "coalesce(a, b, c)"


def _search(text: str, data: Any, parent: Any, root: Any) -> Any:
    if text.startswith("$parent"):
        return jmespath.search(text[len("$parent") :].lstrip(".") or "@", parent)
    if text.startswith("$root"):
        return jmespath.search(text[len("$root") :].lstrip(".") or "@", root)
    return jmespath.search(text, data)


def count_fields(ready: dict[str, Any], document: Any) -> dict[str, int]:
    """How many fields of each kind the ready mapping evaluates on ``document``."""
    counts: dict[str, int] = {}
    fragments = ready.get("fragments") or {}

    def add(name: str, how_many: int = 1) -> None:
        counts[name] = counts.get(name, 0) + how_many

    def walk(fields: dict[str, Any], data: Any, parent: Any) -> None:
        for spec in fields.values():
            field(spec, data, parent)

    def field(spec: Any, data: Any, parent: Any) -> None:
        if isinstance(spec, str):
            add(_classify_text(spec))
            return
        if not isinstance(spec, dict):
            add("literal")
            return
        if "when" in spec:
            add(_classify_text(spec["when"]))  # the guard
            if not _search(spec["when"], data, parent, document):
                return
        if "each" in spec:
            items = _search(spec["each"], data, parent, document) or []
            add("each (per element, without its fields)", len(items))
            element = {key: spec[key] for key in ("fields", "use", "path", "template") if key in spec}
            for item in items:
                if "fields" in element:
                    walk(element["fields"], item, data)
                else:
                    field(element, item, data)
            return
        if "use" in spec or "fields" in spec:
            inner = _search(spec["from"], data, parent, document) if "from" in spec else data
            if inner is None:
                add("path, 2-3 keys")  # only the from: path is evaluated
                return
            add("use / from (per use, without its fields)")
            walk(fragments[spec["use"]] if "use" in spec else spec["fields"], inner, data)
            return
        if "literal" in spec:
            add("literal")
        elif "template" in spec:
            add(_classify_text(spec["template"]))
        elif "path" in spec:
            if "type" in spec:
                add(f"path + type: {spec['type']}")
            elif "lookup" in spec:
                add("path + lookup")
            elif "default" in spec and _PLAIN.match(spec["path"]):
                add("path + default")
            else:
                add(_classify_text(spec["path"]))
        else:
            add("object (without its fields)")
            walk(spec, data, parent)

    order = document.get("order") or document
    walk(ready["targets"]["order"]["fields"], order, document)
    return counts


def structural_costs(costs: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The own overhead of objects, fragments and arrays: the measured kinds minus what they contain."""
    path1 = costs["path, 1 key"]
    literal = costs["literal"]

    def minus(name: str, *parts: tuple[dict[str, float], float], per: float = 1.0) -> dict[str, float]:
        total = costs[name]
        return {
            key: (total[key] - sum(part[key] * weight for part, weight in parts)) / per
            for key in ("shipmap_ns", "python_ns")
        }

    return {
        "object (without its fields)": minus("object {value, units}", (path1, 1), (literal, 1)),
        "use / from (per use, without its fields)": minus("use: fragment (16 paths), from:", (path1, 16)),
        "each (per element, without its fields)": minus("each: 3 elements x 1 path", (path1, 3), per=3),
    }


def profile_ready(document: Any, calls: int) -> list[tuple[str, int, float]]:
    from shipmap.engine import load_mapping

    target = load_mapping(ORDER_MAPPING).target("order")
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(calls):
        target.produce(document)
    profile.disable()
    stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, function), (_, calls_made, tottime, _, _) in stats.items():
        short = filename.replace(str(REPO) + "/", "")
        short = re.sub(r".*/site-packages/", "", short)
        rows.append((f"{short}:{line}({function})", calls_made // calls, tottime / calls * 1e9))
    rows.sort(key=lambda row: -row[2])
    return rows[:15]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    arguments = _bench.parser(__doc__.splitlines()[0])
    args = arguments.parse_args(argv)
    rounds = 5 if args.quick else 15
    document = _bench.load_json(REAL_SHOPIFY / "order_rest_get_with_fulfillment.json")

    _bench.heading("Where shipmap's transform time goes, per field type")
    costs = field_costs(document, rounds)
    print(
        f"One field of each kind, shipmap against plain Python ({COPIES} copies, median of {rounds} rounds):\n"
    )
    rows = []
    for kind in KINDS:
        cost = costs[kind.name]
        rows.append(
            [
                kind.name,
                us(cost["shipmap_ns"]),
                us(cost["python_ns"]),
                f"{cost['shipmap_ns'] / max(cost['python_ns'], 1.0):.1f}",
                kind.note,
            ]
        )
    print(table(["field kind", "shipmap µs", "Python µs", "ratio", "note"], rows))

    costs.update(structural_costs(costs))
    ready = _ready()
    counts = count_fields(ready, document)
    print(
        "\nThe ready mapping on the REST sample: fields evaluated per order by kind, times the cost of one"
        "\n(estimates: the sum is checked against the measured total below):\n"
    )
    rows = []
    estimate = {"shipmap_ns": 0.0, "python_ns": 0.0}
    breakdown = []
    for name, count in counts.items():
        cost = costs.get(name)
        if cost is None:
            print(f"(no measured cost for {name!r}: {count} left out of the estimate)")
            continue
        shipmap, python = cost["shipmap_ns"] * count, cost["python_ns"] * count
        estimate["shipmap_ns"] += shipmap
        estimate["python_ns"] += python
        breakdown.append((name, count, shipmap, python))
    breakdown.sort(key=lambda row: -(row[2] - row[3]))
    for name, count, shipmap, python in breakdown:
        rows.append([name, count, us(shipmap), us(python), us(shipmap - python)])
    rows.append(
        ["total (estimate)", sum(counts.values()), us(estimate["shipmap_ns"]), us(estimate["python_ns"]), ""]
    )
    print(table(["field kind", "count", "shipmap µs", "Python µs", "shipmap - Python µs"], rows))

    from shipmap.engine import load_mapping, parse_mapping
    from transform import hand

    target = load_mapping(ORDER_MAPPING).target("order")
    # What if the partial-cancel rule cost what it costs in Python? On this sample its status is OPEN, so the
    # ready mapping with `status: {literal: OPEN}` makes the very same payload; the rule itself costs ~5 µs in
    # Python (`the status template` row above), to be added.
    ready_text = ORDER_MAPPING.read_text(encoding="utf-8")
    start = ready_text.index("      status: >-")
    end = ready_text.index("      fulfillment_status:")
    literal = parse_mapping(ready_text[:start] + "      status: {literal: OPEN}\n" + ready_text[end:]).target(
        "order"
    )
    if _bench.canonical(literal.produce(document)) != _bench.canonical(target.produce(document)):
        raise SystemExit("FAIL: the mapping with a literal status makes another payload on the REST sample")
    measured = _bench.interleaved(
        {
            "shipmap": lambda: target.produce(document),
            "shipmap, status as a literal": lambda: literal.produce(document),
            "hand-written": lambda: hand.shopify_order(document),
        },
        rounds=rounds * 2,
    )
    hand_ns = measured["hand-written"].median_ns
    print("\nmeasured on the REST sample (interleaved, median):\n")
    print(
        table(
            ["", "µs per order", "× hand-written"],
            [
                [name, us(timing.median_ns), f"{timing.median_ns / hand_ns:.2f}"]
                for name, timing in measured.items()
            ],
        )
    )
    top = profile_ready(document, 300 if args.quick else 2000)
    print("\ncProfile of the ready mapping, own time per order (cProfile inflates small calls):\n")
    print(table(["function", "calls per order", "own µs per order"], [[a, b, us(c)] for a, b, c in top]))
    results = {
        "costs": costs,
        "counts": counts,
        "estimate": estimate,
        "measured": {name: timing.median_ns for name, timing in measured.items()},
        "profile": top,
    }
    _bench.write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
