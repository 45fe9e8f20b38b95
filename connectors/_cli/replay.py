"""``shipmap replay CONFIG [--key K ...]``: send dead letters again, re-mapped from their stored source; with
``--rejected``, the webhooks rejected because their enrichment failed for good (``_replay_rejected``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

from shipmap.connectors._cli._replay_rejected import replay_rejected
from shipmap.connectors._cli._reports import document_text, handed_summary_json, summary_json, summary_text
from shipmap.connectors._cli._types import positive_int
from shipmap.connectors._cli.run import (
    exit_code,
    install_redaction,
    outcome_exit_code,
    print_summary,
    run_with_progress,
)
from shipmap.connectors._errors import EXIT_OK
from shipmap.connectors._plural import counted
from shipmap.connectors._runtime import Progress, RunSummary, Runtime
from shipmap.connectors._serve import Enricher, enrichments
from shipmap.connectors._serve._enrich_batch import refetcher
from shipmap.connectors._serve._replays import ReplayRequests, replays_path
from shipmap.connectors._store._journal import open_readonly
from shipmap.connectors._summary import replay_outcome


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="the runtime config file")
    parser.add_argument(
        "--key",
        action="append",
        metavar="KEY",
        help="only these dead letters (a key prefix will do); with --rejected, a source's name or an origin",
    )
    parser.add_argument("--journal", metavar="PATH", help="use this journal file instead of the config's")
    parser.add_argument("--concurrency", type=positive_int, metavar="N", help="requests in flight at once")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    parser.add_argument(
        "--refetch",
        action="store_true",
        help="fetch an enriched event's documents again before re-mapping it (docs/serve.md#enrichment)",
    )
    parser.add_argument(
        "--rejected",
        action="store_true",
        help="replay the webhooks rejected because their enrichment failed for good, not dead letters: their"
        " documents are fetched again (docs/serve.md#enrichment-fetching-from-the-sources-api)",
    )
    parser.add_argument(
        "--wait",
        type=positive_int,
        default=300,
        metavar="SECONDS",
        help="when a shipmap serve holds the journal, how long to wait for it to carry out the replay (and,"
        " with --rejected, for its delivery, or the services on a PostgreSQL inbox, to take the webhooks)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text (default), or json: the replay's summary on stdout, as run --format json prints a run's"
        " (docs/cli-formats.md); the counts not known (a replay that shipmap serve or --rejected hands on)"
        " are null and listed in its field unknown",
    )


def run(args: argparse.Namespace) -> int:
    as_json = args.format == "json"
    started = time.monotonic()
    runtime = Runtime.from_config(args.config, concurrency=args.concurrency, journal=args.journal)
    install_redaction(runtime)
    if args.rejected:
        if not as_json:
            return replay_rejected(args, runtime).code
        with contextlib.redirect_stdout(sys.stderr):  # what it says is for people: the report alone on stdout
            outcome = replay_rejected(args, runtime)
        document = handed_summary_json(
            outcome.told(), exit_code=outcome.code, elapsed=time.monotonic() - started, hints=outcome.hints
        )
        sys.stdout.write(document_text({**document, "rejected_webhooks": outcome.as_json()}))
        return outcome.code
    waiting = _dead_letter_count(runtime, args.key)
    if not waiting:
        said = "no dead letters to replay" + (" with those keys" if args.key else "")
        if as_json:  # nothing replayed: a summary of nothing, so that CI reads one shape
            nothing = summary_json(RunSummary(replay=True), exit_code=EXIT_OK)
            sys.stdout.write(document_text({**nothing, "hints": [said]}))
        else:
            print(said)
        return EXIT_OK
    journal = runtime.config.journal.path if runtime.config.journal.url is None else None  # SQLite's only
    if journal is not None and ReplayRequests.service_running(replays_path(journal)):
        return _through_service(args, replays_path(journal), waiting, started)
    declared = enrichments(runtime.config) if args.refetch and runtime.config.sources else {}

    async def refetching(progress: Callable[[Progress], None] | None) -> RunSummary:
        async with Enricher(runtime, declared) as enricher:
            return await runtime.replay_async(
                args.key, progress=progress, refresh=refetcher(runtime, enricher)
            )

    summary = run_with_progress(
        lambda progress: (
            asyncio.run(refetching(progress)) if declared else runtime.replay(args.key, progress=progress)
        ),
        no_progress=args.no_progress,
        verbose=args.verbose,
    )
    code = exit_code(summary)
    if as_json:  # the report alone on stdout, as run's
        sys.stdout.write(summary_text(summary, exit_code=code))
    else:
        print_summary(summary, sys.stdout)
    return code


def _dead_letter_count(runtime: Runtime, keys: list[str] | None) -> int:
    """Counted, not read: the replay itself reads them a page at a time."""
    journal = open_readonly(runtime.config.journal.location)
    if journal is None:
        return 0
    with journal:
        return journal.dead_letter_count(keys)


def _through_service(args: argparse.Namespace, path: Path, count: int, started: float) -> int:
    """A ``shipmap serve`` holds the journal: hand it the replay and wait for its result (docs/serve.md); with
    ``--format json``, the summary document of what it sends back (the text on stderr)."""
    as_json = args.format == "json"
    out = sys.stderr if as_json else sys.stdout
    with ReplayRequests(path) as requests:
        request = requests.submit(args.key, refetch=args.refetch)
        print(
            f"shipmap serve is running: it replays {counted(count, 'dead letter')} (request {request})",
            file=out,
            flush=True,
        )
        result = requests.outcome(
            request, time.monotonic() + args.wait, args.wait, does="replays it", do="replay"
        )
    said = f"replayed by shipmap serve: {replay_outcome(result)}"
    print(said, file=out)
    for key in result.get("dead_keys", []):
        print(f"  still dead: {key}", file=out)
    code = outcome_exit_code(
        parked=int(result.get("parked", 0)), failed=bool(result.get("dead") or result.get("rejected"))
    )
    if as_json:
        document = handed_summary_json(
            result, exit_code=code, elapsed=time.monotonic() - started, hints=[said]
        )
        sys.stdout.write(document_text(document))
    return code
