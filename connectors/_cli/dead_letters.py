"""``shipmap dead-letters [CONFIG]``: list what could not be delivered, and input records that were not JSON;
``--resolve`` closes some of them by hand."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shipmap.connectors._config import journal_path_of
from shipmap.connectors._errors import ConfigError, JournalError
from shipmap.connectors._plural import counted
from shipmap.connectors._serve._origins import parse_webhook_origin
from shipmap.connectors._store._entries import JournalEntry, RejectedInput
from shipmap.connectors._store._journal import Journal, open_readonly
from shipmap.connectors._store._journal_pg import display_url, is_database_url
from shipmap.connectors._store._resolve import MIN_KEY_PREFIX, resolve_by_hand

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
    parser.add_argument(
        "--resolve",
        action="append",
        metavar="KEY|ORIGIN",
        help=f"close by hand, not replay: the dead letters whose key starts with KEY (at least {MIN_KEY_PREFIX} "
        "characters), or the rejected input record listed as ORIGIN; repeatable",
    )
    parser.add_argument("--reason", metavar="TEXT", help="why, kept with each one --resolve closes")


def run(args: argparse.Namespace) -> int:
    path = resolve_journal(args.config, args.journal)
    if args.resolve:
        return _resolve(path, args.resolve, args.reason)
    if args.reason is not None:
        raise ConfigError("--reason goes with --resolve: it is kept with what --resolve closes")
    found = open_readonly(path)
    if found is None:
        print(f"no journal at {display_location(path)}: nothing was run yet")
        return 0
    out = sys.stdout
    # Streamed a page at a time: a week of a broken mapping's dead letters never sits in memory at once.
    with found as journal:
        dead = rejected = webhooks = 0
        for page in journal.dead_letter_pages(args.key):
            dead += len(page)
            for entry in page:
                out.write(_json_line(entry) if args.json else _text_lines(entry))
        for bad_page in () if args.key else journal.rejected_pages():
            rejected += len(bad_page)
            webhooks += sum(parse_webhook_origin(bad.origin) is not None for bad in bad_page)
            for bad in bad_page:
                out.write(_json_rejected(bad) if args.json else _text_rejected(bad))
    if args.json:
        return 0
    if not dead and not rejected:
        print("no dead letters")
        return 0
    out.write(f"{counted(dead, 'dead letter')}, {counted(rejected, 'rejected input record')}\n")
    if dead or webhooks:  # on stderr: the listing on stdout stays the data
        print(_next_steps(args.config or "CONFIG", dead, webhooks), file=sys.stderr)
    return 0


def _next_steps(config: str, dead: int, webhooks: int) -> str:
    """What an operator does once the cause is fixed: the commands that send them again, or close one."""
    steps = [f"`shipmap replay {config}` sends the dead letters again"] if dead else []
    if webhooks:
        steps.append(f"`shipmap replay {config} --rejected` fetches the rejected webhooks' documents again")
    return (
        f"once the cause is fixed, {'; '.join(steps)}; `shipmap dead-letters {config} --resolve KEY` closes one"
        " without sending"
    )


def _resolve(path: Path | str, names: list[str], reason: str | None) -> int:
    """Close the dead letters and rejected records named; 1 when a name matched nothing still open."""
    if isinstance(path, Path) and not path.exists():
        raise JournalError(f"no journal at {path}: no such file (a run creates it; check the path)")
    # Not the run lock: each statement changes only rows still dead, so this may run beside a run or serve.
    with Journal(path) as journal:
        resolved = resolve_by_hand(journal, names, reason or "no reason given")
    out = sys.stdout
    for name, keys in resolved.dead.items():
        count = resolved.dead_count[name]
        more = f" (and {count - len(keys)} more)" if count > len(keys) else ""
        out.write(f"resolved {counted(count, 'dead letter')} starting {name}: {', '.join(keys)}{more}\n")
    for origin in resolved.rejected:
        out.write(f"resolved rejected input {origin}\n")
    for name in resolved.unmatched:
        hint = f" (a key needs at least {MIN_KEY_PREFIX} characters)" if len(name) < MIN_KEY_PREFIX else ""
        out.write(
            f"nothing open matches {name}: no dead letter key starts with it, no rejected input is it{hint}\n"
        )
    return 1 if resolved.unmatched else 0


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
    lines += f"    reason: {_indented(entry.reason or '')}\n"
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


def _indented(text: str) -> str:
    """A reason's lines under its ``reason:``, each indented alike: a located mapping error keeps its source
    line and the caret under the column (flattened, the caret points nowhere)."""
    return "\n    ".join(line.rstrip() for line in text.splitlines() if line.strip())


def _one_line(text: str) -> str:
    return " ".join(text.split())
