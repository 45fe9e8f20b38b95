"""The mapping's cases file in the studio: run it with ``shipmap test``'s own case runner (against the mapping
as edited), and "Save as case": append the current sample and its payloads as a new case."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from shipmap.engine import CompiledMapping, ShipmapError, checkpoint

from .._cli._cases import CASES_SUFFIX, Case, load_suite
from .._cli.test import run_case
from ._errors import StudioError
from ._evaluate import (
    MAX_CARDS,
    Json,
    collect,
    compile_mapping,
    plain,
    read_sample,
    sample_error,
    with_documents,
)
from ._files import Workspace

_NEW_FILE_HEAD = (
    "# Cases for {mapping} (run: shipmap test {mapping}; format: docs/testing-mappings.md).\n"
    "# Written by shipmap studio's Save as case: each expects the payloads exactly as they were.\n"
    "cases:\n"
)


def cases_file_of(workspace: Workspace, mapping_file: str) -> str:
    """``x.yaml`` -> ``x.cases.yaml``, beside it (relative to the workspace)."""
    stem = mapping_file.rsplit(".", 1)[0] if mapping_file.endswith((".yaml", ".yml")) else mapping_file
    relative = stem + CASES_SUFFIX
    workspace.resolve(relative)  # Forbidden if it would leave the directory
    return relative


def run_cases(workspace: Workspace, mapping_text: str, mapping_file: str) -> Json:
    """Every case of the mapping's cases file, run against the mapping as it is in the editor."""
    relative = cases_file_of(workspace, mapping_file)
    path = workspace.resolve(relative)
    result: Json = {"file": relative, "exists": path.is_file(), "cases": [], "error": None}
    if not path.is_file():
        return result
    mapping, diagnostics = compile_mapping(mapping_text, mapping_file)
    try:
        suite = load_suite(path)
    except ShipmapError as error:
        result["error"] = workspace.render(error)
        return result
    for case in suite.cases:
        checkpoint()  # stopped at the request's deadline between cases too (_work.py)
        result["cases"].append(_run_one(workspace, mapping, diagnostics, case))
    result["passed"] = sum(1 for case in result["cases"] if case["ok"])
    result["failed"] = len(result["cases"]) - result["passed"]
    return result


def _run_one(
    workspace: Workspace, mapping: CompiledMapping | None, diagnostics: list[Json], case: Case
) -> Json:
    entry: Json = {"name": case.name, "line": case.location.line}
    if isinstance(case.source, Path) and not workspace.contains(case.source):
        entry.update(ok=False, messages=[f"{case.source}: outside the studio's directory; not read"])
        return entry
    if mapping is None:
        first = diagnostics[0]["text"] if diagnostics else "the mapping does not compile"
        entry.update(ok=False, messages=["the mapping did not load:", *first.splitlines()])
        return entry
    outcome = run_case(mapping, case)
    entry.update(ok=outcome.ok, messages=outcome.messages, unread=outcome.unread or [])
    return entry


def save_case(
    workspace: Workspace,
    mapping_text: str,
    mapping_file: str,
    sample_text: str,
    sample_file: str | None,
    index: int,
    name: str,
    documents_text: str = "",
) -> Json:
    """Append a case: the chosen sample document, each target's payload (exact match), the targets skipped
    and the errors raised, as they are now. The file is checked by loading it back before it is kept."""
    mapping, diagnostics = compile_mapping(mapping_text, mapping_file)
    if mapping is None:
        raise StudioError(
            "the mapping does not compile; fix it before saving a case:\n" + diagnostics[0]["text"]
        )
    documents = read_sample(sample_text, sample_file or "sample")
    if not documents:
        raise StudioError("the sample pane is empty")
    index = min(max(index, 0), len(documents) - 1)
    document = documents[index]
    located = sample_error(document)
    if located is not None:
        raise StudioError(f"the sample cannot be saved as a case:\n{located['text']}")
    try:
        mapped = with_documents(document.document, documents_text)
    except ShipmapError as error:
        raise StudioError(f"the enrichment documents cannot be used: {error.render()}") from None
    relative = cases_file_of(workspace, mapping_file)
    path = workspace.resolve(relative)
    source = None  # with enrichment documents, the case holds the document the mapping saw, inline
    if not documents_text.strip():
        source = _source_reference(workspace, path, sample_text, sample_file, len(documents))
    case = _case(mapping, name.strip() or "a saved sample", mapped, source)
    old = workspace.read_text(relative) if path.is_file() else None
    names = set()
    if old is not None:
        try:
            names = {c.name for c in load_suite(path).cases}
        except ShipmapError as error:  # nothing is appended to a file shipmap test cannot read
            raise StudioError(
                f"{relative} cannot be read; fix it first:\n{workspace.render(error)}"
            ) from None
    base, number = case["name"], 2
    while case["name"] in names:
        case["name"] = f"{base} ({number})"
        number += 1
    text = _appended(old, case, relative, mapping_file)
    workspace.write_text(relative, text)
    try:
        load_suite(path)
    except ShipmapError as error:
        if old is None:
            path.unlink()
        else:
            workspace.write_text(relative, old)
        raise StudioError(
            f"the case could not be written; the file is unchanged:\n{workspace.render(error)}"
        ) from None
    return {"file": relative, "name": case["name"], "text": workspace.read_text(relative)}


def _source_reference(
    workspace: Workspace, cases_path: Path, sample_text: str, sample_file: str | None, count: int
) -> str | None:
    """The sample file's path relative to the cases file, when the pane holds that file's one document."""
    if sample_file is None or count != 1:
        return None
    try:
        path = workspace.resolve(sample_file)
        if workspace.read_path(path, sample_file) != sample_text:
            return None  # edited in the pane: the case keeps what was mapped, inline
    except StudioError:
        return None
    return Path(os.path.relpath(path, cases_path.parent)).as_posix()


def _case(mapping: CompiledMapping, name: str, document: Any, source: str | None) -> dict[str, Any]:
    """The case pins what the page shows: at most ``MAX_CARDS`` payloads (a fan-out of 100,000 elements is not
    100,000 payloads in a YAML file), and says so in its description when there were more. Errors are all
    pinned: ``shipmap test`` fails a case on any it does not expect."""
    expect: dict[str, Any] = {}
    skipped: list[str] = []
    errors: list[dict[str, str]] = []
    made: dict[str, int] = {}  # payloads per target, pinned or not
    for target in mapping.targets:
        checkpoint()
        produced, failures = collect(target, document)
        for failure in failures[:1]:  # the case runner stops at a target's first failing field
            errors.append({"type": type(failure).__name__, "target": target.name, **_field(failure)})
        if not produced and not failures:
            skipped.append(target.name)
        if failures:  # shipmap test sees the target fail: its other elements' payloads are never compared
            continue
        made[target.name] = len(produced)
        for element, payload in produced:
            label = target.name if element is None else f"{target.name}[{element}]"
            problems = target.problems(payload)
            if problems:  # expected as it is, contract problem included: the case pins both
                errors.append({"type": "PayloadValidationError", "target": label, "field": problems[0].field})
            if len(expect) < MAX_CARDS:
                expect[label] = plain(payload)
    case: dict[str, Any] = {"name": name}
    if sum(made.values()) > len(expect):
        counts = ", ".join(f"{target} {count:,}" for target, count in made.items() if count)
        case["description"] = (
            f"Saved by shipmap studio: expect pins the first {len(expect)} payloads of {sum(made.values()):,}"
            f" ({counts}); shipmap test maps and validates the others, without comparing them."
        )
    case["source"] = source if source is not None else plain(document)
    if expect:
        case["expect"] = expect
        case["match"] = "exact"
    if skipped:
        case["skipped"] = skipped
    if errors:
        case["error"] = errors[0] if len(errors) == 1 else errors
    return case


def _field(error: ShipmapError) -> dict[str, str]:
    return {"field": error.field} if error.field else {}


def _appended(old: str | None, case: dict[str, Any], relative: str, mapping_file: str) -> str:
    item = yaml.safe_dump([case], sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
    if old is None:
        mapping_name = Path(mapping_file).name
        return _NEW_FILE_HEAD.format(mapping=mapping_name) + _indent(item, 2)
    indent = _list_indent(old, relative)
    body = old if old.endswith("\n") else old + "\n"
    return body + "\n" + _indent(item, indent)


def _list_indent(text: str, relative: str) -> int:
    """The column of the cases list's dashes, if the list is the file's last block (so appending keeps every
    comment and all formatting); otherwise the case cannot be appended safely."""
    node = yaml.compose(text)
    cases = None
    if isinstance(node, yaml.MappingNode):
        cases = next((value for key, value in node.value if key.value == "cases"), None)
    if not isinstance(cases, yaml.SequenceNode) or cases.flow_style or not cases.value:
        raise StudioError(f"{relative}: 'cases' is not a block list; add the case by hand")
    tail = text[cases.end_mark.index :]
    if any(line.strip() and not line.lstrip().startswith("#") for line in tail.splitlines()):
        raise StudioError(
            f"{relative}: the cases list is not the last part of the file; add the case by hand"
        )
    return int(cases.value[0].start_mark.column) - 2


def _indent(text: str, columns: int) -> str:
    pad = " " * max(columns, 0)
    return "".join(pad + line if line.strip() else line for line in text.splitlines(keepends=True))


__all__ = ["cases_file_of", "run_cases", "save_case"]
