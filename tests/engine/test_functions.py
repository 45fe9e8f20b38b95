"""The builtins of engine/_functions.py, through JMESPath and through Jinja alike, in the environment mappings
really use (the compiler's ``MappingSandbox``).

CASES follows jmespath's compliance tests: ``given`` (the data, also the Jinja variables), ``expr`` (written so
it is both valid JMESPath and a valid Jinja expression), then ``result`` or ``error`` (the exact message; or
``error_starts`` for the long date-time one; ``compile_error`` when a mapping's template is refused at load
instead, as a call with a wrong number of arguments is). ``engines`` narrows a case to one engine. When the function is also a Jinja filter and the
expression is ``name(v, ...)``, the filter form ``v | name(...)`` runs too. Each Jinja form runs twice: as an
expression of the compiler's environment (which lets the builtin's own error through), and as a mapping's
template does, compiled by the compiler's public path (vetting, the fast path where it applies, the budget)
with the given names read from ``this`` (``v`` as ``this.v``).
"""

from __future__ import annotations

import copy
import datetime as dt
import pickle
import re
import threading
import zoneinfo
from decimal import Decimal
from typing import Any

import hypothesis.strategies as st
import jinja2
import jmespath
import pytest
from hypothesis import given, settings
from shipmap.engine._errors import CompileError, Location, TransformError
from shipmap.engine._functions import (
    MISSING,
    FunctionContext,
    FunctionError,
    FunctionSet,
    LookupTable,
    coerce_boolean,
    coerce_date,
    coerce_datetime,
    coerce_integer,
    coerce_number,
    coerce_string,
    lookup_key,
)
from shipmap.engine._sandbox import MappingSandbox
from shipmap.engine._scope import Scope
from shipmap.engine._templates import TemplateCompiler

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
DATETIME_EXPECTED = 'expected a date-time such as "2020-01-23T10:14:15-05:00" (accepted: ISO 8601'


def make_set(zone: zoneinfo.ZoneInfo = NEW_YORK) -> FunctionSet:
    lookups = {
        "carriers": LookupTable(
            "carriers",
            {"UPS": "ups", "FEDEX": "fedex", "1": "one", "true": "yes", "null": "no carrier", "box": [1, 2]},
        ),
        "statuses": LookupTable("statuses", {"open": "OPEN"}, default="OTHER"),
    }
    return FunctionSet(FunctionContext(default_zone=zone, lookups=lookups))


FUNCTIONS = make_set()
COMPILER = TemplateCompiler(
    FUNCTIONS, frozenset(FUNCTIONS.context.lookups)
)  # as a mapping's templates compile
ENV: MappingSandbox = COMPILER.env


def ok(expr: str, result: Any, **given: Any) -> dict[str, Any]:
    return {"given": given, "expr": expr, "result": result}


def err(expr: str, error: str, **given: Any) -> dict[str, Any]:
    return {"given": given, "expr": expr, "error": error}


def arity(expr: str, error: str, **given: Any) -> dict[str, Any]:
    """A call whose arguments can be counted where it is written: a mapping's template refuses it at load, in
    the words run time uses."""
    return {**err(expr, error, **given), "compile_error": error}


CASES: list[dict[str, Any]] = [
    # -- datetime: the forms platforms send -------------------------------------------------------------------
    ok("datetime(v)", "2020-01-23T10:14:15-05:00", v="2020-01-23T10:14:15-05:00"),
    ok("datetime(v)", "2020-01-23T10:14:15+00:00", v="2020-01-23T10:14:15Z"),
    ok("datetime(v)", "2020-01-23T10:14:15+05:30", v="2020-01-23T10:14:15+0530"),
    ok("datetime(v)", "2020-01-23T10:14:15-05:00", v="2020-01-23T10:14:15"),  # naive: default zone, EST
    ok("datetime(v)", "2020-07-01T10:00:00-04:00", v="2020-07-01T10:00:00"),  # naive: default zone, EDT
    ok("datetime(v)", "2023-11-20T10:00:00-05:00", v="2023-11-20 10:00:00"),
    ok("datetime(v)", "2023-11-20T10:00:00.25-05:00", v="2023-11-20 10:00:00.250"),
    ok("datetime(v)", "2023-11-20T10:00:00-08:00", v="2023-11-20 10:00:00 -0800"),
    ok("datetime(v)", "2023-11-20T10:00:00+01:00", v="2023-11-20 10:00:00+01:00"),
    ok("datetime(v)", "2023-11-20T10:00:00+00:00", v="2023-11-20 10:00:00 UTC"),
    ok("datetime(v)", "2015-06-29T14:08:48.473-04:00", v="2015-06-29T14:08:48.4730000"),  # ShipStation
    ok("datetime(v)", "2015-06-29T14:08:48.473-07:00", v="2015-06-29T14:08:48.4730000-07:00"),
    ok("datetime(v)", "2023-11-20T10:00:00.123456+00:00", v="2023-11-20T10:00:00.123456789Z"),  # truncated
    ok(
        "datetime(v)", "2023-11-20T10:00:00.999999+00:00", v="2023-11-20T10:00:00.9999999Z"
    ),  # never rounds up
    ok("datetime(v)", "2023-11-20T10:00:00+00:00", v="2023-11-20T10:00:00.000Z"),
    ok("datetime(v)", "2023-11-20T10:00:00-05:00", v="Mon, 20 Nov 2023 10:00:00 -0500"),
    ok("datetime(v)", "2023-11-20T10:00:00+00:00", v="Mon, 20 Nov 2023 10:00:00 GMT"),
    ok("datetime(v)", "2023-11-20T10:00:00+00:00", v="Mon, 20 Nov 2023 10:00:00 -0000"),
    ok("datetime(v)", "2023-11-20T10:00:00-05:00", v="Mon, 20 Nov 2023 10:00:00"),  # no zone: naive
    ok("datetime(v)", "2023-11-20T00:00:00-05:00", v="2023-11-20"),
    ok("datetime(v)", "2020-01-23T10:14:15+00:00", v="  2020-01-23T10:14:15Z\n"),
    ok("datetime(v)", "2023-11-14T17:13:20-05:00", v=1700000000),
    ok("datetime(v)", "2023-11-14T17:13:20.25-05:00", v=1700000000.25),
    ok("datetime(v)", "1969-12-31T19:00:00-05:00", v=0),
    ok("datetime(v)", None, v=None),
    # DST: a skipped wall time moves forward; an ambiguous one takes the first (summer-time) occurrence.
    ok("datetime(v)", "2023-03-12T03:30:00-04:00", v="2023-03-12T02:30:00"),
    ok("datetime(v)", "2023-11-05T01:30:00-04:00", v="2023-11-05T01:30:00"),
    # the zone argument: naive values are read in it, aware values keep their offset, epochs render in it
    ok("datetime(v, 'Europe/Berlin')", "2020-01-23T10:14:15+01:00", v="2020-01-23T10:14:15"),
    ok("datetime(v, z)", "2020-07-23T10:14:15+02:00", v="2020-07-23 10:14:15", z="Europe/Berlin"),
    ok("datetime(v, 'Europe/Berlin')", "2020-01-23T10:14:15-05:00", v="2020-01-23T10:14:15-05:00"),
    ok("datetime(v, 'UTC')", "2023-11-14T22:13:20+00:00", v=1700000000),
    ok("datetime(v, z)", "2023-11-20T10:00:00-05:00", v="2023-11-20T10:00:00", z=None),
    ok("datetime(v, 'UTC')", None, v=None),
    {
        "given": {"v": "yesterday"},
        "expr": "datetime(v)",
        "error_starts": f"datetime(): {DATETIME_EXPECTED}",
        "error_ends": 'found string "yesterday"',
    },
    {"given": {"v": ""}, "expr": "datetime(v)", "error_starts": f"datetime(): {DATETIME_EXPECTED}"},
    {"given": {"v": "x" * 500}, "expr": "datetime(v)", "error_starts": f"datetime(): {DATETIME_EXPECTED}"},
    {"given": {"v": "20/11/2023"}, "expr": "datetime(v)", "error_starts": f"datetime(): {DATETIME_EXPECTED}"},
    {"given": {"v": True}, "expr": "datetime(v)", "error_ends": "found boolean true"},
    {"given": {"v": {"a": 1}}, "expr": "datetime(v)", "error_ends": 'found object {"a": 1}'},
    err(
        "datetime(v)",
        'datetime(): "2023-02-30T10:00:00" is not a valid date-time: day is out of range for month',
        v="2023-02-30T10:00:00",
    ),
    err(
        "datetime(v)",
        'datetime(): "2023-02-30" is not a valid date-time: day is out of range for month',
        v="2023-02-30",
    ),
    err(
        "datetime(v)",
        "datetime(): epoch seconds 1700000000000 are out of range (divide milliseconds by 1000)",
        v=1700000000000,
    ),
    err(
        "datetime(v, 'Mars/Olympus_Mons')",
        'datetime(): unknown time zone "Mars/Olympus_Mons"; expected an IANA name such as "America/New_York"',
        v="2020-01-23T10:14:15",
    ),
    # a wrong zone fails even when the value is null, so the mistake shows on the first document
    err(
        "datetime(v, 'EST5')",
        'datetime(): unknown time zone "EST5"; expected an IANA name such as "America/New_York"',
        v=None,
    ),
    err(
        "datetime(v, z)",
        'datetime(): expected a time zone name such as "America/New_York", found number 5',
        v="2020-01-23",
        z=5,
    ),
    arity("datetime(v, 'UTC', 'UTC')", "datetime(value[, zone]) takes 1 or 2 arguments, got 3", v="x"),
    # -- datetime_in ----------------------------------------------------------------------------------------
    ok("datetime_in(v, 'UTC')", "2020-01-23T15:14:15+00:00", v="2020-01-23T10:14:15-05:00"),
    ok("datetime_in(v, 'Asia/Tokyo')", "2020-01-24T00:14:15+09:00", v="2020-01-23T10:14:15"),
    ok(
        "datetime_in(v, 'America/Los_Angeles')",
        "2015-06-29T11:08:48.473-07:00",
        v="2015-06-29T14:08:48.4730000",
    ),
    ok("datetime_in(v, 'Asia/Tokyo')", "2023-11-15T07:13:20+09:00", v=1700000000),
    ok("datetime_in(v, 'Asia/Tokyo')", None, v=None),
    arity("datetime_in(v)", "datetime_in(value, zone) takes 2 arguments, got 1", v="2020-01-23"),
    err(
        "datetime_in(v, z)",
        'datetime_in(): expected a time zone name such as "America/New_York", found null',
        v="2020-01-23",
        z=None,
    ),
    # -- date -------------------------------------------------------------------------------------------------
    ok("date(v)", "2020-01-23", v="2020-01-23T23:30:00-08:00"),  # its own offset's date
    ok("date(v)", "2020-01-23", v="2020-01-23T23:30:00"),
    ok("date(v)", "2023-11-20", v="Mon, 20 Nov 2023 10:00:00 -0500"),
    ok("date(v)", "2023-11-14", v=1700000000),
    ok("date(v, 'Asia/Tokyo')", "2023-11-15", v=1700000000),
    ok("date(v, 'Asia/Tokyo')", "2020-01-23", v="2020-01-23T23:30:00-08:00"),  # zone only reads naive values
    ok("date(datetime_in(v, 'Asia/Tokyo'))", "2020-01-24", v="2020-01-23T23:30:00-08:00"),  # converting
    ok("date(v)", None, v=None),
    ok("date(v)", "1970-08-22", v=20200123),  # a number is epoch seconds, never yyyymmdd
    # -- money and number -------------------------------------------------------------------------------------
    ok("money(v)", 14.99, v="14.99"),
    ok("money(v)", 14.99, v=14.99),
    ok("money(v)", 1234.5, v=" 1,234.50 "),
    ok("money(v)", 1234567.89, v="1,234,567.89"),
    ok("money(v)", -3, v="-3"),
    ok("money(v)", 2.5, v="+2.50"),
    ok("money(v)", 0.5, v=".5"),
    ok("money(v)", 15, v="15.00"),
    ok("money(v)", 15, v=15.0),
    ok("money(v)", 7, v=7),
    ok("money(v)", 1000, v="1e3"),
    ok("money(v)", 12345678901234567890, v="12345678901234567890"),  # no float on the way
    ok("money(v)", None, v=None),
    err(
        "money(v)", 'money(): expected a number or numeric text such as "14.99", found string "abc"', v="abc"
    ),
    err(
        "money(v)",
        'money(): expected a number or numeric text such as "14.99", found string "$14.99"',
        v="$14.99",
    ),
    err(
        "money(v)",
        'money(): expected a number or numeric text such as "14.99", found string "1_000"',
        v="1_000",
    ),
    err(
        "money(v)", 'money(): expected a number or numeric text such as "14.99", found string "NaN"', v="NaN"
    ),
    err(
        "money(v)",
        'money(): expected a number or numeric text such as "14.99", found string "12,34"',
        v="12,34",
    ),
    err("money(v)", 'money(): expected a number or numeric text such as "14.99", found string ""', v=""),
    err("money(v)", 'money(): expected a number or numeric text such as "14.99", found string "-"', v="-"),
    err("money(v)", 'money(): expected a number or numeric text such as "14.99", found boolean true', v=True),
    err("money(v)", 'money(): expected a number or numeric text such as "14.99", found array [1]', v=[1]),
    err("money(v)", 'money(): number "1e400" is out of range', v="1e400"),
    arity("money(v, v)", "money(value) takes 1 argument, got 2", v="1"),
    ok("number(v)", 0.1, v="0.1"),
    ok("number(v)", -2, v=-2.0),
    err("number(v)", 'number(): expected a number or numeric text such as "14.99", found object {}', v={}),
    # -- integer ----------------------------------------------------------------------------------------------
    ok("integer(v)", 7, v=7),
    ok("integer(v)", 7, v=7.0),
    ok("integer(v)", 7, v="007"),
    ok("integer(v)", -12, v=" -12 "),
    ok("integer(v)", 1000, v="1,000"),
    ok("integer(v)", 3, v="3.0"),
    ok("integer(v)", 12345678901234567890, v="12345678901234567890"),
    ok("integer(v)", None, v=None),
    err("integer(v)", "integer(): expected a whole number, found number 2.5", v=2.5),
    err("integer(v)", 'integer(): expected a whole number, found string "2.5"', v="2.5"),
    err(
        "integer(v)",
        'integer(): expected an integer or integer text such as "007", found string "seven"',
        v="seven",
    ),
    err(
        "integer(v)",
        'integer(): expected an integer or integer text such as "007", found boolean false',
        v=False,
    ),
    # -- id -----------------------------------------------------------------------------------------------------
    ok("id(v)", "450789469", v=450789469),
    ok("id(v)", "5678901234567890123", v=5678901234567890123),
    ok("id(v)", "18879048253891", v=" 18879048253891 "),
    ok("id(v)", "gid://shopify/Order/450789469", v="gid://shopify/Order/450789469"),
    ok("id(v)", "450789469", v=450789469.0),
    ok("id(v)", None, v=None),
    err(
        "id(v)",
        "id(): the number 1e+17 would lose digits as an id; the source should send ids as integers or text",
        v=1e17,
    ),
    err(
        "id(v)",
        "id(): the number 9007199254740992.0 would lose digits as an id; the source should send ids as integers "
        "or text",
        v=float(2**53),
    ),
    err("id(v)", 'id(): expected a non-empty id, found string "  "', v="  "),
    err("id(v)", "id(): expected an id (text or integer), found boolean true", v=True),
    err("id(v)", "id(): expected an id (text or integer), found array []", v=[]),
    err(
        "id(v)",
        "id(): the number 12.5 would lose digits as an id; the source should send ids as integers or text",
        v=12.5,
    ),
    # -- string -------------------------------------------------------------------------------------------------
    ok("string(v)", " abc ", v=" abc "),
    ok("string(v)", "5", v=5),
    ok("string(v)", "2", v=2.0),
    ok("string(v)", "2.5", v=2.5),
    ok("string(v)", "0.1", v=0.1),
    ok("string(v)", "1e+21", v=1e21),
    ok("string(v)", "100000000000000000000", v=1e20),
    ok("string(v)", "true", v=True),
    ok("string(v)", "false", v=False),
    ok("string(v)", None, v=None),
    err("string(v)", "string(): expected a string, number or boolean, found array [1]", v=[1]),
    # -- boolean ------------------------------------------------------------------------------------------------
    ok("boolean(v)", True, v=True),
    ok("boolean(v)", False, v=False),
    ok("boolean(v)", True, v="TRUE"),
    ok("boolean(v)", True, v=" Yes "),
    ok("boolean(v)", False, v="no"),
    ok("boolean(v)", True, v="1"),
    ok("boolean(v)", False, v="0"),
    ok("boolean(v)", True, v=1),
    ok("boolean(v)", False, v=0),
    ok("boolean(v)", True, v=1.0),
    ok("boolean(v)", None, v=None),
    err(
        "boolean(v)",
        'boolean(): expected a boolean, 0, 1 or one of "true", "false", "yes", "no", "1", "0", found number 2',
        v=2,
    ),
    err(
        "boolean(v)",
        'boolean(): expected a boolean, 0, 1 or one of "true", "false", "yes", "no", "1", "0", '
        'found string "maybe"',
        v="maybe",
    ),
    # -- strings ------------------------------------------------------------------------------------------------
    ok("upper(v)", "ABC É", v="abc é"),
    ok("upper(v)", None, v=None),
    err("upper(v)", "upper(): expected a string, found number 1", v=1),
    ok("lower(v)", "abc", v="ABC"),
    err("lower(v)", "lower(): expected a string, found boolean true", v=True),
    ok("title(v)", "Mary-Jane O'neil", v="mary-jane O'NEIL"),
    ok("title(v)", "1345 Serenity Street (Rear)", v="1345 serenity STREET (rear)"),
    ok("title(v)", None, v=None),
    err("title(v)", "title(): expected a string, found array []", v=[]),
    ok("trim(v)", "x y", v="  x y \n"),
    ok("trim(v, '-')", "x", v="--x--"),
    ok("trim(v, c)", "x", v=" x ", c=None),
    ok("trim(v)", None, v=None),
    err("trim(v)", "trim(): expected a string, found number 5", v=5),
    err("trim(v, c)", "trim(): expected a string of characters to trim, found number 5", v="x", c=5),
    ok("split(v, ',')", ["a", "b", "", "c"], v="a,b,,c"),
    ok("split(v, ', ')", ["a"], v="a"),
    ok("split(v, ',')", None, v=None),
    err("split(v, '')", 'split(): expected a non-empty string as separator, found string ""', v="a"),
    err("split(v, ',')", "split(): expected a string, found number 1", v=1),
    arity("split(v)", "split(s, sep) takes 2 arguments, got 1", v="a"),
    ok("replace(v, '-', '/')", "a/b/c", v="a-b-c"),
    ok("replace(v, '-', '/')", None, v=None),
    err("replace(v, '-', n)", "replace(): expected a string as replacement, found null", v="a", n=None),
    err("replace(v, '-', '/')", "replace(): expected a string, found number 3", v=3),
    # -- join -------------------------------------------------------------------------------------------------
    ok("join(', ', v)", "a, b", v=["a", "b"]),
    ok("join(' ', v)", "John Smith", v=["John", None, "Smith"]),
    ok("join(', ', v)", "", v=[]),
    ok("join(', ', v)", None, v=None),
    err("join(', ', v)", "join(): expected an array of strings, found number 2 at index 1", v=["a", 2]),
    err("join(g, v)", "join(): expected a string as glue, found number 5", g=5, v=["a"]),
    err("join(', ', v)", 'join(): expected an array of strings, found string "ab"', v="ab"),
    # -- sum and count ------------------------------------------------------------------------------------------
    ok("sum(v)", 6, v=[1, 2, 3]),
    ok("sum(v)", 15, v=[14.99, "0.01"]),
    ok("sum(v)", 0.3, v=[0.1, 0.2]),  # floats would give 0.30000000000000004
    ok("sum(v)", 3.5, v=[1, None, "2.5"]),
    ok("sum(v)", 1001.5, v=["1,000.50", 1]),
    ok("sum(v)", 36893488147419103230, v=[2**64, 2**64 - 2]),
    ok("sum(v)", 0, v=[]),
    ok("sum(v)", 0, v=None),
    ok("sum(v)", 0, v=[None]),
    err(
        "sum(v)",
        'sum(): expected an array of numbers or numeric text, found string "abc" at index 1',
        v=[1, "abc"],
    ),
    err("sum(v)", "sum(): expected an array of numbers, found boolean true at index 0", v=[True]),
    err("sum(v)", "sum(): expected an array of numbers, found array [1] at index 0", v=[[1]]),
    err("sum(v)", 'sum(): expected an array of numbers, found string "12"', v="12"),
    err("sum(v)", "sum(): expected an array of numbers, found object {}", v={}),
    ok("count(v)", 3, v=[1, None, "x"]),
    ok("count(v)", 0, v=[]),
    ok("count(v)", 0, v=None),
    err("count(v)", 'count(): expected an array, found string "abc"', v="abc"),
    err("count(v)", "count(): expected an array, found object {}", v={}),
    # -- coalesce -----------------------------------------------------------------------------------------------
    ok("coalesce(a, b, c)", "x", a=None, b="", c="x"),
    ok("coalesce(a, b)", None, a=None, b=""),
    ok("coalesce(a)", None, a=""),
    ok("coalesce(a, b)", 0, a=0, b="x"),
    ok("coalesce(a, b)", False, a=False, b="x"),
    ok("coalesce(a, b)", " ", a=" ", b="x"),
    ok("coalesce(a, b)", [], a=[], b="x"),
    ok("coalesce(a, b)", {"k": 1}, a=None, b={"k": 1}),
    # -- lookup -------------------------------------------------------------------------------------------------
    ok("lookup('carriers', v)", "ups", v="UPS"),
    ok("lookup('carriers', v)", "one", v=1),
    ok("lookup('carriers', v)", "one", v=1.0),
    ok("lookup('carriers', v)", "one", v="1"),
    ok("lookup('carriers', v)", "yes", v=True),
    ok("lookup('carriers', v)", "no carrier", v=None),
    ok("lookup('carriers', v)", [1, 2], v="box"),
    ok("lookup('statuses', v)", "OPEN", v="open"),
    ok("lookup('statuses', v)", "OTHER", v="closed"),
    ok("lookup('statuses', v)", "OTHER", v=None),
    err(
        "lookup('carriers', v)",
        "lookup(): lookup table 'carriers' has no entry for \"ups\" and no default",
        v="ups",
    ),
    err(
        "lookup('carriers', v)",
        "lookup(): lookup table 'carriers' has no entry for 1.5 and no default",
        v=1.5,
    ),
    err(
        "lookup('carriers', v)",
        "lookup(): lookup table 'carriers': expected a string, number, boolean or null as lookup key, "
        "found array [1]",
        v=[1],
    ),
    {  # a template (or an expression) naming an unknown table is refused when the mapping loads
        **err(
            "lookup('carrier', v)",
            'lookup(): no lookup table named "carrier" (defined: carriers, statuses)',
            v="UPS",
        ),
        "compile_error": "unknown lookup table 'carrier'",
    },
    err(
        "lookup(t, v)",
        'lookup(): no lookup table named "carrier" (defined: carriers, statuses)',
        t="carrier",
        v="UPS",
    ),
    err(
        "lookup(t, v)",
        "lookup(): expected a lookup table name, or an object from index_by(), found null",
        t=None,
        v="UPS",
    ),
    # -- nesting: the innermost builtin names itself ------------------------------------------------------------
    ok("upper(string(money(v)))", "14.99", v="14.990"),
    ok("datetime(coalesce(a, b))", "2020-01-23T00:00:00-05:00", a="", b="2020-01-23"),
    ok("money(coalesce(a))", None, a=""),
    err("upper(money(v))", "upper(): expected a string, found number 1", v="1"),
    err(
        "upper(money(v))",
        'money(): expected a number or numeric text such as "14.99", found string "x"',
        v="x",
    ),
    # -- JMESPath only: projections feed arrays; JMESPath's own functions still work ----------------------------
    {
        "given": {"items": [{"price": "14.99", "qty": 2}, {"price": "0.01", "qty": 1}, {"qty": 1}]},
        "expr": "sum(items[].price)",
        "result": 15,
        "engines": ("jmespath",),
    },
    {
        "given": {"items": [{"qty": 2}, {"qty": 1}, {"qty": 3}]},
        "expr": "count(items[?qty > `1`])",
        "result": 2,
        "engines": ("jmespath",),
    },
    {"given": {"order": {}}, "expr": "sum(order.lines[].price)", "result": 0, "engines": ("jmespath",)},
    {"given": {"order": {}}, "expr": "money(order.total)", "result": None, "engines": ("jmespath",)},
    {
        "given": {"o": {"first": "ada", "last": None}},
        "expr": "join(' ', [title(o.first), o.last])",
        "result": "Ada",
        "engines": ("jmespath",),
    },
    {"given": {"v": "abc"}, "expr": "length(v)", "result": 3, "engines": ("jmespath",)},
    {"given": {"v": [3, 1]}, "expr": "sort(v)", "result": [1, 3], "engines": ("jmespath",)},
    {"given": {"v": 12}, "expr": "to_string(v)", "result": "12", "engines": ("jmespath",)},
    arity("coalesce()", "coalesce(value, ...) takes at least 1 argument, got 0"),
    {"given": {}, "expr": "datetime(`null`, `null`)", "result": None, "engines": ("jmespath",)},
    # -- Jinja only ------------------------------------------------------------------------------------------------
    {"given": {"v": ("a", "b")}, "expr": "join('-', v)", "result": "a-b", "engines": ("jinja",)},
    {"given": {"v": ["1.5", "2"]}, "expr": "sum(v | map('trim'))", "result": 3.5, "engines": ("jinja",)},
    {"given": {"v": [1, 2, 3]}, "expr": "count(v | select('odd'))", "result": 2, "engines": ("jinja",)},
    {"given": {"v": "14.99"}, "expr": "money(v) * 2", "result": 29.98, "engines": ("jinja",)},
    # -- joins --------------------------------------------------------------------------------------------------
    ok("find(v, 'id', k)", {"id": 2, "sku": "B"}, v=[{"id": 1, "sku": "A"}, {"id": 2, "sku": "B"}], k=2),
    ok("find(v, 'id', k)", {"id": "2"}, v=[{"id": "2"}, {"id": 2}], k=2),  # ids match as text; first wins
    ok("find(v, 'a.b', k)", {"a": {"b": "x"}}, v=[{"a": {"b": "x"}}], k="x"),
    ok("find(v, 'id', k)", None, v=[{"id": 1}], k=3),
    ok("find(v, 'id', k)", None, v=None, k=3),
    ok("find(v, 'id', k)", None, v=[{"id": 1}], k=None),
    err("find(v, 'id', k)", 'find(): find() expects an array to search, found {"id": 1}', v={"id": 1}, k=1),
    err(
        "find(v, k, k)",
        "find(): expected a key name such as 'id' (or a dotted path 'a.b'), found 3",
        v=[],
        k=3,
    ),
    ok("index_by(v, 'id')", {"1": {"id": 1}, "b": {"id": "b"}}, v=[{"id": 1}, {"id": "b"}, {"x": 0}]),
    ok("index_by(v, 'id')", None, v=None),
    ok(
        "group_by(v, 'k')",
        {"a": [{"k": "a", "n": 1}, {"k": "a", "n": 3}], "b": [{"k": "b", "n": 2}]},
        v=[{"k": "a", "n": 1}, {"k": "b", "n": 2}, {"k": "a", "n": 3}, {"n": 4}],
    ),
    ok("group_by(v, 'k')", None, v=None),
    # -- arithmetic: Decimal, exact for money ---------------------------------------------------------------
    ok("add(a, b)", 0.3, a=0.1, b=0.2),  # floats would give 0.30000000000000004
    ok("add(a, b)", 16, a="14.99", b=1.01),
    ok("add(a, b)", None, a=None, b=1),
    ok("subtract(a, b)", 14.98, a=15, b="0.02"),
    ok("multiply(a, b)", 59.97, a=3, b=19.99),
    ok("multiply(a, b)", 0.3, a=3, b=0.1),
    ok("divide(a, b)", 6.665, a=19.995, b=3),
    ok("divide(a, b)", 0.5, a=1, b=2),
    err("divide(a, b)", "divide(): division by zero (1 / 0)", a=1, b=0),
    err(
        "multiply(a, b)",
        'multiply(): expected a number or numeric text such as "14.99", found string "x"',
        a="x",
        b=1,
    ),
    ok("round(a, b)", 2.35, a=2.345, b=2),  # half away from zero, as money is rounded
    ok("round(a, b)", -3, a=-2.5, b=0),
    ok("round(a)", 3, a="2.5"),
    ok("round(a)", None, a=None),
    err("round(a, b)", "round(): expected a number of places from 0 to 12, found 13", a=1, b=13),
    # -- text -------------------------------------------------------------------------------------------------
    ok("split_name(v)", {"first": "Ada", "last": "Lovelace"}, v="Ada Lovelace"),
    ok("split_name(v)", {"first": "Mary Ann", "last": "de la Cruz"}, v=" Mary  Ann de la Cruz "),
    ok("split_name(v)", {"first": "Grace", "last": "Hopper"}, v="Hopper, Grace"),
    ok("split_name(v)", {"first": "Sammy", "last": "Davis Jr."}, v="Mr. Sammy Davis Jr."),
    ok("split_name(v)", {"first": "Prince", "last": None}, v="Prince"),
    ok("split_name(v)", None, v="   "),
    ok("split_name(v)", None, v=None),
    err("split_name(v)", "split_name(): split_name() expects a string, found 5", v=5),
    ok("unescape_html(v)", "Tom & Jerry's <b>", v="Tom &amp; Jerry&#39;s &lt;b&gt;"),
    ok("unescape_html(v)", None, v=None),
    ok(
        "strip_html(v)",
        "Soft cotton tee. 100% organic & fair",
        v="<p>Soft <b>cotton</b> tee.</p><br/>100% organic &amp; fair<style>p{}</style>",
    ),
    ok("strip_html(v)", "", v="<p></p>"),
    ok("strip_html(v)", None, v=None),
    # -- shipped tables -----------------------------------------------------------------------------------------
    ok("country_name(v)", "United States", v="US"),
    ok("country_name(v)", "Germany", v=" de "),
    ok("country_name(v)", None, v="ZZ"),
    ok("country_name(v)", None, v=None),
    err(
        "country_name(v)",
        'country_name(): country_name() expects a two-letter country code such as "US", found 1',
        v=1,
    ),
    ok("country_code(v)", "US", v="United States of America"),
    ok("country_code(v)", "GB", v="united kingdom"),
    ok("country_code(v)", "CI", v="Côte d’Ivoire"),
    ok("country_code(v)", "NL", v="The Netherlands"),
    ok("country_code(v)", "FR", v="fr"),
    ok("country_code(v)", None, v="Atlantis"),
    ok("from_minor(a, c)", 19.99, a=1999, c="USD"),
    ok("from_minor(a, c)", 1999, a=1999, c="JPY"),  # no decimals in yen
    ok("from_minor(a, c)", 1.999, a="1999", c="kwd"),  # three in Kuwaiti dinar
    ok("from_minor(a, c)", None, a=None, c="USD"),
    err(
        "from_minor(a, c)",
        'from_minor(): unknown currency "ABC"; expected an ISO 4217 code such as "USD"',
        a=1,
        c="ABC",
    ),
    ok("carrier_code(v)", "royalmail", v="Royal Mail"),
    ok("carrier_code(v)", "royalmail", v="royal-mail"),
    ok("carrier_code(v)", "ups", v="UPS Ground"),
    ok("carrier_code(v)", "usps", v="stamps_com"),
    ok("carrier_code(v)", "dhlecommerce", v="DHL eCommerce Solutions"),
    ok("carrier_code(v)", None, v="Bob's Van"),
]


def _case_id(index: int, case: dict[str, Any]) -> str:
    return f"{index}:{case['expr']}"


def _run_jmespath(case: dict[str, Any], functions: FunctionSet = FUNCTIONS) -> Any:
    return jmespath.search(case["expr"], case["given"], options=functions.jmespath_options)


def _run_jinja(expr: str, given: dict[str, Any], env: MappingSandbox = ENV) -> Any:
    return env.compile_expression(expr)(**given)


def _from_this(expr: str, given: dict[str, Any]) -> str:
    """``expr`` with each name of ``given`` read from ``this`` (``money(v)`` as ``money(this.v)``), as a
    mapping's template reads the document: Jinja's own lexer finds the names, so strings stay as written."""
    parts: list[str] = []
    previous = ""  # the last token that is not whitespace: a name after `.` is an attribute
    for _, kind, value in ENV.lex("{{ " + expr + " }}"):
        if kind == "name" and value in given and previous != ".":
            value = f"this.{value}"
        parts.append(value)
        if kind != "whitespace":
            previous = value
    return "".join(parts)


def _run_template(expr: str, given: dict[str, Any]) -> Any:
    """``{{ expr }}`` as a mapping's field, compiled and run as the engine runs it on a document ``given``."""
    template = _from_this(expr, given)
    evaluate = COMPILER.compile_template(template, Location("functions.yaml", 1, 1, template), "x")
    return evaluate(Scope(given, None, given))


_CALL_ON_V = re.compile(r"(?P<name>\w+)\(v(?:, (?P<rest>.+))?\)")


def _filter_form(expr: str) -> str | None:
    """``name(v, args)`` as ``v | name(args)`` when name is a shipmap filter."""
    match = _CALL_ON_V.fullmatch(expr)
    if match is None or match["name"] not in FUNCTIONS.jinja_filters:
        return None
    rest = match["rest"]
    return f"v | {match['name']}" + (f"({rest})" if rest else "")


def _runs(case: dict[str, Any]) -> list[tuple[str, Any]]:
    engines = case.get("engines", ("jmespath", "jinja"))
    runs: list[tuple[str, Any]] = []
    if "jmespath" in engines:
        runs.append(("jmespath", lambda: _run_jmespath(case)))
    if "jinja" in engines:
        forms = [case["expr"]]
        filtered = _filter_form(case["expr"])
        if filtered is not None:
            forms.append(filtered)
        for form in forms:
            runs.append((f"jinja {form}", lambda form=form: _run_jinja(form, case["given"])))
            runs.append((f"template {form}", lambda form=form: _run_template(form, case["given"])))
    return runs


def _assert_same(actual: Any, expected: Any) -> None:
    """Equal and of the same JSON type: 15 is not 15.0, "1" is not 1."""
    assert actual == expected
    assert type(actual) is type(expected), (
        f"{actual!r} is {type(actual).__name__}, not {type(expected).__name__}"
    )
    if isinstance(expected, list):
        for got, wanted in zip(actual, expected, strict=True):
            _assert_same(got, wanted)


@pytest.mark.parametrize("case", CASES, ids=[_case_id(i, case) for i, case in enumerate(CASES)])
def test_case(case: dict[str, Any]) -> None:
    for engine, run in _runs(case):
        if engine.startswith("template") and "compile_error" in case:
            with pytest.raises(CompileError) as refused:
                run()
            assert refused.value.message == case["compile_error"], engine
            continue
        if "result" in case:
            try:
                actual = run()
            except Exception as error:  # pragma: no cover - the message is the point
                pytest.fail(f"{engine}: raised {type(error).__name__}: {error}")
            _assert_same(actual, case["result"])
            continue
        with pytest.raises((FunctionError, TransformError)) as caught:
            run()
        error = caught.value
        if isinstance(error, FunctionError):
            function = error.function
            message = str(error)
        else:  # a template's: the field's error carries the builtin's message whole
            assert engine.startswith("template"), f"{engine}: {error.render()}"
            message = error.message
            function = next((name for name in FUNCTIONS.names if message.startswith(f"{name}(")), None)
        assert function is not None, f"{engine}: {message}"
        assert message.startswith(f"{function}("), engine
        if "error" in case:
            assert message == case["error"], engine
        if "error_starts" in case:
            assert message.startswith(case["error_starts"]), f"{engine}: {message}"
        if "error_ends" in case:
            assert message.endswith(case["error_ends"]), f"{engine}: {message}"
        assert len(message) < 400


def test_a_template_case_reads_the_given_names_from_this() -> None:
    assert _from_this("lookup('v', v) ~ o.v ~ o['v'] | money(v)", {"v": 1, "o": {}}) == (
        "{{ lookup('v', this.v) ~ this.o.v ~ this.o['v'] | money(this.v) }}"
    )


def test_every_function_has_cases() -> None:
    called = {name for case in CASES for name in re.findall(r"(\w+)\(", case["expr"])}
    assert called >= FUNCTIONS.names


def _outer_function(expr: str) -> str | None:
    """``f`` when the whole expression is one call ``f(...)``; else None."""
    head = re.match(r"(\w+)\(", expr)
    if head is None or not expr.endswith(")"):
        return None
    depth = 0
    for at, char in enumerate(expr):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and at >= head.end() - 1:
            return head.group(1) if at == len(expr) - 1 else None
    return None


_KINDS = {"text": str, "number": (int, float), "boolean": bool, "array": list, "object": dict}


def test_each_function_returns_the_kind_its_spec_says() -> None:
    """The spec's result refuses a `{% filter f %}` block at load, so it must hold for every case's result."""
    checked = set()
    for case in CASES:
        function = _outer_function(case["expr"])
        if function is None or case.get("result") is None or function not in FUNCTIONS.specs:
            continue
        kind = FUNCTIONS.specs[function].result
        if kind == "any":
            continue
        result = case["result"]
        assert isinstance(result, _KINDS[kind]), f"{case['expr']} gave {result!r}, not {kind}"
        assert kind == "boolean" or not isinstance(result, bool), f"{case['expr']} gave {result!r}"
        checked.add(function)
    assert checked == {name for name, spec in FUNCTIONS.specs.items() if spec.result != "any"}


# -- the interface the compiler uses -------------------------------------------------------------------------


def test_names_globals_and_filters() -> None:
    assert FUNCTIONS.names == {
        "datetime", "datetime_in", "date", "money", "id", "integer", "number", "string", "boolean",
        "upper", "lower", "title", "trim", "split", "replace", "join", "sum", "count", "coalesce", "lookup",
        "find", "index_by", "group_by", "add", "subtract", "multiply", "divide", "round", "split_name",
        "unescape_html", "strip_html", "country_name", "country_code", "from_minor", "carrier_code",
    }  # fmt: skip
    assert set(FUNCTIONS.jinja_globals) == FUNCTIONS.names
    # Jinja's own filters keep their names; join and lookup take something else first.
    assert set(FUNCTIONS.jinja_filters) == {
        "datetime", "datetime_in", "date", "money", "id", "integer", "number", "boolean", "split", "coalesce",
        "find", "index_by", "group_by", "add", "subtract", "multiply", "divide", "split_name", "unescape_html",
        "strip_html", "country_name", "country_code", "from_minor", "carrier_code",
    }  # fmt: skip
    assert not set(FUNCTIONS.jinja_filters) & set(jinja2.filters.FILTERS)
    assert FUNCTIONS.jinja_filters["money"] is FUNCTIONS.jinja_globals["money"]
    with pytest.raises(TypeError):
        FUNCTIONS.jinja_globals["money"] = len  # type: ignore[index]


def test_jinja_builtin_filters_are_not_replaced() -> None:
    env = TemplateCompiler(FUNCTIONS, frozenset()).env
    assert env.from_string("{{ v | join(', ') }}").render(v=[1, 2]) == "1, 2"  # Jinja's join stringifies
    assert env.from_string("{{ v | sum }}").render(v=[1, 2]) == "3"
    assert env.from_string("{{ v | upper }}|{{ upper(v) }}").render(v="ab") == "AB|AB"
    assert env.from_string("{{ v | string }}|{{ string(v) }}").render(v=2.0) == "2.0|2"
    assert env.from_string("{{ v | count }}|{{ count(v) }}").render(v=[1, 2]) == "2|2"


@pytest.mark.parametrize("text", ["mary-jane o'neil", "  (rear) unit <b>", "ÉCOLE des\tBEAUX-arts", "x", ""])
def test_title_agrees_with_jinja_title_filter(text: str) -> None:
    assert ENV.from_string("{{ v | title }}").render(v=text) == FUNCTIONS.call("title", text)


def test_filter_forms_render() -> None:
    template = ENV.from_string(
        "{{ v | money }} {{ t | datetime('UTC') }} {{ t | date }} {{ n | coalesce('-') }}"
    )
    assert template.render(v="14.990", t=1700000000, n="") == "14.99 2023-11-14T22:13:20+00:00 2023-11-14 -"
    assert ENV.compile_expression("money(x)")(x="14.99") == 14.99


def test_call_is_the_same_callable() -> None:
    assert FUNCTIONS.call("money", "14.99") == 14.99
    assert FUNCTIONS.call("datetime", "2015-06-29T14:08:48.4730000", "UTC") == "2015-06-29T14:08:48.473+00:00"
    assert FUNCTIONS.call("lookup", "statuses", "x") == "OTHER"
    with pytest.raises(FunctionError) as caught:
        FUNCTIONS.call("money", "x")
    assert caught.value.function == "money"
    assert str(caught.value) == 'money(): expected a number or numeric text such as "14.99", found string "x"'
    with pytest.raises(FunctionError, match=r"^unknown function nope\(\)$"):
        FUNCTIONS.call("nope", 1)
    with pytest.raises(FunctionError, match=r"^money\(value\) takes 1 argument, got 0$"):
        FUNCTIONS.call("money")


def test_keyword_arguments_are_refused_in_jinja() -> None:
    with pytest.raises(FunctionError) as caught:
        ENV.compile_expression("datetime(v, zone='UTC')")(v="2020-01-23")
    assert str(caught.value) == "datetime(value[, zone]) takes positional arguments only, got zone="


def test_function_error_passes_through_jmespath_untouched() -> None:
    # JMESPath's interpreter does not catch exceptions from functions: the compiler catches FunctionError itself.
    with pytest.raises(FunctionError) as caught:
        jmespath.search("items[].money(price)", {"items": [{"price": "1"}, {"price": "x"}]}, **_options())
    assert not isinstance(caught.value, jmespath.exceptions.JMESPathError)
    assert caught.value.function == "money"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def _options() -> dict[str, Any]:
    return {"options": FUNCTIONS.jmespath_options}


def test_jmespath_function_table_lists_shipmap_functions() -> None:
    functions = FUNCTIONS.jmespath_options.custom_functions
    assert FUNCTIONS.names <= set(functions.FUNCTION_TABLE)
    assert {"length", "to_string", "not_null"} <= set(functions.FUNCTION_TABLE)
    # JMESPath's own type errors stay JMESPath errors.
    with pytest.raises(jmespath.exceptions.JMESPathTypeError):
        jmespath.search("length(v)", {"v": 3}, **_options())


def test_jinja_undefined() -> None:
    # A missing attribute is Undefined in Jinja, not null: coalesce skips it, the others let StrictUndefined fail.
    assert ENV.compile_expression("coalesce(o.note, 'none')")(o={}) == "none"
    assert ENV.compile_expression("money(coalesce(o.total))")(o={}) is None
    for expr in (
        "money(o.total)",
        "datetime(o.at)",
        "upper(o.name)",
        "lookup('carriers', o.code)",
        "count(o.x)",
    ):
        with pytest.raises(jinja2.UndefinedError, match="has no attribute"):
            ENV.compile_expression(expr)(o={})


def test_specs_and_arity() -> None:
    specs = FUNCTIONS.specs
    assert specs["datetime"].signature == "datetime(value[, zone])"
    assert specs["coalesce"].signature == "coalesce(value, ...)"
    assert (specs["trim"].min_args, specs["trim"].max_args) == (1, 2)
    assert specs["coalesce"].max_args is None
    specs["replace"].check_arity(3)
    with pytest.raises(FunctionError, match=r"^replace\(s, old, new\) takes 3 arguments, got 2$"):
        specs["replace"].check_arity(2)


def test_sets_are_independent() -> None:
    tokyo = make_set(zoneinfo.ZoneInfo("Asia/Tokyo"))
    assert tokyo.call("datetime", "2020-01-23T10:00:00") == "2020-01-23T10:00:00+09:00"
    assert FUNCTIONS.call("datetime", "2020-01-23T10:00:00") == "2020-01-23T10:00:00-05:00"
    assert jmespath.search("datetime(v)", {"v": "2020-01-23"}, options=tokyo.jmespath_options) == (
        "2020-01-23T00:00:00+09:00"
    )


def test_thread_safe_after_construction() -> None:
    functions = make_set()
    zones = ["UTC", "Asia/Tokyo", "Europe/Berlin", "America/Los_Angeles", "Australia/Sydney"]
    expected = {zone: coerce_datetime("2020-01-23T10:00:00", zone) for zone in zones}
    failures: list[str] = []
    barrier = threading.Barrier(8)

    def work(seed: int) -> None:
        barrier.wait()
        for round_ in range(300):
            zone = zones[(seed + round_) % len(zones)]
            got = functions.call("datetime", "2020-01-23T10:00:00", zone)
            if got != expected[zone]:
                failures.append(f"{zone}: {got}")

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


# -- lookup tables and keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("UPS", "UPS"),
        (" ups ", " ups "),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        (7, "7"),
        (-7, "-7"),
        (2**70, "1180591620717411303424"),
        (2.0, "2"),
        (2.5, "2.5"),
        (1e-7, "1e-07"),
    ],
)
def test_lookup_key(value: Any, key: str) -> None:
    assert lookup_key(value) == key


def test_lookup_key_refuses_containers() -> None:
    with pytest.raises(FunctionError) as caught:
        lookup_key({"a": 1})
    assert (
        str(caught.value) == 'expected a string, number, boolean or null as lookup key, found object {"a": 1}'
    )
    assert caught.value.function is None


def test_lookup_key_refuses_an_integer_too_long_to_write() -> None:
    # A located error, not Python's ValueError: str() refuses ints past 4,300 digits.
    with pytest.raises(FunctionError, match="too large to write as text"):
        lookup_key(10**5000)


def test_lookup_table_is_immutable_and_copies_containers() -> None:
    table = LookupTable("t", {1: {"code": "A"}, "b": "B"})
    assert dict(table.entries) == {"1": {"code": "A"}, "b": "B"}
    assert table.default is MISSING
    assert table.name == "t"
    with pytest.raises(AttributeError, match="immutable"):
        table.name = "u"  # type: ignore[misc]
    with pytest.raises(TypeError):
        table.entries["c"] = "C"  # type: ignore[index]
    first = table.get(1)
    first["code"] = "changed"
    assert table.get("1") == {"code": "A"}
    assert repr(table) == "LookupTable('t', 2 entries)"
    assert repr(LookupTable("d", {}, default=None)) == "LookupTable('d', 0 entries, default=None)"
    assert LookupTable("d", {}, default=None).get("anything") is None


def test_lookup_table_refuses_keys_that_collide() -> None:
    with pytest.raises(FunctionError) as caught:
        LookupTable("t", {1: "int", "1": "text"})
    assert str(caught.value) == 'lookup table \'t\' has the key "1" twice (as 1 and "1")'


def test_missing_is_a_singleton() -> None:
    assert repr(MISSING) == "MISSING"
    assert pickle.loads(pickle.dumps(MISSING)) is MISSING
    assert copy.deepcopy(MISSING) is MISSING


# -- the plain coercions the compiler's `type:` option uses -----------------------------------------------------


def test_coercions_are_the_builtins_without_a_name() -> None:
    assert coerce_integer("007") == 7
    assert coerce_number("1,234.50") == 1234.5
    assert coerce_string(2.0) == "2"
    assert coerce_boolean("Yes") is True
    assert coerce_datetime("2015-06-29T14:08:48.4730000", NEW_YORK) == "2015-06-29T14:08:48.473-04:00"
    assert coerce_datetime("2015-06-29T14:08:48", "UTC") == "2015-06-29T14:08:48+00:00"
    assert coerce_date(1700000000, "Asia/Tokyo") == "2023-11-15"
    for coerce in (coerce_integer, coerce_number, coerce_string, coerce_boolean):
        assert coerce(None) is None
    assert coerce_datetime(None, "UTC") is None
    with pytest.raises(FunctionError) as caught:
        coerce_integer("x")
    assert str(caught.value) == 'expected an integer or integer text such as "007", found string "x"'
    assert caught.value.function is None
    with pytest.raises(FunctionError, match=r'^unknown time zone "Nowhere"'):
        coerce_datetime("2020-01-01", "Nowhere")


# -- properties -----------------------------------------------------------------------------------------------

_decimals = st.decimals(
    allow_nan=False, allow_infinity=False, places=4, min_value=-(10**12), max_value=10**12
)


@settings(max_examples=300, deadline=None)
@given(_decimals)
def test_money_is_the_exact_decimal(number: Decimal) -> None:
    result = FUNCTIONS.call("money", f"{number:f}")
    if number == number.to_integral_value():
        assert result == int(number) and type(result) is int
    else:
        assert result == float(number) and type(result) is float


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_decimals, st.none()), max_size=20))
def test_sum_of_text_is_the_decimal_sum(numbers: list[Decimal | None]) -> None:
    exact = sum((number for number in numbers if number is not None), Decimal(0))
    result = FUNCTIONS.call("sum", [None if number is None else f"{number:f}" for number in numbers])
    assert result == (int(exact) if exact == exact.to_integral_value() else float(exact))


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=dt.datetime(1900, 1, 1)),
    st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "Europe/London"]),
)
def test_datetime_output_reads_back_as_the_same_instant(moment: Any, zone: str) -> None:
    rendered = FUNCTIONS.call("datetime", moment.isoformat(), zone)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?[+-]\d\d:\d\d", rendered)
    assert FUNCTIONS.call("datetime", rendered) == rendered
    # Text carries no fold, so an ambiguous wall time means its first occurrence (fold=0), as documented.
    instant = moment.replace(fold=0, tzinfo=zoneinfo.ZoneInfo(zone)).astimezone(dt.UTC)
    assert dt.datetime.fromisoformat(rendered).astimezone(dt.UTC) == instant


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(2**63), max_value=2**64))
def test_integer_ids_keep_every_digit(number: int) -> None:
    assert FUNCTIONS.call("id", number) == str(number)
    assert FUNCTIONS.call("integer", str(number)) == number


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"-?[0-9]{1,17}(\.[0-9]{0,17})?", fullmatch=True))
def test_plain_amount_text_gives_the_number_its_exact_decimal_gives(text: str) -> None:
    # money() reads plain text such as "199.00" without Decimal; the result must be what Decimal gives.
    number = Decimal(text)
    expected = int(number) if number == number.to_integral_value() else float(number)
    got = coerce_number(text)
    assert type(got) is type(expected) and got == expected


_EDGE_DATETIMES = [
    "2023-01-01T10:00:00-00:00",
    "2023-02-29T10:00:00+01:00",
    "2024-02-29T10:00:00+01:00",
    "2023-01-01T24:00:00+00:00",
    "2023-01-01T10:00:00+24:00",
    "0000-01-01T10:00:00+00:00",
    "0001-01-01T00:00:00-00:60",  # fromisoformat takes 60 minutes of offset; the text written is -01:00
    "2023-01-01T10:00:00+23:59",
]


@settings(max_examples=400, deadline=None)
@given(
    st.from_regex(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[+-][0-9]{2}:[0-9]{2}", fullmatch=True
    )
    | st.builds(
        lambda moment, minutes: moment.replace(tzinfo=dt.timezone(dt.timedelta(minutes=minutes))).isoformat(),
        st.datetimes(min_value=dt.datetime(1, 1, 1, 1), max_value=dt.datetime(9999, 12, 30)).map(
            lambda moment: moment.replace(microsecond=0)
        ),
        st.integers(min_value=-1439, max_value=1439),
    )
    | st.sampled_from(_EDGE_DATETIMES)
)
def test_text_already_in_the_written_form_comes_back_as_the_full_path_writes_it(text: str) -> None:
    # datetime() returns such text as it is (engine/_dates.py _as_rendered), only where the full path
    # (parse, then write) gives exactly that text; elsewhere the full path runs, and words any error.
    from shipmap.engine import _dates

    shortcut = _dates._as_rendered(text)
    for zone in (_dates._UTC, zoneinfo.ZoneInfo("America/New_York")):
        try:
            full: str | None = _dates._render(_dates._aware(text, zone))
        except FunctionError:
            full = None
        if shortcut is not None:
            assert full == shortcut == text
        if full is not None:
            assert coerce_datetime(text, zone) == full
            assert FUNCTIONS.call("datetime", text) == _dates._render(
                _dates._aware(text, zoneinfo.ZoneInfo("America/New_York"))
            )
