"""Machine-readable results, each parsed as CI would: validate --format json, test --format json|junit,
run --summary-json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from shipmap.connectors import Sandbox
from shipmap.connectors._cli import main
from test_runtime_support import order_event, write_config

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK = ROOT / "tests/fixtures/real/shopify/fulfillments_create_webhook.json"


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out), err


@pytest.fixture
def broken_mapping(tmp_path: Path) -> Path:
    text = (ROOT / "mappings/shopify/fulfillment.yaml").read_text(encoding="utf-8")
    path = tmp_path / "broken.yaml"
    path.write_text(
        text.replace("targets:", "targets:\n  nothing: {kind: fenix.nope, fields: {id: id}}", 1),
        encoding="utf-8",
    )
    return path


def test_validate_json_reports_each_file_with_its_problems(
    broken_mapping: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report, err = run_json(capsys, "validate", "shopify/order", str(broken_mapping), "--format", "json")
    assert code == 2 and report["exit_code"] == 2 and report["ok"] is False
    assert report["format_version"] == 1
    good, bad = report["files"]
    assert good == {
        "file": "mappings/shopify/order.yaml",
        "kind": "mapping",
        "ok": True,
        "targets": [{"name": "order", "kind": "fenix.order"}],
        "problems": [],
    }
    assert bad["ok"] is False and bad["targets"] == []
    (problem,) = bad["problems"]
    assert problem["severity"] == "error" and "fenix.nope" in problem["message"]
    assert problem["location"]["file"].endswith("broken.yaml") and problem["location"]["line"] > 1
    assert err == ""  # the JSON says it all; stderr stays for what is not a result


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    mapping = tmp_path / "fulfillment.yaml"
    shutil.copy(ROOT / "mappings/shopify/fulfillment.yaml", mapping)
    (tmp_path / "fulfillment.cases.yaml").write_text(
        f"""cases:
  - name: the real webhook
    source: {WEBHOOK}
    expect: {{fulfillment: {{order_id: "820982911946154500"}}}}
  - name: a wrong expectation
    source: {WEBHOOK}
    expect: {{fulfillment: {{order_id: "1"}}}}
""",
        encoding="utf-8",
    )
    return mapping


def test_test_json_lists_every_case_with_its_status(suite: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report, _ = run_json(capsys, "test", str(suite), "--format", "json")
    assert code == 1 and report["exit_code"] == 1
    assert (report["passed"], report["failed"]) == (1, 1)
    (only,) = report["suites"]
    assert only["file"].endswith("fulfillment.cases.yaml") and only["mapping"].endswith("fulfillment.yaml")
    passed, failed = only["cases"]
    assert (passed["name"], passed["status"], passed["messages"]) == ("the real webhook", "passed", [])
    assert failed["status"] == "failed" and failed["location"]["line"] == 5
    assert any("order_id" in line and "820982911946154500" in line for line in failed["messages"])


def test_test_junit_is_xml_ci_reads(suite: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["test", str(suite), "--format", "junit"])
    out, _ = capsys.readouterr()
    assert code == 1
    root = ET.fromstring(out)
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("2", "1", "0")
    (testsuite,) = root.findall("testsuite")
    cases = testsuite.findall("testcase")
    assert [case.get("name") for case in cases] == ["the real webhook", "a wrong expectation"]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None and "order_id" in (failure.get("message") or "")
    assert float(root.get("time") or "x") >= 0


def test_a_cases_file_that_does_not_load_is_an_error_in_both_formats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = tmp_path / "x.cases.yaml"
    cases.write_text("cases: [{name: a, source: {}, expect: {}, colour: red}]\n", encoding="utf-8")
    code, report, _ = run_json(capsys, "test", str(cases), "--format", "json")
    assert code == 2 and report["failed"] == 1
    (error,) = report["suites"][0]["errors"]
    assert error["type"] == "MappingStructureError" and error["location"]["line"] == 1
    assert main(["test", str(cases), "--format", "junit"]) == 2
    root = ET.fromstring(capsys.readouterr().out)
    assert root.get("errors") == "1"
    assert root.find("testsuite/testcase/error") is not None


def test_a_cases_file_with_several_mistakes_lists_each_in_both_formats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = tmp_path / "x.cases.yaml"
    cases.write_text(
        "cases:\n  - {name: a, source: {}, skipped: [x], colour: red}\n  - {name: b, sorce: {}, skipped: [x]}\n",
        encoding="utf-8",
    )
    code, report, err = run_json(capsys, "test", str(cases), "--format", "json")
    assert code == 2 and report["failed"] == 1  # one cases file that did not load
    errors = report["suites"][0]["errors"]
    assert [(e["type"], e["location"]["line"], e["message"]) for e in errors] == [
        ("MappingStructureError", 2, "unknown key 'colour' in a case"),
        ("MappingStructureError", 3, "unknown key 'sorce' in a case"),
    ]
    assert err.count(": error: unknown key") == 2
    assert main(["test", str(cases), "--format", "junit"]) == 2
    root = ET.fromstring(capsys.readouterr().out)
    assert root.get("errors") == "2" and len(root.findall("testsuite/testcase/error")) == 2


def test_a_duplicate_key_in_a_cases_file_is_reported_among_its_other_mistakes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A duplicate key was one error that stopped the reading; now it is one of the file's mistakes, located,
    in validate and test, text and JSON (and JUnit). In a mapping file it still stops the loading."""
    cases = tmp_path / "x.cases.yaml"
    cases.write_text(
        "cases:\n"
        "  - name: a\n"
        "    source: {}\n"
        "    colour: red\n"  # 4
        "    skipped: [x]\n"
        "  - name: b\n"
        "    source: {id: 1, id: 2}\n"  # 7: the second id
        "    skipped: [x]\n"
        "    name: c\n",  # 9
        encoding="utf-8",
    )
    expected = [
        (4, 5, "MappingStructureError", "unknown key 'colour' in a case"),
        (7, 21, "MappingSyntaxError", "duplicate key 'id' (first written at line 7)"),
        (9, 5, "MappingSyntaxError", "duplicate key 'name' (first written at line 6)"),
    ]
    assert main(["validate", str(cases)]) == 2
    heads = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert heads == [f"{cases}:{line}:{column}: error: {message}" for line, column, _, message in expected]
    code, report, _ = run_json(capsys, "validate", str(cases), "--format", "json")
    problems = report["files"][0]["problems"]
    assert (
        code == 2
        and [(p["location"]["line"], p["location"]["column"], p["type"], p["message"]) for p in problems]
        == expected
    )
    assert main(["test", str(cases)]) == 2
    assert capsys.readouterr().err.count(f"{cases}:") >= 3
    code, report, _ = run_json(capsys, "test", str(cases), "--format", "json")
    errors = report["suites"][0]["errors"]
    assert (
        code == 2
        and [(e["location"]["line"], e["location"]["column"], e["type"], e["message"]) for e in errors]
        == expected
    )
    assert main(["test", str(cases), "--format", "junit"]) == 2
    root = ET.fromstring(capsys.readouterr().out)
    assert [e.get("message") for e in root.findall("testsuite/testcase/error")] == [m for *_, m in expected]

    mapping = tmp_path / "dup.yaml"  # a mapping file: the loader still refuses it, one error
    text = (ROOT / "mappings/shopify/fulfillment.yaml").read_text(encoding="utf-8")
    mapping.write_text(text.replace("\nname: ", "\nname: twice\nname: ", 1), encoding="utf-8")
    code, report, _ = run_json(capsys, "validate", str(mapping), "--format", "json")
    (problem,) = report["files"][0]["problems"]
    assert code == 2 and problem["message"].startswith("duplicate key 'name'"), problem


def test_run_summary_json(tmp_path: Path, sandbox_factory: Callable[..., Sandbox]) -> None:
    server = sandbox_factory()
    config = write_config(tmp_path, server.url)
    events = tmp_path / "events.ndjson"
    events.write_text("".join(json.dumps(order_event(n)) + "\n" for n in range(3)) + "not json\n")
    summary_path = tmp_path / "out" / "summary.json"
    summary_path.parent.mkdir()
    code = main(
        ["run", str(config), "--input", str(events), "--no-progress", "--summary-json", str(summary_path)]
    )
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    assert code == 8 and summary["exit_code"] == 8 and summary["ok"] is False  # the line that is not JSON
    assert (summary["events"], summary["delivered"], summary["rejected"], summary["dead"]) == (4, 3, 1, 0)
    (target,) = [t for t in summary["targets"] if t["delivered"]]
    assert target["mapping"] == "acme-orders" and target["target"] == "order"
    assert target["latency_seconds"]["p50"] > 0
    assert not list(summary_path.parent.glob("*.partial"))


def test_run_summary_json_into_a_missing_directory_is_refused_before_sending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "shipmap.yaml", "--summary-json", str(tmp_path / "no" / "summary.json")])
    assert code == 2
    assert "--summary-json: no directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "pretty", "expected"),
    [
        ({"a": 1, "é": [1.5, None]}, False, '{"a":1,"é":[1.5,null]}'),
        ({"a": [1, 2]}, True, '{\n  "a": [\n    1,\n    2\n  ]\n}'),
        (
            {"total": float("inf"), "n": [float("nan")]},
            False,
            '{"total":"(not JSON: inf)","n":["(not JSON: nan)"]}',
        ),
        ({"f": len, 3: (1,)}, False, '{"f":"(not JSON: a builtin_function_or_method)","3":[1]}'),
    ],
)
def test_preview_output_is_strict_json_and_names_what_json_cannot_hold(
    given: Any, pretty: bool, expected: str
) -> None:
    from shipmap.connectors._cli._output import dump_json

    text = dump_json(given, pretty=pretty)
    assert text == expected
    json.loads(text)  # strict: it parses back


def test_replay_format_json_prints_the_run_summary_document(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox], capsys: pytest.CaptureFixture[str]
) -> None:
    """``replay --format json`` prints what ``run --format json`` prints (``parked`` included in both), its
    report alone on stdout; with nothing to replay, a summary of nothing."""
    server = sandbox_factory()
    broken = [
        {
            "mapping": str(ROOT / "tests/fixtures/runtime/orders.yaml"),
            "topic": "orders/create",
            "targets": {"order": {"path": "/api/v1/orders/{number}/created"}},
        }
    ]
    config = write_config(tmp_path, server.url, mappings=broken)
    events = tmp_path / "events.ndjson"
    events.write_text("".join(json.dumps(order_event(n)) + "\n" for n in range(2)))
    code, ran, _ = run_json(
        capsys, "run", str(config), "-i", str(events), "--no-progress", "--format", "json"
    )
    assert code == 8 and (ran["dead"], ran["parked"]) == (2, 0)

    code, replayed, _ = run_json(capsys, "replay", str(config), "--no-progress", "--format", "json")
    assert code == 8 and replayed.keys() == ran.keys()
    assert (replayed["exit_code"], replayed["ok"], replayed["dead"], replayed["delivered"]) == (
        8,
        False,
        2,
        0,
    )
    write_config(tmp_path, server.url)  # the fix: the kind's own path
    code, replayed, _ = run_json(capsys, "replay", str(config), "--no-progress", "--format", "json")
    assert code == 0 and (replayed["ok"], replayed["delivered"], replayed["dead"]) == (True, 2, 0)
    assert [t["delivered"] for t in replayed["targets"]] == [2]
    code, nothing, _ = run_json(capsys, "replay", str(config), "--format", "json")
    assert code == 0 and nothing.keys() == ran.keys()
    assert (nothing["ok"], nothing["events"], nothing["delivered"], nothing["dead"]) == (True, 0, 0, 0)

    # --rejected with none to replay: the document of nothing too (it was a usage error, exit 2).
    code, rejected, _ = run_json(capsys, "replay", str(config), "--rejected", "--format", "json")
    assert code == 0 and rejected.keys() - ran.keys() == {"rejected_webhooks"}
    assert (rejected["events"], rejected["rejected"], rejected["unknown"]) == (0, 0, [])


def _shipmap(work: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it: its own process, stdout and stderr apart."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return subprocess.run(
        [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", *argv],
        capture_output=True, text=True, env=env, cwd=work, check=False, timeout=120,
    )  # fmt: skip


def _after_counts(text: str) -> list[str]:
    """The lines the text summary prints after its counts line (``events N  unrouted ...``)."""
    lines = text.splitlines()
    (counts,) = [n for n, line in enumerate(lines) if line.startswith("events ")]
    return lines[counts + 1 :]


def test_run_and_replay_json_list_the_hints_the_text_prints(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox]
) -> None:
    """``hints`` holds, line for line, what the text says after its counts: which command shows the dead
    letters, which sends them again."""
    server = sandbox_factory()
    broken = [
        {
            "mapping": str(ROOT / "tests/fixtures/runtime/orders.yaml"),
            "topic": "orders/create",
            "targets": {"order": {"path": "/api/v1/orders/{number}/created"}},
        }
    ]
    config = str(write_config(tmp_path, server.url, mappings=broken))
    events = tmp_path / "events.ndjson"
    events.write_text("".join(json.dumps(order_event(n)) + "\n" for n in range(2)) + "not json\n")
    ran = _shipmap(tmp_path, "run", config, "-i", str(events), "--no-progress", "--format", "json")
    assert ran.returncode == 8, ran.stderr
    hints = json.loads(ran.stdout)["hints"]
    assert hints == ["2 dead-lettered, 1 rejected: see `shipmap dead-letters`; fix and `shipmap replay`"]
    again = _shipmap(tmp_path, "run", config, "-i", str(events), "--no-progress")  # the same, as text
    assert again.returncode == 8, again.stderr
    skipped = (
        "2 dead letters of earlier runs skipped, not sent again: see `shipmap dead-letters`; fix and"
        " `shipmap replay`"
    )
    assert _after_counts(again.stdout) == [
        "0 dead-lettered, 1 rejected: see `shipmap dead-letters`; fix and `shipmap replay`",
        skipped,
    ]
    summary = tmp_path / "summary.json"
    third = _shipmap(
        tmp_path, "run", config, "-i", str(events), "--no-progress", "--summary-json", str(summary)
    )
    assert json.loads(summary.read_text(encoding="utf-8"))["hints"] == _after_counts(third.stdout)

    replayed = _shipmap(tmp_path, "replay", config, "--no-progress", "--format", "json")
    assert replayed.returncode == 8, replayed.stderr
    assert json.loads(replayed.stdout)["hints"] == [
        "replayed: delivered 0, still dead 2, left pending 0, skipped 0",
        "2 dead letters failed again (still dead, not new ones): see `shipmap dead-letters`; fix and"
        " `shipmap replay` again",
    ]
    as_text = _shipmap(tmp_path, "replay", config, "--no-progress")
    assert _after_counts(as_text.stdout) == json.loads(replayed.stdout)["hints"]
    write_config(tmp_path, server.url)  # the fix: the kind's own path
    fixed = _shipmap(tmp_path, "replay", config, "--no-progress", "--format", "json")
    assert fixed.returncode == 0, fixed.stderr
    assert json.loads(fixed.stdout)["hints"] == [
        "replayed: delivered 2, still dead 0, left pending 0, skipped 0"
    ]
    nothing = _shipmap(tmp_path, "replay", config, "--format", "json")
    assert (nothing.returncode, json.loads(nothing.stdout)["hints"]) == (0, ["no dead letters to replay"])
