"""``shipmap replay CONFIG [--key K ...]``: send dead letters again, re-mapped from their stored source."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from shipmap.connectors._cli._types import positive_int
from shipmap.connectors._cli.run import install_redaction, print_summary, run_with_progress
from shipmap.connectors._errors import EXIT_DEAD_LETTERS, EXIT_OK
from shipmap.connectors._runtime import Progress, RunSummary, Runtime
from shipmap.connectors._serve import Enricher, enrichments
from shipmap.connectors._serve._enrich import refetch_documents


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="the runtime config file")
    parser.add_argument(
        "--key", action="append", metavar="KEY", help="only these dead letters (a key prefix will do)"
    )
    parser.add_argument("--journal", metavar="PATH", help="use this journal file instead of the config's")
    parser.add_argument("--concurrency", type=positive_int, metavar="N", help="requests in flight at once")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    parser.add_argument(
        "--refetch",
        action="store_true",
        help="fetch an enriched event's documents again before re-mapping it (docs/serve.md#enrichment)",
    )


def run(args: argparse.Namespace) -> int:
    runtime = Runtime.from_config(args.config, concurrency=args.concurrency, journal=args.journal)
    install_redaction(runtime)
    waiting = runtime.dead_letters(args.key)
    if not waiting:
        print("no dead letters to replay" + (" with those keys" if args.key else ""))
        return EXIT_OK
    declared = enrichments(runtime.config) if args.refetch and runtime.config.sources else {}

    async def refetching(progress: Callable[[Progress], None] | None) -> RunSummary:
        async with Enricher(runtime, declared) as enricher:
            return await runtime.replay_async(
                args.key,
                progress=progress,
                refresh=lambda document: refetch_documents(runtime, enricher, document),
            )

    summary = run_with_progress(
        lambda progress: (
            asyncio.run(refetching(progress)) if declared else runtime.replay(args.key, progress=progress)
        ),
        no_progress=args.no_progress,
        verbose=args.verbose,
    )
    print_summary(summary, sys.stdout)
    return EXIT_OK if summary.ok else EXIT_DEAD_LETTERS
