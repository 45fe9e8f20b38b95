"""``shipmap journal migrate|copy|info|prune|move-pending``: a journal's schema version, its upgrade, moving it
elsewhere, forgetting what is old, and sending a moved endpoint's pending deliveries after it.

A journal is an SQLite file or a ``postgresql://`` URL. ``migrate`` brings a store to this shipmap's schema
version (an SQLite file is also upgraded when a run opens it; a PostgreSQL store, which many workers share,
only here). ``copy SRC DST`` moves every row of one journal into an empty other one, for a user who outgrows
one machine: ``shipmap journal copy .shipmap/journal.db postgresql://shipmap@db/shipmap``. ``prune`` forgets
what is older than a duration, as runs and services do by themselves after ``journal.keep``. ``move-pending``
points the pending deliveries a connection journaled for its old ``base_url`` at its new one: runs on an
SQLite journal, and a service's reload, do that by themselves; on a PostgreSQL journal, whose workers may run
two configs during a rollout, a run only names what is left behind, and this moves it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from shipmap.connectors._config import DEFAULT_KEEP, duration_text, journal_path_of
from shipmap.connectors._errors import ConnectorError, JournalError
from shipmap.connectors._plural import counted
from shipmap.connectors._serve._inbox import NoInboxError
from shipmap.connectors._serve._inbox_journal import copy_inbox
from shipmap.connectors._serve._inbox_pg import PostgresInbox
from shipmap.connectors._store._claims import pending_counts
from shipmap.connectors._store._copy import copy_journal
from shipmap.connectors._store._journal import SCHEMA_VERSION, Journal, JournalInUseError
from shipmap.connectors._store._journal_pg import is_database_url
from shipmap.connectors._store._moves import count_pending, move_pending, stranded
from shipmap.connectors._store._retention import count_prunable, oldest_forgettable, prune
from shipmap.connectors._store._sqlite import JournalFault

from ._output import age_text
from ._types import base_url, duration
from .dead_letters import display_location


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    migrate = sub.add_parser("migrate", help=f"upgrade a journal to schema version {SCHEMA_VERSION}")
    migrate.add_argument("journal", metavar="PATH|URL")
    copy = sub.add_parser("copy", help="copy every row of SRC into the empty journal DST (created if absent)")
    copy.add_argument("source", metavar="SRC", help="the journal to read (a file or postgresql:// URL)")
    copy.add_argument("destination", metavar="DST", help="the journal to write (a file or postgresql:// URL)")
    copy.add_argument(
        "--inbox",
        metavar="PATH",
        help="also copy this serve inbox (SQLite) into DST, a postgresql:// URL (default: inbox.db beside an "
        "SQLite SRC, when DST is PostgreSQL and that file exists)",
    )
    info = sub.add_parser("info", help="a journal's schema version and its deliveries by state")
    info.add_argument("journal", metavar="PATH|URL")
    forget = sub.add_parser(
        "prune",
        help="forget delivered and resolved deliveries (and unrouted and rejected records) older than a duration",
        description="Forget what is older than --older-than: delivered and resolved deliveries, unrouted and"
        " rejected records, and the source documents nothing else refers to. Pending deliveries and dead"
        " letters stay. Runs and services do this by themselves (journal.keep, 30d by default); an SQLite"
        " journal in use by one is theirs to prune.",
    )
    forget.add_argument("journal", metavar="PATH|URL")
    forget.add_argument(
        "--older-than",
        type=duration,
        default=DEFAULT_KEEP,
        metavar="DURATION",
        help="e.g. 12h or 90d (default 30d)",
    )
    forget.add_argument(
        "--dry-run", action="store_true", help="count what would be forgotten; change nothing"
    )
    move = sub.add_parser(
        "move-pending",
        help="send a connection's pending deliveries journaled for its old base_url to its new one",
        description="Point the pending deliveries of CONNECTION journaled for --from at --to, the rest of each"
        " URL kept (http://old/api/v1/orders/1 -> https://new/fenix/v1/orders/1). Delivered rows, dead letters"
        " and other connections stay as they are. A run on an SQLite journal and a service's reload do this by"
        " themselves when base_url changes; on a PostgreSQL journal, run it once every worker has the new"
        " config (a worker still on the old one journals new deliveries for the old base).",
    )
    move.add_argument("journal", metavar="PATH|URL")
    move.add_argument("connection", metavar="CONNECTION", help="the connection's name in the config")
    move.add_argument("--from", dest="old", required=True, type=base_url, metavar="OLD_BASE_URL")
    move.add_argument("--to", dest="new", required=True, type=base_url, metavar="BASE_URL")
    move.add_argument("--dry-run", action="store_true", help="count what would move; change nothing")


def run(args: argparse.Namespace) -> int:
    # Output names a PostgreSQL store by its URL without the password (display_location), and the journal's
    # errors do the same, so a password given on the command line is never printed.
    return _ACTIONS[args.action](args)


@contextlib.contextmanager
def _costing(cost: str | None) -> Iterator[None]:
    """A fault of the journal's file or disk in here said with what it cost this command (``cost``), not what
    it costs a run; None: as the journal says it (a read-only opening: nothing changed)."""
    try:
        yield
    except JournalFault as fault:
        raise (fault if cost is None else fault.costing(cost)) from None


def _again(what: str) -> str:
    return f"{what}; run it again once that is fixed"


def _migrate(args: argparse.Namespace) -> int:
    with (
        _costing(_again("Nothing was changed: the upgrade is one transaction")),
        Journal(_existing(args.journal), upgrade=True) as journal,
    ):
        before = journal.upgraded_from
        after = journal.schema_version()
    where = display_location(args.journal)
    if before is None:
        print(f"{where}: schema version {after}, up to date")
    else:
        print(f"{where}: schema version {before or 'none'} -> {after}")
    if is_database_url(args.journal):  # the serve inbox in the same database, if a service made one
        try:
            with PostgresInbox(args.journal, upgrade=True, create=False) as inbox:
                before, after = inbox.upgraded_from, inbox.schema_version()
        except NoInboxError:
            return 0
        if before is None:
            print(f"{where}: inbox schema version {after}, up to date")
        else:
            print(f"{where}: inbox schema version {before} -> {after}")
    return 0


# What one row of a copied table is called ("1 source"); "unrouted" and "rejected" are said as they are.
_ONE = {"sources": "source", "deliveries": "delivery", "inbox webhooks": "inbox webhook"}


def _copy(args: argparse.Namespace) -> int:
    origin = _existing(args.source)  # refused before anything is created at the destination
    inbox = _inbox_to_copy(args)
    if inbox is not None:  # its schema, created before the one transaction that moves the rows
        PostgresInbox(args.destination).close()
    with (
        _costing(_again("Nothing was copied: the copy is one transaction, and SRC is only read")),
        Journal(origin, readonly=True) as source,
        Journal(args.destination) as destination,
        destination.transaction(),  # the journal and the inbox move together, or not at all
    ):
        copied = copy_journal(source, destination)
        if inbox is not None:
            copied["inbox webhooks"] = copy_inbox(inbox, destination)
    counts = ", ".join(counted(count, _ONE.get(table, table), table) for table, count in copied.items())
    print(f"copied {display_location(args.source)} -> {display_location(args.destination)}: {counts}")
    return 0


def _inbox_to_copy(args: argparse.Namespace) -> Path | None:
    """The serve inbox that goes with the journal: ``--inbox``, or ``inbox.db`` beside an SQLite SRC (where
    ``shipmap serve`` keeps it) when the copy goes into PostgreSQL."""
    if args.inbox is not None:
        if not is_database_url(args.destination):
            raise JournalError("--inbox: an inbox is copied into a postgresql:// journal only")
        if not Path(args.inbox).is_file():
            raise JournalError(f"--inbox: no inbox file at {args.inbox}")
        return Path(args.inbox)
    if is_database_url(args.source) or not is_database_url(args.destination):
        return None
    beside = Path(args.source).parent / "inbox.db"
    return beside if beside.is_file() else None


def _existing(location: str) -> str:
    """``location``, refused when it names an SQLite file that does not exist: reading it would fail with the
    driver's words, and writing it would create an empty journal where a path was mistyped."""
    if not is_database_url(location) and not Path(location).exists():
        raise JournalError(f"no journal at {location}: no such file (a run creates it; check the path)")
    if Path(location).suffix.lower() in (".yaml", ".yml"):  # status, dead-letters and replay take the config
        raise JournalError(
            f"{location} is a config, not a journal: `shipmap journal` takes {_journal_of(location)}"
        )
    return location


def _journal_of(config: str) -> str:
    """The journal a config names, for an operator who gave the config where the journal goes."""
    try:
        return f"the journal's path or URL, here {display_location(journal_path_of(config))}"
    except ConnectorError:  # a config that does not read: name the key instead
        return "the journal's path or URL (the config's journal.path or journal.url)"


def _info(args: argparse.Namespace) -> int:
    with Journal(_existing(args.journal), readonly=True) as journal:
        version = journal.schema_version()
        counts = journal.counts()
        oldest = oldest_forgettable(journal)
        waiting = pending_counts(journal) if counts.get("pending") else {}
    states = ", ".join(f"{state} {count}" for state, count in sorted(counts.items())) or "no deliveries"
    print(f"{display_location(args.journal)}: {journal.backend}, schema version {version}; {states}")
    if oldest is not None:  # how far back the journal remembers: what journal.keep forgets first
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(oldest))
        print(f"oldest delivered or resolved row: {when} ({age_text(time.time() - oldest)} ago)")
    if waiting:  # what a run would send first, by connection (move-pending takes a connection's name)
        print(
            "pending by connection: "
            + ", ".join(f"{name} {count}" for name, count in sorted(waiting.items(), key=str))
        )
    if version < SCHEMA_VERSION:
        print(f"run `shipmap journal migrate` to upgrade it to version {SCHEMA_VERSION}", file=sys.stderr)
    return 0


def _prune(args: argparse.Namespace) -> int:
    before = time.time() - args.older_than
    where = display_location(args.journal)
    age = duration_text(args.older_than)
    cost = None if args.dry_run else _again("Nothing is lost: prune forgets only rows that are done with")
    try:
        # An SQLite journal: its run lock, so no run or service writes beside the prune.
        with _costing(cost):
            journal = Journal(_existing(args.journal), readonly=args.dry_run, exclusive=not args.dry_run)
    except JournalInUseError as error:
        raise JournalError(
            f"{error.message}; a run or `shipmap serve` forgets what is older than journal.keep itself"
        ) from None
    with _costing(cost), journal:
        if args.dry_run:
            prunable = count_prunable(journal, before)
            print(f"{where}: would forget {prunable.describe(sources=False)} older than {age}")
            return 0
        pruned = prune(journal, before)
    print(f"{where}: forgot {pruned.describe()} older than {age}")
    return 0


def _move_pending(args: argparse.Namespace) -> int:
    where, connection = display_location(args.journal), args.connection
    cost = (
        None
        if args.dry_run
        else (
            "Nothing is lost: each pending delivery is at its old base_url or its new one; run it again to move "
            "the rest once that is fixed"
        )
    )
    try:
        # An SQLite journal: its run lock, so that no run sends a row while it moves.
        with _costing(cost):
            journal = Journal(_existing(args.journal), readonly=args.dry_run, exclusive=not args.dry_run)
    except JournalInUseError as error:
        raise JournalError(
            f"{error.message}; a run or `shipmap serve` on it moves the pending deliveries of a connection whose"
            " base_url changed itself"
        ) from None
    with _costing(cost), journal:
        if args.dry_run:
            count = count_pending(journal, connection, args.old)
        else:
            count = move_pending(journal, connection, args.old, args.new)
        # What else waits: after a move, what is left under other bases; when --from matched nothing, where
        # the connection's deliveries are (what was meant), or, with none, which connections have some.
        left = (
            []
            if args.dry_run and count
            else stranded(journal, {connection: args.old if args.dry_run else args.new})
        )
        others = pending_counts(journal) if not count and not left else {}
    verb = "would move" if args.dry_run else "moved"
    deliveries = counted(count, "pending delivery")
    print(f"{where}: {verb} {deliveries} of {connection} from {args.old} to {args.new}")
    have = others.get(connection, 0)
    if have:  # moved already (a second run of the command)
        there = f"{counted(have, 'pending delivery')} {'is' if have == 1 else 'are'}"
        print(f"its {there} journaled for {args.new} already", file=sys.stderr)
    elif not count and not left:  # a connection name mistyped, or nothing waits at all
        named = ", ".join(f"{name} {number}" for name, number in sorted(others.items())) or "none"
        print(
            f"{connection} has no pending deliveries here (pending, by connection: {named})", file=sys.stderr
        )
    where_else = "another base_url" if args.dry_run else f"a base_url other than {args.new}"
    for other in left:
        print(
            f"{other.describe()} of {connection} are journaled for {where_else}, such as {other.example_url}",
            file=sys.stderr,
        )
    return 0


_ACTIONS = {
    "migrate": _migrate,
    "copy": _copy,
    "info": _info,
    "prune": _prune,
    "move-pending": _move_pending,
}
