"""``shipmap test``: cases files beside mappings, their output, exit codes and coverage report."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from shipmap.connectors._cli import main
from shipmap.connectors._cli.test import TEST_FAILURE_EXIT

ROOT = Path(__file__).resolve().parent.parent.parent
MAPPINGS = ROOT / "mappings"
FULFILLMENT_WEBHOOK = ROOT / "tests/fixtures/real/shopify/fulfillments_create_webhook.json"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["test", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def fulfillment_mapping(tmp_path: Path) -> Path:
    """A copy of the ready Shopify fulfillment mapping, so each test writes its own cases beside it."""
    target = tmp_path / "fulfillment.yaml"
    shutil.copy(MAPPINGS / "shopify/fulfillment.yaml", target)
    return target


def write_cases(mapping: Path, text: str) -> Path:
    cases = mapping.with_name(mapping.stem + ".cases.yaml")
    cases.write_text(text.replace("$WEBHOOK", str(FULFILLMENT_WEBHOOK)), encoding="utf-8")
    return cases


def test_the_ready_mappings_directory_passes(capsys: pytest.CaptureFixture[str]) -> None:
    expected = sum(
        len(yaml.safe_load(path.read_text(encoding="utf-8"))["cases"])
        for path in MAPPINGS.rglob("*.cases.yaml")
    )
    code, out, err = run(capsys, str(MAPPINGS))
    assert code == 0, out + err
    assert out.splitlines()[-1] == f"{expected} passed, 0 failed"
    assert expected >= 30
    assert "PASS  REST order with one fulfillment" in out
    assert "FAIL" not in out
    assert "has no" not in err  # every ready mapping has its cases file


def test_a_packaged_short_name_runs_its_cases(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "shopify/order_cancelled")
    assert code == 0
    assert "order_cancelled.cases.yaml" in out.splitlines()[0]
    assert "PASS  orders/cancelled webhook is a full cancel" in out
    assert out.splitlines()[-1] == "8 passed, 0 failed"


def test_a_failing_case_prints_field_path_expected_and_got(
    capsys: pytest.CaptureFixture[str], fulfillment_mapping: Path
) -> None:
    write_cases(
        fulfillment_mapping,
        """
cases:
  - name: right
    source: $WEBHOOK
    expect: {fulfillment: {id: "123456", order_id: "820982911946154500"}}
  - name: wrong carrier and skus
    source: $WEBHOOK
    expect:
      fulfillment:
        shipment_info: {tracking_company: FedEx}
        line_items: [{sku: WRONG}, {}, {}]
  - name: one item
    source: $WEBHOOK
    expect: {fulfillment: {line_items: [{}]}}
""",
    )
    code, out, _ = run(capsys, str(fulfillment_mapping))
    assert code == TEST_FAILURE_EXIT == 1
    assert "PASS  right" in out
    assert re.search(r"FAIL  wrong carrier and skus  \(.*fulfillment\.cases\.yaml:6:5\)", out)
    assert 'fulfillment.shipment_info.tracking_company: expected "FedEx", got "UPS"' in out
    assert "fulfillment.line_items: expected 3 elements, got 5" in out
    assert 'fulfillment.line_items[0].sku: expected "WRONG", got "SKU2006-001"' in out
    assert "fulfillment.line_items: expected 1 element, got 5" in out
    assert out.splitlines()[-1] == "1 passed, 2 failed"


def test_an_exact_match_shows_a_unified_diff_and_extra_fields(
    capsys: pytest.CaptureFixture[str], fulfillment_mapping: Path
) -> None:
    write_cases(
        fulfillment_mapping,
        """
cases:
  - name: exact
    source: $WEBHOOK
    match: {shipment: exact}
    expect:
      shipment:
        action_id: REPLACE_WITH_DG_SHIPMENT_FLOW_ID
        external_id: x
        inputs: {external_id: x}
""",
    )
    code, out, _ = run(capsys, str(fulfillment_mapping))
    assert code == 1
    assert 'shipment.external_id: expected "x", got "820982911946154500-123456-pending"' in out
    assert 'shipment.inputs.shipment_data: expected (nothing), got {"order_id": "820982911946154500"' in out
    assert "--- shipment (expected)" in out and "+++ shipment (got)" in out
    assert '-  "external_id": "x",' in out
    assert '+  "external_id": "820982911946154500-123456-pending",' in out
    assert '+      "carrier_code": "ups",' in out


def test_match_naming_a_payload_the_case_does_not_expect_is_refused_where_it_is_written(
    capsys: pytest.CaptureFixture[str], fulfillment_mapping: Path
) -> None:
    """A misspelt name under match: would leave the payload it meant compared partially, and the case green."""
    cases = write_cases(
        fulfillment_mapping,
        """
cases:
  - name: typo
    source: $WEBHOOK
    match: {shipmnet: exact}
    expect:
      shipment: {action_id: REPLACE_WITH_DG_SHIPMENT_FLOW_ID}
""",
    )
    message = f"{cases}:5:12: error: 'match' names 'shipmnet', which case 'typo' does not expect (it expects shipment)"
    code, out, err = run(capsys, str(fulfillment_mapping))
    assert code == 2 and out.splitlines()[-1] == "0 passed, 1 failed"
    assert err.splitlines()[0] == message, err
    assert main(["validate", str(cases)]) == 2
    assert capsys.readouterr().err.splitlines()[0] == message


def test_partial_matching_ignores_fields_not_expected_and_keeps_json_types(
    capsys: pytest.CaptureFixture[str], fulfillment_mapping: Path
) -> None:
    write_cases(
        fulfillment_mapping,
        """
cases:
  - name: dates stay text, numbers match numbers
    source: $WEBHOOK
    expect:
      fulfillment:
        created_at: 2021-12-31T19:00:00-05:00
        shipment_info: {shipcost: {value: 0.0}}
        line_items: [{price: {value: 89.99}}, {}, {}, {}, {}]
  - name: an id is text, never a number
    source: $WEBHOOK
    expect:
      fulfillment: {id: 123456}
""",
    )
    code, out, _ = run(capsys, str(fulfillment_mapping))
    assert code == 1
    assert "PASS  dates stay text, numbers match numbers" in out
    assert 'fulfillment.id: expected 123456, got "123456"' in out


def test_skipped_and_absent(capsys: pytest.CaptureFixture[str], fulfillment_mapping: Path) -> None:
    write_cases(
        fulfillment_mapping,
        """
cases:
  - name: cancelled fulfillment is skipped
    source: {id: 1, order_id: 2, status: cancelled, tracking_number: "1Z", tracking_company: UPS}
    skipped: [fulfillment, shipment]
  - name: but this one is not
    source: $WEBHOOK
    skipped: [shipment]
    absent: [fulfillment.shipment_status, fulfillment.id]
  - name: expecting a payload from a skipped target
    source: {id: 1, order_id: 2, status: cancelled, tracking_number: "1Z"}
    expect: {fulfillment: {id: "1"}}
""",
    )
    code, out, _ = run(capsys, str(fulfillment_mapping))
    assert code == 1
    assert "PASS  cancelled fulfillment is skipped" in out
    assert "shipment: expected to be skipped, but its 'when' guard held and it produced a payload" in out
    assert 'fulfillment.id: expected no such field, got "123456"' in out
    assert "fulfillment.shipment_status" not in out.split("but this one is not")[1].split("expecting")[0]
    assert re.search(
        r"fulfillment: expected a payload, but it was skipped \(when is false \(line \d+\)\)", out
    )
    assert out.splitlines()[-1] == "1 passed, 2 failed"


def test_absent_reads_a_fan_out_payload_by_its_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """fulfillment[94001].order_id names the payload of the element keyed 94001, not index 94001 of a list."""
    mapping = tmp_path / "fulfillment.yaml"
    shutil.copy(MAPPINGS / "woocommerce/fulfillment.yaml", mapping)
    source = MAPPINGS / "_fixtures/derived/woocommerce/order_completed_with_tracking.json"
    write_cases(
        mapping,
        f"""
cases:
  - name: a field the payload has
    source: {source}
    absent: ["fulfillment[9400111899560000000000].order_id"]
  - name: a field it has not
    source: {source}
    absent: ["fulfillment[9400111899560000000000].shipment_status"]
  - name: a payload it has not, so no field to look for
    source: {source}
    absent: ["fulfillment[7].order_id"]
""",
    )
    code, out, _ = run(capsys, str(mapping))
    assert code == TEST_FAILURE_EXIT
    assert 'fulfillment[9400111899560000000000].order_id: expected no such field, got "727"' in out
    assert "PASS  a field it has not" in out
    # A field of a payload that was not made is absent whatever the mapping does: that proves nothing.
    assert (
        "fulfillment[7].order_id: expected no such field, but there is no fulfillment[7] payload"
        " (the target gave fulfillment[9400111899560000000000])"
    ) in out
    assert out.splitlines()[-1] == "1 passed, 2 failed"


def test_expected_errors_pass_and_unexpected_ones_fail(
    capsys: pytest.CaptureFixture[str], fulfillment_mapping: Path
) -> None:
    write_cases(
        fulfillment_mapping,
        """
cases:
  - name: no carrier is a validation error for DG only
    source: {id: 5, order_id: 9, status: success, tracking_number: "6A", line_items: [{sku: A, title: A, quantity: 1, price: "1.00"}]}
    expect: {fulfillment: {shipment_info: {tracking_company: Other}}}
    error: {type: PayloadValidationError, target: shipment, field: shipment.inputs.shipment_data.carrier_code}
  - name: a price that is not money
    source: {id: 5, order_id: 9, status: success, tracking_number: "6A", tracking_company: UPS, line_items: [{sku: A, title: A, quantity: 1, price: "$1"}]}
    error: {type: TransformError, field: "fulfillment.line_items[0].price.value", message: "money()"}
  - name: the same case without saying so
    source: {id: 5, order_id: 9, status: success, tracking_number: "6A", tracking_company: UPS, line_items: [{sku: A, title: A, quantity: 1, price: "$1"}]}
    expect: {shipment: {external_id: 9-5-success}}
  - name: an error that does not happen
    source: $WEBHOOK
    error: {type: TransformError, field: fulfillment.id}
""",
    )
    code, out, _ = run(capsys, str(fulfillment_mapping))
    assert code == 1
    assert "PASS  no carrier is a validation error for DG only" in out
    assert "PASS  a price that is not money" in out
    assert "fulfillment: unexpected TransformError:" in out
    assert "target field: fulfillment.line_items[0].price.value" in out
    assert "PASS  the same case without saying so" not in out
    assert "expected an error (type='TransformError', field='fulfillment.id'), got no error" in out
    assert out.splitlines()[-1] == "2 passed, 2 failed"


def test_an_invalid_payload_fails_the_case_unless_expected(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    mapping = tmp_path / "cancel.yaml"
    mapping.write_text(
        "shipmap: 1\ntargets:\n  cancel:\n    kind: fenix.order_cancel\n"
        "    fields: {id: {path: id, type: id}, status: {literal: CANCELLED}, cancelled_at: cancelled_at}\n",
        encoding="utf-8",
    )
    write_cases(
        mapping,
        """
cases:
  - name: a date without a zone is not what Fenix takes
    source: {id: 7, cancelled_at: "2020-01-23 10:14:15"}
    expect: {cancel: {id: "7"}}
""",
    )
    code, out, _ = run(capsys, str(mapping))
    assert code == 1
    assert "cancel: unexpected PayloadValidationError:" in out
    assert "cancel.cancelled_at" in out
    assert "0 passed, 1 failed" in out


def test_coverage_is_compact_unless_asked_for(
    capsys: pytest.CaptureFixture[str], fulfillment_mapping: Path
) -> None:
    wrapped = ROOT / "tests/fixtures/derived/shopify/fulfillment_rest_wrapped.json"
    write_cases(
        fulfillment_mapping,
        f"cases:\n  - name: REST shape\n    source: {wrapped}\n    expect: {{fulfillment: {{id: '123456'}}}}\n",
    )
    code, out, _ = run(capsys, str(fulfillment_mapping))
    assert code == 0
    (line,) = [line.strip() for line in out.splitlines() if "coverage:" in line]
    # The DG flow id fell back to its placeholder; the destination address is never read.
    assert line.startswith(
        "coverage: 1 defaulted (shipment.action_id); 47 unread (fulfillment.admin_graphql_api_id, "
    )
    assert line.endswith("… +42 (--coverage))")
    code, out, _ = run(capsys, str(fulfillment_mapping), "--coverage")
    assert code == 0
    assert "coverage: 1 target field defaulted, 47 source fields unread" in out
    assert "defaulted: shipment.action_id" in out
    assert "unread: fulfillment.destination.city" in out
    assert "unread: fulfillment.receipt" in out  # an empty object is a leaf too
    assert "unread: fulfillment.line_items[].sku" not in out
    assert "unread: fulfillment.tracking_number" not in out


def test_keyword_filter(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(MAPPINGS / "shipstation"), "-k", "voided")
    assert code == 0
    assert out.splitlines()[-1] == "1 passed, 0 failed"
    code, _, err = run(capsys, str(MAPPINGS / "shipstation"), "-k", "no such case")
    assert code == 1
    assert "no cases found" in err


def test_library_errors_keep_their_exit_codes(
    capsys: pytest.CaptureFixture[str], fulfillment_mapping: Path, tmp_path: Path
) -> None:
    write_cases(fulfillment_mapping, "cases:\n  - name: typo\n    source: $WEBHOOK\n    expct: {}\n")
    code, out, err = run(capsys, str(fulfillment_mapping))
    assert code == 2
    assert "fulfillment.cases.yaml:4:5: error: unknown key 'expct' in a case" in err
    assert "did you mean 'expect'?" in err
    assert out.splitlines()[-1] == "0 passed, 1 failed"

    write_cases(fulfillment_mapping, "cases:\n  - name: a\n    name: b\n    source: x.json\n")
    code, _, err = run(capsys, str(fulfillment_mapping))
    assert code == 2
    assert "duplicate key 'name' (first written at line 2)" in err

    write_cases(
        fulfillment_mapping,
        "cases:\n  - name: missing source file\n    source: nowhere.json\n    skipped: [shipment]\n",
    )
    code, out, _ = run(capsys, str(fulfillment_mapping))
    assert code == 3
    assert "cannot read source" in out
    assert out.splitlines()[-1] == "0 passed, 1 failed"

    broken = tmp_path / "broken.yaml"
    broken.write_text("shipmap: 1\ntargets:\n  t: {kind: fenix.order, fields: {id: 'uper(id)'}}\n")
    write_cases(broken, "cases:\n  - name: never runs\n    source: {id: 1}\n    skipped: [t]\n")
    code, out, err = run(capsys, str(broken))
    assert code == 2
    assert "unknown function uper()" in err
    assert "FAIL  never runs (the mapping did not load)" in out

    lonely = tmp_path / "lonely.yaml"
    shutil.copy(MAPPINGS / "shopify/order.yaml", lonely)
    code, _, err = run(capsys, str(lonely))
    assert code == 2
    assert "lonely.cases.yaml does not exist" in err


def test_select_picks_one_document_out_of_a_list(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    mapping = tmp_path / "shipment.yaml"
    shutil.copy(MAPPINGS / "shipstation/shipment.yaml", mapping)
    listing = ROOT / "tests/fixtures/real/shipstation/shipments_list_ship_notify_resource.json"
    write_cases(
        mapping,
        f"""
cases:
  - name: second element
    source: {listing}
    select: "shipments[1]"
    expect: {{fulfillment: {{id: "33974373"}}}}
  - name: nothing there
    source: {listing}
    select: "shipments[7]"
    skipped: [shipment]
""",
    )
    code, out, _ = run(capsys, str(mapping))
    assert code == 3
    assert "PASS  second element" in out
    assert "select 'shipments[7]' found nothing in the source" in out


@pytest.mark.parametrize("command", ["test", "validate"])
def test_a_select_that_is_not_jmespath_is_refused_where_it_is_written(
    capsys: pytest.CaptureFixture[str], fulfillment_mapping: Path, command: str
) -> None:
    """At load, so validate finds it too (it said ok), at the select: line (test pointed at the case)."""
    cases = write_cases(
        fulfillment_mapping,
        'cases:\n  - name: one shipment\n    source: $WEBHOOK\n    select: "shipments[?"\n    skipped: [shipment]\n',
    )
    assert main([command, str(cases)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(
        f"{cases}:4:13: error: 'select' is not a valid JMESPath expression at character 12\n"
        '  4 |     select: "shipments[?"\n'
        "    |             ^\n"
    ), err
    assert "Traceback" not in out + err


def test_the_installed_command_exits_1_and_ends_with_the_summary(
    fulfillment_mapping: Path,
) -> None:
    write_cases(
        fulfillment_mapping,
        "cases:\n  - name: wrong\n    source: $WEBHOOK\n    expect: {fulfillment: {order_id: '1'}}\n",
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from shipmap.connectors._cli import entry; entry()",
            "test",
            str(fulfillment_mapping),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines()[-1] == "0 passed, 1 failed"
    assert 'fulfillment.order_id: expected "1", got "820982911946154500"' in result.stdout
    assert "\033[" not in result.stdout  # no colour when piped


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (
            "cases:\n  - name: café\n    source: {id: 1}\n    skipped: [shipment]\n".encode("latin-1"),
            "2:14: error: cannot read cases file: not UTF-8 text (byte 0xe9: invalid continuation byte); save it "
            "as UTF-8",
        ),
        (  # the column counts characters, as an editor does: ü is two bytes and one column
            "cases:\n  - name: ü ".encode() + "café\n".encode("latin-1"),
            "2:16: error: cannot read cases file: not UTF-8 text (byte 0xe9: invalid continuation byte); save it "
            "as UTF-8",
        ),
    ],
    ids=["latin-1", "after-a-two-byte-character"],
)
@pytest.mark.parametrize("command", ["test", "validate"])
def test_a_cases_file_that_is_not_utf8_is_located_at_its_byte(
    capsys: pytest.CaptureFixture[str], fulfillment_mapping: Path, command: str, content: bytes, error: str
) -> None:
    """It was read with replacement characters: a case named 'caf\ufffd', reported as if it were so."""
    cases = fulfillment_mapping.with_name("fulfillment.cases.yaml")
    cases.write_bytes(content)
    assert main([command, str(cases)]) == 2
    out, err = capsys.readouterr()
    assert err == f"{cases}:{error}\n"
    assert out == ("0 passed, 1 failed\n" if command == "test" else "")


@pytest.mark.parametrize(
    ("error", "line", "column", "hint"),
    [
        (
            "    error: {type: TransfromError, target: shipment}\n",
            4,
            19,
            "  hint: did you mean 'TransformError'?\n",
        ),
        (
            "    error:\n      - {type: TransformError, target: shipment}\n      - {type: KeyError}\n",
            6,
            16,
            "",
        ),
    ],
    ids=["misspelt", "not-the-engines"],
)
@pytest.mark.parametrize("command", ["test", "validate"])
def test_an_expected_error_of_a_type_the_engine_lacks_is_refused_where_it_is_written(
    capsys: pytest.CaptureFixture[str],
    fulfillment_mapping: Path,
    command: str,
    error: str,
    line: int,
    column: int,
    hint: str,
) -> None:
    """validate said ok, and test only failed the case with 'expected an error (type=...)': no failure's
    class is called that, so the case could never pass."""
    cases = write_cases(fulfillment_mapping, "cases:\n  - name: one\n    source: {id: 1}\n" + error)
    written = cases.read_text().splitlines()[line - 1]
    assert main([command, str(cases)]) == 2
    out, err = capsys.readouterr()
    found = written.split("type: ")[1].split("}")[0].split(",")[0]
    assert err == (
        f"{cases}:{line}:{column}: error: an expected error's type is one of TransformError, "
        f"PayloadValidationError, ShipmapError, not {found!r}\n"
        f"  {line} | {written}\n"
        f"    | {' ' * (column - 1)}^\n" + hint
    )
    assert out == ("0 passed, 1 failed\n" if command == "test" else "")
