"""Every template has a budget (issue 13, class 3): nested loops that would run 10^12 times, or output past
a million characters, are a located error of that field, in preview as in run, on both template paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import shipmap.engine._templates as templates
from shipmap.connectors._cli import main
from shipmap.engine import TransformError, parse_mapping
from shipmap.engine._template_fast import Fallback, fast_template

FOUR_LOOPS = (
    "{% for a in this.lines %}{% for b in this.lines %}{% for c in this.lines %}{% for d in this.lines %}"
    "x{% endfor %}{% endfor %}{% endfor %}{% endfor %}"
)
# loop.length: not in the fast path's subset, so Jinja itself runs this one.
TWO_LOOPS_JINJA = (
    "{% for a in this.lines %}{% for b in this.lines %}{{ loop.length }}{% endfor %}{% endfor %}"
)
BIG_OUTPUT = "{% for a in this.lines %}{{ this.text }}{% endfor %}"

MAPPING = """shipmap: 1
name: budget
targets:
  out:
    kind: dg.execution
    fields:
      action_id: {literal: a}
      external_id: '%s'
      inputs:
        shipment_data: {literal: {}}
"""


@pytest.mark.parametrize(
    ("template", "lines", "message"),
    [
        (FOUR_LOOPS, 1000, "more than 100,000 loop iterations"),
        (TWO_LOOPS_JINJA, 1000, "more than 100,000 loop iterations"),
        (BIG_OUTPUT, 200, "longer than 1,000,000 characters"),
    ],
)
def test_a_template_over_its_budget_is_a_located_error_and_small_inputs_still_map(
    template: str, lines: int, message: str
) -> None:
    mapping = parse_mapping(MAPPING % template, file="budget.yaml")
    with pytest.raises(TransformError) as caught:
        mapping.transform({"lines": list(range(lines)), "text": "y" * 9000}, validate=False)
    assert message in caught.value.message
    assert caught.value.field == "out.external_id" and caught.value.line == 8
    small = mapping.transform({"lines": [1, 2], "text": "y"}, validate=False)
    assert small["out"]["external_id"]


def test_preview_reports_the_budget_error_with_its_location(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "budget.yaml").write_text(MAPPING % FOUR_LOOPS)
    (tmp_path / "source.json").write_text(json.dumps({"lines": list(range(1000))}))
    code = main(["preview", str(tmp_path / "budget.yaml"), str(tmp_path / "source.json")])
    err = capsys.readouterr().err
    assert code != 0 and "budget.yaml:8:" in err and "loop iterations (its budget)" in err
    assert "Traceback" not in err


# In the fast path's subset; an item it does not handle (a number given to upper) hands the document to Jinja.
ONE_LOOP_FAST = "{% for a in this.lines %}{{ a | upper }}{% endfor %}"


def test_a_document_the_fast_path_hands_to_jinja_midway_has_the_whole_budget_in_jinja(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fast path charged 60,001 iterations before it met the number; Jinja runs the loop again from the
    start and charges 60,001 to a budget of its own, not to the 39,999 left (which was over budget before)."""
    seen = {"fast": 0, "fallbacks": 0}

    def counted(*args: Any, **kwargs: Any) -> Any:
        fast = fast_template(*args, **kwargs)
        if fast is None:
            return None
        seen["fast"] += 1

        def run(*data: Any) -> Any:
            try:
                return fast(*data)
            except Fallback:
                seen["fallbacks"] += 1
                raise

        return run

    monkeypatch.setattr(templates, "fast_template", counted)
    mapping = parse_mapping(MAPPING % ONE_LOOP_FAST, file="budget.yaml")
    assert seen["fast"] == 1, "the template must be in the fast path's subset for this test to mean anything"
    mapped = mapping.transform({"lines": ["a"] * 60_000 + [5]}, validate=False)
    assert mapped["out"]["external_id"] == "A" * 60_000 + "5"
    assert seen["fallbacks"] == 1
    with pytest.raises(TransformError) as caught:  # over the budget on its own, in Jinja as in the fast path
        mapping.transform({"lines": ["a"] * 100_000 + [5]}, validate=False)
    assert "more than 100,000 loop iterations" in caught.value.message
