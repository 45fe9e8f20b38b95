"""Every snippet of docs/recipes.md runs: each mapping compiles, maps its event, and gives exactly the payloads
the page shows, and a complete recipe's payloads are valid for their kinds. The page's blocks are tagged
```yaml recipe:NAME, ```json event:NAME, ```json payloads:NAME."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from shipmap.connectors._cli import main
from shipmap.engine import parse_mapping

PAGE = Path(__file__).parents[2] / "docs" / "recipes.md"
BLOCK = re.compile(r"```(?:yaml|json) (recipe|event|payloads):(\w+)\n(.*?)```", re.S)


def _recipes() -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for role, name, body in BLOCK.findall(PAGE.read_text(encoding="utf-8")):
        assert role not in found.setdefault(name, {}), f"two {role} blocks for {name}"
        found[name][role] = body
    return found


RECIPES = _recipes()
# Recipes that map every field their kinds require, so a reader can copy them as they stand; the others show
# only the fields they are about.
COMPLETE = ["joins"]


def test_the_page_has_every_recipe_the_issue_asks_for() -> None:
    assert set(RECIPES) == {"joins", "fanout", "totals", "parents", "zones", "names"}
    # Every fenced block on the page is one of them: nothing shown goes untested.
    assert PAGE.read_text(encoding="utf-8").count("```") == 2 * 3 * len(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_maps_its_event_to_the_payloads_shown(name: str) -> None:
    recipe = RECIPES[name]
    assert set(recipe) == {"recipe", "event", "payloads"}, name
    mapping = parse_mapping(recipe["recipe"], file=f"docs/recipes.md ({name})")
    result = mapping.transform(json.loads(recipe["event"]), validate=False)
    assert json.dumps(result, sort_keys=True) == json.dumps(json.loads(recipe["payloads"]), sort_keys=True)


@pytest.mark.parametrize("name", COMPLETE)
def test_complete_recipe_gives_payloads_its_kinds_accept(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = RECIPES[name]
    mapping = parse_mapping(recipe["recipe"], file=f"docs/recipes.md ({name})")
    kinds = {target.name: target.kind for target in mapping.targets}
    outputs = mapping.outputs(json.loads(recipe["event"]), validate=False)
    assert [output.label for output in outputs] == list(json.loads(recipe["payloads"]))
    for output in outputs:
        assert kinds[output.target].problems(output.payload) == [], output.label
    # What a reader who copies the mapping runs first: no unknown field, nothing required left unmapped.
    copied = tmp_path / f"{name}.yaml"
    copied.write_text(recipe["recipe"], encoding="utf-8")
    assert main(["validate", "--strict", str(copied)]) == 0
    out, err = capsys.readouterr()
    targets = ", ".join(f"{target} -> {kind.name}" for target, kind in kinds.items())
    assert out == f"ok {copied} ({targets})\n"
    assert err == ""
