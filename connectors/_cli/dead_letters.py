"""``shipmap dead-letters [CONFIG]``: list what could not be delivered, and input records that were not JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shipmap.connectors._config import journal_path_of
from shipmap.connectors._errors import ConfigError
from shipmap.connectors._plural import counted
from shipmap.connectors._store._entries import JournalEntry, RejectedInput
from shipmap.connectors._store._journal import open_readonly
from shipmap.connectors._store._journal_pg import display_url, is_database_url

_EXCERPT = 400


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", nargs="?", help="the runtime config (for its journal)")
    parser.add_argument(
        "--journal",
        metavar="PATH|URL",
        help="the journal file or postgresql:// URL (instead of the config's)",
    )
    parser.add_argument("--key", action="append", metavar="KEY", help="only these keys (a prefix will do)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line, full excerpts")


def run(args: argparse.Namespace) -> int:
    path = resolve_journal(args.config, args.journal)
    found = open_readonly(path)
    if found is None:
        print(f"no journal at {display_location(path)}: nothing was run yet")
        return 0
    out = sys.stdout
    # Streamed a page at a time: a week of a broken mapping's dead letters never sits in memory at once.
    with found as journal:
        dead = rejected = 0
        for page in journal.dead_letter_pages(args.key):
            dead += len(page)
            for entry in page:
                out.write(_json_line(entry) if args.json else _text_lines(entry))
        for bad_page in () if args.key else journal.rejected_pages():
            rejected += len(bad_page)
            for bad in bad_page:
                out.write(_json_rejected(bad) if args.json else _text_rejected(bad))
    if args.json:
        return 0
    if not dead and not rejected:
        print("no dead letters")
        return 0
    out.write(f"{counted(dead, 'dead letter')}, {counted(rejected, 'rejected input record')}\n")
    return 0


def _json_line(entry: JournalEntry) -> str:
    record = {
        "key": entry.key,
        "mapping": entry.mapping,
        "target": entry.target or None,
        "status": entry.status,
        "attempts": entry.attempts,
        "reason": entry.reason,
        "response_excerpt": entry.response_excerpt,
        "origin": entry.origin,
        "url": entry.url,
    }
    return json.dumps(record, ensure_ascii=False) + "\n"


def _text_lines(entry: JournalEntry) -> str:
    target = f"{entry.mapping}.{entry.target}" if entry.target else f"{entry.mapping} (mapping)"
    status = f"HTTP {entry.status}" if entry.status else "no response"
    lines = f"{entry.key}  {target}  {status}  attempts {entry.attempts}  from {entry.origin or '-'}\n"
    lines += f"    reason: {_one_line(entry.reason or '')}\n"
    if entry.response_excerpt:
        lines += f"    response: {_one_line(entry.response_excerpt)[:_EXCERPT]}\n"
    return lines


def _json_rejected(bad: RejectedInput) -> str:
    return json.dumps({"rejected": bad.origin, "reason": bad.reason, "excerpt": bad.excerpt}) + "\n"


def _text_rejected(bad: RejectedInput) -> str:
    lines = f"rejected input {bad.origin}: {bad.reason}\n"
    if bad.excerpt:
        lines += f"    text: {_one_line(bad.excerpt)[:_EXCERPT]}\n"
    return lines


def display_location(location: Path | str) -> str:
    return display_url(location) if isinstance(location, str) and is_database_url(location) else str(location)


def resolve_journal(config: str | None, journal: str | None) -> Path | str:
    if journal:
        return journal if is_database_url(journal) else Path(journal)
    if config is None:
        raise ConfigError("give a CONFIG file or --journal PATH")
    return journal_path_of(config)


def _one_line(text: str) -> str:
    return " ".join(text.split())
