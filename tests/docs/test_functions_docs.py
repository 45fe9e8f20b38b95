"""docs/functions.md names exactly the builtins that engine/_functions.py registers, and exactly the ones a
template can use as filters, so the page cannot drift from the code."""

from __future__ import annotations

import re
import zoneinfo
from pathlib import Path

from markdown_support import github_anchor
from shipmap.engine._functions import FunctionContext, FunctionSet
from shipmap.engine._templates import TemplateCompiler

PAGE = (Path(__file__).parents[2] / "docs" / "functions.md").read_text(encoding="utf-8")
FUNCTIONS = FunctionSet(FunctionContext(default_zone=zoneinfo.ZoneInfo("UTC"), lookups={}))
SIGNATURES = {spec.signature for spec in FUNCTIONS.specs.values()}


def _table_after(header: str) -> list[str]:
    """The body rows of the Markdown table whose header row starts with ``header``."""
    lines = PAGE.split("\n" + header, 1)[1].splitlines()[2:]  # the rest of the header row, then |---|
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append(line)
    assert rows, f"no rows under the table {header!r}"
    return rows


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def _names(cell: str) -> list[str]:
    return re.findall(r"`([a-z_]+)`", cell)


def _differ(documented: list[str], registered: set[str]) -> str:
    repeated = sorted({name for name in documented if documented.count(name) > 1})
    return (
        f"documented but not registered: {sorted(set(documented) - registered)}; "
        f"registered but not documented: {sorted(registered - set(documented))}; documented twice: {repeated}"
    )


def _registered_filters() -> set[str]:
    # The environment the mapping compiler builds: a builtin is a filter there when the filter of its name is
    # the builtin itself (Jinja's own filters keep their names).
    env = TemplateCompiler(FUNCTIONS, frozenset()).env
    return {name for name, function in FUNCTIONS.jinja_globals.items() if env.filters.get(name) is function}


def test_the_function_table_lists_every_registered_function_once() -> None:
    links = re.findall(r"\[`([^`]+)`\]\(#([^)]+)\)", "\n".join(_table_after("| Function | Gives |")))
    documented = [signature for signature, _anchor in links]
    assert sorted(documented) == sorted(SIGNATURES), _differ(documented, SIGNATURES)


def test_every_link_of_the_function_table_leads_to_its_section() -> None:
    links = re.findall(r"\[`([^`]+)`\]\(#([^)]+)\)", "\n".join(_table_after("| Function | Gives |")))
    assert links
    for signature, anchor in links:
        assert f"\n### `{signature}`\n" in PAGE, signature
        assert anchor == github_anchor(f"`{signature}`"), signature


def test_every_function_section_is_a_registered_function() -> None:
    documented = re.findall(r"^### `([^`]+)`$", PAGE, re.M)
    assert sorted(documented) == sorted(SIGNATURES), _differ(documented, SIGNATURES)


def test_the_filter_table_lists_exactly_the_registered_filters() -> None:
    [row] = _table_after("| shipmap filters |")
    filters_cell, functions_only_cell = _cells(row)
    registered = _registered_filters()
    assert len(registered) > 10  # the environment was read, not an empty one
    documented_filters = _names(filters_cell)
    assert sorted(documented_filters) == sorted(registered), _differ(documented_filters, registered)
    functions_only = set(FUNCTIONS.names) - registered
    documented_functions_only = _names(functions_only_cell)
    assert sorted(documented_functions_only) == sorted(functions_only), _differ(
        documented_functions_only, functions_only
    )


def test_a_name_left_to_jinja_runs_jinjas_filter() -> None:
    # Why the "functions only" column exists: the filter of that name is Jinja's, not the builtin.
    env = TemplateCompiler(FUNCTIONS, frozenset()).env
    assert env.from_string("{{ 2.5 | round }}").render() == "2.0"  # Jinja's: half to even, a float
    assert env.from_string("{{ round(2.5) }}").render() == "3"  # shipmap's: half away from zero
    assert env.from_string("{{ 1999 | from_minor('USD') }}").render() == "19.99"
