"""``shipmap test`` cases that cannot pass without checking what they say: a key that would be ignored in
its combination is refused where it is written, and a check with nothing to look at fails the case."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from shipmap.connectors._cli import main
from shipmap.connectors._cli.test import TEST_FAILURE_EXIT

ROOT = Path(__file__).resolve().parent.parent.parent
MAPPINGS = ROOT / "mappings"
FIXTURES = ROOT / "tests/fixtures"
# Order 218's event as bigcommerce/shipment reads it: two shipments, so two payloads of each target.
DOCUMENTS = f"""documents:
      order: {FIXTURES}/real/bigcommerce/order_get.json
      products: {FIXTURES}/derived/bigcommerce/order_218_products.json
      shipments: {FIXTURES}/derived/bigcommerce/order_218_shipments.json"""


@pytest.fixture
def shipment_mapping(tmp_path: Path) -> Path:
    """A copy of bigcommerce/shipment (named documents, fan-out targets), its cases written beside it."""
    target = tmp_path / "shipment.yaml"
    shutil.copy(MAPPINGS / "bigcommerce/shipment.yaml", target)
    return target


def write_cases(mapping: Path, text: str) -> Path:
    cases = mapping.with_name(mapping.stem + ".cases.yaml")
    cases.write_text(text.replace("$DOCUMENTS", DOCUMENTS), encoding="utf-8")
    return cases


def error_heads(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": error: " in line]


@pytest.mark.parametrize("command", ["test", "validate"])
def test_select_beside_documents_is_refused_at_its_key(
    shipment_mapping: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was ignored: this select finds nothing, and the case passed."""
    cases = write_cases(
        shipment_mapping,
        "cases:\n"
        "  - name: the second shipment only\n"
        "    $DOCUMENTS\n"
        "    select: shipments[1]\n"  # line 7
        '    expect: {"shipment[12]": {}}\n',
    )
    assert main([command, str(cases)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(
        f"{cases}:7:5: error: case 'the second shipment only' has 'documents': 'select' takes a document"
        " out of a 'source' only, and would be ignored here"
    ), err
    assert "  7 |     select: shipments[1]\n" in err
    assert "Traceback" not in out + err
    if command == "test":
        assert out.splitlines()[-1] == "0 passed, 1 failed"


def test_documents_without_select_still_run(
    shipment_mapping: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_cases(
        shipment_mapping,
        'cases:\n  - name: both shipments\n    $DOCUMENTS\n    expect: {"shipment[12]": {}, "shipment[11]": {}}\n',
    )
    assert main(["test", str(shipment_mapping)]) == 0, capsys.readouterr()
    assert capsys.readouterr().out.splitlines()[-1] == "1 passed, 0 failed"


def test_a_check_key_written_empty_or_a_match_with_nothing_to_compare_is_refused(
    shipment_mapping: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each passed before on its case's other check; every one is reported, at its key, in the file's order."""
    cases = write_cases(
        shipment_mapping,
        "cases:\n"
        "  - name: empty expect\n"
        "    $DOCUMENTS\n"
        "    expect: {}\n"  # 7
        "    skipped: [nothing]\n"
        "  - name: expect with no value\n"
        "    $DOCUMENTS\n"
        "    expect:\n"  # 14
        "    skipped: [nothing]\n"
        "  - name: empty skipped\n"
        "    $DOCUMENTS\n"
        "    skipped: []\n"  # 21
        '    expect: {"shipment[11]": {}}\n'
        "  - name: empty absent\n"
        "    $DOCUMENTS\n"
        "    absent: []\n"  # 28
        '    expect: {"shipment[11]": {}}\n'
        "  - name: empty error list\n"
        "    $DOCUMENTS\n"
        "    error: []\n"  # 35
        '    expect: {"shipment[11]": {}}\n'
        "  - name: exact, of nothing\n"
        "    $DOCUMENTS\n"
        "    match: exact\n"  # 42
        "    skipped: [nothing]\n",
    )
    assert main(["test", str(shipment_mapping)]) == 2
    out, err = capsys.readouterr()
    assert error_heads(err) == [
        f"{cases}:7:5: error: 'expect' of case 'empty expect' is empty: it would check nothing"
        " (remove it, or fill it)",
        f"{cases}:14:5: error: 'expect' of case 'expect with no value' is empty: it would check nothing"
        " (remove it, or fill it)",
        f"{cases}:21:5: error: 'skipped' of case 'empty skipped' is empty: it would check nothing"
        " (remove it, or fill it)",
        f"{cases}:28:5: error: 'absent' of case 'empty absent' is empty: it would check nothing"
        " (remove it, or fill it)",
        f"{cases}:35:5: error: 'error' of case 'empty error list' is empty: it would check nothing"
        " (remove it, or fill it)",
        f"{cases}:42:5: error: 'match' compares the payloads of 'expect', and case 'exact, of nothing'"
        " expects none",
    ], err
    assert "Traceback" not in out + err


def test_an_unknown_key_of_an_expected_error_is_named_at_itself(
    shipment_mapping: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = write_cases(
        shipment_mapping,
        "cases:\n"
        "  - name: a typo in the error\n"
        "    $DOCUMENTS\n"
        "    error:\n"
        "      - {target: fulfillment, feild: fulfillment.id}\n",  # 8
    )
    assert main(["validate", str(cases)]) == 2
    err = capsys.readouterr().err
    assert error_heads(err) == [f"{cases}:8:31: error: unknown key 'feild' in an expected error"], err
    assert "hint: did you mean 'field'?" in err


def test_skipped_names_a_fan_out_target_that_gave_payloads(
    shipment_mapping: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its payloads are named shipment[11] and shipment[12], never shipment: the check looked for that name."""
    write_cases(
        shipment_mapping,
        "cases:\n"
        "  - name: says nothing ships\n"
        "    $DOCUMENTS\n"
        "    skipped: [shipment]\n"
        "  - name: one shipment not made\n"
        "    $DOCUMENTS\n"
        '    skipped: ["shipment[13]"]\n',
    )
    assert main(["test", str(shipment_mapping)]) == TEST_FAILURE_EXIT
    out = capsys.readouterr().out
    assert "FAIL  says nothing ships" in out
    assert "shipment: expected to be skipped, but it produced shipment[11], shipment[12]" in out
    assert "PASS  one shipment not made" in out
    assert out.splitlines()[-1] == "1 passed, 1 failed"


def test_absent_of_a_fan_out_target_by_its_bare_name(
    shipment_mapping: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_cases(
        shipment_mapping,
        "cases:\n  - name: no fulfillment at all\n    $DOCUMENTS\n    absent: [fulfillment]\n",
    )
    assert main(["test", str(shipment_mapping)]) == TEST_FAILURE_EXIT
    out = capsys.readouterr().out
    assert "fulfillment: expected no such payload, got fulfillment[11], fulfillment[12]" in out


def test_a_payload_expected_of_a_target_whose_failure_is_expected_fails(
    shipment_mapping: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failing target gives no payload, so its expect was never compared (any payload passed)."""
    write_cases(
        shipment_mapping,
        "cases:\n"
        "  - name: the item's product is missing, and the payload is wrong\n"
        "    documents:\n"
        f"      order: {FIXTURES}/real/bigcommerce/order_get.json\n"
        "      products: []\n"
        "      shipments: [{id: 13, order_id: 218, tracking_number: '94001', shipping_provider: usps,\n"
        "                   date_created: 'Fri, 15 Mar 2019 10:00:00 +0000', items: [{order_product_id: 9, quantity: 1}]}]\n"
        '    expect: {"fulfillment[13]": {id: "not this"}}\n'
        "    error: {type: TransformError, target: fulfillment}\n",
    )
    assert main(["test", str(shipment_mapping)]) == TEST_FAILURE_EXIT
    out = capsys.readouterr().out
    assert (
        "fulfillment[13]: expected a payload, but it failed with the error the case expects"
        " (a target that fails gives no payload: expect the payload or the error, not both)"
    ) in out
    assert out.splitlines()[-1] == "0 passed, 1 failed"


@pytest.mark.parametrize("command", ["test", "validate"])
def test_a_target_both_skipped_and_expected_is_refused_at_its_skipped_entry(
    shipment_mapping: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A skipped target gives no payload, so a payload expected of it is never there: the case could never
    pass. It was read, and only failed when run (validate said nothing). A fan-out target's bare name
    skipped clashes with each of its payloads expected; another target's payload does not."""
    cases = write_cases(
        shipment_mapping,
        "cases:\n"
        "  - name: skipped and expected\n"
        "    $DOCUMENTS\n"
        '    expect: {"shipment[12]": {}, "fulfillment[11]": {}}\n'
        '    skipped: ["fulfillment[12]", shipment]\n',  # line 8; shipment at column 34
    )
    assert main([command, str(cases)]) == 2
    out, err = capsys.readouterr()
    assert error_heads(err) == [
        f"{cases}:8:34: error: case 'skipped and expected' lists target 'shipment' under 'skipped' and"
        " expects 'shipment[12]' under 'expect': a skipped target gives no payload, so the case can never pass"
    ], err
    assert '  8 |     skipped: ["fulfillment[12]", shipment]\n' in err
    assert "keep the one the case means" in err
    assert "Traceback" not in out + err
    if command == "test":
        assert out.splitlines()[-1] == "0 passed, 1 failed"


def test_a_target_skipped_and_expected_under_its_own_name_is_refused(
    shipment_mapping: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = write_cases(
        shipment_mapping,
        "cases:\n"
        "  - name: same payload\n"
        "    $DOCUMENTS\n"
        '    expect: {"shipment[12]": {}}\n'
        "    skipped:\n"
        '      - "shipment[12]"\n',  # line 9
    )
    assert main(["validate", str(cases)]) == 2
    assert error_heads(capsys.readouterr().err) == [
        f"{cases}:9:9: error: case 'same payload' lists target 'shipment[12]' under 'skipped' and expects"
        " 'shipment[12]' under 'expect': a skipped target gives no payload, so the case can never pass"
    ]


@pytest.mark.parametrize("command", ["test", "validate"])
def test_an_expected_error_of_a_target_the_mapping_lacks_is_said_at_its_target(
    shipment_mapping: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """It could never match: `test` failed the case saying only "expected an error ..., got no error", and
    validate passed it. Both now name the target, at its `target:` value, with the nearest one."""
    cases = write_cases(
        shipment_mapping,
        "cases:\n"
        "  - name: misspelt target\n"
        "    $DOCUMENTS\n"
        "    error:\n"
        "      - {type: TransformError, target: shipmnet, field: shipment.id}\n"  # line 8, col 40
        "      - type: TransformError\n"
        '        target: "fulfilment[11]"\n'  # line 10, col 17
        "  - name: a real one\n"
        "    $DOCUMENTS\n"
        "    error: {type: TransformError, target: shipment}\n",
    )
    code = main([command, str(cases)])
    out, err = capsys.readouterr()
    text = err if command == "validate" else out
    heads = [line.strip() for line in text.splitlines() if ": error: " in line]
    assert heads == [
        f"{cases}:8:40: error: case 'misspelt target' expects an error of target 'shipmnet', which"
        f" {shipment_mapping} does not have (it has fulfillment, shipment): the error could never match",
        f"{cases}:10:17: error: case 'misspelt target' expects an error of target 'fulfilment[11]', which"
        f" {shipment_mapping} does not have (it has fulfillment, shipment): the error could never match",
    ], text
    assert "did you mean 'shipment'?" in text
    assert "did you mean 'fulfillment'?" in text
    assert "Traceback" not in out + err
    if command == "validate":
        assert code == 2
    else:  # the mistake fails its case; the other case runs (and fails: the target gives payloads)
        assert code == TEST_FAILURE_EXIT
        assert out.splitlines()[-1] == "0 passed, 2 failed"
        assert "expected an error (type='TransformError', target='shipment'), got no error" in out
