"""Generated code (engine/_codegen.py) against the reference closure tree it stands in for.

Every target of every mapping in the repository is run both ways on every fixture document, on every language
case and on hypothesis-mutated fixtures. The two must agree exactly: the same payload (same keys, values and
types) whenever the reference returns one, and an exception from the generated code whenever the reference
raises (the target then runs the reference, which words the error).

The checked variant (the same code checking its payload against the kind as it writes it) is held to the same
cases: a payload it returns is the reference's and one the kind's full check finds nothing in; on anything
else it raises, and ``produce_valid`` gives exactly what producing and then validating gives, error included.
"""

from __future__ import annotations

import copy
import decimal
import json
import logging
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import shipmap.engine as engine
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shipmap.engine import _target

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


def _is_mapping(path: Path) -> bool:
    return any(line.startswith("shipmap:") for line in path.read_text(encoding="utf-8").splitlines())


MAPPING_FILES = sorted(
    path
    for folder in ("mappings", "examples", "tests/fixtures")
    for path in (REPO / folder).rglob("*.yaml")
    if _is_mapping(path)
)


def _documents(path: Path) -> Iterator[Any]:
    if path.suffix == ".ndjson":
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield json.loads(line)
        return
    value = json.loads(path.read_text(encoding="utf-8"))
    yield value
    for array in [value] if isinstance(value, list) else [v for v in value.values() if isinstance(v, list)]:
        yield from (item for item in array if isinstance(item, dict))


DOCUMENT_FILES = sorted(
    [
        *(FIXTURES / "real").rglob("*.json"),
        *(FIXTURES / "derived").rglob("*.json"),
        *(REPO / "examples").rglob("*.json"),
        REPO / "examples" / "acme_outfitters" / "events.ndjson",
    ]
)
DOCUMENTS = [document for path in DOCUMENT_FILES for document in _documents(path)]


@cache
def compiled(path: Path) -> engine.CompiledMapping:
    return engine.load_mapping(path)


def canonical(value: Any) -> str:
    """JSON with sorted keys: tells 1 from 1.0 from true, and a missing key from a null one."""
    return json.dumps(value, sort_keys=True, default=repr)


def outcome(run: Callable[[Any], Any], source: Any) -> tuple[str, str]:
    try:
        return "payload", canonical(run(source))
    except Exception as error:  # which exception is the reference's business
        return "raised", type(error).__name__


def assert_agree(target: engine.CompiledTarget, source: Any) -> None:
    assert_checked_agrees(target, source)
    generated = target._generated
    if generated is None and not target.reference_only:
        pytest.fail(f"target {target.name} has no generated code")
    if generated is None:
        # Fan-out and let blocks run on the reference alone, by design (docs/mapping-language.md); their
        # result must still be the same on a second run (mappings are pure).
        assert outcome(_all, (target, copy.deepcopy(source))) == outcome(
            _all, (target, copy.deepcopy(source))
        )
        return
    reference = outcome(target._reference, copy.deepcopy(source))
    fast = outcome(generated, copy.deepcopy(source))
    if reference[0] == "raised":
        assert fast[0] == "raised", (
            f"generated code returned {fast[1]} where the reference raised {reference[1]}"
        )
    else:
        assert fast == reference


def assert_checked_agrees(target: engine.CompiledTarget, source: Any) -> bool:
    """The checked variant never passes a payload the kind's full check refuses, nor a different payload; the
    validated result (payload or error text) is the one of produce, then validate. True when it passed one."""
    if target._write_checked is not None:
        target._checked = target._write_checked()  # as the second validated payload would
        target._write_checked = None
    checked = target._checked
    if checked is None:
        assert target.reference_only, f"target {target.name} has no checked code"
        return False
    try:
        payload = checked(copy.deepcopy(source))
    except Exception:
        passed = False
    else:
        passed = True
        assert outcome(target._reference, copy.deepcopy(source)) == ("payload", canonical(payload))
        if payload is not None:
            assert target.kind.payload_problems(payload) == [], payload
    assert validated(target.produce_valid, source) == validated(_produce_then_validate(target), source)
    return passed


def validated(run: Callable[[Any], Any], source: Any) -> tuple[str, str]:
    try:
        return "payload", canonical(run(copy.deepcopy(source)))
    except engine.ShipmapError as error:
        return "error", error.render()


def _produce_then_validate(target: engine.CompiledTarget) -> Callable[[Any], Any]:
    def run(source: Any) -> Any:
        payload = target.produce(source)
        if payload is not None:
            target.validate(payload)
        return payload

    return run


def _all(given: tuple[engine.CompiledTarget, Any]) -> Any:
    target, source = given
    return target.produce_all(source)


@pytest.mark.parametrize("path", MAPPING_FILES, ids=lambda path: str(path.relative_to(REPO)))
def test_every_target_of_every_mapping_is_generated(path: Path) -> None:
    for target in compiled(path).targets:
        if target.reference_only:  # each: and let: run on the reference alone (docs/mapping-language.md)
            assert target._generated is None, target.name
            continue
        assert target._generated is not None, target.name
        assert target._generated.__doc__ and target._generated.__doc__.startswith("def produce(source):")


@pytest.mark.parametrize("path", MAPPING_FILES, ids=lambda path: str(path.relative_to(REPO)))
def test_generated_code_agrees_on_every_fixture(path: Path) -> None:
    payloads = 0
    for document in DOCUMENTS:
        for target in compiled(path).targets:
            assert_agree(target, document)
            if target.reference_only:  # a fan-out target maps each element, not the document as one
                payloads += outcome(_all, (target, document))[0] == "payload"
            else:
                payloads += outcome(target._reference, document)[0] == "payload"
    assert payloads > 0  # each mapping maps at least one of the fixtures


LANGUAGE_CASES = yaml.safe_load(
    (Path(__file__).parent / "cases" / "language.yaml").read_text(encoding="utf-8")
)


def _case_text(case: dict[str, Any]) -> str:
    if "mapping" in case:
        return str(case["mapping"])
    fields = yaml.safe_dump({"fields": case["fields"]}, sort_keys=False, default_flow_style=False)
    indented = "".join(f"    {line}\n" for line in fields.splitlines())
    return f"shipmap: 1\ntargets:\n  t:\n    kind: fenix.order\n{indented}"


@pytest.mark.parametrize("case", LANGUAGE_CASES, ids=[case["name"] for case in LANGUAGE_CASES])
def test_generated_code_agrees_on_every_language_case(case: dict[str, Any]) -> None:
    try:
        mapping = engine.parse_mapping(_case_text(case), file="case.yaml")
    except engine.MappingError:
        assert "error" in case  # a compile error case: there is nothing to run
        return
    for target in mapping.targets:
        assert_agree(target, case["given"])


def test_the_checked_code_passes_every_valid_payload_of_the_fixtures() -> None:
    """No false alarm where it matters for speed: a fixture payload that is valid passes the checked code."""
    valid = 0
    for path in MAPPING_FILES:
        for document in DOCUMENTS:
            for target in compiled(path).targets:
                if target.reference_only or outcome(target._reference, document)[0] != "payload":
                    continue
                payload = target.produce(copy.deepcopy(document))
                if payload is not None and not target.kind.payload_problems(payload):
                    valid += 1
                    assert assert_checked_agrees(target, document), (path.name, target.name, payload)
    assert valid >= 40  # 43 valid payloads of 11 mappings when this was written


def test_the_checked_code_is_written_when_a_second_payload_is_validated() -> None:
    path = REPO / "mappings" / "shopify" / "order.yaml"
    mapping = engine.parse_mapping(path.read_text(encoding="utf-8"), file="order.yaml")  # not the cached one
    target = mapping.target("order")
    document = json.loads(
        (FIXTURES / "real" / "shopify" / "orders_cancelled_webhook.json").read_text("utf-8")
    )
    first = mapping.transform(document)
    assert target._checked is None  # one document: nothing written beyond what loading wrote
    assert mapping.transform(document) == first
    assert target._checked is not None and target._write_checked is None
    assert target._checked.__doc__ and "raise Deoptimize" in target._checked.__doc__


def test_a_writer_that_fails_costs_speed_not_the_payload(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="shipmap.engine.codegen")
    path = REPO / "mappings" / "shopify" / "order.yaml"
    mapping = engine.parse_mapping(path.read_text(encoding="utf-8"), file="order.yaml")
    target = mapping.target("order")
    document = json.loads(
        (FIXTURES / "real" / "shopify" / "orders_cancelled_webhook.json").read_text("utf-8")
    )

    def broken() -> Any:
        raise KeyError("a spec the writer does not expect")

    target._write_checked = broken
    first = mapping.transform(document)
    assert mapping.transform(document) == first == mapping.transform(document)
    assert target._checked is None and target._write_checked is None
    assert [record for record in caplog.records if "no checked code (KeyError)" in record.message]


def test_the_fixtures_run_on_generated_code_alone(caplog: pytest.LogCaptureFixture) -> None:
    """On the documents a mapping was written for, the generated code never hands over to the reference."""
    caplog.set_level(logging.DEBUG, logger="shipmap.engine.codegen")
    mapping = compiled(REPO / "mappings" / "shopify" / "order.yaml")
    for name in ("order_rest_get_with_fulfillment.json", "orders_cancelled_webhook.json"):
        document = json.loads((FIXTURES / "real" / "shopify" / name).read_text(encoding="utf-8"))
        assert mapping.transform(document)["order"]["id"]
    assert not [record for record in caplog.records if "reference takes over" in record.message]


def test_an_error_is_worded_by_the_reference(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="shipmap.engine.codegen")
    mapping = compiled(REPO / "mappings" / "shopify" / "order.yaml")
    document = json.loads(
        (FIXTURES / "real" / "shopify" / "orders_cancelled_webhook.json").read_text("utf-8")
    )
    document["line_items"][1]["product_id"] = 1.5
    with pytest.raises(engine.TransformError) as caught:
        mapping.transform(document)
    assert caught.value.field == "order.line_items[1].product_id"
    assert caught.value.source_path == "line_items[1].product_id"
    assert caught.value.value == 1.5
    assert caught.value.file.endswith("order.yaml") and caught.value.line
    assert [record for record in caplog.records if "reference takes over (FunctionError)" in record.message]


# --- hypothesis: fixtures with values changed, removed or retyped -----------------------------------------------

SAMPLES = {
    "mappings/shopify/order.yaml": ["real/shopify/order_rest_get_with_fulfillment.json"],
    "mappings/shopify/order_cancelled.yaml": ["derived/shopify/orders_updated_partial_cancel.json"],
    "mappings/shopify/fulfillment.yaml": ["real/shopify/fulfillments_create_webhook.json"],
    "mappings/shipstation/shipment.yaml": ["real/shipstation/shipments_list_ship_notify_resource.json"],
    "mappings/aftership/tracking.yaml": ["derived/aftership/tracking_with_order.json"],
}
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", " ", "0", "1.50", "2024-01-01T10:00:00Z", "x", "cancel", "USD", "fulfilled"]),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_code_agrees_on_mutated_fixtures(data: st.DataObject) -> None:
    file = data.draw(st.sampled_from(sorted(SAMPLES)), label="mapping")
    sample = data.draw(st.sampled_from(SAMPLES[file]), label="sample")
    document = json.loads((FIXTURES / sample).read_text(encoding="utf-8"))
    if "shipments" in document:
        document = document["shipments"][0]
    for _ in range(data.draw(st.integers(1, 5), label="edits")):
        paths = list(_paths(document))[1:]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="path")
        *head, last = path
        parent = document
        for step in head:
            parent = parent[step]
        if data.draw(st.booleans(), label="delete") and isinstance(parent, dict):
            del parent[last]
        else:
            parent[last] = data.draw(values, label="value")
    for target in compiled(REPO / file).targets:
        assert_agree(target, document)


# Values the kinds refuse, or strict JSON cannot hold, put where the fixtures had something else.
ODD: list[Any] = [
    None, "", "x", 0, -1, 1.5, 2.0, True, False, [], {}, [{}], {"value": 1}, "OPEN",
    float("nan"), float("inf"), "\ud800", 10**5000, decimal.Decimal("1.5"),
    "2020-01-23T10:14:15-05:00", "2020-01-23T10:14:15-05:00\n", "2021-02-29T10:00:00Z",
]  # fmt: skip


def test_the_checked_code_refuses_what_the_full_check_refuses() -> None:
    """Every place of every sample gets an odd value in turn (or loses its key), twice: once from ODD, once a
    value strict JSON cannot hold, so each field the mapping copies is tried against its check."""
    strict = [float("nan"), "\ud800", 10**5000, decimal.Decimal("1.5"), float("-inf")]
    refused = 0
    for file, samples in SAMPLES.items():
        for sample in samples:
            document = json.loads((FIXTURES / sample).read_text(encoding="utf-8"))
            if "shipments" in document:
                document = document["shipments"][0]
            for number, path in enumerate(list(_paths(document))[1:]):
                for odd in (ODD[number % len(ODD)], strict[number % len(strict)]):
                    changed = copy.deepcopy(document)
                    *head, last = path
                    parent = changed
                    for step in head:
                        parent = parent[step]
                    if odd is None and isinstance(parent, dict):
                        del parent[last]
                    else:
                        parent[last] = odd
                    for target in compiled(REPO / file).targets:
                        passed = assert_checked_agrees(target, changed)
                        made = outcome(target._reference, copy.deepcopy(changed))[0] == "payload"
                        refused += made and not passed
    assert refused >= 200  # payloads the checked code handed to the full check (which words the error)


def test_outputs_without_validation_say_which_payloads_the_checked_code_vouched_for() -> None:
    """``outputs(validate=False)``: ``valid`` is True only for a payload the checked code made (valid under its
    kind); the first payload (no checked code yet) and an invalid one come back unvalidated, valid False,
    exactly as produce() makes them."""
    path = REPO / "mappings" / "shopify" / "order.yaml"
    mapping = engine.parse_mapping(path.read_text(encoding="utf-8"), file="order.yaml")
    target = mapping.target("order")
    document = json.loads(
        (FIXTURES / "real" / "shopify" / "orders_cancelled_webhook.json").read_text("utf-8")
    )
    first, second = mapping.outputs(document, validate=False), mapping.outputs(document, validate=False)
    assert [o.valid for o in first] == [False] and [o.valid for o in second] == [True]
    assert first[0].payload == second[0].payload == target.produce(document)
    broken = copy.deepcopy(document)
    broken["phone"] = 1.5  # customer.phone must be a string or an integer
    (output,) = mapping.outputs(broken, validate=False)
    assert not output.valid and output.payload == target.produce(broken)
    assert [p.field for p in target.problems(output.payload)] == ["order.customer.phone"]
    assert all(o.valid for o in mapping.outputs(document))  # validated: valid


def test_produce_checked_stops_trying_checked_code_that_refuses_every_payload() -> None:
    path = REPO / "mappings" / "shopify" / "order.yaml"
    mapping = engine.parse_mapping(path.read_text(encoding="utf-8"), file="order.yaml")
    target = mapping.target("order")
    document = json.loads(
        (FIXTURES / "real" / "shopify" / "orders_cancelled_webhook.json").read_text("utf-8")
    )
    broken = copy.deepcopy(document)
    broken["phone"] = 1.5
    calls = 0
    target.produce_checked(document)
    target.produce_checked(document)  # the checked code is written
    assert target._checked is not None
    checked = target._checked

    def counting(source: Any) -> Any:
        nonlocal calls
        calls += 1
        return checked(source)

    target._checked = counting
    for _ in range(_target._GIVE_UP + 10):
        payload, valid = target.produce_checked(broken)
        assert payload == target.produce(broken) and not valid
    assert calls == _target._GIVE_UP
    # produce_valid still tries it, and words a refusal as ever.
    assert mapping.transform(document) == {"order": target.produce(document)}
    assert calls == _target._GIVE_UP + 1
    with pytest.raises(engine.PayloadValidationError):
        mapping.transform(broken)


def test_a_literal_is_checked_once_when_the_checked_code_is_written_and_a_bad_one_still_refuses() -> None:
    """A mapping's constant passes or fails its field's check the same way for every payload: the checked code
    writes a valid one unchecked, and keeps the check of one that fails, so the full check words the error."""
    path = REPO / "mappings" / "shopify" / "order.yaml"
    text = path.read_text(encoding="utf-8")
    document = json.loads(
        (FIXTURES / "real" / "shopify" / "orders_cancelled_webhook.json").read_text("utf-8")
    )
    good = engine.parse_mapping(text, file="order.yaml").target("order")
    assert assert_checked_agrees(good, document)
    assert good._checked is not None and good._checked.__doc__
    assert "= 'grms'\n" in good._checked.__doc__ and "= 'Shopify'\n" in good._checked.__doc__
    assert "'grms'\n    if not" not in good._checked.__doc__

    line = "total_weight: {value: total_weight, units: {literal: grms}}"
    assert line in text
    bad = engine.parse_mapping(text.replace(line, line.replace("grms", "5")), file="order.yaml")
    target = bad.target("order")
    assert not assert_checked_agrees(target, document)
    payload, valid = target.produce_checked(document)
    assert not valid and payload is not None and payload["total_weight"]["units"] == 5
    with pytest.raises(engine.PayloadValidationError) as raised:
        bad.transform(document)
    assert [p.field for p in raised.value.problems] == ["order.total_weight.units"]
