"""Machine-readable results for CI: ``validate --format json``, ``test --format json|junit``,
``run --summary-json``. Each format is documented in docs/cli-formats.md; the tests parse each one."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from shipmap.engine import Location, Problem, ShipmapError

if TYPE_CHECKING:  # the runtime is loaded only by the commands that run it
    from shipmap.connectors._runtime import RunSummary

FORMAT_VERSION = 1  # bumped when a field changes meaning or goes away; new fields do not bump it


def location_json(location: Location | None) -> dict[str, Any] | None:
    if location is None:
        return None
    return {"file": location.file, "line": location.line, "column": location.column}


def error_json(error: ShipmapError) -> dict[str, Any]:
    """An error as data: its type, one-line message, location and target field, and the rendered text."""
    return {
        "severity": "error",
        "type": type(error).__name__,
        "message": error.message,
        "field": error.field,
        "location": location_json(error.location),
        "text": error.render(),
    }


def problem_json(problem: Problem, *, strict: bool) -> dict[str, Any]:
    severity = "error" if strict else problem.severity
    return {
        "severity": severity,
        "type": "Problem",
        "message": problem.message,
        "field": problem.field,
        "location": location_json(problem.location),
        "text": f"{problem.location}: {severity}: {problem.field} {problem.message}",
    }


def write_json(document: dict[str, Any], out: IO[str]) -> None:
    out.write(json.dumps({"format_version": FORMAT_VERSION, **document}, ensure_ascii=False, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------------------
# shipmap test


@dataclass
class CaseOutcome:
    name: str
    status: str  # passed | failed | error (the case could not run: its mapping or source failed to load)
    location: Location | None = None
    messages: list[str] = field(default_factory=list)


@dataclass
class SuiteOutcome:
    file: str
    mapping: str | None
    cases: list[CaseOutcome] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # a cases file or mapping that did not load
    seconds: float = 0.0  # the suite's cases, together (with --jobs they run in parallel, not one by one)


@dataclass
class TestReport:
    """What ``shipmap test`` found, collected while the text output is printed (or discarded)."""

    suites: list[SuiteOutcome] = field(default_factory=list)

    def suite(self, file: Path, mapping: Path | None = None) -> SuiteOutcome:
        found = SuiteOutcome(str(file), str(mapping) if mapping is not None else None)
        self.suites.append(found)
        return found

    def count(self, status: str) -> int:
        return sum(1 for suite in self.suites for case in suite.cases if case.status == status)

    @property
    def failed(self) -> int:
        """As the text's ``N failed``: failed cases, cases that could not run, cases files that did not load."""
        unread = sum(1 for suite in self.suites if suite.errors and not suite.cases)
        return self.count("failed") + self.count("error") + unread

    def write(self, fmt: str, out: IO[str], *, exit_code: int) -> None:
        if fmt == "junit":
            out.write(self.junit())
        else:
            write_json(self.as_json(exit_code), out)

    def as_json(self, exit_code: int) -> dict[str, Any]:
        return {
            "passed": self.count("passed"),
            "failed": self.failed,
            "exit_code": exit_code,
            "suites": [
                {
                    "file": suite.file,
                    "mapping": suite.mapping,
                    "seconds": round(suite.seconds, 6),
                    "errors": suite.errors,
                    "cases": [
                        {
                            "name": case.name,
                            "status": case.status,
                            "location": location_json(case.location),
                            "messages": case.messages,
                        }
                        for case in suite.cases
                    ],
                }
                for suite in self.suites
            ],
        }

    def junit(self) -> str:
        """JUnit XML as CI systems read it (Jenkins, GitLab, GitHub test reporters): a testsuite per cases
        file, a testcase per case, ``failure`` for a case that failed, ``error`` for one that could not run."""
        root = ET.Element("testsuites", name="shipmap test")
        totals = {"tests": 0, "failures": 0, "errors": 0, "time": 0.0}
        for suite in self.suites:
            failures = sum(1 for case in suite.cases if case.status == "failed")
            # A cases file that did not load is one test that errored, so CI shows it rather than nothing.
            unread = suite.errors if not suite.cases else []
            errors = sum(1 for case in suite.cases if case.status == "error") + len(unread)
            seconds = suite.seconds
            tests = len(suite.cases) + len(unread)
            element = ET.SubElement(
                root,
                "testsuite",
                name=suite.file,
                tests=str(tests),
                failures=str(failures),
                errors=str(errors),
                skipped="0",
                time=f"{seconds:.6f}",
            )
            for case in suite.cases:
                testcase = ET.SubElement(
                    element, "testcase", classname=suite.mapping or suite.file, name=case.name
                )
                if case.location is not None:
                    testcase.set("file", case.location.file)
                    testcase.set("line", str(case.location.line))
                if case.status != "passed":
                    kind = "failure" if case.status == "failed" else "error"
                    detail = ET.SubElement(testcase, kind, message=(case.messages or [kind])[0])
                    detail.text = "\n".join(case.messages)
            for error in unread:
                testcase = ET.SubElement(element, "testcase", classname=suite.file, name="(load)", time="0")
                detail = ET.SubElement(testcase, "error", message=error["message"], type=error["type"])
                detail.text = error["text"]
            totals["tests"] += tests
            totals["failures"] += failures
            totals["errors"] += errors
            totals["time"] += seconds
        for key in ("tests", "failures", "errors"):
            root.set(key, str(totals[key]))
        root.set("time", f"{totals['time']:.6f}")
        ET.indent(root)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ------------------------------------------------------------------------------------------------------------
# shipmap run / replay


def write_summary_json(summary: RunSummary, path: Path, *, exit_code: int) -> None:
    """The run summary as a file, written whole or not at all (a reader never sees half of it)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(summary_text(summary, exit_code=exit_code), encoding="utf-8")
    partial.replace(path)


def summary_text(summary: RunSummary, *, exit_code: int) -> str:
    """The run summary's JSON document as ``--summary-json`` writes it and ``--format json`` prints it."""
    return document_text(summary_json(summary, exit_code=exit_code))


def document_text(document: dict[str, Any]) -> str:
    """A summary document as the file and standard output hold it."""
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def summary_json(summary: RunSummary, *, exit_code: int, at_stop: bool = False) -> dict[str, Any]:
    """A run's (or a replay's) summary as ``--summary-json`` writes it. ``at_stop``: a service's (``shipmap serve
    --log-format json``), with what its text says beside the table: the outages, what it left pending, its
    replays, and the dead letters in the journal at stop."""
    from shipmap.connectors._summary import REPLAY_DETAIL, replay_report, summary_hints, target_rows

    document: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "ok": summary.ok,
        "exit_code": exit_code,
        "events": summary.events,
        "delivered": summary.delivered,
        "retried": summary.retried,
        "dead": summary.dead,
        "skipped": summary.skipped,
        "unrouted": summary.unrouted,
        "rejected": summary.rejected,
        "recovered": summary.recovered,
        "parked": summary.parked,  # left pending by an open breaker: sent first by the next run or start
        "forgotten": dict(summary.forgotten),  # journal.keep: rows let go during the run, by kind
        "elapsed_seconds": round(summary.elapsed, 6),
        "targets": target_rows(summary),
        "unknown": [],  # the fields null because this command was not told them (handed_summary_json)
        # A shared journal: deliveries other live workers still held when this run stopped waiting (exit 10).
        "held_elsewhere": [
            {"worker": h.worker, "deliveries": h.deliveries, "lease_until": h.lease_until}
            for h in summary.held
        ],
        "hints": summary_hints(summary),  # the lines the text prints after its counts: what to do next
    }
    if not at_stop:
        return document
    replays = summary.replays
    document.update(
        {
            "outages": dict(summary.outages),  # connection -> how it is down at stop
            "outages_ended": list(summary.outages_ended),  # down meanwhile, closed since
            "replays": None
            if replays is None or not replays.targets
            else {k: v for k, v in replay_report(replays).items() if k not in REPLAY_DETAIL},
            "dead_letters_now": summary.dead_now,  # the journal's count at stop; null: it could not be read
        }
    )
    return document


SUMMARY_COUNTS = (
    "events",
    "delivered",
    "retried",
    "dead",
    "skipped",
    "unrouted",
    "rejected",
    "recovered",
    "parked",
)


def handed_summary_json(
    told: Mapping[str, Any], *, exit_code: int, elapsed: float, hints: list[str]
) -> dict[str, Any]:
    """The summary document of a replay another process carried out (a running ``shipmap serve``; with
    ``--rejected``, delivery): the counts and ``targets`` it was ``told``, null for the others, each of which
    ``unknown`` names rather than a zero that was not counted. ``ok`` is the exit code's; ``hints`` what the
    command's text says of the outcome and what to do next."""
    from shipmap.connectors._summary import RunSummary

    document = summary_json(RunSummary(replay=True), exit_code=exit_code)
    document.update(ok=exit_code == 0, elapsed_seconds=round(elapsed, 6), hints=list(hints))
    for name in (*SUMMARY_COUNTS, "targets"):
        document[name] = told.get(name)
        if document[name] is None:
            document["unknown"].append(name)
    return document
