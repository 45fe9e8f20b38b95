"""Issue 7, part 4: hostile mappings are refused with a clear error that names the right line.

Templates: attribute walks to Python internals, the Jinja globals that lead to ``os``/``sys``, resource
exhaustion, recursion. YAML: Python tags, alias bombs, recursive aliases, gigantic values, deep nesting.
Each case asserts the error class, the message and the line (and column where it is exact).
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from harness import shipmap_command
from shipmap.connectors._cli import main
from shipmap.engine import (
    CompileError,
    MappingError,
    MappingSyntaxError,
    ShipmapError,
    TransformError,
    parse_mapping,
)

FILE = "hostile.yaml"
FIELD_LINE = 8  # the line of `external_id:` in BASE, where every hostile value goes
BASE = """\
shipmap: 1
name: hostile
targets:
  notify:
    kind: dg.execution
    fields:
      action_id: {literal: flow-1}
      external_id: %s
      inputs:
        external_id: {literal: e-1}
        shipment_data:
          order_id: {literal: o-1}
          shipment_id: {literal: s-1}
          tracking_number: {literal: t-1}
          carrier_code: {literal: ups}
          items: {literal: []}
"""
SOURCE = {"x": 1, "name": "Ada"}


def hostile(value: str) -> str:
    return BASE % value


def refusal(text: str) -> MappingError:
    with pytest.raises(MappingError) as caught:
        parse_mapping(text, file=FILE)
    error = caught.value
    assert error.file == FILE
    return error


def test_the_base_mapping_is_fine() -> None:
    payload = parse_mapping(hostile('"{{ this.name }}-{{ this.x }}"'), file=FILE).transform(SOURCE)
    assert payload["notify"]["external_id"] == "Ada-1"


# --- templates that reach for Python internals, or for globals that lead there: refused at load -----------

REFUSED_AT_LOAD = [
    ("{{ ''.__class__.__mro__ }}", r"refused: the template reaches for '__(mro|class)__'"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", r"refused: the template reaches for '__\w+__'"),
    ("{{ this.__init__.__globals__ }}", r"refused: the template reaches for '__(globals|init)__'"),
    ("{{ cycler.__init__.__globals__.os }}", r"refused: the template reaches for '__(globals|init)__'"),
    ("{{ this['__class__'] }}", r"refused: the template reaches for '__class__'"),
    ("{{ self._TemplateReference__context }}", r"refused: the template reaches for '_TemplateReference"),
    ("{% for x in [1] %}{{ loop.cycle.__globals__ }}{% endfor %}", r"refused: .*'__globals__'"),
    ("{{ lipsum }}", r"undefined name 'lipsum'"),
    ("{{ lipsum.__globals__['os'] }}", r"refused: .*'__globals__'|undefined name 'lipsum'"),
    ("{{ cycler }}", r"undefined name 'cycler'"),
    ("{{ joiner }}", r"undefined name 'joiner'"),
    # namespace() is available (accumulating in a loop), its internals are not
    ("{{ namespace(a=1).__class__ }}", r"refused: .*'__class__'"),
    ("{% set ns = namespace() %}{% set ns.__dict__ = 1 %}{{ ns }}", r"refused|cannot assign|__dict__"),
    ("{{ config }}", r"undefined name 'config'"),
    ("{{ request }}", r"undefined name 'request'"),
    ("{{ os.system('id') }}", r"undefined name 'os'"),
    ("{{ sys.modules }}", r"undefined name 'sys'"),
    ("{{ range(10**9) }}", r"undefined name 'range'"),
    ("{% for x in range(10**9) %}x{% endfor %}", r"undefined name 'range'"),
    ("{{ dict(a=1) }}", r"undefined name 'dict'"),
    ("{{ this | nosuchfilter }}", r"unknown filter 'nosuchfilter'"),
]


@pytest.mark.parametrize(("template", "message"), REFUSED_AT_LOAD, ids=[t for t, _ in REFUSED_AT_LOAD])
def test_template_reaching_for_python_is_refused_at_load(template: str, message: str) -> None:
    error = refusal(hostile(f'"{template}"'))
    assert isinstance(error, CompileError)
    assert error.line == FIELD_LINE
    assert error.field == "notify.external_id"
    assert error.column == 20  # the value, after `external_id: `
    assert error.message and re.search(message, error.message), error.render()
    assert f"{FILE}:{FIELD_LINE}:" in error.render()


def test_self_is_refused_at_load() -> None:
    error = refusal(hostile('"{{ self }}"'))
    assert isinstance(error, CompileError)
    assert error.line == FIELD_LINE
    assert "self" in error.message


# --- templates that would exhaust memory or time: refused at run time, before they allocate ----------------

REFUSED_AT_RUN = [
    ("{{ 'a' * 10**9 }}", r"refused by the sandbox: repetition would exceed a million items"),
    ("{{ [1] * 10**9 }}", r"refused by the sandbox: repetition would exceed a million items"),
    ("{{ 10 ** 100 ** 100 }}", r"refused by the sandbox: exponent 100 is too large"),  # Jinja: (10**100)**100
    ("{{ 2 ** 100000 }}", r"refused by the sandbox: exponent 100000 is too large"),
    ("{{ '{0.__class__}'.format(this) }}", r"refused by the sandbox: str.format is not available"),
    ("{% import 'os' as os %}", r"no loader"),
    ("{% include '/etc/passwd' %}", r"no loader"),
    ("{% extends '/etc/passwd' %}", r"no loader"),
]


@pytest.mark.parametrize(("template", "message"), REFUSED_AT_RUN, ids=[t for t, _ in REFUSED_AT_RUN])
def test_template_exhausting_resources_is_refused_at_run_time(template: str, message: str) -> None:
    mapping = parse_mapping(hostile(f'"{template}"'), file=FILE)
    tracemalloc.start()
    try:
        with pytest.raises(TransformError) as caught:
            mapping.transform(SOURCE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    error = caught.value
    # The sandbox's own refusal (the message), before it allocated: no gigabyte string or list.
    assert re.search(message, error.message), error.render()
    assert error.line == FIELD_LINE
    assert error.field == "notify.external_id"
    assert peak < 50 * 1024 * 1024


# The `*` bound (a million items) is the engine's own line. These build strings past it through filters and
# string formatting, which the bound does not see. Kept at ~2-3 million characters so the test is cheap; with
# 10**9 instead each one allocates a gigabyte (measured: center(10**9) peaks at 1000 MB in 3 s; a replace of
# 20000 chars by 20000 chars peaks at 400 MB; with 10**5 each it would want 10 GB).
AMPLIFIERS = [
    "{{ 'a' | center(2000000) }}",
    "{{ 'a\\na' | indent(2000000) }}",
    "{{ '%2000000d' | format(1) }}",
    "{{ '{:>2000000}'.format(1) }}",
    "{{ ('a' * 2000) | replace('a', 'a' * 1000) }}",
    "{% set a = 'a' * 999999 %}{{ a ~ a ~ a }}",
]


@pytest.mark.parametrize("template", AMPLIFIERS)
def test_template_amplifying_a_string_past_the_bound_is_refused(template: str) -> None:
    # Refused at load (the format filter does not exist in mappings) or at run time, at the field's line.
    with pytest.raises((CompileError, TransformError)) as caught:
        parse_mapping(hostile(f'"{template}"'), file=FILE).transform(SOURCE)
    assert caught.value.line == FIELD_LINE
    assert "refused" in caught.value.message or "unknown filter 'format'" in caught.value.message


def test_chained_powers_are_refused_at_run_time() -> None:
    mapping = parse_mapping(hostile('"{{ ((10 ** 64) ** 64) ** 2 }}"'), file=FILE)
    with pytest.raises(TransformError) as caught:
        mapping.transform(SOURCE)
    assert caught.value.line == FIELD_LINE


RECURSIVE = [
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "{% for x in [1] recursive %}{{ loop([x]) }}{% endfor %}",
]


@pytest.mark.parametrize("template", RECURSIVE)
def test_template_recursing_without_end_is_a_transform_error(template: str) -> None:
    mapping = parse_mapping(hostile(f'"{template}"'), file=FILE)
    with pytest.raises(ShipmapError) as caught:
        mapping.transform(SOURCE)
    assert caught.value.line == FIELD_LINE


DEEP_EXPRESSIONS = [
    '"{{ ' + "(" * 2000 + "1" + ")" * 2000 + ' }}"',  # a template expression nested 2000 deep
    '"' + "(" * 2000 + "x" + ")" * 2000 + '"',  # a JMESPath expression nested 2000 deep
    '"' + "[" * 1000 + "x" + "]" * 1000 + '"',
]


@pytest.mark.parametrize(
    "value", DEEP_EXPRESSIONS, ids=["jinja-parens", "jmespath-parens", "jmespath-brackets"]
)
def test_deeply_nested_expression_is_a_compile_error(value: str) -> None:
    error = refusal(hostile(value))
    assert isinstance(error, CompileError)
    assert error.line == FIELD_LINE


# --- YAML ----------------------------------------------------------------------------------------------------

YAML_TAGS = [
    ("!!python/object/apply:os.system ['echo pwned']", "!!python/object/apply:os.system"),
    ("!!python/name:os.system", "!!python/name:os.system"),
    ("!!python/object/new:subprocess.Popen [['id']]", "!!python/object/new:subprocess.Popen"),
    ("!!python/module:os", "!!python/module:os"),
    ("!<tag:yaml.org,2002:python/object:os.system> {}", "!!python/object:os.system"),
    ("!!binary aGVsbG8=", "!!binary"),
    ("!!set {a, b}", "!!set"),
    ("!shipmap/env HOME", "!shipmap/env"),
]


@pytest.mark.parametrize(("value", "tag"), YAML_TAGS, ids=[t for _, t in YAML_TAGS])
def test_yaml_tags_are_refused_where_they_are_written(value: str, tag: str) -> None:
    error = refusal(hostile(value))
    assert isinstance(error, MappingSyntaxError)
    assert error.message == f"YAML tag {tag} is not allowed in a mapping file (only plain JSON-like data is)"
    assert (error.line, error.column) == (FIELD_LINE, 20)


def test_yaml_tag_on_a_key_is_refused() -> None:
    text = "shipmap: 1\nname: x\n!!python/object:os.system targets: {}\n"
    error = refusal(text)
    assert isinstance(error, MappingSyntaxError)
    assert "!!python/object:os.system" in error.message
    assert error.line == 3


def test_merge_keys_are_refused() -> None:
    text = hostile("{literal: a}") + "fragments:\n  base: &b {sku: sku}\n  other:\n    <<: *b\n"
    error = refusal(text)
    assert isinstance(error, MappingSyntaxError)
    assert "merge keys (<<) are not supported" in error.message
    assert error.line == BASE.count("\n") + 4


def billion_laughs(levels: int = 9) -> tuple[str, range]:
    lines = ["lol0: &lol0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for n in range(1, levels):
        lines.append(f"lol{n}: &lol{n} [" + ", ".join([f"*lol{n - 1}"] * 9) + "]")
    head = "shipmap: 1\nname: bomb\nlookups:\n  bomb:\n    map:\n"
    body = "".join(f"      {line}\n" for line in lines)
    first = head.count("\n") + 1
    return head + body + "targets: {}\n", range(first, first + levels)


def test_billion_laughs_is_refused_quickly() -> None:
    text, bomb_lines = billion_laughs()
    assert len(text) < 1000  # 9**9 = 387 million nodes if expanded
    error = refusal(text)
    assert isinstance(error, MappingSyntaxError)
    # Refused at the node count's limit, before the expansion: it says so, not how long it took.
    assert error.message == "YAML expands to more than 200000 nodes (an alias bomb?)"
    assert error.line in bomb_lines


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("shipmap: 1\nname: &a [*a]\ntargets: {}\n", 2),
        ("shipmap: 1\nname: x\nlookups: &a {t: {map: *a}}\ntargets: {}\n", 3),
        ("shipmap: 1\nname: x\nfragments:\n  f: &f\n    g: *f\ntargets: {}\n", 4),
    ],
    ids=["sequence", "mapping", "block"],
)
def test_recursive_aliases_are_refused(text: str, line: int) -> None:
    error = refusal(text)
    assert isinstance(error, MappingSyntaxError)
    assert error.message == "YAML is nested deeper than 64 levels"
    assert error.line == line


def test_a_100_mb_string_is_refused_by_size() -> None:
    text = "shipmap: 1\nname: x\ndescription: " + "a" * (100 * 1024 * 1024) + "\ntargets: {}\n"
    error = refusal(text)
    assert isinstance(error, MappingSyntaxError)
    # Refused by its size before it was parsed: the size check's message, at the file's start.
    assert error.message == "mapping file is larger than 2 MiB"
    assert (error.line, error.column) == (1, 1)  # the whole file is the problem


@pytest.mark.parametrize("quote", ["", '"', "'"], ids=["plain", "double-quoted", "single-quoted"])
def test_a_gigantic_value_within_the_file_limit_is_refused_at_its_line(quote: str) -> None:
    text = f"shipmap: 1\nname: x\ndescription: {quote}" + "a" * 1_500_000 + f"{quote}\ntargets: {{}}\n"
    error = refusal(text)
    assert isinstance(error, MappingSyntaxError)
    assert error.message == "a value longer than 100000 characters"
    assert (error.line, error.column) == (3, 14)


def test_a_gigantic_template_within_the_value_limit_still_compiles_and_renders_bounded() -> None:
    template = "{{ this.x }}" * 4000  # 48,000 characters: under the value limit
    mapping = parse_mapping(hostile(f'"{template}"'), file=FILE)
    assert mapping.transform(SOURCE)["notify"]["external_id"] == "1" * 4000


DEEP_YAML = [
    ("flow-sequence", "[" * 10_000 + "]" * 10_000),
    ("flow-mapping", "{a: " * 10_000 + "1" + "}" * 10_000),
]


@pytest.mark.parametrize(("shape", "value"), DEEP_YAML, ids=[s for s, _ in DEEP_YAML])
def test_10000_levels_of_nesting_are_refused(shape: str, value: str) -> None:
    error = refusal(f"shipmap: 1\nname: x\ndescription: {value}\ntargets: {{}}\n")
    assert isinstance(error, MappingSyntaxError)
    assert error.message == "YAML is nested too deeply"  # the depth limit's own refusal


@pytest.mark.parametrize(("shape", "value"), DEEP_YAML, ids=[s for s, _ in DEEP_YAML])
def test_10000_levels_of_nesting_are_refused_at_their_line(shape: str, value: str) -> None:
    error = refusal(f"shipmap: 1\nname: x\ndescription: {value}\ntargets: {{}}\n")
    assert error.line == 3


def test_65_levels_of_nesting_are_refused_at_the_level_that_breaks_the_limit() -> None:
    error = refusal("shipmap: 1\nname: x\ndescription: " + "[" * 65 + "]" * 65 + "\ntargets: {}\n")
    assert isinstance(error, MappingSyntaxError)
    assert error.message == "YAML is nested deeper than 64 levels"
    assert error.line == 3


def test_duplicate_keys_are_refused_at_the_second() -> None:
    error = refusal("shipmap: 1\nname: x\nname: y\ntargets: {}\n")
    assert isinstance(error, MappingSyntaxError)
    assert error.message == "duplicate key 'name' (first written at line 2)"
    assert error.line == 3


# --- the command line: the same refusals, never a traceback ---------------------------------------------------


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


HOSTILE_FILES: list[tuple[str, Any]] = [
    ("mro", hostile("\"{{ ''.__class__.__mro__ }}\"")),
    ("cycler-os", hostile('"{{ cycler.__init__.__globals__.os }}"')),
    ("range", hostile('"{% for x in range(10**9) %}x{% endfor %}"')),
    ("python-tag", hostile("!!python/object/apply:os.system ['echo pwned']")),
    ("recursive-alias", "shipmap: 1\nname: &a [*a]\ntargets: {}\n"),
]


@pytest.mark.parametrize(("name", "text"), HOSTILE_FILES, ids=[n for n, _ in HOSTILE_FILES])
def test_validate_and_preview_refuse_hostile_files_with_exit_code_2(
    tmp_path: Path, name: str, text: str
) -> None:
    mapping = tmp_path / f"{name}.yaml"
    mapping.write_text(text, encoding="utf-8")
    source = tmp_path / "source.json"
    source.write_text('{"x": 1}', encoding="utf-8")
    for args in (("validate", str(mapping)), ("preview", str(mapping), str(source))):
        code, out, err = _cli(*args)
        assert code == 2, (args, out, err)
        assert "Traceback" not in out + err
        assert f"{name}.yaml:" in err and ": error: " in err
        assert out == ""


def test_a_real_shipmap_process_refuses_a_python_tag(tmp_path: Path) -> None:
    mapping = tmp_path / "tag.yaml"
    mapping.write_text(hostile("!!python/object/apply:os.system ['touch pwned']"), encoding="utf-8")
    done = subprocess.run(
        [*shipmap_command(), "validate", str(mapping)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stdout + done.stderr
    assert (
        f"tag.yaml:{FIELD_LINE}:20: error: YAML tag !!python/object/apply:os.system is not allowed"
        in done.stderr
    )
    assert not (tmp_path / "pwned").exists()
