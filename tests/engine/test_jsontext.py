"""engine/_jsontext.py: orjson's text and values only where they are exactly json's, so source digests,
payload bodies and strict reading never change. Each test compares with the standard library over generated
documents and texts (floats of every exponent, integers past 64 bits, NaN, every code point, lone surrogates,
control characters, nesting), and with digests a journal written before orjson holds."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from shipmap.connectors._deliver._request import encode_payload
from shipmap.connectors._store._journal import canonical_json, digest_of
from shipmap.engine import _jsontext
from shipmap.engine._sources import NotStrictJSON, SourceDocument, loads_strict, read_stream

# Every code point, lone surrogates included (a library caller may hand the runtime any str).
_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=12)
_FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [1e16, 1e-5, 1.5e-7, 9.99e-5, 1e-4, 5e-324, 1e22, -0.0, 1e300, 2.5e-10, 0.00001234]
)
_INTEGERS = st.integers() | st.sampled_from([2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1, 10**30])
_SCALARS = st.none() | st.booleans() | _INTEGERS | _FLOATS | _TEXT
DOCUMENTS = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_TEXT, children, max_size=5),
    max_leaves=30,
)
_SETTINGS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def old_canonical(value: Any) -> str:  # canonical_json as main at 150b23c wrote it, with json alone
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str
    )


def old_payload(value: Any) -> str:  # encode_payload as main at 150b23c wrote it
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def outcome(function: Any, *args: Any, **options: Any) -> tuple[str, Any]:
    try:
        return "value", function(*args, **options)
    except Exception as error:
        return "error", (type(error), str(error))


def finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(finite(item) for item in value.values())
    if isinstance(value, list):
        return all(finite(item) for item in value)
    return True


@_SETTINGS
@given(DOCUMENTS)
@example({"a": float("nan"), "b": None})
@example([float("inf"), None])
@example({"\ud800": 1})
@example([1e16, 1e-05, 1.5e-07, 2**64, -(2**63) - 1])
@example({"a": "one-e-two", "b": [2.5e-07], "c": "free-shipping", "d": "pre-e-"})
def test_dumps_gives_jsons_bytes_or_steps_aside(value: Any) -> None:
    for sort_keys in (False, True):
        new = _jsontext.dumps(value, sort_keys=sort_keys, plain=finite(value))
        if new is not None:  # then json writes exactly these bytes
            old = json.dumps(
                value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            )
            assert new == old.encode("utf-8")


@_SETTINGS
@given(DOCUMENTS)
@example({"a": float("nan"), "b": None})
@example({"x": [float("-inf"), None, 1e-07]})
@example({"\udc80": "\ud800"})
@example({"é": "\x00\x1f\x7f\u2028", "😀": 1, "\uffff": 2, "A": [1e16, 1e-05, 10**25]})
def test_canonical_text_and_payload_text_never_change(value: Any) -> None:
    assert outcome(canonical_json, value) == outcome(old_canonical, value)
    assert outcome(encode_payload, value) == outcome(old_payload, value)
    if finite(value):
        assert outcome(canonical_json, value, plain=True) == outcome(old_canonical, value)
        assert outcome(encode_payload, value, plain=True) == outcome(old_payload, value)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (b'{"a":"free-shipping","b":"the-e-x"}', False),
        (b'{"a":2.5e-7,"b":"free-shipping","c":"re-"}', True),  # before other "e-": every one is looked at
        (b'{"a":"re-","b":[1e-9],"c":"pre-"}', True),
        (b'{"a":"1e-","b":"x"}', True),  # text like an exponent: json decides, as before
        (b'["e-",1]', False),
        (b"[1.5]", False),
    ],
)
def test_negative_exponents_are_found_wherever_they_sit(text: bytes, found: bool) -> None:
    assert _jsontext._negative_exponent(text) is found


def test_values_of_no_json_type_are_written_as_before() -> None:
    import dataclasses
    import datetime
    import decimal
    import enum
    import uuid

    @dataclasses.dataclass
    class Point:
        x: int

    class Color(enum.Enum):
        RED = 1

    class Size(enum.IntEnum):
        LARGE = 3

    class Mode(enum.StrEnum):
        FAST = "fast"

    class Text(str):
        pass

    document = {
        "when": datetime.datetime(2024, 3, 1, 10, 0, tzinfo=datetime.UTC),
        "day": datetime.date(2024, 3, 1),
        "point": Point(1),
        "color": Color.RED,
        "size": Size.LARGE,
        "mode": Mode.FAST,
        "amount": decimal.Decimal("1.50"),
        "flag": [True, False, None],
        "id": uuid.UUID(int=7),
        "text": Text("x"),
        "pair": (1, 2),
        "set": {3},
        1: "an int key",
    }
    for key, value in document.items():
        assert outcome(canonical_json, {key: value}) == outcome(old_canonical, {key: value}), key
        assert outcome(encode_payload, {key: value}) == outcome(old_payload, {key: value}), key


# Digests of sources a journal written by main at 150b23c (json alone) holds: a run now finds the same rows.
RECORDED = {
    "f3cc724d9d21b8d9eae6afb1c63f8898c9d3794622fbb57c0c4794032b37f2c1": {
        "small": [1e-05, 1.5e-07, 9.99e-05, 1e-09, 2.5e-10, 0.0001, 5e-324],
        "big": [1e16, 1.2345678901234568e17, 1e22, 1.7976931348623157e308],
        "zero": [-0.0, 0.0],
        "plain": [0.1, 123.456, 1 / 3],
    },
    "80ce07d887952f4d29fcc2c0477f0d22b2010f5312550f8c6d398a0fb68f07b6": [
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        2**64,
        -(2**63) - 1,
        10**40,
        -(10**40),
    ],
    "80b9e9f6bfd5be22ae6b9889f3d1500078d5faff6f2e8ff58e350c6f2c15667b": {
        "é": "naïve — 😀 \u2028\u2029",
        "\x00ctl": '\x00\x01\x1f\x7f\b\f\n\r\t"\\/',
        "\uffff": 1,
        "😀": 2,
        "A": None,
        "a": True,
    },
}


@pytest.mark.parametrize("digest", sorted(RECORDED))
def test_source_digests_are_those_an_older_journal_holds(digest: str) -> None:
    document = RECORDED[digest]
    assert digest_of(canonical_json(document)) == digest
    assert digest_of(canonical_json(document, plain=True)) == digest
    text = json.dumps(document)  # and read back by the strict reader first
    assert digest_of(canonical_json(loads_strict(text), plain=True)) == digest


def old_loads_strict(text: str) -> Any:  # loads_strict as main at 150b23c read, with json alone
    import re

    def constant(name: str) -> Any:
        raise NotStrictJSON(f"{name} is not a JSON number (strict JSON has only finite numbers)", name)

    def number(text: str) -> float:
        value = float(text)
        if math.isinf(value):
            raise NotStrictJSON(f"the number {text[:40]} is too large for a 64-bit float", text)
        return value

    value = json.loads(text, parse_constant=constant, parse_float=number)
    escape = re.search(r"\\u[dD][89a-fA-F]", text)
    if escape is not None:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            message = "a string holds a lone UTF-16 surrogate (not Unicode text)"
            raise NotStrictJSON(message, escape.group(0)) from None
    return value


def _texts() -> st.SearchStrategy[str]:
    written = st.builds(
        lambda value, indent, ascii_only: json.dumps(value, indent=indent, ensure_ascii=ascii_only),
        DOCUMENTS,
        st.none() | st.integers(0, 2),
        st.booleans(),
    )
    # Broken texts too: cut short, a character dropped or replaced.
    broken = st.builds(
        lambda text, at, junk: text[:at] + junk + text[at + 1 :], written, st.integers(0, 60), _TEXT
    )
    return written | broken | _TEXT


@_SETTINGS
@given(_texts())
@example('{"a": 1, "a": 2}')
@example("[NaN]")
@example("[-Infinity]")
@example("[1e400]")
@example('["\\ud800"]')
@example('["\\ude00\\ud83d"]')
@example("[18446744073709551616]")
@example("[-9223372036854775809]")
@example("[" * 3000 + "]" * 3000)
@example("[1.0, -0, -0.0, 1E5, 0.1e-400]")
@example('{"a": 1,}')
def test_strict_reading_gives_jsons_values_and_errors(text: str) -> None:
    def read(function: Any) -> tuple[str, Any]:
        try:
            return "value", repr(function(text))  # repr: 1 and 1.0, -0.0 and 0.0 differ
        except RecursionError:
            return "error", RecursionError
        except ValueError as error:
            return "error", (type(error), str(error))

    assert read(loads_strict) == read(old_loads_strict)
    value = _jsontext.loads(text)
    if value is not _jsontext.UNREAD:
        assert repr(value) == repr(json.loads(text))


@pytest.mark.parametrize(
    ("written", "error", "where"),
    [
        ("NaN", "NaN is not a JSON number (strict JSON has only finite numbers), column 12", (3, 12)),
        ("1e999", "the number 1e999 is too large for a 64-bit float, column 12", (3, 12)),
        ('"\\ud800"', "a string holds a lone UTF-16 surrogate (not Unicode text), column 13", (3, 13)),
    ],
    ids=["nan", "overflow", "lone-surrogate"],
)
def test_a_pretty_printed_document_that_is_not_strict_is_located_at_its_token(
    written: str, error: str, where: tuple[int, int]
) -> None:
    """json names no line for what only a strict reader refuses: the token does (it was line 1, column 1)."""
    lines = ["{\n", '  "id": 1,\n', f'  "total": {written}\n', "}\n"]
    [record] = read_stream(lines, "order.json")
    assert record.error == f"not strict JSON: {error}"
    assert record.location is not None and (record.location.line, record.location.column) == where


def test_an_integer_past_pythons_digit_limit_is_located_without_pythons_advice() -> None:
    """Python's own words ("use sys.set_int_max_str_digits() to increase the limit") are no help to who sent
    the JSON: the record is refused as not strict JSON, at the number's column."""
    lines = ['{"id": "1234", "n": ' + "7" * 4400 + "}\n"]
    [record] = read_stream(lines, "events.ndjson", ndjson=True)
    assert record.error == (
        "not strict JSON: an integer of 4400 digits is longer than the 4,300 digits a number may have, column 21"
    )
    assert record.location is not None and (record.location.line, record.location.column) == (1, 21)
    with pytest.raises(NotStrictJSON):
        loads_strict("[" + "1" * 5000 + "]")


def test_a_bad_line_is_located_and_worded_as_before() -> None:
    lines = ['{"ok": 1}\n', '{"a": NaN}\n', '{"a": [1,]}\n', '{"n": 1e999}\n', '{"s": "\\udc00"}\n', "{\n"]
    records = list(read_stream(lines, "events.ndjson", ndjson=True))
    assert [(r.origin, r.error) for r in records] == [
        ("events.ndjson:1", None),
        ("events.ndjson:2", "not strict JSON: NaN is not a JSON number (strict JSON has only finite numbers), column 7"),
        ("events.ndjson:3", "not JSON: Expecting value, column 10"),
        ("events.ndjson:4", "not strict JSON: the number 1e999 is too large for a 64-bit float, column 7"),
        ("events.ndjson:5", "not strict JSON: a string holds a lone UTF-16 surrogate (not Unicode text), column 8"),
        ("events.ndjson:6", "not JSON: Expecting property name enclosed in double quotes, column 2"),
    ]  # fmt: skip
    assert records[0].strict and records[0].document == {"ok": 1}
    # How it was read is not part of what it is: equal to the same document handed in by a caller.
    assert records[0] == SourceDocument("events.ndjson:1", document={"ok": 1}) and not records[1].strict
