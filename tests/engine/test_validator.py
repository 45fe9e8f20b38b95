"""The kinds' compiled checks (engine/_validator.py) against fastjsonschema and json_problems: the same verdict
on every ready mapping's payloads, on the seeds' examples, and on thousands of mutations of them."""

from __future__ import annotations

import calendar
import copy
import decimal
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest
import yaml
from shipmap.engine import load_mapping
from shipmap.engine._format import mapping_format_schema
from shipmap.engine._kinds import builtin_kinds, json_problems
from shipmap.engine._validator import Unsupported, compile_check

ROOT = Path(__file__).parents[2]
KINDS = builtin_kinds()
# Values that break one rule or another: wrong types, booleans posing as numbers, integral floats, values JSON
# cannot hold, a date-time with a trailing newline (Python's `$` would accept it, fastjsonschema's does not).
ODD: list[Any] = [
    None, "", "x", 0, -1, 1.5, 2.0, True, False, [], {}, [{}], {"value": 1}, "OPEN",
    float("nan"), float("inf"), "\ud800", 10**5000, decimal.Decimal("1.5"),
    "2020-01-23T10:14:15-05:00", "2020-01-23T10:14:15-05:00\n",
]  # fmt: skip


def reference(kind: str) -> Any:
    schema = {**KINDS[kind].inlined, "$schema": "http://json-schema.org/draft-07/schema#"}
    return fastjsonschema.compile(schema)


def payloads() -> list[dict[str, Any]]:
    found = [json.loads(path.read_text()) for path in sorted((ROOT / "tests/fixtures/seeds").glob("*.json"))]
    documents = sorted((ROOT / "tests/fixtures/real").rglob("*.json"))
    documents += sorted((ROOT / "tests/fixtures/derived").rglob("*.json"))
    for mapping_file in sorted((ROOT / "mappings").rglob("*.yaml")):
        if mapping_file.name.endswith(".cases.yaml"):
            continue
        mapping = load_mapping(mapping_file)
        for document in documents:
            source = json.loads(document.read_text())
            for target in mapping.targets:
                try:
                    payload = target.produce(source)
                except Exception:  # a document of another platform: not this mapping's input
                    continue
                if isinstance(payload, dict):
                    found.append(payload)
    return found


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from paths(child, (*prefix, key))


def mutated(payload: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    payload = copy.deepcopy(payload)
    where = rng.choice([path for path in paths(payload) if path])
    parent: Any = payload
    for step in where[:-1]:
        parent = parent[step]
    roll = rng.random()
    if roll < 0.2 and isinstance(parent, dict):
        del parent[where[-1]]
    elif roll < 0.3 and isinstance(parent, dict):
        parent["not_a_field"] = 1
    else:
        parent[where[-1]] = rng.choice(ODD)
    return payload


def test_every_kind_compiles() -> None:
    for kind in KINDS.values():
        compile_check(kind.inlined)
        compile_check(kind.inlined, strict_json=True)


def test_the_compiled_checks_agree_with_fastjsonschema_and_json_problems() -> None:
    rng = random.Random(18)
    references = {name: reference(name) for name in KINDS}
    checks = {name: compile_check(kind.inlined) for name, kind in KINDS.items()}
    strict = {name: compile_check(kind.inlined, strict_json=True) for name, kind in KINDS.items()}
    base = payloads()
    assert len(base) >= 30
    valid = strict_valid = 0
    for payload in base:
        for attempt in range(40):
            value = mutated(payload, rng) if attempt else payload
            for name in KINDS:
                try:
                    references[name](value)
                    expected = True
                except fastjsonschema.JsonSchemaException:
                    expected = False
                assert checks[name](value) is expected, (name, value)
                exact = expected and not json_problems(value)
                # strict may raise a false alarm, never a false all-clear; on these payloads it raises none
                assert strict[name](value) is exact, (name, value)
                valid += exact
                strict_valid += strict[name](value)
    assert valid > 200 and strict_valid == valid


@pytest.mark.parametrize(
    ("schema", "value", "expected"),
    [
        ({"type": "integer"}, 2.0, True),  # draft 6 on: an integral float is an integer
        ({"type": "integer"}, True, False),
        ({"type": "number"}, decimal.Decimal("1.5"), True),
        ({"type": "string", "pattern": "^a$"}, "a\n", False),
        ({"enum": [1]}, True, False),
        ({"type": "array", "contains": {"minimum": 1}}, [0, 2], True),
        ({"type": "array", "contains": {"minimum": 1}}, [], False),
    ],
)
def test_edge_cases_decide_as_fastjsonschema_does(schema: dict[str, Any], value: Any, expected: bool) -> None:
    assert compile_check(schema)(value) is expected


@pytest.mark.parametrize(
    "value",
    [float("nan"), "\ud800", 10**5000, decimal.Decimal("1.5"), {"a": {1, 2}}],
    ids=["nan", "lone surrogate", "5000 digits", "Decimal", "a set"],
)
def test_strict_json_refuses_what_json_cannot_write(value: Any) -> None:
    schema = {"type": "object", "properties": {"v": {}}}
    assert compile_check(schema)({"v": value}) is True
    assert compile_check(schema, strict_json=True)({"v": value}) is False


def test_a_keyword_it_does_not_know_is_left_to_fastjsonschema() -> None:
    with pytest.raises(Unsupported):
        compile_check({"type": "string", "format": "date-time"})


# --- the mapping format's schema: $ref (recursive), if/then/else, propertyNames, minProperties -------------

MAPPING_ODD: list[Any] = [
    None, "", "x", 0, 1, 1.5, True, [], {}, [{}], {"path": ""}, {"path": "a"}, {"literal": 1}, {"bogus": 1},
    "fenix.order", {"a": {"b": "c"}}, ["a", {"path": "x"}], {"when": 1}, {"1x": "a"},
]  # fmt: skip


def test_the_mapping_format_check_agrees_with_fastjsonschema() -> None:
    """What `shipmap validate` and every load ask first: is the file a mapping at all. The compiled check
    (which replaced fastjsonschema's ~20 ms compile at start-up) gives fastjsonschema's verdict on every
    mapping in the repository and on thousands of mutations of them."""
    schema = mapping_format_schema()
    check = compile_check(schema)
    fast = fastjsonschema.compile({**schema, "$schema": "http://json-schema.org/draft-07/schema#"})
    files = [path for path in sorted(ROOT.glob("**/*.yaml")) if ".venv" not in path.parts]
    documents = [yaml.safe_load(path.read_text(encoding="utf-8")) for path in files]
    mappings = [document for document in documents if isinstance(document, dict) and "shipmap" in document]
    assert len(mappings) >= 15
    rng = random.Random(18)
    verdicts = {True: 0, False: 0}
    for mapping in mappings:
        for attempt in range(150):
            value = copy.deepcopy(mapping)
            if attempt:
                *head, last = rng.choice([path for path in paths(value) if path])
                parent: Any = value
                for step in head:
                    parent = parent[step]
                roll = rng.random()
                if roll < 0.2 and isinstance(parent, dict):
                    del parent[last]
                elif roll < 0.3 and isinstance(parent, dict):
                    parent["1 bad name"] = copy.deepcopy(rng.choice(MAPPING_ODD))
                else:
                    parent[last] = copy.deepcopy(rng.choice(MAPPING_ODD))
            try:
                fast(value)
                expected = True
            except fastjsonschema.JsonSchemaException:
                expected = False
            assert check(value) is expected, value
            verdicts[expected] += 1
    assert verdicts[True] > 1000 and verdicts[False] > 500


def test_a_recursive_ref_is_one_helper() -> None:
    schema = {
        "$defs": {"tree": {"type": "object", "additionalProperties": {"$ref": "#/$defs/tree"}}},
        "$ref": "#/$defs/tree",
    }
    assert compile_check(schema)({"a": {"b": {}}}) is True
    assert compile_check(schema)({"a": {"b": 1}}) is False


def test_february_29_is_a_date_in_leap_years_only() -> None:
    schema = KINDS["fenix.order"].field_schema(("created_at",))
    assert schema is not None
    checks = [compile_check(schema), compile_check(schema, strict_json=True)]
    fast = fastjsonschema.compile({**schema, "$schema": "http://json-schema.org/draft-07/schema#"})
    for year in range(1, 10_000):
        text = f"{year:04d}-02-29T10:14:15-05:00"
        try:
            fast(text)
            accepted = True
        except fastjsonschema.JsonSchemaException:
            accepted = False
        assert accepted is calendar.isleap(year), text
        assert [check(text) for check in checks] == [accepted, accepted], text
    assert all(check("2021-02-28T23:59:59Z") for check in checks)
    payload = {"created_at": "2021-02-29T10:14:15-05:00"}
    assert (
        ("created_at",),
        'got "2021-02-29T10:14:15-05:00", expected a datetime with a zone offset such as '
        "2020-01-23T10:14:15-05:00",
    ) in KINDS["fenix.order"].problems(payload)
