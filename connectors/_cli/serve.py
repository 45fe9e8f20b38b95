"""``shipmap serve CONFIG``: accept signed webhooks, commit them, enrich them and deliver them, until SIGTERM.

SIGTERM and SIGINT (Ctrl-C) both drain it, and it exits 0 after the drain, a second signal or the drain's
deadline included: the operator asked the service to stop and it stopped, and what it could not deliver is
owed to the next start (it says so), as Vector and Redpanda Connect exit 0 after a signal's graceful
shutdown. The 130 of an interrupted command is for a Ctrl-C before it listens (while it loads its config).

An error that stops it once it serves (a run's error other than SendingStopped: the journal's database gone,
say) ends it with that error's own exit code, and still says what it did: the summary, on stderr beside the
error line the core prints after it.

With ``--log-format json`` the summary is one JSON log record on stderr (``"message": "summary at stop"``, its
numbers in ``summary``), at either stop: a log shipper parses every line the process writes there."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from typing import TextIO

from shipmap.connectors._cli._logging import RECORD_FIELDS, delivery_lines
from shipmap.connectors._cli._reports import summary_json
from shipmap.connectors._cli._types import host, port, positive_int
from shipmap.connectors._cli.run import install_redaction, print_summary
from shipmap.connectors._errors import EXIT_OK
from shipmap.connectors._runtime import Runtime
from shipmap.connectors._serve import Service, serve_settings

SUMMARY_LOGGER = "shipmap.connectors.serve"  # the service's own lines' logger, whose INFO ``run`` logs


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", metavar="CONFIG", help="the config file, with a sources section (docs/serve.md)"
    )
    parser.add_argument(
        "--host", type=host, metavar="HOST", help="listen on this address (default: serve.host, 127.0.0.1)"
    )
    parser.add_argument("--port", type=port, metavar="PORT", help="listen on this port; 0 picks a free one")
    parser.add_argument(
        "--journal",
        metavar="PATH|URL",
        help="use this journal (a file or postgresql:// URL) instead of the config's",
    )
    parser.add_argument(
        "--inbox",
        metavar="PATH|URL",
        help="use this inbox (an SQLite file, or a postgresql:// URL shared by many serves) instead of the config's",
    )
    parser.add_argument("--concurrency", type=positive_int, metavar="N", help="requests in flight at once")


def run(args: argparse.Namespace) -> int:
    runtime = Runtime.from_config(args.config, concurrency=args.concurrency, journal=args.journal)
    install_redaction(runtime)
    settings = serve_settings(runtime.config)
    changes: dict[str, object] = {}
    if args.host is not None:
        changes["host"] = args.host
    if args.port is not None:
        changes["port"] = args.port
    if args.inbox is not None:
        from pathlib import Path

        from shipmap.connectors._store._journal_pg import is_database_url

        changes["inbox"] = args.inbox if is_database_url(args.inbox) else Path(args.inbox).resolve()
    settings = dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
    if args.verbose == 0:
        logging.getLogger("shipmap.connectors").setLevel(logging.INFO)
    # Intake and delivery are two threads of this process: a shorter GIL switch interval (5 ms by default)
    # lets an acknowledgement through sooner while delivery maps. The CLI owns the process, so it may.
    sys.setswitchinterval(0.001)
    service = Service(runtime, settings)

    def ready(url: str) -> None:
        hooks = ", ".join(f"{url}/hooks/{name}" for name in settings.sources)
        if service.listening != url:  # every interface: the hooks' URLs are this host's way in
            hooks += " from this host"
        print(
            f"shipmap serve: listening on {service.listening} ({hooks}); SIGTERM drains and stops, SIGHUP reloads"
            " the config",
            flush=True,
        )

    with delivery_lines(args.verbose):
        try:
            summary = asyncio.run(service.serve(on_ready=ready))
        except Exception as error:
            # An error stopped it (the journal's database gone, say): what it did is still said, on stderr
            # beside the error the core prints after it, with the error's own exit code.
            if service.summary is not None:
                sys.stdout.flush()
                _say_summary(service, args.log_format, sys.stderr, exit_code=_exit_code(error))
            raise
    if summary is not None:
        _say_summary(service, args.log_format, sys.stdout, exit_code=EXIT_OK)
    return EXIT_OK


def _say_summary(service: Service, log_format: str, out: TextIO, *, exit_code: int) -> None:
    """The service's summary at stop: the table on ``out``, or with JSON logs one record among them (stderr),
    its text (an outage's reason) masked as a line's message is."""
    assert service.summary is not None
    if log_format != "json":
        print_summary(service.summary, out)
        return
    document = service.runtime.redactor.redact_json(
        summary_json(service.summary, exit_code=exit_code, at_stop=True)
    )
    logging.getLogger(SUMMARY_LOGGER).info("summary at stop", extra={RECORD_FIELDS: {"summary": document}})


def _exit_code(error: Exception) -> int:
    """What the core exits with for ``error`` (the summary says it before the error line)."""
    from shipmap.connectors._cli import EXIT_INTERNAL
    from shipmap.engine import ShipmapError

    return error.exit_code if isinstance(error, ShipmapError) else EXIT_INTERNAL
