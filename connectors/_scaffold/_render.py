"""Rendering the scaffold's files: the mapping, its test case, the runtime config and the .env example."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shipmap.engine import ShipmapError, TargetKind, parse_mapping

from .._plural import counted
from ._builder import _TargetBuilder
from ._model import TODO, FieldSuggestion
from ._tree import _Out, _yaml

# Where a scaffolded mapping's modeline points, relative to it; `shipmap init` writes the file there.
EDITOR_SCHEMA_PATH = "schema/mapping.schema.json"

_log = logging.getLogger("shipmap.connectors.scaffold")
SANDBOX_URL = "http://127.0.0.1:8765"


# --- rendering ----------------------------------------------------------------------------------------------


def _render_mapping(
    name: str,
    builders: list[_TargetBuilder],
    lookups: dict[str, list[str]],
    sample_rel: str,
    select: str | None,
    timezone: str,
    naive: bool,
    batch: int,
) -> tuple[str, list[FieldSuggestion]]:
    suggestions: list[FieldSuggestion] = []
    lines = [
        f"# yaml-language-server: $schema={EDITOR_SCHEMA_PATH}",
        f"# {name}: scaffolded by `shipmap init` from {sample_rel}.",
        "#",
        "# Every field of each target kind is laid out, required fields first. Paths after a field are guesses",
        "# from key names, with the value they read in the sample (`<- value`): check each one.",
        "# `{path: TODO, required: true}` marks a required field nothing matched: it fails loudly",
        '# ("required field has no value") until you map it. Docs: docs/mapping-language.md, docs/functions.md.',
    ]
    if select is not None:
        owner = select.removesuffix("[0]") or "the top level"
        lines += [
            "#",
            f"# The sample is a list ({owner}, {counted(batch, 'element')}): this mapping maps ONE element. Feed each",
            f"# element as its own event; the test case picks one with `select: {select}`.",
        ]
    lines += [
        "#",
        f"# next: fill the TODOs, then `shipmap validate {name}.yaml` and `shipmap test {name}.yaml`.",
        "shipmap: 1",
        f"name: {_yaml(name)}",
        f"timezone: {_yaml(timezone)}"
        + (
            "   # the sample has datetimes without an offset: set the zone they are in"
            if naive
            else "   # the zone of source datetimes that carry no offset"
        ),
    ]
    if lookups:
        lines.append("")
        lines.append("lookups:                 # source value -> target value; unknown values are an error")
        for table, keys in lookups.items():
            lines.append(f"  {table}:")
            entries = ", ".join(f"{key}: {TODO}" for key in keys)
            lines.append(f"    map: {{{entries}}}   # TODO: the target's word for each source value")
            suggestions.append(FieldSuggestion("", f"lookups.{table}", None, True, None, len(lines)))
    lines.append("")
    lines.append("targets:")
    for builder in builders:
        lines.append(f"  {builder.name}:")
        lines.append(f"    kind: {builder.kind.name}")
        if builder.from_expression:
            wrapper = (
                "".join('{"' + str(p) + '": ' for p in builder.from_parts)
                + "…"
                + "}" * len(builder.from_parts)
            )
            lines.append(
                f"    from: {_yaml(builder.from_expression)}   # the sample wraps the document: {wrapper}"
            )
        lines.append("    fields:")
        _render_fields(builder.fields, 6, lines, suggestions)
    return _with_todo_list(lines, suggestions)


def _with_todo_list(
    lines: list[str], suggestions: list[FieldSuggestion]
) -> tuple[str, list[FieldSuggestion]]:
    """Every TODO at once, at the top of the file, with the line where it is (after this list)."""
    todos = [s for s in suggestions if s.todo]
    if not todos:
        return "\n".join(lines) + "\n", suggestions
    at = lines.index("shipmap: 1") - 1  # before the "# next:" line
    shift = len(todos) + 2
    block = [f"# {len(todos)} TODO{'s' if len(todos) != 1 else ''} (line: field):"]
    block += [f"#   {s.line + shift}: {s.field}" for s in todos]
    block.append("#")
    moved = [dataclasses.replace(s, line=s.line + shift) for s in suggestions]
    return "\n".join([*lines[:at], *block, *lines[at:]]) + "\n", moved


def _render_fields(outs: list[_Out], indent: int, lines: list[str], found: list[FieldSuggestion]) -> None:
    pad = " " * indent
    for out in outs:
        if out.note:
            lines.append(f"{pad}# {out.comment}")
            continue
        tail = f"   # {out.comment}" if out.comment else ""
        if out.spec is not None:
            lines.append(f"{pad}{out.name}: {out.spec}{tail}")
        elif out.each is not None:
            lines.append(f"{pad}{out.name}:{tail}")
            lines.append(f"{pad}  each: {out.each}")
            lines.append(f"{pad}  fields:")
        else:
            lines.append(f"{pad}{out.name}:{tail}")
        if out.suggestion is not None:
            found.append(_at_line(out.suggestion, len(lines) - (2 if out.each is not None else 0)))
        if out.each is not None:
            _render_fields(out.children, indent + 4, lines, found)
        elif out.children:
            _render_fields(out.children, indent + 2, lines, found)


def _at_line(suggestion: FieldSuggestion, line: int) -> FieldSuggestion:
    return dataclasses.replace(suggestion, line=line)


def _without_todos(outs: list[_Out]) -> list[_Out]:
    kept: list[_Out] = []
    for out in outs:
        if out.note or (out.suggestion is not None and out.suggestion.todo and not out.children):
            continue
        if out.each == TODO:
            continue
        if out.children:
            children = _without_todos(out.children)
            if not children:
                continue
            kept.append(_Out(out.name, out.spec, children, out.each, "", out.suggestion))
        else:
            # A null the sample has for a required field must not hide the other fields' values.
            spec = out.spec.replace(", required: true}", "}") if out.spec else out.spec
            kept.append(_Out(out.name, spec, [], out.each, "", out.suggestion))
    return kept


def _probe(
    name: str, builders: list[_TargetBuilder], lookups: dict[str, list[str]], document: Any
) -> dict[str, Any]:
    """What the suggested paths read from the sample, per target: the seed of the test case's ``expect``."""
    expected: dict[str, Any] = {}
    for builder in builders:
        outs = [o for o in _without_todos(builder.fields) if "lookup:" not in (o.spec or "")]
        if not outs:
            continue
        lines = [
            "shipmap: 1",
            f"name: {_yaml(name)}",
            "targets:",
            "  probe:",
            f"    kind: {builder.kind.name}",
        ]
        if builder.from_expression:
            lines.append(f"    from: {_yaml(builder.from_expression)}")
        lines.append("    fields:")
        _render_fields(outs, 6, lines, [])
        try:
            payload = parse_mapping("\n".join(lines) + "\n").target("probe").produce(document)
        except ShipmapError as error:
            _log.debug("probe of %s failed: %s", builder.name, error.message)
            continue
        if isinstance(payload, dict):
            expected[builder.name] = _expectation(payload)
    return expected


_KEY_FIELDS = ("id", "number", "order_id", "shipment_id", "tracking_number")


def _expectation(payload: dict[str, Any]) -> dict[str, Any]:
    """The identifying part of a payload: what a person checks first against the sample."""
    picked: dict[str, Any] = {k: payload[k] for k in _KEY_FIELDS if isinstance(payload.get(k), str | int)}
    inputs = payload.get("inputs")
    if isinstance(inputs, dict) and isinstance(inputs.get("shipment_data"), dict):
        data = inputs["shipment_data"]
        picked["inputs"] = {
            "shipment_data": {k: data[k] for k in _KEY_FIELDS if isinstance(data.get(k), str)}
        }
    info = payload.get("shipment_info")
    if isinstance(info, dict) and isinstance(info.get("tracking_number"), str):
        picked["shipment_info"] = {"tracking_number": info["tracking_number"]}
    for array in ("line_items",):
        lines = payload.get(array)
        if isinstance(lines, list) and lines:
            picked[array] = [
                {k: line[k] for k in ("sku", "quantity") if k in line}
                for line in lines
                if isinstance(line, dict)
            ]
    return picked


def _render_cases(
    name: str, sample_rel: str, select: str | None, expected: dict[str, Any], builders: list[_TargetBuilder]
) -> str:
    lines = [
        f"# Cases for {name}.yaml (run: shipmap test {name}.yaml; format: docs/testing-mappings.md).",
        "# Scaffolded by shipmap init: `expect` holds what the suggested paths read from the sample, the",
        "# identifying fields only. Check them, add the fields you care about (partial match: only the keys",
        "# written are compared). The case fails until every TODO of the mapping is filled.",
        "cases:",
        f"  - name: the sample {Path(sample_rel).name}",
        f"    source: {_yaml(sample_rel)}",
    ]
    if select is not None:
        lines.append(f"    select: {_yaml(select)}")
    lines.append("    expect:")
    for builder in builders:
        payload = expected.get(builder.name, {})
        lines.append(f"      {builder.name}:" + ("" if payload else " {}"))
        if payload:
            lines.extend(_yaml_block(payload, 8))
    return "\n".join(lines) + "\n"


def _yaml_block(value: dict[str, Any], indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for key, item in value.items():
        if isinstance(item, dict):
            lines.append(f"{pad}{key}:")
            lines.extend(_yaml_block(item, indent + 2))
        elif isinstance(item, list):
            lines.append(f"{pad}{key}:")
            for element in item:
                flow = ", ".join(f"{k}: {_quoted(v)}" for k, v in element.items())
                lines.append(f"{pad}  - {{{flow}}}")
        else:
            lines.append(f"{pad}{key}: {_quoted(item)}")
    return lines


def _quoted(value: Any) -> str:
    # Expected values are data: strings are always quoted so "450789469" stays text.
    return json.dumps(value, ensure_ascii=False)


def _render_config(name: str, kinds: Sequence[TargetKind]) -> str:
    apis = {k.api for k in kinds}
    lines = [
        f"# shipmap runtime config for {name}, scaffolded by `shipmap init` (docs/runtime.md).",
        "# It delivers to the local sandbox: `shipmap sandbox` in another terminal, then",
        "#   shipmap run config.yaml --input samples/          (from this directory)",
        "# Secrets are ${VAR} references, filled from the environment, then from .env beside this file:",
        "#   cp .env.example .env      (.env.example holds the sandbox's demo credentials; never commit .env)",
        "# For production, put the real base URLs and credentials in .env (DG: or `region: eu|us`).",
        "version: 1",
        "connections:",
    ]
    if "fenix" in apis:
        lines += [
            "  fenix:",
            "    api: fenix",
            "    base_url: ${FENIX_BASE_URL}",
            "    auth:",
            "      scheme: fenix_session",
            "      username: ${FENIX_USERNAME}",
            "      password: ${FENIX_PASSWORD}",
            "      api_key: ${FENIX_API_KEY}",
            "      store_name: ${FENIX_STORE_NAME}",
        ]
    if "dg" in apis:
        lines += [
            "  dg:",
            "    api: dg",
            "    base_url: ${DG_BASE_URL}",
            "    auth:",
            "      scheme: basic",
            "      key: ${DG_API_KEY}",
            "      secret: ${DG_API_SECRET}",
        ]
    lines += [
        "mappings:",
        f"  - mapping: ./{name}.yaml",
        "    # every event goes to this mapping; to route by topic, set events.topic and a topic: here",
        "journal:",
        "  path: .shipmap/journal.db",
    ]
    return "\n".join(lines) + "\n"


def _render_env(kinds: Sequence[TargetKind]) -> str:
    apis = {k.api for k in kinds}
    lines = [
        "# Values for the ${VAR} references of config.yaml: cp .env.example .env (.env is git-ignored).",
        "# These are the local sandbox's public demo credentials (docs/sandbox.md), not real ones.",
    ]
    if "fenix" in apis:
        lines += [
            f"FENIX_BASE_URL={SANDBOX_URL}",
            "FENIX_USERNAME=demo-user",
            "FENIX_PASSWORD=demo-pass",
            "FENIX_API_KEY=demo-api-key",
            "FENIX_STORE_NAME=demo-store",
        ]
    if "dg" in apis:
        lines += [f"DG_BASE_URL={SANDBOX_URL}", "DG_API_KEY=demo-key", "DG_API_SECRET=demo-secret"]
    return "\n".join(lines) + "\n"
