"""``shipmap replay CONFIG --rejected [--key SOURCE|ORIGIN ...]``: webhooks rejected because their enrichment
failed for good, handed to delivery again with their documents fetched again (docs/serve.md#enrichment).

A running ``shipmap serve`` holds its SQLite inbox: it is asked through ``<journal>.replays`` (``<inbox>.replays``
beside a PostgreSQL journal), requeues the rows between two runs, and the command watches the inbox and the journal for what came of them. With no
service running, the command requeues the rows itself and the next start processes them. A PostgreSQL inbox
is shared: the command requeues the rows itself and forgets their rejections in the same transaction
(``_rejected``); the services running on it, if any, take them, and it watches what came of them as above."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipmap.connectors._cli._reports import SUMMARY_COUNTS
from shipmap.connectors._errors import EXIT_DEAD_LETTERS, EXIT_OK, EXIT_OUTAGE, JournalError
from shipmap.connectors._plural import counted
from shipmap.connectors._runtime import Runtime
from shipmap.connectors._serve import serve_settings
from shipmap.connectors._serve._inbox_pg import open_reader
from shipmap.connectors._serve._rejected import (
    RejectedWebhooks,
    find_rejected,
    name_by_inbox,
    refuse_apart,
    requeue_directly,
    requeue_shared,
    services_on,
)
from shipmap.connectors._serve._replays import POLL_SECONDS, ReplayRequests, service_requests
from shipmap.connectors._store._journal import open_readonly
from shipmap.connectors._store._journal_pg import is_database_url

_SHOWN = 20  # origins listed by name; the others are counted


@dataclass
class RejectedReplay:
    """What ``replay --rejected`` did, for ``--format json``: ``None`` where it does not know (with no service
    running it only requeues; ``rejected_again`` and ``waiting`` come from watching the service take them)."""

    code: int = EXIT_OK
    to_replay: int = 0  # rejected webhooks requeued
    unreplayable: int = 0  # rejected input records that cannot be replayed (no webhook body)
    requeued: int | None = None
    taken: int | None = None  # read again and handed to delivery, their rejections resolved
    rejected_again: int | None = None
    waiting: int | None = None  # still pending in the inbox at --wait
    hints: list[str] = field(default_factory=list)  # what the text says comes next, for the JSON's hints

    def told(self) -> dict[str, Any]:
        """The run summary's counts this knows: its ``events`` are the webhooks it replayed, its ``rejected``
        those rejected again and the records it cannot replay. What delivery made of the others is the
        service's (``shipmap status``): with no webhook handed to it, every count is known."""
        if not self.to_replay:
            return {name: 0 for name in SUMMARY_COUNTS} | {"targets": [], "rejected": self.unreplayable}
        watched = self.rejected_again is not None
        return {
            "events": self.to_replay,
            "rejected": (self.rejected_again or 0) + self.unreplayable if watched else None,
        }

    def as_json(self) -> dict[str, Any]:
        fields = ("to_replay", "unreplayable", "requeued", "taken", "rejected_again", "waiting")
        return {name: getattr(self, name) for name in fields}


def replay_rejected(args: argparse.Namespace, runtime: Runtime) -> RejectedReplay:
    config = runtime.config
    inbox = serve_settings(config).inbox if config.sources else None
    refuse_apart(inbox, config.journal.location)  # before the journal is opened
    journal = open_readonly(config.journal.location)
    if journal is None:
        found = RejectedWebhooks()
    else:
        with journal:
            found = find_rejected(journal, inbox, set(config.sources), args.key)
    outcome = RejectedReplay(to_replay=len(found.rows), unreplayable=len(found.unreplayable))
    if not found.rows and not found.unreplayable:
        _say(outcome, "no rejected webhooks to replay" + (" with those keys" if args.key else ""))
        return outcome
    if found.rows:
        print(
            f"{counted(len(found.rows), 'rejected webhook')} to replay: {_names(list(found.rows.values()))}"
        )
    if found.unreplayable:
        print(f"{counted(len(found.unreplayable), 'rejected input record')} cannot be replayed:")
        for record in found.unreplayable:
            print(f"  {record.origin}: {record.why}")
    if found.rows:
        assert inbox is not None  # find_rejected finds no webhook without one
        if config.journal.url is not None and not is_database_url(inbox):  # a shared journal: origins name it
            found.rows = name_by_inbox(config.journal.url, config.journal.lease, Path(inbox), found.rows)
        # A running service's requests: beside an SQLite journal, or beside an SQLite inbox (its own still).
        requests = service_requests(config.journal.path if config.journal.url is None else None, inbox)
        if is_database_url(inbox):
            assert config.journal.url is not None  # refuse_apart: the journal's database
            _shared(args, str(inbox), config.journal.url, found, runtime, outcome)
        elif requests is not None and ReplayRequests.service_running(requests):
            _through_service(args, requests, inbox, found, runtime, outcome)
        else:
            outcome.requeued = requeue_directly(Path(inbox), found.rows)
            _not_running(outcome)
    if outcome.code == EXIT_OK and found.unreplayable:
        outcome.code = EXIT_DEAD_LETTERS
    return outcome


def _not_running(outcome: RejectedReplay) -> None:
    _say(
        outcome,
        f"shipmap serve is not running: requeued {counted(outcome.requeued or 0, 'webhook')} in the inbox; the"
        " next `shipmap serve` start fetches their documents again and delivers them",
    )


def _say(outcome: RejectedReplay, hint: str) -> None:
    """Print a line that says what comes next, and keep it for the JSON's ``hints``."""
    print(hint)
    outcome.hints.append(hint.strip())


def _names(origins: list[str]) -> str:
    shown = ", ".join(origins[:_SHOWN])
    return shown + (f" and {len(origins) - _SHOWN} more" if len(origins) > _SHOWN else "")


def _shared(
    args: argparse.Namespace,
    inbox: str,
    url: str,
    found: RejectedWebhooks,
    runtime: Runtime,
    outcome: RejectedReplay,
) -> None:
    """A PostgreSQL inbox: requeue the rows and forget their rejections (one transaction), then, when services
    run on it, watch what they make of them, up to ``--wait``."""
    deadline = time.monotonic() + args.wait
    requeued = outcome.requeued = requeue_shared(url, runtime.config.journal.lease, found.rows)
    services = services_on(inbox)
    if not services:
        _not_running(outcome)
        return
    print(
        f"shipmap serve is running ({counted(services, 'process', 'processes')} on the inbox): requeued"
        f" {counted(requeued, 'webhook')}; they fetch their documents again",
        flush=True,
    )
    _taken(args, inbox, found, runtime, deadline, outcome)


def _through_service(
    args: argparse.Namespace,
    path: Path,
    inbox: Path | str,
    found: RejectedWebhooks,
    runtime: Runtime,
    outcome: RejectedReplay,
) -> None:
    """Hand the rows to the running service, then watch what its feed makes of them, up to ``--wait``."""
    deadline = time.monotonic() + args.wait
    with ReplayRequests(path) as requests:
        request = requests.submit_rows(list(found.rows))
        print(
            f"shipmap serve is running: it requeues {counted(len(found.rows), 'webhook')} and fetches their"
            f" documents again (request {request})",
            flush=True,
        )
        result = requests.outcome(
            request, deadline, args.wait, does="requeues the webhooks", do="requeue the webhooks"
        )
    if (
        "requeued" not in result
    ):  # a service started before this shipmap was installed read a dead-letter replay
        raise JournalError(
            "the running shipmap serve is older than this shipmap and requeued nothing: restart it (SIGTERM"
            " drains), then run `shipmap replay --rejected` again"
        )
    outcome.requeued = int(result["requeued"])
    print(f"requeued by shipmap serve: {counted(outcome.requeued, 'webhook')}", flush=True)
    _taken(args, inbox, found, runtime, deadline, outcome)


def _taken(
    args: argparse.Namespace,
    inbox: Path | str,
    found: RejectedWebhooks,
    runtime: Runtime,
    deadline: float,
    outcome: RejectedReplay,
) -> None:
    """Watch the requeued rows until delivery has taken them all, or ``deadline``; say what came of them."""
    waiting = _wait_until_taken(inbox, list(found.rows), deadline)
    taken_rows = {origin for row, origin in found.rows.items() if row not in waiting}
    still = _still_rejected(runtime, taken_rows)
    taken = len(found.rows) - len(waiting) - len(still)
    outcome.taken, outcome.rejected_again, outcome.waiting = taken, len(still), len(waiting)
    print(
        f"read now and handed to delivery: {taken} (their rejections resolved), rejected again: {len(still)},"
        f" still waiting in the inbox: {len(waiting)}"
    )
    for origin, reason in sorted(still.items()):
        print(f"  still rejected: {origin}: {reason}")
    if waiting:
        _say(
            outcome,
            f"  {counted(len(waiting), 'webhook')} still waiting after {args.wait} s (is the source's API down?"
            " see `shipmap status`): the service delivers them when it can",
        )
        outcome.code = EXIT_OUTAGE
    elif still:
        outcome.code = EXIT_DEAD_LETTERS


def _wait_until_taken(inbox: Path | str, rows: list[int], deadline: float) -> list[int]:
    """The rows still pending in the inbox once none is, or at ``deadline``: the feed marks a row processed
    once its event is journaled (delivered, or rejected again)."""
    reader = open_reader(inbox)
    assert reader is not None  # the rows were requeued in it
    with reader:
        while True:
            pending = [row for row, held in reader.held(rows).items() if held.state == "pending"]
            if not pending or time.monotonic() > deadline:
                return pending
            time.sleep(POLL_SECONDS)


def _still_rejected(runtime: Runtime, origins: set[str]) -> dict[str, str]:
    """Those of ``origins`` the journal holds as rejected now, with the latest reason of each."""
    found = open_readonly(runtime.config.journal.location)
    if found is None or not origins:
        return {}
    still: dict[str, tuple[float, str]] = {}
    with found as journal:
        for page in journal.rejected_pages():
            for record in page:
                if record.origin in origins and record.at >= still.get(record.origin, (0.0, ""))[0]:
                    still[record.origin] = (record.at, record.reason)
    return {origin: reason for origin, (_, reason) in still.items()}
