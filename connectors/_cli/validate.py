"""``shipmap validate MAPPING|CASES|CONFIG|DIR...``: lint mapping files and cases files without source data,
and check a runtime config as ``run`` and ``serve`` would load it (its secrets, sources and mappings), sending
nothing."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shipmap.connectors._plural import counted
from shipmap.engine import MappingError, ShipmapError, load_mapping
from shipmap.engine._errors import file_order
from shipmap.engine._yaml import decode_utf8

from ._cases import (
    CASES_SUFFIX,
    Case,
    CasesFileErrors,
    load_suite,
    payload_name_of,
    split_payload_name,
    unknown_error_targets,
)
from ._file_kinds import is_utf8_text, looks_like_config, looks_like_mapping
from ._output import GREEN, RED, YELLOW, err, paint, use_color
from ._reports import error_json, location_json, problem_json, write_json


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "mappings",
        nargs="+",
        metavar="PATH",
        help="mapping files, packaged mapping names (shopify/order), *.cases.yaml files, runtime configs "
        "(connections and mappings: loaded with their secrets, as run and serve load them), or directories "
        "(every mapping and cases file under them)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="treat warnings (unused lookups, fragments; a config's literal credentials, retries below its"
        " breaker's failures, timeouts past their total) as errors",
    )
    parser.add_argument(
        "--skip-other-yaml",
        action="store_true",
        help="skip a file given that is neither a mapping (no 'shipmap: 1') nor a cases file, as a directory "
        "does, runtime configs included (for pre-commit, which passes every changed YAML file and has none of "
        "their secrets)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text (default), or json: one report on stdout for CI (docs/cli-formats.md)",
    )


def run(args: argparse.Namespace) -> int:
    as_json = args.format == "json"
    color = use_color(sys.stderr) and not as_json
    files: list[dict[str, Any]] = []
    for name, kind in _expand(args.mappings, skip_other_yaml=args.skip_other_yaml):
        report: dict[str, Any] = {"file": name, "ok": False, "targets": [], "problems": []}
        files.append(report)
        if kind != "mapping":
            report["kind"] = kind
            if kind == "config":
                _check_config(Path(name), report, as_json=as_json, color=color, strict=args.strict)
                continue
            check = {"cases": _check_cases, "file": _check_text}[kind]
            check(Path(name), report, as_json=as_json, color=color)
            continue
        report["kind"] = "mapping"
        try:
            mapping = load_mapping(name)
        except ShipmapError as error:
            report["problems"].append(error_json(error))
            if not as_json:
                err(paint(error.render(), RED, color))
            continue
        report["file"] = mapping.file
        problems = mapping.lint()
        errors = [p for p in problems if p.severity == "error" or args.strict]
        report["problems"] = [problem_json(p, strict=args.strict) for p in problems]
        report["ok"] = not errors
        report["targets"] = [{"name": t.name, "kind": t.kind.name} for t in mapping.targets]
        if as_json:
            continue
        for problem in problems:
            style = RED if problem in errors else YELLOW
            err(
                paint(
                    f"{problem.location}: {problem.severity}: {problem.field} {problem.message}", style, color
                )
            )
        if not errors:
            summary = ", ".join(f"{t.name} -> {t.kind.name}" for t in mapping.targets)
            print(paint(f"ok {mapping.file}", GREEN, use_color(sys.stdout)) + f" ({summary})")
    if not files and not args.skip_other_yaml:
        err(f"no mappings or cases files found in {', '.join(args.mappings)}")
    ok = (bool(files) or args.skip_other_yaml) and all(report["ok"] for report in files)
    code = 0 if ok else MappingError.exit_code
    if as_json:
        write_json({"ok": ok, "exit_code": code, "files": files}, sys.stdout)
    return code


def _expand(names: list[str], *, skip_other_yaml: bool) -> Iterator[tuple[str, str]]:
    """(path or packaged name, ``mapping``, ``cases`` or ``config``) for each argument; a directory gives
    every mapping (a YAML file with ``shipmap: 1``) and every cases file under it, and skips other YAML,
    runtime configs included (they need their secrets)."""
    for name in names:
        path = Path(name)
        if not path.is_dir():
            if name.endswith(CASES_SUFFIX):
                yield name, "cases"
            elif not path.is_file() or looks_like_mapping(path):
                yield name, "mapping"  # a packaged name, a missing file (load_mapping says so), a mapping
            elif not skip_other_yaml:
                # Neither kind told from its head: a mapping's loader words what is wrong, unless the file is
                # not even UTF-8 text, which is said of a "file", not of a kind it may not be.
                yield (
                    name,
                    "config" if looks_like_config(path) else "mapping" if is_utf8_text(path) else "file",
                )
            continue
        for file in sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()):
            if file.name.endswith(CASES_SUFFIX):
                yield str(file), "cases"
            elif looks_like_mapping(file):
                yield str(file), "mapping"


def _check_config(path: Path, report: dict[str, Any], *, as_json: bool, color: bool, strict: bool) -> None:
    """A runtime config is valid when ``run`` and ``serve`` would start on it: it loads with its env file and
    secrets, its mappings load and compile for their targets, and its sources (if any) read as serve's. Its
    warnings (a credential written literally, retries that give up before the breaker opens, a timeout past its
    total) are this report's, as a mapping's lint findings are: errors with ``--strict``."""
    from shipmap.connectors._config import load_config
    from shipmap.connectors._config._warnings import collecting
    from shipmap.connectors._runtime import Runtime
    from shipmap.connectors._serve._settings import serve_settings

    with collecting() as warnings:
        try:
            runtime = Runtime(load_config(path))
            runtime.mapper.prepare()
            sources = serve_settings(runtime.config).sources if runtime.config.sources else {}
        except ShipmapError as error:
            failed: ShipmapError | None = error
        else:
            failed = None
    severity = "error" if strict else "warning"
    # In the file's order (each check says its own in turn); a config built in code has no file to order by.
    warnings.sort(key=lambda w: file_order(w.location))
    for warning in warnings:
        text = f"{warning.location or path}: {severity}: {warning.message}"
        report["problems"].append(
            {
                "severity": severity,
                "type": "ConfigWarning",
                "message": warning.message,
                "field": None,
                "location": location_json(warning.location),
                "text": text,
            }
        )
        if not as_json:
            err(paint(text, RED if strict else YELLOW, color))
    if failed is not None:
        report["problems"].append(error_json(failed))
        if not as_json:
            err(paint(failed.render(), RED, color))
        return
    if strict and warnings:
        return
    report["ok"] = True
    report["connections"] = sorted(runtime.connections)
    report["mappings"] = len(runtime.config.mappings)
    report["sources"] = sorted(sources)
    if not as_json:
        counts = [
            counted(len(runtime.connections), "connection"),
            counted(len(runtime.config.mappings), "mappings entry"),
        ]
        if sources:
            counts.append(counted(len(sources), "source"))
        print(paint(f"ok {path}", GREEN, use_color(sys.stdout)) + f" (a runtime config: {', '.join(counts)})")


def _check_text(path: Path, report: dict[str, Any], *, as_json: bool, color: bool) -> None:
    """A file of no kind that could be told, because it is not UTF-8 text: where its first such byte is."""
    try:
        decode_utf8(path.read_bytes(), str(path), "file", encoding="utf-8-sig")
    except (OSError, MappingError) as error:
        failure = (
            error if isinstance(error, MappingError) else MappingError(f"cannot read file: {error.strerror}")
        )
        report["problems"].append(error_json(failure))
        if not as_json:
            err(paint(failure.render(), RED, color))


def _check_cases(path: Path, report: dict[str, Any], *, as_json: bool, color: bool) -> None:
    """A cases file is valid when it reads as cases, its mapping loads, and its cases name real targets."""
    try:
        suite = load_suite(path)
        mapping = load_mapping(suite.mapping_path)
    except ShipmapError as error:
        for each in error.errors if isinstance(error, CasesFileErrors) else [error]:  # each located
            report["problems"].append(error_json(each))
            if not as_json:
                err(paint(each.render(), RED, color))
        return
    fans_out = {target.name: target.fans_out for target in mapping.targets}
    for case in suite.cases:
        problems = [
            _name_problem(name, of_payload, case, mapping.file, fans_out)
            for name, of_payload in sorted(_names_in(case).items())
        ]
        for problem in [*filter(None, problems), *unknown_error_targets(case, list(fans_out), mapping.file)]:
            report["problems"].append(error_json(problem))
            if not as_json:
                err(paint(problem.render(), RED, color))
    report["ok"] = not report["problems"]
    report["targets"] = [{"name": t.name, "kind": t.kind.name} for t in mapping.targets]
    report["cases"] = len(suite.cases)
    if report["ok"] and not as_json:
        print(paint(f"ok {path}", GREEN, use_color(sys.stdout)) + f" ({counted(len(suite.cases), 'case')})")


def _names_in(case: Case) -> dict[str, bool]:
    """Each name a case uses, and whether it names a payload (``expect``, ``absent``) rather than a target
    (``skipped``: a fan-out target is skipped whole, by its own name)."""
    names = dict.fromkeys(case.skipped, False)
    for name in [*case.expect, *map(payload_name_of, case.absent)]:
        names[name] = True
    return names


def _name_problem(
    name: str, of_payload: bool, case: Case, file: str, fans_out: dict[str, bool]
) -> MappingError | None:
    """Why the mapping can produce no payload or target called ``name``, as ``shipmap test`` names them:
    ``target``, or ``target[key]`` for each element of a fan-out target (each:); None when it can."""
    parts = split_payload_name(name)
    has = f"(it has {', '.join(sorted(fans_out))})"
    if parts is None or parts[0] not in fans_out:
        return MappingError(
            f"case {case.name!r} names target '{name}', which {file} does not have {has}",
            location=case.location,
        )
    target, key = parts
    if key is not None and not fans_out[target]:
        return MappingError(
            f"case {case.name!r} names target '{name}', which {file} does not have {has}: target '{target}' "
            f"does not fan out (no each:), so its one payload is named '{target}'",
            location=case.location,
        )
    if key is None and fans_out[target] and of_payload:
        return MappingError(
            f"case {case.name!r} names payload '{name}', which {file} does not produce: target '{target}' "
            f"fans out (each:), one payload per element, each named '{target}[key]'",
            location=case.location,
            hint=f"key is the element's key: value (its position from 0 without key:), as in "
            f'expect: {{"{target}[7]": …}}; shipmap preview prints each payload\'s name',
        )
    return None
