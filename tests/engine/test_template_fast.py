"""The fast path for Jinja templates (engine/_template_fast.py) agrees with Jinja, or steps aside.

For every template shipmap knows of (the ready mappings, the test and example mappings, the docs) and many
hand-written ones, on the real and derived fixtures and on generated JSON-like data, the fast path either
gives exactly Jinja's result (same value, same type) or raises Fallback. Jinja here is the production
renderer (TemplateCompiler._renderer) with the fast path switched off.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import zoneinfo
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import jinja2
import pytest
import shipmap.engine as engine
import shipmap.engine._templates as templates
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shipmap.engine._errors import CompileError, Location
from shipmap.engine._expressions import ExpressionCompiler
from shipmap.engine._functions import FunctionContext, FunctionSet
from shipmap.engine._scope import Scope
from shipmap.engine._template_fast import Fallback, _Generator, fast_template
from shipmap.engine._template_lines import TemplateLines
from shipmap.engine._templates import SINGLE_EXPRESSION
from shipmap.engine._yaml import TextPlace

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


def _has_lines(path: Path) -> bool:
    """Orders and fulfillments have line_items; refunds, returns and order edits do not."""
    document = json.loads(path.read_text(encoding="utf-8"))
    return "line_items" in document.get("order", document)


SHOPIFY_ORDERS = [
    *(path for path in sorted((FIXTURES / "real" / "shopify").glob("*.json")) if _has_lines(path)),
    *sorted((FIXTURES / "derived" / "shopify").glob("order*.json")),
]

# -- the templates ------------------------------------------------------------------------------------------


def _template_strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _template_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _template_strings(value)
    elif isinstance(node, str):
        if "{{" in node or "{%" in node:
            yield node
        if node.lstrip().startswith("shipmap:"):  # a whole mapping written inline, as in the language cases
            with contextlib.suppress(yaml.YAMLError):
                yield from _template_strings(yaml.safe_load(node))


def _yaml_documents(tests: bool = True) -> Iterator[Any]:
    files = [
        *REPO.glob("mappings/**/*.yaml"),
        *(REPO.glob("tests/**/*.yaml") if tests else ()),
        *REPO.glob("examples/**/*.yaml"),
    ]
    for path in sorted(files):
        try:
            yield from yaml.safe_load_all(path.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            continue
    for path in sorted(REPO.glob("docs/*.md")):
        text = path.read_text(encoding="utf-8")
        pieces = re.findall(r"```ya?ml\n(.*?)```", text, re.S) + re.findall(r"`([^`\n]*\{[{%][^`\n]*)`", text)
        for piece in pieces:
            try:
                yield yaml.safe_load(piece)
            except yaml.YAMLError:
                yield piece


def corpus_templates(tests: bool = True) -> list[str]:
    """Every template of the repository's mappings, examples and docs, and of its tests unless ``tests`` is
    False."""
    found: dict[str, None] = {}
    for document in _yaml_documents(tests):
        for text in _template_strings(document):
            found.setdefault(text)
    return list(found)


CORPUS = corpus_templates()
WRITTEN = corpus_templates(tests=False)  # as users write them: the tests add Jinja-only constructs on purpose

STATUS = yaml.safe_load((REPO / "mappings/shopify/order.yaml").read_text(encoding="utf-8"))["targets"][
    "order"
]["fields"]["status"]

# Hand-written: each construct of the subset, and the edges around it.
HANDWRITTEN = [
    # lookups, scopes, output
    "{{ this.a }}",
    "{{ this.a.b }}",
    "{{ this['a'] }}",
    "{{ this['items'] }}",
    "{{ this['get'] }}",
    "{{ this.l[0] }}",
    "{{ this.l[-1] }}",
    "{{ this.l[this.n] }}",
    "{{ this[this.s] }}",
    "{{ parent.a }}-{{ root.a }}-{{ index }}",
    "{{ index }}",
    "{{ parent }}",
    "x{{ this.a }}y",
    "{{ this.a }}{{ this.b }}",
    "{{ none }}|{{ true }}|{{ 1.5 }}|{{ [1, 'a', none] }}",
    "{{ this }}",
    "",
    "plain text",
    # operators
    "{{ this.n + 1 }}",
    "{{ this.n - this.m }}",
    "{{ this.n / 2 }}",
    "{{ this.n // 2 }}",
    "{{ this.n * 2 }}",
    "{{ this.s * 3 }}",
    "{{ this.n % 3 }}",
    "{{ this.s % 3 }}",
    "{{ this.n ** 2 }}",
    "{{ -this.n }}",
    "{{ +this.n }}",
    "{{ this.a ~ '-' ~ this.b }}",
    "{{ this.l + [1] }}",
    "{{ this.n > 0 and this.m < 3 }}",
    "{{ this.n or this.m }}",
    "{{ not this.a }}",
    "{{ 0 < this.n <= 3 }}",
    "{{ this.n == this.m }}",
    "{{ this.n != 1 }}",
    "{{ 'a' in this }}",
    "{{ 'a' not in this.l }}",
    "{{ this.a if this.n else this.b }}",
    "{{ 'yes' if this.a else 'no' }}",
    "{{ [this.a, this.b] }}",
    # functions
    "{{ coalesce(this.a, this.b, 'none') }}",
    "{{ coalesce(this.x.y) }}",
    "{{ coalesce(this.l[5], 'gone') }}",
    "{{ coalesce(this['items'], 1) }}",
    "{{ coalesce(this[this.s], 'none') }}",
    "{{ money(this.a) }}",
    "{{ upper(this.s) }}",
    "{{ this.a | money }}",
    "{{ this.a | coalesce('none') }}",
    "{{ count(this.l) }}",
    "{{ sum(this.l) }}",
    # filters
    "{{ this.l | list }}",
    "{{ this.l | length }}",
    "{{ this.s | count }}",
    "{{ this.l | max }}",
    "{{ this.l | min }}",
    "{{ [this.n, this.m] | max }}",
    "{{ this.l | sum }}",
    "{{ this.l | sum(start=10) }}",
    "{{ this.l | sum(attribute='quantity') }}",
    "{{ this.l | sum('quantity', 1) }}",
    "{{ this.l | map(attribute='a') | list }}",
    "{{ this.l | map(attribute='a.b') | list }}",
    "{{ this.l | map(attribute='0') | list }}",
    "{{ this.l | map(attribute='l') | sum(start=[]) }}",
    "{{ this.l | selectattr('a') | list }}",
    "{{ this.l | rejectattr('a') | list }}",
    "{{ this.l | selectattr('a', 'equalto', 1) | list }}",
    "{{ this.l | selectattr('a', '==', this.n) | list }}",
    "{{ this.l | rejectattr('a', 'ne', 'x') | list }}",
    "{{ this.l | selectattr('a', 'gt', 0) | list }}",
    "{{ this.l | selectattr('a', 'number') | list }}",
    "{{ this.l | selectattr('a', 'in', [1, 'x']) | list }}",
    "{{ this.l | select | list }}",
    "{{ this.l | reject('none') | list }}",
    "{{ this.l | join(', ') }}",
    "{{ this.l | join }}",
    "{{ this.l | map(attribute='a') | join('-') }}",
    "{{ this.a | default('d') }}",
    "{{ this.a | default('d', true) }}",
    "{{ this.x.y | default('d') }}",
    "{{ this.s | upper }}",
    "{{ this.s | lower }}",
    "{{ this.s | trim }}",
    "{{ this.l | map(attribute='a') }}",
    # tests
    "{{ this.a is defined }}",
    "{{ this.a is not defined }}",
    "{{ this.a is undefined }}",
    "{{ this.a is none }}",
    "{{ this.a is number }}",
    "{{ this.a is string }}",
    "{{ this.a is boolean }}",
    "{{ this.a is integer }}",
    "{{ this.a is float }}",
    "{{ this.a is mapping }}",
    "{{ this.a is true }}",
    "{{ this.a is eq 1 }}",
    "{{ this.a is in this.l }}",
    "{{ coalesce(this.a) is number }}",
    # statements
    "{% if this.a %}A{% elif this.b %}B{% else %}C{% endif %}",
    "{% if this.a %}A{% endif %}",
    "{% set x = this.a %}{{ x }}{{ x }}",
    "{% set x %}[{{ this.a }}]{% endset %}{{ x }}",
    "{% set x %}{% endset %}{{ x is string }}",
    "{% for i in this.l %}{{ i }},{% endfor %}",
    "{% for i in this.l %}{{ loop.index }}/{{ loop.length }}{% if not loop.last %},{% endif %}{% endfor %}",
    "{% for i in this.l %}{{ loop.index0 }}{{ loop.first }}{{ loop.revindex }}{{ loop.revindex0 }}{% endfor %}",
    "{% for i in this.l %}{% for j in i.l %}{{ loop.index }}{{ j }}{% endfor %}{{ loop.index }}{% endfor %}",
    "{% for i in this.l %}{% set y = i.a %}{{ y }}{% endfor %}",
    "{% for i in this.l %}{% if i %}{% set y = 5 %}{% endif %}{{ y is defined }}{% endfor %}",
    "{% for i in this.l %}{% if i %}{% set y = 5 %}{% endif %}{{ coalesce(y, 'no') }}{% endfor %}",
    "{% for i in this.l %}{% for j in [1, 2] %}{{ m is defined }}{% endfor %}{% set m = 1 %}{% endfor %}",
    "{% for i in this.l %}{{ i }}{% endfor %}{% for i in this.l %}{{ i }}{% endfor %}",
    "{% for i in this.l | selectattr('a') %}{{ i.a }}{% endfor %}",
    "{% for i in this.l | map(attribute='a') %}{{ loop.length }}{{ i }}{% endfor %}",
    "{% for i in this %}{{ i }}{% endfor %}",
    "{% for i in this.s %}{{ i }}{% endfor %}",
    "{% for i in [] %}{{ i }}{% endfor %}",
    "{% if this.a %}{% set y = 1 %}{% endif %}{{ y }}",
    "{{ y }}{% set y = 1 %}",
    "{% set x = this.l | selectattr('a') | list %}{{ x | length }}{{ x | length }}",
    # filters and calls that do not depend on the loop: worked out once per run of the loop
    "{% for i in this.l %}{{ this.l | map(attribute='a') | list }}{{ count(this.l) }}{% endfor %}",
    "{% for i in this.l %}{% if i %}{{ sum(this.l) }}{% endif %}{% endfor %}",
    "{% for i in this.l %}{% for j in [1, 2] %}{{ coalesce(i.a, this.a) }}{{ j }}{% endfor %}{% endfor %}",
    "{% for i in this.l %}{% for j in this.l %}{{ coalesce(j.a) }}{{ coalesce(i.b) }}{% endfor %}{% endfor %}",
    "{% set x = this.a %}{% for i in this.l %}{{ coalesce(x, i) }}{{ coalesce(x) }}{% endfor %}",
    "{% for i in this.l %}{% set y = coalesce(this.a) %}{{ coalesce(y) }}{% endfor %}",
    "{%- set s -%} {%- for l in this.l -%} {{ l }} {%- endfor -%} {%- endset -%} {{- s if s else 'empty' -}}",
    STATUS,
]

# Outside the subset: fast_template must give None, so these always run through Jinja.
REFUSED = [
    "{{ this.items }}",
    "{{ this.get }}",
    "{{ this.keys }}",
    "{{ this.l[1:] }}",
    "{{ {'a': 1} }}",
    "{{ (1, 2) }}",
    "{{ this.s.upper() }}",
    "{{ coalesce }}",
    "{{ loop }}",
    "{{ loop.index }}",
    "{% for i in this.l %}{{ loop.cycle('a', 'b') }}{% endfor %}",
    "{% for i in this.l %}{{ loop.changed(i) }}{% endfor %}",
    "{% for i in this.l %}{% else %}none{% endfor %}",
    "{% for i in this.l if i %}{{ i }}{% endfor %}",
    "{% for a, b in this.l %}{{ a }}{% endfor %}",
    "{% for i in this.l %}{% for i in i.l %}{{ i }}{% endfor %}{% endfor %}",
    "{% set x = 1 %}{% for i in this.l %}{% set x = 2 %}{% endfor %}",
    "{% set t = 0 %}{% for i in this.l %}{% set t = t + i %}{% endfor %}{{ t }}",
    "{% set this = 1 %}{{ this }}",
    "{% set coalesce = 1 %}{{ coalesce }}",
    "{% for this in this.l %}{% endfor %}",
    "{% set x = this.l | selectattr('a') %}{{ x | list }}",
    "{{ this.l | selectattr('a') }}",
    "{{ this.l | map(attribute='a') | length }}",
    "{{ this.l | map('upper') | list }}",
    "{{ this.l | map(attribute='a', default=0) | list }}",
    "{{ this.l | max(attribute='a') }}",
    "{{ this.l | join(', ', attribute='a') }}",
    "{{ this.l | first }}",
    "{{ this.l | select('odd') | list }}",
    "{{ this.l | selectattr('a', 'sameas', 1) | list }}",
    "{{ this.l | selectattr('a', 'equalto') | list }}",
    "{{ this.a is divisibleby 3 }}",
    "{{ this.a is sameas none }}",
    "{{ 'yes' if this.a }}",
    "{{ coalesce(*this.l) }}",
    "{{ coalesce(x=1) }}",
    "{% set x %}{% set y = 1 %}{% endset %}",
    "{% set x | upper %}a{% endset %}",
    "{% macro m() %}{% endmacro %}",
    "{% with x = 1 %}{{ x }}{% endwith %}",
    "{% filter upper %}a{% endfilter %}",
    "{{ x }}",
]


# -- Jinja, the reference, and the fast path ----------------------------------------------------------------


def _compiler() -> ExpressionCompiler:
    functions = FunctionSet(FunctionContext(default_zone=zoneinfo.ZoneInfo("UTC"), lookups={}))
    return ExpressionCompiler(functions, frozenset({"status"}))  # the language cases' lookup table


COMPILER = _compiler()
ENV = COMPILER.env


class Pair:
    """A template compiled both ways: Jinja as production runs it, and the fast path (None if refused)."""

    def __init__(self, text: str) -> None:
        single = SINGLE_EXPRESSION.match(text)
        self.source = single.group("body") if single else text
        self.single = single is not None
        wrapped = "{{" + self.source + "}}" if single else text
        with mock.patch.object(templates, "fast_template", lambda *args: None):
            self.jinja = COMPILER._renderer(self.source, ENV.parse(wrapped), self.single)
        self.fast = fast_template(ENV.parse(wrapped), self.single, ENV.globals, ENV, COMPILER.functions)
        self.text = text

    def check(self, this: Any, parent: Any = None, root: Any = None, index: int | None = None) -> str:
        """'fast' when the fast path gave Jinja's result, 'fallback' when it stepped aside; fails otherwise."""
        assert self.fast is not None
        parent_scope = Scope(parent, None, root) if parent is not None else None
        try:
            expected: Any = self.jinja(Scope(this, parent_scope, root, "", index))
        except (RecursionError, MemoryError):
            raise
        except Exception as error:  # Jinja fails: the fast path must not succeed
            expected = error
        try:
            got = self.fast(this, parent, root, index)
        except Fallback:
            return "fallback"
        assert not isinstance(expected, Exception), (
            f"{self.text!r}: Jinja raised {expected!r}, the fast path gave {got!r}"
        )
        assert same(got, expected), f"{self.text!r} on {this!r}: fast {got!r}, Jinja {expected!r}"
        return "fast"


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (1 is not 1.0 or True), NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[key], b[key]) for key in a)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def _vetted(text: str) -> bool:
    single = SINGLE_EXPRESSION.match(text)
    try:
        ast = ENV.parse("{{" + single.group("body") + "}}" if single else text)
        COMPILER._vet_template(ast, TemplateLines(text, TextPlace(Location("t.yaml", 1, 1, "")), 0), "f")
    except (jinja2.TemplateSyntaxError, CompileError):
        return False
    return True


def _pairs(texts: list[str], *, vet: bool) -> list[Pair]:
    """The templates that compile to the fast path. Found ones must pass the load-time vetting to run at all;
    hand-written ones need not (names set only in an if are load-time errors, but exercise the scoping)."""
    pairs = [Pair(text) for text in texts if _vetted(text) or not vet]
    return [pair for pair in pairs if pair.fast is not None]


CORPUS_PAIRS = _pairs(CORPUS, vet=True)
STATUS_PAIR = Pair(STATUS)
HANDWRITTEN_PAIRS = _pairs(HANDWRITTEN, vet=False)


# -- data ---------------------------------------------------------------------------------------------------


def _json_documents() -> list[Any]:
    documents = []
    for folder in ("real", "derived"):
        for path in sorted((FIXTURES / folder).rglob("*.json")):
            documents.append(json.loads(path.read_text(encoding="utf-8")))
    return documents


def _scopes(document: Any, limit: int = 60) -> list[tuple[Any, Any, Any, int | None]]:
    """(this, parent, root, index) for the document and the objects in it, as eaches and froms would see them."""
    found: list[tuple[Any, Any, Any, int | None]] = [(document, None, document, None)]
    pending: list[tuple[Any, Any]] = [(document, None)]
    while pending and len(found) < limit:
        node, _ = pending.pop(0)
        children: list[tuple[Any, int | None]] = []
        if isinstance(node, dict):
            children = [(value, None) for value in node.values()]
        elif isinstance(node, list):
            children = [(value, position) for position, value in enumerate(node)]
        for child, position in children:
            if isinstance(child, (dict, list)):
                found.append((child, node, document, position))
                pending.append((child, node))
    return found[:limit]


SCOPES = [scope for document in _json_documents() for scope in _scopes(document)]


def _keys_read(texts: list[str]) -> list[str]:
    """Every key the templates read (a.b, a['b'], map(attribute='b')), so generated data has them."""
    keys = {"a", "b", "l", "n", "m", "s", "x", "items", "get", "0"}
    for text in texts:
        try:
            ast = ENV.parse(text)
        except jinja2.TemplateSyntaxError:
            continue
        keys |= {node.attr for node in ast.find_all(jinja2.nodes.Getattr)}
        keys |= {
            node.value
            for node in ast.find_all(jinja2.nodes.Const)
            if isinstance(node.value, str) and re.fullmatch(r"\w+", node.value)
        }
    return sorted(keys)


KEYS = _keys_read(CORPUS + HANDWRITTEN)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.integers(-3, 3)
    | st.integers()
    | st.floats(allow_nan=False)
    | st.sampled_from(["", "x", "A", "b ", "1", "cancel", "14.99", "2020-01-23T10:14:15-05:00"])
    | st.text(max_size=4)
)
JSON_LIKE = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    max_leaves=12,
)
# Each key present about half the time, so a template finds most of what it reads.
THIS = st.fixed_dictionaries({}, optional={key: JSON_LIKE for key in KEYS})

# Shopify-shaped orders for the status template: well formed, or with a wrong type here and there.
QUANTITY = st.integers(0, 5)
LINE = st.fixed_dictionaries(
    {"id": st.integers(1, 4), "quantity": QUANTITY},
    optional={"current_quantity": QUANTITY | st.none() | st.just("2")},
)
REFUND_LINE = st.fixed_dictionaries(
    {
        "line_item_id": st.integers(1, 4),
        "quantity": QUANTITY,
        "restock_type": st.sampled_from(["cancel", "return", "no_restock", None]),
    }
)
REFUND = st.fixed_dictionaries({"refund_line_items": st.lists(REFUND_LINE, max_size=3)})
ORDER = st.fixed_dictionaries(
    {"line_items": st.lists(LINE, max_size=4)},
    optional={
        "refunds": st.lists(REFUND, max_size=3) | st.none(),
        "cancelled_at": st.sampled_from([None, "", "2020-01-23T10:14:15-05:00"]),
    },
)
ODD = st.one_of(JSON_LIKE, ORDER, st.fixed_dictionaries({"line_items": JSON_LIKE, "refunds": JSON_LIKE}))


# -- tests: agreement ---------------------------------------------------------------------------------------


def test_the_corpus_is_found_and_mostly_fast() -> None:
    assert len(CORPUS) >= 30
    assert STATUS in CORPUS
    fast = {pair.text for pair in CORPUS_PAIRS}
    assert len(WRITTEN) >= 30
    # The rest are vetting refusals and Jinja-only constructs.
    assert sum(text in fast for text in WRITTEN) >= len(WRITTEN) // 2


@pytest.mark.parametrize("pair", CORPUS_PAIRS + HANDWRITTEN_PAIRS, ids=lambda pair: pair.text[:60])
def test_agrees_with_jinja_on_the_fixtures(pair: Pair) -> None:
    for this, parent, root, index in SCOPES:
        pair.check(this, parent, root, index)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(this=THIS, parent=THIS | JSON_LIKE, root=THIS, index=st.none() | st.integers(0, 3))
def test_agrees_with_jinja_on_generated_data(this: Any, parent: Any, root: Any, index: int | None) -> None:
    for pair in HANDWRITTEN_PAIRS + CORPUS_PAIRS:
        pair.check(this, parent, root, index)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=ODD)
def test_the_order_templates_agree_on_odd_orders(order: Any) -> None:
    for pair in CORPUS_PAIRS:
        pair.check(order, None, order)
        pair.check({"order": order}, None, None)
        lines = order.get("line_items") if isinstance(order, dict) else None
        for position, line in enumerate(lines if isinstance(lines, list) else []):
            pair.check(line, order, order, position)


@settings(max_examples=200, deadline=None)
@given(order=ORDER)
def test_the_status_template_is_fast_on_well_formed_orders(order: dict[str, Any]) -> None:
    kinds_of_current = {type(line.get("current_quantity")) for line in order["line_items"]}
    outcome = STATUS_PAIR.check(order, None, order)
    if str not in kinds_of_current:  # "2" - 1 is Jinja's TypeError, which the fast path leaves to Jinja
        assert outcome == "fast"


def test_handwritten_templates_cover_each_construct_on_the_fast_path() -> None:
    refused = [text for text in HANDWRITTEN if Pair(text).fast is None]
    # Only the templates written to show the edges of the subset may be refused.
    assert refused == ["{{ this.l | map(attribute='a') }}"]


# -- tests: the ready mapping's status template -------------------------------------------------------------


@pytest.mark.parametrize("path", SHOPIFY_ORDERS, ids=lambda path: path.name)
def test_the_status_template_runs_fast_on_the_real_shopify_orders(path: Path) -> None:
    assert STATUS_PAIR.fast is not None, "the status template must compile to the fast path"
    document = json.loads(path.read_text(encoding="utf-8"))
    this = document.get("order", document)  # the target's from: "order || @"
    parent = document if this is not document else None
    assert STATUS_PAIR.check(this, parent, document) == "fast"


def test_the_ready_mappings_give_the_same_payloads_with_and_without_the_fast_path() -> None:
    paths = sorted(FIXTURES.glob("real/shopify/*.json")) + sorted(FIXTURES.glob("derived/shopify/*.json"))
    documents = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
    for name in ("shopify/order", "shopify/order_cancelled", "shopify/fulfillment"):
        fast = engine.load_mapping(name)
        with mock.patch.object(templates, "fast_template", lambda *args: None):
            slow = engine.load_mapping(name)
        for document in documents:
            assert _outcome(fast.transform, document) == _outcome(slow.transform, document)


def _outcome(transform: Callable[..., Any], document: Any) -> Any:
    try:
        return transform(document, validate=False)
    except engine.ShipmapError as error:
        return error.render()


def test_a_fallback_gives_jinjas_value_or_jinjas_error() -> None:
    mapping_text = (
        "shipmap: 1\ntargets:\n  t:\n    kind: fenix.order\n    fields:\n"
        "      a: '{{ this.a.b }}'\n      n: 'n={{ this.n + 1 }}'\n"
    )
    fast = engine.parse_mapping(mapping_text, file="t.yaml")
    with mock.patch.object(templates, "fast_template", lambda *args: None):
        slow = engine.parse_mapping(mapping_text, file="t.yaml")
    for given_ in (
        {"a": {"b": [1]}, "n": 1},
        {"a": {}, "n": 1},
        {"a": None, "n": 1},
        {"a": {"b": 2}, "n": "x"},
    ):
        assert _outcome(fast.transform, given_) == _outcome(slow.transform, given_)
    assert "can only concatenate str" in str(_outcome(fast.transform, {"a": {"b": 2}, "n": "x"}))


# -- tests: the subset's edges and its safety ---------------------------------------------------------------


@pytest.mark.parametrize("text", REFUSED)
def test_outside_the_subset_is_left_to_jinja(text: str) -> None:
    single = SINGLE_EXPRESSION.match(text)
    ast = ENV.parse("{{" + single.group("body") + "}}" if single else text)
    assert fast_template(ast, single is not None, ENV.globals, ENV, COMPILER.functions) is None


def test_dict_methods_stay_dict_methods() -> None:
    # The sandbox's getattr prefers the attribute; getitem prefers the key. Both ways agree with Jinja.
    pair = Pair("{{ this['items'] }}")
    assert pair.check({"items": 3}) == "fast"
    assert pair.check({}) == "fallback"
    assert Pair("{{ coalesce(this['items'], 1) }}").check({}) == "fallback"
    dynamic = Pair("{{ coalesce(this[this.s], 1) }}")
    assert dynamic.check({"s": "items"}) == "fallback"
    assert dynamic.check({"s": "zz"}) == "fast"


def test_fallbacks_where_jinja_decides() -> None:
    expectations = {
        "{{ this.a }}": [({"a": 1}, "fast"), ({}, "fast"), ({"a": None}, "fast"), ([], "fallback")],
        "x{{ this.a }}": [({}, "fallback"), ({"a": None}, "fast")],
        "{{ this.a.b }}": [
            ({}, "fallback"),
            ({"a": None}, "fallback"),
            ({"a": {}}, "fast"),
            ({"a": {"b": 1}}, "fast"),
        ],
        "{{ this.l | max }}": [
            ({"l": []}, "fallback"),
            ({"l": ["a", "B"]}, "fallback"),
            ({"l": [2, 1.5]}, "fast"),
        ],
        "{{ this.l | sum }}": [({"l": [1, "2"]}, "fallback"), ({"l": (1, 2)}, "fallback")],
        "{% for i in this.l %}{{ i }}{% endfor %}": [
            ({"l": "ab"}, "fallback"),
            ({"l": {"a": 1}}, "fallback"),
        ],
        "{{ this.n * 2 }}": [({"n": 2}, "fast"), ({"n": "ab" * 300_000}, "fallback")],
        "{{ this.a ~ this.b }}": [
            ({"a": "x" * 999_999, "b": "yy"}, "fallback"),
            ({"a": 1, "b": None}, "fast"),
        ],
    }
    for text, cases in expectations.items():
        pair = Pair(text)
        for this, outcome in cases:
            assert pair.check(this) == outcome, (text, this)


def test_single_expressions_keep_their_type_and_text_is_text() -> None:
    single = Pair("{{ this.n }}").fast
    assert single is not None
    assert single({"n": 5}, None, None, None) == 5
    fast = Pair("{{ this.l | map(attribute='a') | list }}").fast
    assert fast is not None
    assert fast({"l": [{"a": 1}, {"a": "x"}]}, None, None, None) == [1, "x"]
    text = Pair("{{ this.n }}{{ this.z }}").fast
    assert text is not None
    assert text({"n": 1.0, "z": None}, None, None, None) == "1.0None"


def test_generated_source_holds_no_text_from_the_template() -> None:
    marker = (
        "{% set evil_name = this.marker_key ~ 'marker_text\\\")\\nimport os #' %}{{ evil_name }}{{ 12345 }}"
    )
    source = _Generator(ENV, ENV.globals).template(ENV.parse(marker), False)
    for fragment in ("evil_name", "marker_key", "marker_text", "import os", "12345", "this."):
        assert fragment not in source
    fast = fast_template(ENV.parse(marker), False, ENV.globals, ENV, COMPILER.functions)
    assert fast is not None
    assert fast({"marker_key": "k"}, None, None, None) == 'kmarker_text")\nimport os #12345'


def test_loop_invariant_work_is_done_once_per_run_of_the_loop() -> None:
    source = _Generator(ENV, ENV.globals, COMPILER.functions).template(ENV.parse(STATUS), False)
    # The order's refund lines are gathered once, not once per line item.
    assert re.search(r"\((_m\d+) if \1 is not _M else \(\1 := _sum\(_map\(", source), source
    nested = Pair("{% for i in this.l %}{% for j in [1, 2] %}{{ coalesce(i.a, 0) }}{% endfor %}{% endfor %}")
    assert nested.check({"l": [{"a": 1}, {"a": 2}, {}]}) == "fast"
    assert nested.fast is not None and nested.fast({"l": [{"a": 1}, {"a": 2}]}, None, None, None) == "1122"


def test_the_generated_code_has_no_builtins() -> None:
    fast = fast_template(ENV.parse("{{ this.a }}"), True, ENV.globals, ENV, COMPILER.functions)
    assert fast is not None
    assert fast.__globals__["__builtins__"] == {}
