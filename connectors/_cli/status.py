"""``shipmap status CONFIG``: the inbox queue, the journal's deliveries, dead letters and retention, and, when the
service is running, its readiness and breakers (from its ``/readyz``). Reads the inbox and the journal, and asks the running service."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from shipmap.connectors._cli._output import age_text
from shipmap.connectors._cli.dead_letters import display_location, resolve_journal
from shipmap.connectors._config import duration_text, load_config
from shipmap.connectors._serve import Inbox, serve_settings
from shipmap.connectors._serve._inbox_pg import NoInboxError, PostgresInbox
from shipmap.connectors._store._journal import open_readonly
from shipmap.connectors._store._journal_pg import is_database_url
from shipmap.connectors._store._retention import oldest_forgettable


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="the config file of the service")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument(
        "--url",
        metavar="URL",
        help="the running service's base URL (default: from serve.host and serve.port)",
    )


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    settings = serve_settings(config)
    report: dict[str, Any] = {"inbox": display_location(settings.inbox)}
    inbox = _open_inbox(settings.inbox)
    if inbox is not None:
        with contextlib.closing(inbox):
            oldest = inbox.oldest_pending()
            report["queue_depth"] = inbox.depth()
            report["oldest_pending_seconds"] = round(time.time() - oldest, 1) if oldest else None
            report["webhooks"] = inbox.counts()
    else:
        report.update(queue_depth=0, oldest_pending_seconds=None, webhooks={})
    journal_location = resolve_journal(args.config, None)
    report["journal"] = display_location(journal_location)
    found = open_readonly(journal_location)
    if found is not None:
        with found as journal:
            report["deliveries"] = counts = journal.counts()
            oldest = oldest_forgettable(journal)
            report["dead_letters"] = counts.get("dead", 0)  # counted, not read: a monitor asks every minute
            report["rejected_inputs"] = journal.rejected_count()
    else:
        oldest = None
        report.update(deliveries={}, dead_letters=0, rejected_inputs=0)
    # Retention: how long the journal keeps delivered rows, and how far back it remembers now.
    report["keep_seconds"] = config.journal.keep
    report["oldest_delivered_seconds"] = round(time.time() - oldest, 1) if oldest is not None else None
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = args.url.rstrip("/") if args.url else f"http://{host}:{settings.port}"
    url = f"{base}/readyz"
    try:
        answer = httpx.get(url, timeout=2.0)
        report["service"] = {"url": url, "status": answer.status_code, **answer.json()}
    except (httpx.HTTPError, ValueError):
        report["service"] = {"url": url, "running": False}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    out = sys.stdout
    service = report["service"]
    if service.get("running") is False:
        out.write(f"service     not answering at {url}\n")
    else:
        processes = service.get("serve_processes") or 1
        sharing = f" (one of {processes} serve processes on its inbox)" if processes > 1 else ""
        out.write(f"service     {'ready' if service.get('ready') else 'NOT READY'} at {url}{sharing}\n")
        breakers = service.get("breakers") or {}
        shown = ", ".join(f"{name} {state}" for name, state in sorted(breakers.items())) or "none reported"
        out.write(f"breakers    {shown}\n")
        stalled = service.get("delivery_stalled")
        if stalled:
            out.write(f"delivery    STALLED for {stalled['for_seconds']} s, next run in"
                      f" {stalled['next_run_in_seconds']} s: {stalled['reason']}\n")  # fmt: skip
    age = report["oldest_pending_seconds"]
    out.write(f"queue       {report['queue_depth']} waiting" + (f", oldest {age} s" if age else "") + "\n")
    webhooks = report["webhooks"]
    if webhooks:
        out.write("webhooks    " + ", ".join(f"{k} {v}" for k, v in sorted(webhooks.items())) + "\n")
    deliveries = report["deliveries"]
    out.write(
        "deliveries  " + (", ".join(f"{k} {v}" for k, v in sorted(deliveries.items())) or "none") + "\n"
    )
    keep = config.journal.keep
    kept = f"keeps {duration_text(keep)}" if keep is not None else "keeps everything (journal.keep: null)"
    if oldest is not None:
        kept += f"; oldest delivered row {age_text(time.time() - oldest)} ago"
    out.write(f"journal     {kept}\n")
    out.write(
        f"dead        {report['dead_letters']} dead letters, {report['rejected_inputs']} rejected inputs"
    )
    out.write("  (shipmap dead-letters)\n" if report["dead_letters"] or report["rejected_inputs"] else "\n")
    return 0


def _open_inbox(location: Path | str) -> Inbox | PostgresInbox | None:
    """The inbox, read-only, or None when nothing was accepted yet (no file, or no inbox in the database)."""
    if isinstance(location, str) and is_database_url(location):
        try:
            return PostgresInbox(location, readonly=True)
        except NoInboxError:
            return None
    path = Path(location)
    return Inbox(path, readonly=True) if path.exists() else None
