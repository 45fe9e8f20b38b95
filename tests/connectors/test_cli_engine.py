"""The engine's commands as a user runs them: preview, validate and schema, with their output and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FIXTURES = Path(__file__).parent.parent / "fixtures"
MAPPING = FIXTURES / "engine/shopify_order_min.yaml"
ORDER = FIXTURES / "real/shopify/order_rest_get_with_fulfillment.json"


def shipmap(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )


def test_preview_prints_plain_json_when_piped() -> None:
    result = shipmap("preview", str(MAPPING), str(ORDER))
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)["order"]
    assert payload["id"] == "450789469"
    assert payload["fulfillment_status"] == "NOT_FILLED"
    assert payload["created_at"] == "2008-01-10T11:00:00-05:00"
    assert [line["sku"] for line in payload["line_items"]] == [
        "IPOD2008GREEN",
        "IPOD2008RED",
        "IPOD2008BLACK",
    ]
    assert "\033[" not in result.stdout


def test_preview_ndjson_from_stdin_prints_one_line_per_document() -> None:
    order = json.loads(ORDER.read_text(encoding="utf-8"))
    second = json.loads(json.dumps(order))
    second["order"]["id"] = 5678901234567890123
    stdin = json.dumps(order) + "\n" + json.dumps(second) + "\n"
    result = shipmap("preview", str(MAPPING), "-", stdin=stdin)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [json.loads(line)["order"]["id"] for line in lines] == ["450789469", "5678901234567890123"]


def test_preview_reports_validation_problems_with_the_mapping_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(MAPPING.read_text(encoding="utf-8").replace("      status: {literal: OPEN}\n", ""))
    result = shipmap("preview", str(broken), str(ORDER))
    assert result.returncode == 5
    assert "invalid: target 'order' is not a valid fenix.order" in result.stderr
    assert "order.status: is required but missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_preview_transform_error_names_file_line_field_and_source(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    text = MAPPING.read_text(encoding="utf-8").replace(
        "quantity: quantity", "quantity: {path: title, type: integer}"
    )
    broken.write_text(text)
    result = shipmap("preview", str(broken), str(ORDER))
    assert result.returncode == 4
    line = next(i for i, row in enumerate(text.splitlines(), start=1) if "type: integer" in row)
    assert f"broken.yaml:{line}:" in result.stderr
    assert "target field: order.line_items[0].quantity" in result.stderr
    assert 'source: order.line_items[0].title = "IPod Nano - 8gb"' in result.stderr
    assert "Traceback" not in result.stderr


def test_a_failing_function_shows_the_source_field_it_was_given(tmp_path: Path) -> None:
    """The ready Magento mapping on a real order whose `state` is gone: the lookup's error names the field."""
    order = json.loads((FIXTURES / "real/magento/order_get.json").read_text(encoding="utf-8"))
    del order["state"]
    document = tmp_path / "no_state.json"
    document.write_text(json.dumps(order), encoding="utf-8")
    mapping = Path(__file__).parents[2] / "mappings/magento/order.yaml"
    line = next(
        number
        for number, row in enumerate(mapping.read_text(encoding="utf-8").splitlines(), start=1)
        if "lookup('status', state)" in row
    )
    result = shipmap("preview", str(mapping), str(document))
    assert result.returncode == 4, result.stderr
    assert f"order.yaml:{line}:" in result.stderr
    assert "lookup table 'status' has no entry for null" in result.stderr
    assert "target field: order.status" in result.stderr
    assert "  found: state = null (not in the document)\n" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_function_failing_in_a_template_loop_names_the_line_item(tmp_path: Path) -> None:
    """A template looping over the order's line items, and a lookup failing on the third one's sku."""
    order = json.loads(ORDER.read_text(encoding="utf-8"))
    order["order"]["line_items"][2]["sku"] = None
    document = tmp_path / "no_sku.json"
    document.write_text(json.dumps(order), encoding="utf-8")
    mapping = FIXTURES / "engine/template_loop_items.yaml"
    result = shipmap("preview", str(mapping), str(document))
    assert result.returncode == 4, result.stderr
    assert (
        "template_loop_items.yaml:17:18: error: lookup(): lookup table 'warehouse' has no entry for null"
        in (result.stderr)
    )
    assert "  target field: order.properties.picking\n" in result.stderr
    assert "  found: order.line_items[2].sku = null\n" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_jmespath_typo_is_reported_at_its_line(tmp_path: Path) -> None:
    broken = tmp_path / "typo.yaml"
    text = MAPPING.read_text(encoding="utf-8").replace("number: name", "number: name[")
    broken.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), start=1) if "number: name[" in row)
    for command in (("validate", str(broken)), ("preview", str(broken), str(ORDER))):
        result = shipmap(*command)
        assert result.returncode == 2
        assert f"typo.yaml:{line}:" in result.stderr
        assert "JMESPath syntax error" in result.stderr
        assert "Traceback" not in result.stderr


def test_template_injection_is_refused(tmp_path: Path) -> None:
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text(
        MAPPING.read_text(encoding="utf-8").replace("number: name", "number: \"{{ ''.__class__ }}\"")
    )
    result = shipmap("validate", str(hostile))
    assert result.returncode == 2
    assert "refused: the template reaches for '__class__'" in result.stderr


def test_validate_reports_unmapped_required_fields_unknown_fields_and_unused_lookups(tmp_path: Path) -> None:
    result = shipmap("validate", str(MAPPING))
    assert result.returncode == 0
    assert "warning: lookups.unused_table lookup table is never used" in result.stderr
    assert "ok" in result.stdout
    lacking = tmp_path / "lacking.yaml"
    text = MAPPING.read_text(encoding="utf-8").replace(
        "      item_quantity: sum(line_items[].quantity)\n", ""
    )
    lacking.write_text(text.replace("vendor: vendor", "vendr: vendor"))
    result = shipmap("validate", str(lacking))
    assert result.returncode == 2
    assert "error: order.item_quantity is required by fenix.order but not mapped" in result.stderr
    assert "error: order.line_items[].vendr is not a field of fenix.order" in result.stderr
    assert shipmap("validate", "--strict", str(MAPPING)).returncode == 2


def test_schema_prints_the_mapping_format_and_the_kinds() -> None:
    result = shipmap("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout)["title"] == "shipmap mapping file"
    kind = json.loads(shipmap("schema", "--kind", "fenix.fulfillment").stdout)
    assert kind["x-shipmap"]["route"]["path"] == "/api/v1/order/{order_id}/fulfillment/{id}/created"
    listing = shipmap("schema", "--list-kinds").stdout
    assert "dg.execution" in listing and "POST /execution" in listing


def test_global_verbose_flag_stands_before_the_command() -> None:
    result = shipmap("-vv", "validate", str(MAPPING))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_unknown_command_and_no_command_are_usage_errors() -> None:
    for args in (("bogus",), ()):
        result = shipmap(*args)
        assert result.returncode == 2
        assert "usage: shipmap" in result.stderr


def test_a_failing_function_shows_no_value_it_did_not_find(tmp_path: Path) -> None:
    """'source: sum(id) = (nothing)' under 'found string "abc"' contradicted the message: an expression that
    failed has no value, so the source line names it alone (and `found:` the field it was given)."""
    mapping = tmp_path / "sum.yaml"
    mapping.write_text(
        "shipmap: 1\nname: t\ntargets:\n  order:\n    kind: fenix.order\n    fields:\n"
        '      id: {source: "sum(id)"}\n'
    )
    document = tmp_path / "in.json"
    document.write_text('{"id": "abc"}\n')
    result = shipmap("preview", str(mapping), str(document))
    assert result.returncode == 4
    assert result.stderr == (
        f'{document}:1: {mapping}:7:21: error: sum(): expected an array of numbers, found string "abc"\n'
        "  target field: order.id.source\n"
        "  source: sum(id)\n"
        '  found: id = "abc"\n'
        '  7 |       id: {source: "sum(id)"}\n'
        "    |                     ^\n"
    )


def test_a_symlink_that_loops_is_named_as_such_not_as_missing(tmp_path: Path) -> None:
    """Given as a mapping or as an input, a link that loops was 'no mapping file ... named' or 'does not
    exist': it is there, and the OS's reason says what is wrong with it."""
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    result = shipmap("preview", str(loop), str(ORDER))
    assert (result.returncode, result.stderr) == (
        2,
        f"{loop}:1:1: error: cannot read mapping: Too many levels of symbolic links\n",
    )
    result = shipmap("preview", str(MAPPING), str(loop))
    assert (result.returncode, result.stderr) == (
        3,
        f"{loop}:1:1: error: cannot open input {loop}: Too many levels of symbolic links\n",
    )


def _filter_block_mapping(tmp_path: Path, function: str) -> Path:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "shipmap: 1\ntargets:\n  t:\n    kind: fenix.order\n    fields:\n"
        f'      x: "{{% filter {function} %}}{{{{ this.c }}}}{{% endfilter %}}"\n',
        encoding="utf-8",
    )
    (tmp_path / "m.cases.yaml").write_text(
        'cases:\n  - name: a code\n    source: {c: "XX"}\n    expect: {t: {x: "United States"}}\n',
        encoding="utf-8",
    )
    return mapping


def test_a_filter_block_of_a_function_that_returns_a_number_is_refused_at_load(tmp_path: Path) -> None:
    mapping = _filter_block_mapping(tmp_path, "integer")
    head = (
        "m.yaml:6:10: error: {% filter integer %} gives integer() the block's text, and integer() returns "
        "a number; a filter block must give back text\n  target field: t.x\n"
    )
    hint = "  hint: write {{ this.c | integer }} instead of the block\n"
    for command in ("preview", "test"):
        args = (command, str(mapping), "-") if command == "preview" else (command, str(mapping))
        result = shipmap(*args, stdin='{"c": "3"}')
        assert result.returncode == 2, (command, result.stderr)
        assert head in result.stderr and hint in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr


def test_a_filter_block_whose_function_gives_back_null_is_the_fields_error(tmp_path: Path) -> None:
    mapping = _filter_block_mapping(tmp_path, "country_name")
    head = (
        "m.yaml:6:10: error: {% filter country_name %} gave back null, not text; a filter block gives its "
        "filter the block's text and must get text back\n"
    )
    preview = shipmap("preview", str(mapping), "-", stdin='{"c": "XX"}')
    assert preview.returncode == 4, preview.stderr
    assert head in preview.stderr and "  target field: t.x\n" in preview.stderr
    assert "  hint: write {{ this.c | country_name }} instead of the block\n" in preview.stderr
    assert "Traceback" not in preview.stderr
    test = shipmap("test", str(mapping))
    assert test.returncode == 1, test.stdout + test.stderr
    assert "FAIL  a code" in test.stdout and head in test.stdout, test.stdout


SLIP = FIXTURES / "engine/template_packing_slip.yaml"
SLIP_LINE = "  22 |           - {{ item.quantity | integer }} x {{ item.title }} ({{ where }})\n"


def test_an_error_in_a_many_line_template_is_shown_at_its_own_line(tmp_path: Path) -> None:
    """The packing slip's loop left open: preview refuses the mapping with the loop's own line and a caret."""
    broken = tmp_path / "slip.yaml"
    broken.write_text(
        SLIP.read_text(encoding="utf-8").replace(
            "\n          {%- endfor %}\n          Weight", "\n          Weight"
        ),
        encoding="utf-8",
    )
    result = shipmap("preview", str(broken), str(ORDER))
    assert result.returncode == 2, result.stderr
    assert result.stderr.endswith(
        f"{broken}:20:11: error: Jinja syntax error: Unexpected end of template. Jinja was looking for the "
        "following tags: 'endfor' or 'else'. The innermost block that needs to be closed is 'for'.\n"
        "  target field: order.properties.packing_slip\n"
        "  20 |           {%- for item in this.line_items %}\n"
        "     |           ^\n"
    ), result.stderr
    assert result.stdout == ""


def test_a_function_failing_in_a_many_line_template_is_shown_at_the_line_that_calls_it(
    tmp_path: Path,
) -> None:
    order = json.loads(ORDER.read_text(encoding="utf-8"))
    order["order"]["line_items"][1]["quantity"] = "two"
    document = tmp_path / "two.json"
    document.write_text(json.dumps(order), encoding="utf-8")
    mapping = tmp_path / SLIP.name
    mapping.write_text(SLIP.read_text(encoding="utf-8"), encoding="utf-8")
    result = shipmap("preview", str(mapping), str(document))
    assert result.returncode == 4, result.stderr
    assert result.stderr.endswith(
        f"{document}:1: {mapping}:22:32: error: integer(): expected an integer or integer text such as "
        '"007", found string "two"\n'
        "  target field: order.properties.packing_slip\n"
        "  source: order\n"
        '  found: order.line_items[1].quantity = "two"\n'
        f"{SLIP_LINE}"
        "     |                                ^\n"
    ), result.stderr


def test_a_type_error_in_a_many_line_template_is_shown_at_the_line_that_raised_it(tmp_path: Path) -> None:
    """The slip divides the order's weight, which this order gives as text: preview fails the document (exit 4)
    with the line of the template whose code raised the TypeError."""
    order = json.loads(ORDER.read_text(encoding="utf-8"))
    order["order"]["total_weight"] = "heavy"
    document = tmp_path / "heavy.json"
    document.write_text(json.dumps(order), encoding="utf-8")
    mapping = tmp_path / SLIP.name
    mapping.write_text(
        SLIP.read_text(encoding="utf-8").replace(
            "Weight: {{ this.total_weight }} g", "Weight: {{ this.total_weight / 1000 }} kg"
        ),
        encoding="utf-8",
    )
    result = shipmap("preview", str(mapping), str(document))
    assert result.returncode == 4, result.stderr
    assert result.stderr.endswith(
        f"{document}:1: {mapping}:24:19: error: unsupported operand type(s) for /: 'str' and 'int'\n"
        "  target field: order.properties.packing_slip\n"
        "  source: order\n"
        "  24 |           Weight: {{ this.total_weight / 1000 }} kg\n"
        "     |                   ^\n"
    ), result.stderr
    assert result.stdout == ""


def _preview_refused(tmp_path: Path, properties: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """preview of an order mapping whose ``properties`` (YAML lines under it, from line 8) it refuses at load:
    exit 2, nothing mapped."""
    mapping = tmp_path / "order.yaml"
    mapping.write_text(
        "shipmap: 1\ntargets:\n  order:\n    kind: fenix.order\n    fields:\n"
        "      id: {path: order.id, type: id}\n      properties:\n" + properties,
        encoding="utf-8",
    )
    result = shipmap("preview", str(mapping), str(ORDER))
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    return mapping, result


def test_an_unknown_function_inside_an_expression_is_shown_under_its_name(tmp_path: Path) -> None:
    """preview refuses the mapping (exit 2) at the line and column of the call, in a literal block."""
    mapping, result = _preview_refused(
        tmp_path, "        skus: |-\n          join(', ',\n            order.line_items[].skus(@))\n"
    )
    assert result.stderr.endswith(
        f"{mapping}:10:32: error: unknown function skus()\n"
        "  target field: order.properties.skus\n"
        "  10 |             order.line_items[].skus(@))\n"
        "     |                                ^\n"
        "  hint: see docs/functions.md for the functions\n"
    ), result.stderr


def test_a_function_given_a_literal_it_fails_on_is_refused_at_load_under_its_name(tmp_path: Path) -> None:
    """'two' | integer fails on every order: preview refuses the mapping (exit 2), at the filter's line and
    column in the literal block, in the words of the run-time error, and maps nothing."""
    mapping, result = _preview_refused(
        tmp_path,
        "        slip: |-\n          Order {{ this.order.name }}\n          Boxes: {{ 'two' | integer }}\n",
    )
    assert result.stderr.endswith(
        f'{mapping}:10:29: error: integer(): expected an integer or integer text such as "007", found string "two"\n'
        "  target field: order.properties.slip\n"
        "  10 |           Boxes: {{ 'two' | integer }}\n"
        "     |                             ^\n"
    ), result.stderr


def test_a_huge_number_in_one_document_is_its_located_error_and_the_others_are_mapped(tmp_path: Path) -> None:
    """round() of a 400-digit weight raised decimal.InvalidOperation, which stopped preview with an internal
    error (exit 70) before the documents after it. Now it is that document's field error; the others map."""
    mapping = tmp_path / "rounded.yaml"
    text = MAPPING.read_text(encoding="utf-8").replace(
        "value: total_weight,", "value: 'round(total_weight)',"
    )
    mapping.write_text(text, encoding="utf-8")
    line = next(i for i, row in enumerate(text.splitlines(), start=1) if "round(total_weight)" in row)
    order = json.loads(ORDER.read_text(encoding="utf-8"))
    documents = []
    for number, weight in ((1, 100), (2, int("9" * 400)), (3, 300)):
        document = json.loads(json.dumps(order))
        document["order"].update(id=number, total_weight=weight)
        documents.append(json.dumps(document))
    preview = shipmap("preview", str(mapping), "-", stdin="\n".join(documents) + "\n")
    assert preview.returncode == 4, preview.stderr
    payloads = [json.loads(row) for row in preview.stdout.splitlines()]
    assert [(p["order"]["id"], p["order"]["total_weight"]["value"]) for p in payloads] == [
        ("1", 100),
        ("3", 300),
    ]
    row = text.splitlines()[line - 1]
    column = row.index("round") + 1
    error = (
        f"<stdin>:2: {mapping}:{line}:{column}: error: round(): a number of 400 digits is too large (at most "
        "309 digits)\n  target field: order.total_weight.value\n  source: round(total_weight) (at order)\n"
        f"  found: order.total_weight = {'9' * 79}…\n  {line} | {row}\n  {' ' * len(str(line))} | "
        f"{' ' * (column - 1)}^\n"
    )
    assert error in preview.stderr, preview.stderr
    assert "internal error" not in preview.stderr and "Traceback" not in preview.stderr
