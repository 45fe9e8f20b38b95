"""``shipmap status CONFIG``: the inbox queue, the journal's deliveries, dead letters and retention, pending
deliveries journaled for a base_url the config no longer names, and, when the service is running, its readiness
and breakers (from its ``/readyz``). Reads the inbox and the journal, each read within ``READ_DEADLINE_S`` (a
locked table or a stalled server is an error that names which of the two did not answer, exit 7), and asks the
running service; the whole command within ``STATUS_DEADLINE_S`` (past it, exit 7 too, naming what was being
read)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from shipmap.connectors._cli._output import age_text
from shipmap.connectors._cli._types import base_url
from shipmap.connectors._cli.dead_letters import display_location, resolve_journal
from shipmap.connectors._config import RuntimeConfig, duration_text, load_config
from shipmap.connectors._errors import JournalError
from shipmap.connectors._plural import counted
from shipmap.connectors._serve import ServeSettings, serve_settings
from shipmap.connectors._serve._inbox import InboxError, InboxTimeout, depth_capped, depth_text, unanswered
from shipmap.connectors._serve._inbox_pg import open_reader
from shipmap.connectors._store._journal import open_readonly
from shipmap.connectors._store._moves import Stranded, stranded
from shipmap.connectors._store._retention import oldest_forgettable

# Past the service's own deadline for its inbox (INBOX_READ_DEADLINE_S): a stalled inbox is reported with
# its reason, not as a service that does not answer.
READYZ_TIMEOUT_S = 5.0
# Each read of the inbox or the journal (a monitor runs this every minute: it must end): a statement's
# PostgreSQL statement_timeout, or SQLite's busy timeout. The servers' own are 30 s and 60 s.
READ_DEADLINE_S = 5.0
# The whole command: its reads one after another and the service's answer, each within its own deadline too.
STATUS_DEADLINE_S = 10.0
_AFTER_A_READ = "Nothing was changed: the inbox was only being read"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="the config file of the service")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument(
        "--url",
        metavar="URL",
        type=base_url,  # printed in the report: a user:password@ in it would be too
        help="the running service's base URL (default: from serve.host and serve.port)",
    )


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    # A config without sources is a `shipmap run` one: its journal alone, no inbox and no service to ask.
    settings = serve_settings(config) if config.sources else None
    report, oldest = _within_deadline(lambda reading: _gather(config, settings, args, reading))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    out = sys.stdout
    service = report["service"]
    if service is None:
        out.write("service     none: the config has no sources (the journal of `shipmap run`)\n")
    elif service.get("running") is False:
        out.write(f"service     not answering at {service['url']}\n")
    else:
        processes = service.get("serve_processes") or 1
        sharing = f" (one of {processes} serve processes on its inbox)" if processes > 1 else ""
        reason = service.get("reason")  # a 503's, such as an inbox that did not answer in time
        ready = "ready" if service.get("ready") else f"NOT READY ({reason})" if reason else "NOT READY"
        out.write(f"service     {ready} at {service['url']}{sharing}\n")
        breakers = service.get("breakers") or {}
        shown = ", ".join(f"{name} {state}" for name, state in sorted(breakers.items())) or "none reported"
        out.write(f"breakers    {shown}\n")
        stalled = service.get("delivery_stalled")
        if stalled:
            out.write(f"delivery    STALLED for {stalled['for_seconds']} s, next run in"
                      f" {stalled['next_run_in_seconds']} s: {stalled['reason']}\n")  # fmt: skip
    if settings is not None:
        age = report["oldest_pending_seconds"]
        out.write(
            f"queue       {depth_text(report['queue_depth'])} waiting"
            + (f", oldest {age} s" if age else "")
            + "\n"
        )
        webhooks = report["webhooks"]
        if webhooks:
            out.write("webhooks    " + ", ".join(f"{k} {v}" for k, v in sorted(webhooks.items())) + "\n")
    deliveries = report["deliveries"]
    out.write(
        "deliveries  " + (", ".join(f"{k} {v}" for k, v in sorted(deliveries.items())) or "none") + "\n"
    )
    for name, left in report["pending_for_another_base_url"].items():
        described = Stranded(name, left["count"], left["example_url"], left["or_more"]).describe()
        out.write(f"base_url    {name}: {described} journaled for another base_url, such as"
                  f" {left['example_url']} (shipmap journal move-pending)\n")  # fmt: skip
    keep = config.journal.keep
    kept = f"keeps {duration_text(keep)}" if keep is not None else "keeps everything (journal.keep: null)"
    if oldest is not None:
        kept += f"; oldest delivered row {age_text(time.time() - oldest)} ago"
    out.write(f"journal     {kept}\n")
    out.write(
        f"dead        {counted(report['dead_letters'], 'dead letter')},"
        f" {counted(report['rejected_inputs'], 'rejected input')}"
    )
    out.write("  (shipmap dead-letters)\n" if report["dead_letters"] or report["rejected_inputs"] else "\n")
    return 0


class _Reading:
    """What the command's reads are on now (named if the deadline passes first), and what came of them."""

    def __init__(self) -> None:
        self.now = "the reads"
        self.result: tuple[dict[str, Any], float | None] | None = None
        self.error: BaseException | None = None


def _within_deadline(
    gather: Callable[[_Reading], tuple[dict[str, Any], float | None]],
) -> tuple[dict[str, Any], float | None]:
    """What ``gather`` reads, read in a thread of its own, within ``STATUS_DEADLINE_S`` of now: one read after
    another could otherwise take ``READ_DEADLINE_S`` (or ``READYZ_TIMEOUT_S``) each. Past it, a JournalError
    (exit 7) names what was being read; the thread is left to end at that read's own deadline (it changes
    nothing and prints nothing)."""
    reading = _Reading()

    def work() -> None:
        try:
            reading.result = gather(reading)
        except BaseException as error:  # raised in the command's thread, as if read there
            reading.error = error

    worker = threading.Thread(target=work, name="shipmap-status-reads", daemon=True)
    worker.start()
    worker.join(STATUS_DEADLINE_S)
    if worker.is_alive():
        raise JournalError(
            f"{reading.now}: no answer before the command's deadline ({duration_text(STATUS_DEADLINE_S)} in"
            f" all, each read within {duration_text(READ_DEADLINE_S)}). Nothing was changed: status only reads"
        )
    if reading.error is not None:
        raise reading.error
    assert reading.result is not None
    return reading.result


def _gather(
    config: RuntimeConfig, settings: ServeSettings | None, args: argparse.Namespace, reading: _Reading
) -> tuple[dict[str, Any], float | None]:
    """The report's figures and the journal's oldest delivered row (its time), ``reading.now`` naming what
    is being read."""
    report: dict[str, Any] = {"inbox": display_location(settings.inbox) if settings else None}
    if settings is not None:
        reading.now = f"inbox {display_location(settings.inbox)}"
        report.update(_read_inbox(settings.inbox))
    else:
        report.update(queue_depth=0, queue_depth_capped=False, oldest_pending_seconds=None, webhooks={})
    journal_location = resolve_journal(args.config, None)
    report["journal"] = display_location(journal_location)
    reading.now = f"journal {display_location(journal_location)}"
    found = open_readonly(journal_location, statement_timeout=READ_DEADLINE_S)
    if found is not None:
        with found as journal:
            report["deliveries"] = counts = journal.counts()
            oldest = oldest_forgettable(journal)
            report["dead_letters"] = counts.get("dead", 0)  # counted, not read: a monitor asks every minute
            report["rejected_inputs"] = journal.rejected_count()
            # Deliveries that wait for an endpoint the config no longer names (journal move-pending).
            base_urls = {connection.name: connection.base_url for connection in config.connections}
            report["pending_for_another_base_url"] = {
                left.connection: {
                    "count": left.count,
                    "or_more": left.capped,
                    "example_url": left.example_url,
                }
                for left in stranded(journal, base_urls)
            }
    else:
        oldest = None
        report.update(deliveries={}, dead_letters=0, rejected_inputs=0, pending_for_another_base_url={})
    # Retention: how long the journal keeps delivered rows, and how far back it remembers now.
    report["keep_seconds"] = config.journal.keep
    report["oldest_delivered_seconds"] = round(time.time() - oldest, 1) if oldest is not None else None
    if settings is not None:
        reading.now = "the service's /readyz"
    report["service"] = _ask_service(settings, args.url) if settings else None
    return report, oldest


def _read_inbox(location: str | Path) -> dict[str, Any]:
    """The inbox's figures for the report, each read within ``READ_DEADLINE_S``; an inbox that does not
    answer in time (or fails) is an InboxError that names it."""
    try:
        inbox = open_reader(location, statement_timeout=READ_DEADLINE_S)
        if inbox is None:
            return {
                "queue_depth": 0,
                "queue_depth_capped": False,
                "oldest_pending_seconds": None,
                "webhooks": {},
            }
        with contextlib.closing(inbox):
            oldest = inbox.oldest_pending()
            depth = inbox.depth()
            return {
                "queue_depth": depth,
                "queue_depth_capped": depth_capped(depth),  # then at least queue_depth wait
                "oldest_pending_seconds": round(time.time() - oldest, 1) if oldest else None,
                "webhooks": inbox.counts(),
            }
    except sqlite3.Error as error:  # the SQLite inbox's reads leave sqlite's errors as they are
        if getattr(error, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_BUSY:
            raise InboxError(f"inbox {location}: SQLite says: {error}. {_AFTER_A_READ}") from None
        raise InboxError(
            f"{unanswered(Path(location), error, READ_DEADLINE_S).message}. {_AFTER_A_READ}"
        ) from None
    except InboxTimeout as error:  # its message names the inbox and the deadline
        raise InboxError(f"{error.message}. {_AFTER_A_READ}") from None


def _ask_service(settings: ServeSettings, url: str | None) -> dict[str, Any]:
    """The running service's ``/readyz`` answer, or that it is not answering."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = url.rstrip("/") if url else f"http://{host}:{settings.port}"
    readyz = f"{base}/readyz"
    try:
        answer = httpx.get(readyz, timeout=READYZ_TIMEOUT_S)
        return {"url": readyz, "status": answer.status_code, **answer.json()}
    except (httpx.HTTPError, ValueError):
        return {"url": readyz, "running": False}
