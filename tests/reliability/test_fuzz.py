"""Issue 7, part 3: bad data never ends in a traceback, only in a library error that says where.

Hypothesis feeds the ready mappings (mappings/**.yaml, as they land) and the engine's test mapping with source
JSON of the wrong types, missing keys, deep nesting, huge strings, unicode, 64-bit ids and extreme floats,
and mutates the mapping files themselves. ``transform`` must succeed or raise a ``ShipmapError`` located in the
mapping (file and line); ``parse_mapping`` must succeed or raise a ``MappingError`` at a line of the file;
``shipmap preview`` must never print a traceback.

Known gaps are xfail(strict=True) tests at the bottom; the generators stay clear of them, so the properties
test everything else.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from harness import FIXTURES, REPO, shipmap_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shipmap.connectors._cli import main
from shipmap.engine import (
    CompiledMapping,
    MappingError,
    PayloadValidationError,
    ShipmapError,
    load_mapping,
    parse_mapping,
)


def _is_mapping(path: Path) -> bool:
    """A mapping file has a top-level ``shipmap:`` key (the folder also holds ``*.cases.yaml`` test cases)."""
    return any(line.startswith("shipmap:") for line in path.read_text(encoding="utf-8").splitlines())


# Mutants may hold JMESPath's old `literal` form; jmespath warns about it (the CLI does not show that warning).
pytestmark = pytest.mark.filterwarnings("ignore:deprecated string literal syntax:PendingDeprecationWarning")

MAPPING_FILES = [
    *sorted(p for p in (REPO / "mappings").rglob("*.yaml") if _is_mapping(p)),
    FIXTURES / "engine" / "shopify_order_min.yaml",
]

# Sample payloads each mapping was written for (mutating those reaches deep into the mapping); a mapping not
# listed here (one landed after this file) is fed every sample. They are the ones its cases file runs (the
# copies in tests/fixtures of mappings/_fixtures); ``name=path&name=path`` is an event of named documents.
SAMPLES: dict[str, tuple[str, ...]] = {
    "shopify/order.yaml": (
        "real/shopify/order_rest_get_with_fulfillment.json",
        "real/shopify/orders_cancelled_webhook.json",
        "derived/shopify/orders_updated_partial_cancel.json",
    ),
    "shopify/order_cancelled.yaml": (
        "real/shopify/orders_cancelled_webhook.json",
        "derived/shopify/orders_updated_partial_cancel.json",
        "derived/shopify/order_rest_partial_cancel_refund.json",
    ),
    "shopify/fulfillment.yaml": (
        "real/shopify/fulfillments_create_webhook.json",
        "derived/shopify/fulfillments_update_in_transit.json",
        "derived/shopify/fulfillment_rest_wrapped.json",
    ),
    "shopify/out_of_stock.yaml": (
        "real/shopify/refunds_create_webhook.json",
        "real/shopify/orders_edited_webhook.json",
        "derived/shopify/refunds_create_out_of_stock.json",
    ),
    "shopify/return.yaml": (
        "real/shopify/returns_approve_webhook.json",
        "real/shopify/refunds_create_webhook.json",
        "derived/shopify/refunds_create_for_return.json",
    ),
    "shipstation/shipment.yaml": ("real/shipstation/shipments_list_ship_notify_resource.json#shipments[0]",),
    "woocommerce/order.yaml": (
        "real/woocommerce/order_rest_get.json",
        "derived/woocommerce/order_completed_with_tracking.json",
        "derived/woocommerce/order_cancelled.json",
    ),
    "woocommerce/fulfillment.yaml": (
        "real/woocommerce/order_rest_get.json",
        "derived/woocommerce/order_completed_with_tracking.json",
        "derived/woocommerce/order_completed_two_trackings.json",
    ),
    "bigcommerce/order.yaml": (
        "order=real/bigcommerce/order_get.json&products=derived/bigcommerce/order_218_products.json"
        "&shipping_addresses=derived/bigcommerce/order_218_shipping_addresses.json",
    ),
    "bigcommerce/shipment.yaml": (
        "order=real/bigcommerce/order_get.json&products=derived/bigcommerce/order_218_products.json"
        "&shipments=derived/bigcommerce/order_218_shipments.json",
    ),
    "aftership/tracking.yaml": (
        "derived/aftership/tracking_with_order.json",
        "derived/aftership/webhook_exception.json",
        "derived/aftership/webhook_in_transit_late.json",
    ),
    "magento/order.yaml": (
        "real/magento/order_get.json",
        "derived/magento/order_shipped_in_part.json",
        "derived/magento/order_kit_components_canceled.json",
    ),
    "magento/order_cancelled.yaml": (
        "derived/magento/order_canceled.json",
        "derived/magento/order_canceled_in_part.json",
        "real/magento/order_get.json",
    ),
    # An event of named documents: the shipment and the real order it ships.
    "magento/shipment.yaml": (
        "shipment=derived/magento/shipment_3.json&order=real/magento/order_get.json",
        "shipment=derived/magento/shipment_4.json&order=real/magento/order_get.json",
    ),
    "easypost/tracker.yaml": (  # the real tracker sends nothing (pre_transit, no order): events with one do
        "real/easypost/trackers_retrieve.json",
        "derived/easypost/event_delivered.json",
        "derived/easypost/event_in_transit_late.json",
    ),
    "shopify_order_min.yaml": ("real/shopify/order_rest_get_with_fulfillment.json",),
}
ALL_SAMPLES = sorted({sample for samples in SAMPLES.values() for sample in samples})

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@cache
def _sample(name: str) -> Any:
    if "=" in name:  # documents: name=path&name=path
        return {key: _sample(path) for key, path in (part.split("=") for part in name.split("&"))}
    path, _, member = name.partition("#")
    value = json.loads((FIXTURES / path).read_text(encoding="utf-8"))
    if member == "shipments[0]":
        value = value["shipments"][0]
    return value


def sample(name: str) -> Any:
    return copy.deepcopy(_sample(name))


def test_every_ready_mapping_is_fed_the_samples_it_was_written_for() -> None:
    """A mapping left out of SAMPLES is fed only the samples of the others (Magento's, EasyPost's, WooCommerce's,
    BigCommerce's and two Shopify ones were): mutations then rarely reach past its first field."""
    keys = {f"{file.parent.name}/{file.name}" for file in MAPPING_FILES if file.parent.name != "engine"}
    assert sorted(keys - set(SAMPLES)) == []
    for name in ALL_SAMPLES:
        assert _sample(name)  # every file named exists and reads


def samples_for(file: Path) -> tuple[str, ...]:
    key = file.name if file.parent.name == "engine" else f"{file.parent.name}/{file.name}"
    return SAMPLES.get(key, tuple(ALL_SAMPLES))


@cache
def compiled(file: Path) -> CompiledMapping:
    return load_mapping(file)


def assert_located(error: BaseException, file: str) -> None:
    """A library error, in the given mapping file, at a real line; rendered like a compiler."""
    assert isinstance(error, ShipmapError), f"{type(error).__name__}: {error}"
    assert error.location is not None, error.render()
    assert error.file == file, error.render()
    assert error.line is not None and error.line >= 1, error.render()
    assert error.render().startswith(f"{file}:{error.line}:"), error.render()
    if isinstance(error, PayloadValidationError):
        assert all(problem.location is not None for problem in error.problems), error.render()


def transform_or_locate(mapping: CompiledMapping, source: Any) -> None:
    try:
        payloads = mapping.transform(source)
    except Exception as error:  # anything but a located ShipmapError fails the property
        assert_located(error, mapping.file)
        return
    assert isinstance(payloads, dict)
    json.dumps(payloads)  # what transform returns is JSON, ready to send


# --- source data ----------------------------------------------------------------------------------------------


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


KEYS = sorted({key for name in ALL_SAMPLES for key in _keys(_sample(name))})
SPECIAL_NUMBERS = [
    0,
    -1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    -(2**63),
    2**64 + 1,
    10**30,
    1e308,
    -1e308,
    5e-324,
    -0.0,
    0.1 + 0.2,
    1.5,
]
SPECIAL_TEXT = [
    "",
    " ",
    "null",
    "NaN",
    "Infinity",
    "1e309",
    "0x1F",
    "2024-02-30T25:61:61Z",
    "2024-01-01",
    "18446744073709551616",
    "-0",
    "１２３",  # fullwidth digits
    "\u202etxet",  # right-to-left override
    "\u0000",
    "😀🎁注文",
    "e\u0301",
    "a" * 5000,
    "{{ this }}",  # data that looks like a template is data
    "`literal`",
    "$root",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from(SPECIAL_NUMBERS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(SPECIAL_TEXT),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), children, max_size=5),
    ),
    max_leaves=16,
)


def nest(depth: int, leaf: Any = "x", *, as_list: bool = True) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


def _paths(value: Any, limit: int = 12) -> Iterator[tuple[Any, ...]]:
    """Every path into ``value`` down to ``limit`` steps (iterative: values may be nested thousands deep)."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((), value)]
    while stack:
        prefix, item = stack.pop()
        yield prefix
        if len(prefix) >= limit:
            continue
        if isinstance(item, dict):
            stack.extend(((*prefix, key), child) for key, child in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend(((*prefix, index), child) for index, child in reversed(list(enumerate(item))))


# Nesting depths the generators use: up to what json.loads reads (~990) for data that goes through JSON text,
# and past it for the library, whose callers may build deeper objects themselves.
DEPTHS = [10, 100, 400, 900]
LIBRARY_DEPTHS = [*DEPTHS, 1500, 4000]


def mutate(data: st.DataObject, document: Any, depths: list[int] = DEPTHS) -> Any:
    """Up to six edits at random places: delete, wrong type, deep nesting, a huge string, a special value."""
    for _ in range(data.draw(st.integers(1, 6), label="edits")):
        path = data.draw(st.sampled_from(list(_paths(document))), label="path")
        how = data.draw(st.sampled_from(["delete", "replace", "deep", "huge", "special"]), label="how")
        if how == "deep":
            new: Any = nest(data.draw(st.sampled_from(depths)), as_list=data.draw(st.booleans()))
        elif how == "huge":
            new = data.draw(st.sampled_from(["x", "é", "😀", "0"])) * data.draw(st.integers(10_000, 300_000))
        elif how == "special":
            new = data.draw(st.sampled_from(SPECIAL_NUMBERS + SPECIAL_TEXT))
        else:
            new = data.draw(json_values, label="value")
        if not path:
            document = new if how != "delete" else {}
            continue
        *head, last = path
        parent = document
        for step in head:
            parent = parent[step]
        if how == "delete":
            del parent[last]
        else:
            parent[last] = new
    return document


@FUZZ
@given(file=st.sampled_from(MAPPING_FILES), source=json_values)
def test_transform_of_arbitrary_json_is_a_located_error_or_payloads(file: Path, source: Any) -> None:
    transform_or_locate(compiled(file), source)


@FUZZ
@given(file=st.sampled_from(MAPPING_FILES), data=st.data())
def test_transform_of_a_mutated_real_payload_is_a_located_error_or_payloads(
    file: Path, data: st.DataObject
) -> None:
    document = sample(data.draw(st.sampled_from(samples_for(file)), label="sample"))
    transform_or_locate(compiled(file), mutate(data, document, LIBRARY_DEPTHS))


@pytest.mark.parametrize("file", MAPPING_FILES, ids=lambda f: f"{f.parent.name}/{f.name}")
def test_every_key_missing_in_turn_is_a_located_error_or_payloads(file: Path) -> None:
    mapping = compiled(file)
    for name in samples_for(file):
        document = _sample(name)
        for path in list(_paths(document))[1:]:
            if len(path) > 3:
                continue
            edited = sample(name)
            parent = edited
            for step in path[:-1]:
                parent = parent[step]
            del parent[path[-1]]
            transform_or_locate(mapping, edited)


@pytest.mark.parametrize("file", MAPPING_FILES, ids=lambda f: f"{f.parent.name}/{f.name}")
def test_nesting_900_deep_anywhere_near_the_top_is_a_located_error_or_payloads(file: Path) -> None:
    """900 levels: as deep as a JSON document can be and still be read by Python's json module."""
    mapping = compiled(file)
    for name in samples_for(file):
        for path in list(_paths(_sample(name)))[1:]:
            if len(path) > 2:
                continue
            edited = sample(name)
            parent = edited
            for step in path[:-1]:
                parent = parent[step]
            parent[path[-1]] = nest(900, as_list=len(path) % 2 == 0)
            transform_or_locate(mapping, edited)


@pytest.mark.parametrize("file", MAPPING_FILES, ids=lambda f: f"{f.parent.name}/{f.name}")
def test_64_bit_ids_stay_exact(file: Path) -> None:
    """Every integer id above 2**53 in a sample comes out digit for digit (no float on the way)."""
    mapping = compiled(file)
    big = 2**63 - 25
    for name in samples_for(file):
        document = sample(name)
        replaced = 0
        for path in list(_paths(document))[1:]:
            *head, last = path
            parent = document
            for step in head:
                parent = parent[step]
            if (
                isinstance(last, str)
                and (last == "id" or last.endswith(("_id", "Id")))
                and isinstance(parent[last], int)
            ):
                parent[last] = big + replaced
                replaced += 1
        try:
            payloads = mapping.transform(document)
        except ShipmapError as error:
            assert_located(error, mapping.file)
            continue
        if not payloads:  # no target applies to this sample
            continue
        text = json.dumps(payloads)
        assert replaced == 0 or any(str(big + n) in text for n in range(replaced)), text[:300]
        assert "e+18" not in text  # no id went through a float


# --- mapping files ----------------------------------------------------------------------------------------------

FRAGMENTS = [
    "[",
    "]",
    "{",
    "}",
    "{{",
    "}}",
    "{%",
    "%}",
    "{{ this.x }",
    "'",
    '"',
    ":",
    ": :",
    "- ",
    "? x",
    "&a",
    "*a",
    "*nope",
    "&a [*a]",
    "!!str",
    "!!python/object:os.system",
    "!!python/object/apply:os.system ['id']",
    "!!binary aGk=",
    "<<: {}",
    "~",
    "null",
    "1e999999",
    "99999999999999999999999999999999999999",
    "-0",
    ".nan",
    ".inf",
    "0x1F",
    "0o17",
    "2024-01-01",
    "yes",
    "\t",
    "@",
    "foo[?bar==`1`",
    "foo[?",
    "a || ]",
    '`{"a": 1}`',
    "sum(",
    "sum(a, b, c)",
    "lookup('nope', x)",
    "unknownfn(x)",
    "$root.",
    "$nope.x",
    "a.$root",
    "{{ this.__class__ }}",
    "{{ this | nosuch }}",
    "{{ nosuch }}",
    "{% for x in this %}",
    "{% endfor %}",
    "{% if %}",
    "{{ 'a' * 10**9 }}",
    "{{ 'a' | center(10**9) }}",
    "{{ ('a' * 999999) ~ ('a' * 999999) }}",
    "{{ ((10 ** 64) ** 64) ** 64 }}",
    "{{ self }}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "{{ " + "(" * 1500 + "1" + ")" * 1500 + " }}",
    "(" * 1500 + "x" + ")" * 1500,
    "{{ 2 ** 65 }}",
    "{{ this.x / 0 }}",
    "{{ this.x | int }}",
    "{{ money(this) }}",
    "{{ datetime('x') }}",
    "{literal: }",
    "{each: }",
    "{each: x}",
    "{use: nope}",
    "{use: address}",
    "{path: 1}",
    "{path: '['}",
    "{template: '{{'}",
    "{fields: []}",
    "{fields: {}}",
    "{lookup: nope, path: x}",
    "{type: nosuchtype, path: x}",
    "{type: datetime, path: x}",
    "{required: true, path: nope}",
    "{when: '[', path: x}",
    "{default: {a: [1, {b: 2}]}, path: x}",
    "kind: nope.kind",
    "kind: fenix.order",
    "shipmap: 2",
    "timezone: Mars/Olympus_Mons",
    "😀: 注文",
    "\u202e",
]


def mutate_text(data: st.DataObject, text: str) -> str:
    lines = text.splitlines()
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        if not lines:
            lines = [""]
        at = data.draw(st.integers(0, len(lines) - 1), label="line")
        line = lines[at]
        indent = line[: len(line) - len(line.lstrip())]
        how = data.draw(
            st.sampled_from(["delete", "duplicate", "swap", "insert", "value", "truncate", "char"]),
            label="how",
        )
        fragment = data.draw(st.sampled_from(FRAGMENTS), label="fragment")
        if how == "delete":
            del lines[at]
        elif how == "duplicate":
            lines.insert(at, line)
        elif how == "swap":
            other = data.draw(st.integers(0, len(lines) - 1), label="other")
            if ": " in line and ": " in lines[other]:
                key_a, _, value_a = line.partition(": ")
                key_b, _, value_b = lines[other].partition(": ")
                lines[at], lines[other] = f"{key_a}: {value_b}", f"{key_b}: {value_a}"
        elif how == "insert":
            lines.insert(at, indent + fragment)
        elif how == "value":
            key, sep, _ = line.partition(": ")
            lines[at] = f"{key}: {fragment}" if sep else indent + fragment
        elif how == "truncate":
            cut = data.draw(st.integers(0, len(line)), label="cut")
            lines = [*lines[:at], line[:cut]]
        else:
            position = data.draw(st.integers(0, len(line)), label="position")
            lines[at] = line[:position] + fragment + line[position:]
    return "\n".join(lines) + "\n"


@cache
def _mapping_text(file: Path) -> str:
    return file.read_text(encoding="utf-8")


@FUZZ
@given(file=st.sampled_from(MAPPING_FILES), data=st.data())
def test_a_mutated_mapping_loads_or_is_refused_at_one_of_its_lines(file: Path, data: st.DataObject) -> None:
    text = mutate_text(data, _mapping_text(file))
    name = f"mutant-{file.stem}.yaml"
    try:
        mapping = parse_mapping(text, file=name)
    except Exception as error:
        assert isinstance(error, MappingError), f"{type(error).__name__}: {error}"
        assert_located(error, name)
        assert error.line is not None and error.line <= text.count("\n") + 1
        return
    # It loaded: whatever it now does to its own sample is a payload or a located error.
    document = sample(data.draw(st.sampled_from(samples_for(file)), label="sample"))
    transform_or_locate(mapping, document)


# --- the command line -------------------------------------------------------------------------------------------


def _cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(args))
    return code, out.getvalue()


@settings(FUZZ, max_examples=60)
@given(file=st.sampled_from(MAPPING_FILES), data=st.data())
def test_preview_of_mutated_mapping_and_data_never_prints_a_traceback(
    tmp_path_factory: pytest.TempPathFactory, file: Path, data: st.DataObject
) -> None:
    directory = tmp_path_factory.mktemp("preview")
    mapping = directory / "mapping.yaml"
    source = directory / "source.json"
    text = _mapping_text(file)
    if data.draw(st.booleans(), label="mutate the mapping"):
        text = mutate_text(data, text)
    mapping.write_text(text, encoding="utf-8")
    document = mutate(data, sample(data.draw(st.sampled_from(samples_for(file)), label="sample")))
    raw = json.dumps(document, ensure_ascii=data.draw(st.booleans(), label="ascii"))
    if data.draw(st.integers(0, 9), label="break the JSON") == 0:
        raw = raw[: data.draw(st.integers(0, len(raw)), label="cut")]
    source.write_text(raw, encoding="utf-8")
    code, output = _cli("preview", str(mapping), str(source), "--json")
    assert "Traceback" not in output
    assert code in (0, 2, 3, 4, 5), output[-2000:]


def test_preview_in_a_real_process_prints_no_traceback_on_broken_input(tmp_path: Path) -> None:
    source = tmp_path / "broken.json"
    source.write_text('{"order": {"id": 1, "line_items": [', encoding="utf-8")
    done = subprocess.run(
        [*shipmap_command(), "preview", "shopify/order", str(source)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 3
    assert "Traceback" not in done.stdout + done.stderr
    assert "broken.json:1" in done.stderr


# --- known gaps -----------------------------------------------------------------------------------------------

ORDER_MIN = FIXTURES / "engine" / "shopify_order_min.yaml"
ORDER_SAMPLE = "real/shopify/order_rest_get_with_fulfillment.json"


@pytest.mark.parametrize("depth", [1200, 10_000])
def test_a_source_nested_past_1000_levels_is_a_located_error(depth: int) -> None:
    mapping = compiled(ORDER_MIN)
    document = sample(ORDER_SAMPLE)
    document["order"]["id"] = nest(depth)
    transform_or_locate(mapping, document)


# total_weight was a known gap (a plain path passed the int through, unencodable): a strict payload check
# now locates it.
@pytest.mark.parametrize("field", ["id", "total_weight"])
def test_a_5000_digit_integer_is_a_located_error(field: str) -> None:
    mapping = compiled(ORDER_MIN)
    document = sample(ORDER_SAMPLE)
    document["order"][field] = 10**5000
    transform_or_locate(mapping, document)


@pytest.mark.parametrize("value", ['""', "' '"])
def test_a_blank_field_value_is_a_compile_error(value: str) -> None:
    text = _mapping_text(ORDER_MIN).replace("      number: name\n", f"      number: {value}\n")
    assert text != _mapping_text(ORDER_MIN)
    with pytest.raises(MappingError) as caught:
        parse_mapping(text, file="blank.yaml")
    assert caught.value.line == text.splitlines().index(f"      number: {value}") + 1


@pytest.mark.parametrize("depth", [990, 4000])
def test_a_deep_value_in_a_payload_field_of_the_wrong_type_is_a_located_error(depth: int) -> None:
    mapping = compiled(next(f for f in MAPPING_FILES if f.name == "tracking.yaml"))
    document = sample("derived/aftership/tracking_with_order.json")
    document["data"]["tracking"]["shipment_type"] = nest(depth, 1, as_list=False)  # a string field of fenix
    transform_or_locate(mapping, document)


def _deep_json(depth: int) -> str:
    return '{"order": {"id": 1, "line_items": ' + "[" * depth + "]" * depth + "}}"


def test_preview_of_json_nested_5000_deep_is_a_source_error(tmp_path: Path) -> None:
    source = tmp_path / "deep.json"
    source.write_text(_deep_json(5000), encoding="utf-8")
    done = subprocess.run(
        [*shipmap_command(), "preview", "shopify/order", str(source)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert "Traceback" not in done.stderr
    assert done.returncode == 3
    assert "deep.json:1" in done.stderr
