"""The editor schema (``shipmap schema --editor|--write``): each kind's target fields, a description on every
node, every ready mapping valid against it, and a misspelled field invalid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from shipmap.connectors._cli import main
from shipmap.engine import builtin_kinds
from shipmap.engine._editor_schema import editor_schema

ROOT = Path(__file__).resolve().parents[2]
READY = sorted(p for p in (ROOT / "mappings").glob("*/*.yaml") if not p.name.endswith(".cases.yaml"))
ORDER = (ROOT / "mappings/shopify/order.yaml").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = editor_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", READY, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_ready_mapping_is_valid(path: Path, validator: jsonschema.Draft202012Validator) -> None:
    problems = [
        error.message for error in validator.iter_errors(yaml.safe_load(path.read_text(encoding="utf-8")))
    ]
    assert problems == []


@pytest.mark.parametrize(
    ("original", "typo", "message"),
    [
        ("      number: name", "      numbr: name", "'numbr' was unexpected"),  # a target field
        ("          code: code", "          cod: code", "'cod' was unexpected"),  # inside a spec's fields:
        ("        total_tax:", "        totl_tax:", "'totl_tax' was unexpected"),  # nested fields
        ("      id: {path: id, type: id, required: true}", "      id: {pth: id}", "is not valid under any"),
    ],
)
def test_a_misspelled_field_is_invalid(
    original: str, typo: str, message: str, validator: jsonschema.Draft202012Validator
) -> None:
    assert original in ORDER
    errors = list(validator.iter_errors(yaml.safe_load(ORDER.replace(original, typo, 1))))
    assert len(errors) == 1 and message in errors[0].message


def test_each_kind_lists_its_fields_for_completion() -> None:
    defs = editor_schema()["$defs"]
    for name, kind in builtin_kinds().items():
        fields = defs[f"fields.{name}"]
        assert set(fields["properties"]) == set(kind.schema["properties"])
    assert "line_items" in defs["fields.fenix.order"]["properties"]


def nodes(node: Any, where: str = "#") -> list[tuple[str, dict[str, Any]]]:
    """Every property and definition of the schema, recursively, with its path."""
    found: list[tuple[str, dict[str, Any]]] = []
    if not isinstance(node, dict):
        return found
    for group in ("properties", "$defs"):
        for key, child in (node.get(group) or {}).items():
            if isinstance(child, dict):
                found.append((f"{where}/{group}/{key}", child))
                found.extend(nodes(child, f"{where}/{group}/{key}"))
    for key in ("then", "else", "items", "additionalProperties"):
        found.extend(nodes(node.get(key), f"{where}/{key}"))
    for key in ("allOf", "anyOf"):
        for index, child in enumerate(node.get(key) or ()):
            found.extend(nodes(child, f"{where}/{key}/{index}"))
    return found


def test_every_node_has_a_description() -> None:
    schema = editor_schema()
    listed = nodes(schema)
    assert len(listed) > 200
    missing = [where for where, node in listed if not node.get("description")]
    assert missing == []
    assert schema["description"]


def test_schema_write_and_init_modeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "--write", str(tmp_path / "schema")]) == 0
    written = json.loads((tmp_path / "schema" / "mapping.schema.json").read_text(encoding="utf-8"))
    assert written == editor_schema()
    assert "https://" not in json.dumps([n.get("$ref", "") for _, n in nodes(written)])  # no network needed

    sample = ROOT / "tests/fixtures/real/shopify/orders_cancelled_webhook.json"
    assert (
        main(
            ["init", str(sample), "--name", "acme", "--kind", "fenix.order", "--dir", str(tmp_path / "acme")]
        )
        == 0
    )
    mapping = tmp_path / "acme" / "acme.yaml"
    first = mapping.read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=schema/mapping.schema.json"
    schema = json.loads((mapping.parent / "schema" / "mapping.schema.json").read_text(encoding="utf-8"))
    assert (
        list(jsonschema.Draft202012Validator(schema).iter_errors(yaml.safe_load(mapping.read_text()))) == []
    )
    assert "schema/mapping.schema.json" in capsys.readouterr().out
