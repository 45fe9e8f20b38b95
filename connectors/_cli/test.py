"""``shipmap test MAPPING|CASES|DIR...``: run the fixture cases declared beside mappings.

A mapping ``x.yaml`` has its cases in ``x.cases.yaml`` (the format is in docs/testing-mappings.md). Every case
maps one source document, compares the payloads with what it expects (partially unless ``match: exact``),
checks the targets it says are skipped, the errors it expects, and validates every payload against its kind.
Output ends with ``N passed, M failed``. Exit code: 0 when every case passes, ``TEST_FAILURE_EXIT`` (1) when
one fails; a mapping, cases file or source that cannot be read keeps its own error's exit code (2, 3).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import json
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jmespath
import jmespath.exceptions
from shipmap.connectors._map._parallel import ordered_map
from shipmap.connectors._plural import counted
from shipmap.engine import (
    CompiledMapping,
    Location,
    MappingError,
    MappingStructureError,
    PayloadValidationError,
    ShipmapError,
    SourceError,
    load_mapping,
    read_input,
    resolve_mapping_path,
)

from ._cases import CASES_SUFFIX, Case, CasesFileErrors, load_suite, payload_name_of, unknown_error_targets
from ._file_kinds import looks_like_mapping
from ._output import BOLD, DIM, GREEN, RED, YELLOW, add_jobs_argument, paint, use_color
from ._reports import CaseOutcome, TestReport, error_json

TEST_FAILURE_EXIT = 1  # at least one case failed (library errors keep their own, higher codes)
COVERAGE_PREVIEW = 5  # paths shown per coverage line without --coverage
VALUE_PREVIEW = 80
CASES_PER_TASK = 32  # a suite of more cases than this runs in a --jobs pool

_MISSING: Any = object()


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a mapping (its <stem>.cases.yaml is run), a cases file, a directory (searched for *.cases.yaml), "
        "or a packaged mapping such as shopify/order",
    )
    parser.add_argument(
        "--coverage", action="store_true", help="list every defaulted target field and unread source field"
    )
    parser.add_argument("-k", dest="keyword", help="only cases whose name contains this text")
    add_jobs_argument(parser)
    parser.add_argument(
        "--format",
        choices=("text", "json", "junit"),
        default="text",
        help="text (default), or a report on stdout for CI: json, or junit (JUnit XML); see docs/cli-formats.md",
    )


def run(args: argparse.Namespace) -> int:
    report = TestReport()
    if args.format == "text":
        return _run(args, report)
    with contextlib.redirect_stdout(io.StringIO()):  # the report replaces the text on stdout
        code = _run(args, report)
    report.write(args.format, sys.stdout, exit_code=code)
    return code


def _run(args: argparse.Namespace, report: TestReport) -> int:
    color = use_color(sys.stdout)
    worst = 0
    passed = failed = 0
    try:
        files = _discover(args.paths)
    except ShipmapError as error:
        err(paint(error.render(), RED, use_color(sys.stderr)))
        return error.exit_code
    for cases_file in files:
        try:
            suite = load_suite(cases_file)
        except ShipmapError as error:
            err(paint(error.render(), RED, use_color(sys.stderr)))
            unread = report.suite(cases_file)
            for each in error.errors if isinstance(error, CasesFileErrors) else [error]:  # each located
                unread.errors.append(error_json(each))
            worst = max(worst, error.exit_code)
            failed += 1
            continue
        cases = [case for case in suite.cases if not args.keyword or args.keyword in case.name]
        if not cases:
            continue
        print(paint(f"{suite.file}", BOLD, color) + paint(f"  (mapping {suite.mapping_path})", DIM, color))
        reported = report.suite(suite.file, suite.mapping_path)
        try:
            mapping = load_mapping(suite.mapping_path)
        except ShipmapError as error:
            err(paint(error.render(), RED, use_color(sys.stderr)))
            reported.errors.append(error_json(error))
            worst = max(worst, error.exit_code)
            failed += len(cases)
            for case in cases:
                print(f"  {paint('FAIL', RED, color)}  {case.name} (the mapping did not load)")
                reported.cases.append(
                    CaseOutcome(case.name, "error", case.location, ["the mapping did not load"])
                )
            continue
        chunks = [cases[i : i + CASES_PER_TASK] for i in range(0, len(cases), CASES_PER_TASK)]
        results = (r for chunk in ordered_map(_run_cases, mapping, chunks, jobs=args.jobs) for r in chunk)
        suite_started = time.perf_counter()
        for case, result in zip(cases, results, strict=True):
            reported.cases.append(
                CaseOutcome(
                    case.name,
                    "passed" if result.ok else "error" if result.source_error is not None else "failed",
                    case.location,
                    list(result.messages),
                )
            )
            if result.source_error is not None:
                worst = max(worst, result.source_error.exit_code)
            if result.ok:
                passed += 1
                print(f"  {paint('PASS', GREEN, color)}  {case.name}")
            else:
                failed += 1
                print(
                    f"  {paint('FAIL', RED, color)}  {case.name}  {paint(f'({case.location})', DIM, color)}"
                )
                for line in result.messages:
                    print(f"        {line}")
            for line in _coverage_lines(result, full=args.coverage):
                print(paint(f"        {line}", DIM, color))
        reported.seconds = time.perf_counter() - suite_started
    if not files or passed + failed == 0:
        err(
            f"no cases found in {', '.join(args.paths)}"
            + (f" matching -k {args.keyword}" if args.keyword else "")
        )
        worst = max(worst, TEST_FAILURE_EXIT)
    summary = f"{passed} passed, {failed} failed"
    print(paint(summary, GREEN if failed == 0 else RED, color))
    if failed:
        worst = max(worst, TEST_FAILURE_EXIT)
    return worst


def err(text: str) -> None:
    sys.stdout.flush()  # keep a library error beside the case lines it belongs to when both go to one pipe
    print(text, file=sys.stderr)


# ------------------------------------------------------------------------------------------------------------
# Finding cases files


def _discover(paths: Sequence[str]) -> list[Path]:
    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found.extend(sorted(path.rglob(f"*{CASES_SUFFIX}")))
            for mapping in sorted(path.rglob("*.yaml")):
                lone = not mapping.name.endswith(CASES_SUFFIX) and not _cases_beside(mapping).is_file()
                if lone and looks_like_mapping(mapping):
                    note = f"note: {mapping} has no {_cases_beside(mapping).name}"
                    err(paint(note, YELLOW, use_color(sys.stderr)))
            continue
        if path.name.endswith(CASES_SUFFIX) and path.is_file():
            found.append(path)
            continue
        mapping = resolve_mapping_path(text)  # a file, or a packaged name such as shopify/order
        cases = _cases_beside(mapping)
        if not cases.is_file():
            raise MappingError(
                f"no cases for this mapping: {cases} does not exist", location=Location(str(mapping), 1, 1)
            )
        found.append(cases)
    unique: dict[Path, None] = {}
    for path in found:
        unique.setdefault(path, None)
    return list(unique)


def _cases_beside(mapping: Path) -> Path:
    stem = mapping.name.rsplit(".", 1)[0]
    return mapping.with_name(stem + CASES_SUFFIX)


# ------------------------------------------------------------------------------------------------------------
# Running one case


@dataclass
class CaseResult:
    messages: list[str] = field(default_factory=list)
    defaulted: list[str] | None = None
    unread: list[str] | None = None
    source_error: ShipmapError | None = None

    @property
    def ok(self) -> bool:
        return not self.messages


def _run_cases(mapping: CompiledMapping, cases: list[Case]) -> list[CaseResult]:
    return [_run_case(mapping, case) for case in cases]


def _run_case(mapping: CompiledMapping, case: Case) -> CaseResult:
    result = CaseResult()
    try:
        source = _source(case)
    except ShipmapError as error:
        result.source_error = error
        result.messages.extend(error.render().splitlines())
        return result
    names = [target.name for target in mapping.targets]
    # A fan-out target's payloads are labelled name[key] (expect: {"shipment[7]": …}).
    for label in [*case.expect, *case.skipped, *(path.split(".")[0] for path in case.absent)]:
        name = label.split("[")[0]
        if name not in names:
            result.messages.append(f"{name}: the mapping has no such target (it has {', '.join(names)})")
    for problem in unknown_error_targets(case, names, mapping.file):  # at its `target:`, as validate says
        result.messages.extend(problem.render().splitlines())
    if result.messages:
        return result
    payloads: dict[str, Any] = {}
    skipped: set[str] = set()
    failures: dict[str, ShipmapError] = {}
    for name in names:
        target = mapping.target(name)
        try:
            produced = target.produce_all(source)
        except ShipmapError as error:
            failures[name] = error
            continue
        if not produced:
            skipped.add(name)
            continue
        for element, payload in produced:
            label = name if element is None else f"{name}[{element}]"
            payloads[label] = payload
            problems = target.problems(payload)
            if problems:
                failures[label] = PayloadValidationError(label, target.kind.name, problems)
    expected_failures = _check_errors(case, failures, result)
    _check_skipped(case, payloads, failures, result)
    for name, expected in case.expect.items():
        failed = next((label for label in (name, _target_of(name)) if label in failures), None)
        if name in skipped:
            reason = mapping.target(name).skip_reason(source)
            result.messages.append(f"{name}: expected a payload, but it was skipped ({reason})")
        elif name in payloads:
            result.messages.extend(_compare_target(name, expected, payloads[name], exact=name in case.exact))
        elif failed in expected_failures:  # matched by `error`, so nothing else would say it
            result.messages.append(
                f"{name}: expected a payload, but it failed with the error the case expects"
                " (a target that fails gives no payload: expect the payload or the error, not both)"
            )
        elif failed is None:
            labels = _payloads_of(payloads, _target_of(name))
            result.messages.append(f"{name}: no such payload (the target gave {', '.join(labels) or 'none'})")
    _check_absent(case, payloads, failures, result)
    _coverage(mapping, source, result)
    return result


def _target_of(name: str) -> str:
    """The target of a payload name: ``fulfillment`` of ``fulfillment[7]``."""
    return name.split("[")[0]


def _payloads_of(payloads: dict[str, Any], target: str) -> list[str]:
    """The names of the payloads a target gave: itself, or ``target[key]`` for each fan-out element."""
    return [label for label in payloads if _target_of(label) == target]


def _check_skipped(
    case: Case, payloads: dict[str, Any], failures: dict[str, ShipmapError], result: CaseResult
) -> None:
    for name in case.skipped:
        # A fan-out target's bare name is skipped only when it gave no payload at all (none is named bare).
        made = [name] if name in payloads else [] if "[" in name else _payloads_of(payloads, name)
        if made == [name]:
            result.messages.append(
                f"{name}: expected to be skipped, but its 'when' guard held and it produced a payload"
            )
        elif made:
            result.messages.append(f"{name}: expected to be skipped, but it produced {', '.join(made)}")
        elif name in failures or _target_of(name) in failures:
            result.messages.append(f"{name}: expected to be skipped, but it failed (see above)")


def _check_absent(
    case: Case, payloads: dict[str, Any], failures: dict[str, ShipmapError], result: CaseResult
) -> None:
    for path in case.absent:
        name = payload_name_of(path)
        found = _lookup(payloads, path)
        if found is not _MISSING:
            result.messages.append(f"{path}: expected no such field, got {_show(found)}")
        elif path == name:  # a whole payload; a fan-out target's bare name: any of its payloads
            made = [] if "[" in name else _payloads_of(payloads, name)
            if made:
                result.messages.append(f"{path}: expected no such payload, got {', '.join(made)}")
        elif name not in payloads:  # no payload to look in: any mapping would pass
            labels = _payloads_of(payloads, _target_of(name))
            if labels:
                why = f"the target gave {', '.join(labels)}"
            else:
                why = "it failed" if name in failures or _target_of(name) in failures else "it was skipped"
            result.messages.append(f"{path}: expected no such field, but there is no {name} payload ({why})")


def _source(case: Case) -> Any:
    """The case's event: its source (a file read as preview reads it: one JSON document, a JSON array or
    NDJSON of several, then ``select:``), or its named documents as ``{name: document}``."""
    if case.documents is not None:
        return {name: _read(value) for name, value in case.documents.items()}
    document = _read(case.source)
    if case.select is not None:
        try:
            document = jmespath.search(case.select, document)
        except jmespath.exceptions.JMESPathError as error:
            raise MappingStructureError(f"select: {error}", location=case.location) from None
        if document is None:
            raise SourceError(f"select '{case.select}' found nothing in the source", location=case.location)
    return document


def _read(value: Any) -> Any:
    if not isinstance(value, Path):
        return value
    if not value.is_file():
        raise SourceError(f"cannot read source: {value} does not exist", location=Location(str(value), 1, 1))
    return read_input(value)


def _check_errors(case: Case, failures: dict[str, ShipmapError], result: CaseResult) -> set[str]:
    """The failures the case expects; a message for each expected error that did not happen and each
    failure not expected."""
    matched: set[str] = set()
    for expected in case.errors:
        hit = next((name for name, error in failures.items() if _error_matches(expected, name, error)), None)
        if hit is None:
            wanted = ", ".join(f"{key}={value!r}" for key, value in expected.items())
            got = "; ".join(
                f"{name}: {type(error).__name__}: {error.message}" for name, error in failures.items()
            )
            result.messages.append(f"expected an error ({wanted}), got {got or 'no error'}")
        else:
            matched.add(hit)
    for name, error in failures.items():
        if name not in matched:
            result.messages.append(f"{name}: unexpected {type(error).__name__}:")
            result.messages.extend(f"  {line}" for line in error.render().splitlines())
    return matched


def _error_matches(expected: dict[str, str], target: str, error: ShipmapError) -> bool:
    if "type" in expected and expected["type"] not in {cls.__name__ for cls in type(error).__mro__}:
        return False
    if "target" in expected and expected["target"] != target:
        return False
    problems = error.problems if isinstance(error, PayloadValidationError) else ()
    if "field" in expected:
        fields = {error.field, *(problem.field for problem in problems)}
        if expected["field"] not in fields:
            return False
    if "message" in expected:
        messages = [error.message, *(problem.message for problem in problems)]
        if not any(expected["message"] in message for message in messages):
            return False
    return not ("source_path" in expected and expected["source_path"] != error.source_path)


# ------------------------------------------------------------------------------------------------------------
# Comparing payloads


def _compare_target(name: str, expected: Any, actual: Any, *, exact: bool) -> list[str]:
    mismatches = list(_compare(expected, actual, name, exact=exact))
    lines = [f"{path}: expected {want}, got {got}" for path, want, got in mismatches]
    if exact and mismatches:
        diff = difflib.unified_diff(
            _pretty(expected).splitlines(),
            _pretty(actual).splitlines(),
            f"{name} (expected)",
            f"{name} (got)",
            lineterm="",
        )
        lines.extend(diff)
    return lines


def _compare(expected: Any, actual: Any, path: str, *, exact: bool) -> Iterator[tuple[str, str, str]]:
    """(field path, expected, got) for each difference. Partial: only the keys expected are compared."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key, value in expected.items():
            child = f"{path}.{key}"
            if key in actual:
                yield from _compare(value, actual[key], child, exact=exact)
            else:
                yield child, _show(value), "(missing)"
        if exact:
            for key in actual:
                if key not in expected:
                    yield f"{path}.{key}", "(nothing)", _show(actual[key])
        return
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            yield path, counted(len(expected), "element"), f"{len(actual)}"
        for index, (want, got) in enumerate(zip(expected, actual, strict=False)):
            yield from _compare(want, got, f"{path}[{index}]", exact=exact)
        return
    if not _same(expected, actual):
        yield path, _show(expected), _show(actual)


def _same(expected: Any, actual: Any) -> bool:
    # JSON equality: 1 and 1.0 are the same number, but true is not 1 and "1" is not 1.
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return expected == actual
    return type(expected) is type(actual) and expected == actual


def _lookup(payloads: dict[str, Any], path: str) -> Any:
    # The payload first, by its whole name: a fan-out payload's key is not an index (fulfillment[94001]).
    name = payload_name_of(path)
    if name not in payloads:
        return _MISSING
    current: Any = payloads[name]
    for step in re.findall(r"[^.\[\]]+|\[\d+\]", path[len(name) :]):
        if step.startswith("["):
            index = int(step[1:-1])
            if not isinstance(current, list) or index >= len(current):
                return _MISSING
            current = current[index]
        else:
            if not isinstance(current, dict) or step not in current:
                return _MISSING
            current = current[step]
    return current


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= VALUE_PREVIEW else text[: VALUE_PREVIEW - 1] + "…"


def _pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)


# ------------------------------------------------------------------------------------------------------------
# Coverage


def _coverage(mapping: CompiledMapping, source: Any, result: CaseResult) -> None:
    try:
        trace = mapping.trace(source)
    except ShipmapError:
        return  # the case's own run already reported why this document does not map
    result.defaulted = sorted(trace.defaulted)
    result.unread = list(trace.unread)


def _coverage_lines(result: CaseResult, *, full: bool) -> list[str]:
    if result.defaulted is None or result.unread is None:
        return []
    if full:
        lines = [
            f"coverage: {counted(len(result.defaulted), 'target field')} defaulted,"
            f" {counted(len(result.unread), 'source field')} unread"
        ]
        lines.extend(f"  defaulted: {path}" for path in result.defaulted)
        lines.extend(f"  unread: {path}" for path in result.unread)
        return lines
    return [
        f"coverage: {len(result.defaulted)} defaulted{_some(result.defaulted)}; "
        f"{len(result.unread)} unread{_some(result.unread)}"
    ]


def _some(paths: list[str]) -> str:
    if not paths:
        return ""
    shown = ", ".join(paths[:COVERAGE_PREVIEW])
    more = f", … +{len(paths) - COVERAGE_PREVIEW} (--coverage)" if len(paths) > COVERAGE_PREVIEW else ""
    return f" ({shown}{more})"


__all__ = ["TEST_FAILURE_EXIT", "register", "run"]

# The case runner, for tools that embed it (shipmap studio runs a cases file against the mapping it edits).
run_case = _run_case
