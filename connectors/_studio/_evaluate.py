"""Evaluating the mapping in the editor against the sample in the sample pane, as ``shipmap preview`` would:
the same engine, the same source reader, the same wording. Everything it finds is data in the result (never
an exception), so a mapping broken mid-edit, or a sample that is not JSON, only shows up as marked lines."""

from __future__ import annotations

import json
import logging
from typing import Any

from shipmap.engine import (
    CompiledMapping,
    CompiledTarget,
    Cut,
    Location,
    PayloadValidationError,
    Problem,
    ShipmapError,
    SourceDocument,
    SourceError,
    allowed,
    checkpoint,
    parse_mapping,
    read_stream,
)
from shipmap.engine._errors import internal_message

from .._deliver._request import encode_payload
from .._plural import counted
from ._files import Workspace
from ._requests import load_setting, plan_requests

log = logging.getLogger("shipmap.studio")

DOCUMENTS_NAME = "documents"  # how errors name the enrichment documents box
MAX_DOCUMENTS = 1000  # a sample pane holds a few documents; more are counted, not kept
# Cards on the page: a fan-out over a sample's 100,000 elements made a 65 MB answer no browser renders. Once
# the answer is full the mapping stops (``cut`` says where); `shipmap preview` maps and prints them all.
MAX_CARDS = 200
MAX_UNREAD = 1000  # source fields never read, listed; a sample of 100,000 distinct keys counts the rest
MAX_ERRORS = 100  # per target: a fan-out whose every element fails is one error a line, 20,000 lines
Json = dict[str, Any]


def compile_mapping(text: str, file: str) -> tuple[CompiledMapping | None, list[Json]]:
    """The compiled mapping, or None and the error that stops it; plus validate's lint, as diagnostics."""
    try:
        mapping = parse_mapping(text, file=file)
    except ShipmapError as error:
        return None, [diagnostic(error)]
    except Exception as error:  # the engine has a bug: report it on the page, keep serving
        log.exception("compiling %s", file)
        return None, [{"severity": "error", "line": 1, "column": 1, "message": internal_message(error)}]
    return mapping, [problem_diagnostic(problem) for problem in mapping.lint()]


def diagnostic(error: ShipmapError, *, target: str | None = None) -> Json:
    """One located message for the editor: the line to mark and the CLI's rendering of the error."""
    return {
        "severity": "error",
        "line": error.line,
        "column": error.column,
        "file": error.file,
        "message": error.message,
        "field": error.field,
        "target": target,
        "text": error.render(),
    }


def problem_diagnostic(problem: Problem, *, target: str | None = None) -> Json:
    where = problem.location
    return {
        "severity": problem.severity,
        "line": where.line if where else None,
        "column": where.column if where else None,
        "file": where.file if where else None,
        "message": f"{problem.field}: {problem.message}",
        "field": problem.field,
        "target": target,
        "text": problem.render(),
    }


def read_sample(text: str, name: str) -> list[SourceDocument]:
    """JSON, an array of documents, or NDJSON: read exactly as ``shipmap preview`` reads a file."""
    documents: list[SourceDocument] = []
    for document in read_stream(text.splitlines(keepends=True), name):
        documents.append(document)
        if len(documents) >= MAX_DOCUMENTS:
            break
    return documents


def evaluate(
    workspace: Workspace,
    mapping_text: str,
    mapping_file: str | None,
    sample_text: str,
    sample_name: str,
    index: int = 0,
    documents_text: str = "",
) -> Json:
    """Everything the page shows for one mapping text and one sample (document ``index`` of it), with the
    enrichment documents of ``documents_text`` (a JSON object, name -> document) beside it."""
    shown = mapping_file or "mapping.yaml"
    mapping, diagnostics = compile_mapping(mapping_text, shown)
    result: Json = {
        "mapping": {"ok": mapping is not None, "name": mapping.name if mapping else None, "file": shown},
        "diagnostics": diagnostics,
        "sample": None,
        "targets": [],
        "unread": [],
        "unread_count": 0,
        "defaulted": [],
        "requests_note": None,
        "documents_error": None,
        "left_off": 0,
        "cut": None,
    }
    documents = read_sample(sample_text, sample_name) if sample_text.strip() else []
    index = min(max(index, 0), max(len(documents) - 1, 0))
    chosen = documents[index] if documents else None
    result["sample"] = {
        "documents": [{"origin": d.origin, "ok": d.ok} for d in documents],
        "index": index,
        "error": sample_error(chosen) if chosen is not None else None,
        "empty": not documents,
    }
    if mapping is None or chosen is None or not chosen.ok:
        return result
    try:
        source = with_documents(chosen.document, documents_text)
    except ShipmapError as error:
        result["documents_error"] = diagnostic(error)
        return result
    targets, produced, left_off, cut = _run_targets(mapping, source, diagnostics)
    result["targets"] = targets
    result["left_off"] = left_off
    result["cut"] = cut
    # The coverage and the requests map the document again: within the same number of payloads.
    with allowed(payloads=MAX_CARDS):
        _coverage(mapping, source, result)
    if produced:
        with allowed(payloads=MAX_CARDS):
            _requests(workspace, mapping, mapping_file, source, targets, result)
    return result


def with_documents(source: Any, documents_text: str) -> Any:
    """The source as ``shipmap serve`` hands it to the mapping after enrichment: the fetched documents as
    keys beside the webhook's own (``event.update(documents)``). SourceError, located, for bad input."""
    if not documents_text.strip():
        return source
    try:
        documents = json.loads(documents_text)
    except json.JSONDecodeError as error:
        raise SourceError(
            f"not JSON: {error.msg}", location=Location(DOCUMENTS_NAME, error.lineno, error.colno)
        ) from None
    except RecursionError:
        raise SourceError("JSON nested too deeply to read", location=Location(DOCUMENTS_NAME, 1, 1)) from None
    if not isinstance(documents, dict):
        raise SourceError(
            "enrichment documents are a JSON object: {name: document, ...}",
            location=Location(DOCUMENTS_NAME, 1, 1),
        )
    if not isinstance(source, dict):
        raise SourceError(
            "enrichment documents go beside the keys of a sample that is a JSON object; this sample is not one",
            location=Location(DOCUMENTS_NAME, 1, 1),
        )
    return {**source, **documents}


def sample_error(document: SourceDocument) -> Json | None:
    """A document that could not be read, located as the page shows it (with the excerpt of its line)."""
    if document.ok:
        return None
    try:
        document.unwrap()
    except ShipmapError as error:
        located = diagnostic(error)
        if document.excerpt:
            located["text"] += f"\n  {document.excerpt}"
        return located
    return None


def collect(target: CompiledTarget, source: Any) -> tuple[list[tuple[str | None, Any]], list[ShipmapError]]:
    """A target's payloads (``(fan-out key or None, payload)``) and every error met making them."""
    try:
        produced, failed_fields = target.collect(source)
    except ShipmapError as error:
        return [], [error]
    return produced, list(failed_fields)


def _run_targets(
    mapping: CompiledMapping, source: Any, diagnostics: list[Json]
) -> tuple[list[Json], bool, int, Json | None]:
    """One entry per payload (a fan-out target's are labelled ``name[key]``), per failed or skipped target:
    every problem of the document at once, as ``shipmap preview`` reports them. Mapping stops once there are
    ``MAX_CARDS`` entries (the fourth value says where); a payload made past them is counted (the third)."""
    entries: list[Json] = []
    produced_any = False
    left_off = 0
    cuts: list[Cut] = []
    unmapped: list[str] = []
    for target in mapping.targets:
        checkpoint()
        room = MAX_CARDS - len(entries)
        if room <= 0:
            unmapped.append(target.name)
            continue
        base: Json = {"target": target.name, "kind": target.kind.name, "line": target.location.line}
        try:
            with allowed(payloads=room) as allowance:
                produced, errors = collect(target, source)
            cuts.extend(allowance.cuts)
        except Exception as error:  # an engine bug must not take the page down
            log.exception("mapping %s, target %s", mapping.name, target.name)
            failed = {"text": internal_message(error)}
            entries.append({**base, "name": target.name, "status": "failed", "error": failed})
            continue
        if errors:
            located = [diagnostic(error, target=target.name) for error in errors[:MAX_ERRORS]]
            diagnostics.extend(located)
            text = "\n".join(item["text"] for item in located)
            if len(errors) > MAX_ERRORS:
                text += (
                    f"\n… {len(errors) - MAX_ERRORS} more errors not shown (shipmap preview prints them all)"
                )
            entries.append({**base, "name": target.name, "status": "failed", "error": {"text": text}})
        if not produced and not errors:
            reason = target.skip_reason(source)
            entries.append({**base, "name": target.name, "status": "skipped", "reason": reason})
        for element, payload in produced:
            produced_any = True
            if len(entries) >= MAX_CARDS:
                left_off += 1
                continue
            label = target.name if element is None else f"{target.name}[{element}]"
            entry: Json = {**base, "name": label, "payload": plain(payload)}
            problems = target.problems(payload)
            entry["status"] = "invalid" if problems else "ok"
            if problems:
                entry["problems"] = [problem_diagnostic(p, target=label) for p in problems]
                entry["error"] = {"text": PayloadValidationError(label, target.kind.name, problems).render()}
                diagnostics.extend(entry["problems"])
            route = target.kind.route
            try:
                entry["route"] = f"{route.method} {route.render(payload)}"
            except KeyError as missing:
                entry["route"] = f"{route.method} {route.path} (no value for {missing})"
            entries.append(entry)
    return entries, produced_any, left_off, _cut(len(entries), cuts, unmapped)


def _cut(cards: int, cuts: list[Cut], unmapped: list[str]) -> Json | None:
    """Where mapping stopped because the answer was full, in numbers and in a sentence for the page."""
    if not cuts and not unmapped:
        return None
    done = [f"{cut.mapped:,} of the {cut.mapped + cut.not_mapped:,} elements of {cut.target}" for cut in cuts]
    if unmapped:
        done.append(f"{counted(len(unmapped), 'more target')} not at all ({', '.join(unmapped)})")
    text = (
        f"Cut after {cards} cards: the answer was full, so the studio stopped mapping. It mapped "
        f"{', and '.join(done)}. Whether the rest would make payloads or errors is not known, and the unread "
        "fields below are those of the part mapped (shipmap preview maps them all)."
    )
    fan_outs = [{"target": c.target, "mapped": c.mapped, "not_mapped": c.not_mapped} for c in cuts]
    return {"cards": cards, "fan_outs": fan_outs, "targets": unmapped, "text": text}


def _coverage(mapping: CompiledMapping, source: Any, result: Json) -> None:
    try:
        trace = mapping.trace(source)
    except ShipmapError:
        return  # the target's own error is already shown
    except Exception:
        log.exception("tracing %s", mapping.name)
        return
    unread = list(trace.unread)
    result["unread"] = unread[:MAX_UNREAD]
    result["unread_count"] = len(unread)
    result["defaulted"] = sorted(trace.defaulted)


def _requests(
    workspace: Workspace,
    mapping: CompiledMapping,
    mapping_file: str | None,
    source: Any,
    targets: list[Json],
    result: Json,
) -> None:
    # The plan lists each target's deliveries in the order the payloads were made (fan-out elements too).
    waiting: dict[str, list[Json]] = {}
    for entry in targets:
        if "payload" in entry:
            waiting.setdefault(entry["target"], []).append(entry)
    try:
        setting = load_setting(workspace, mapping, mapping_file)
        result["requests_note"] = setting.note
        plan = plan_requests(setting, source)
    except ShipmapError as error:
        result["requests_note"] = f"no requests: {workspace.render(error)}"
        return
    except Exception as error:
        log.exception("planning requests for %s", mapping.name)
        result["requests_note"] = f"no requests: {internal_message(error)}"
        return
    for step in plan:
        queue = waiting.get(step.target or "")
        if not queue:
            continue
        entry = queue.pop(0)
        if step.action == "send":
            entry["request"] = {
                "method": step.method,
                "url": step.url,
                "headers": dict(step.headers),
                "body": plain(step.body),
            }
        else:
            entry["request"] = {"action": step.action, "reason": step.reason}


def plain(value: Any) -> Any:
    """The payload as JSON sees it (what is sent), so the page and the cases file get plain values."""
    return json.loads(encode_payload(value))
