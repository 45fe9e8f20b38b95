"""``shipmap run CONFIG``: map events and deliver them; ``--dry-run`` prints the requests instead."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from shipmap.connectors._cli._logging import delivery_lines, root_formatter
from shipmap.connectors._cli._reports import summary_text, write_summary_json
from shipmap.connectors._cli._types import positive_int
from shipmap.connectors._errors import EXIT_DEAD_LETTERS, EXIT_HELD, EXIT_OK, EXIT_OUTAGE
from shipmap.connectors._intake._pipeline import fork_available
from shipmap.connectors._map._parallel import ordered_map
from shipmap.connectors._plural import counted
from shipmap.connectors._redact import RedactingFilter
from shipmap.connectors._runtime import PlanEntry, Progress, RunSummary, Runtime
from shipmap.connectors._summary import summary_hints
from shipmap.engine import read_documents
from shipmap.engine._chunks import SourceChunk, read_chunks
from shipmap.engine._sources import estimate_total

from ._output import CHUNK_LINES, add_jobs_argument

_LOGGER = "shipmap.connectors"
PROGRESS_LINE_EVERY_S = 10.0  # off a terminal, a line of progress this often
EXIT_USAGE = 2
Execute = Callable[[Callable[[Progress], None] | None], RunSummary]


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="the runtime config file (docs/runtime.md)")
    parser.add_argument(
        "-i",
        "--input",
        action="append",
        metavar="PATH",
        help="a JSON or NDJSON file, a directory of them, or - for stdin (repeatable; default: stdin)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the HTTP requests that would be sent; send nothing"
    )
    parser.add_argument("--concurrency", type=positive_int, metavar="N", help="requests in flight at once")
    parser.add_argument(
        "--journal", metavar="PATH|URL", help="this journal file or postgresql:// URL instead of the config's"
    )
    parser.add_argument(
        "--workers",
        type=int,
        choices=(0, 1),
        metavar="N",
        help="1: read, map and validate in a worker process while this one sends; 0: one process"
        " (default: delivery.workers, auto: 1 on Linux with two CPUs or more)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    add_jobs_argument(parser)
    parser.add_argument(
        "--refetch",
        action="store_true",
        help="fetch the enrichment documents of events that already hold them (docs/serve.md#enrichment)",
    )
    parser.add_argument(
        "--summary-json",
        type=Path,
        metavar="PATH",
        help="also write the run summary to PATH as JSON, for CI (docs/cli-formats.md)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text (default), or json: the run summary on stdout as --summary-json writes it (docs/cli-formats.md)",
    )


def run(args: argparse.Namespace) -> int:
    if args.summary_json is not None and not args.summary_json.parent.is_dir():
        print(f"shipmap run: --summary-json: no directory {args.summary_json.parent}", file=sys.stderr)
        return EXIT_USAGE  # said before anything is sent, not after
    if args.format == "json" and args.dry_run:
        print(
            "shipmap run: --dry-run prints requests, not a summary: it has no --format json", file=sys.stderr
        )
        return EXIT_USAGE
    runtime = Runtime.from_config(args.config, concurrency=args.concurrency, journal=args.journal)
    install_redaction(runtime)
    inputs = args.input or ["-"]
    if "-" in inputs and sys.stdin.isatty():
        print(
            "shipmap run: no --input given and stdin is a terminal; pipe events in or use --input PATH",
            file=sys.stderr,
        )
        return 2
    stdin = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin
    if args.dry_run:
        # The runtime is not picklable, so a dry run's workers must be forked from this process.
        jobs = args.jobs if fork_available() else 1
        chunks = read_chunks(inputs, stdin=stdin, lines=CHUNK_LINES)
        return print_plan_texts(ordered_map(_plan_chunk, runtime, chunks, jobs=jobs), sys.stdout)
    records = read_documents(inputs, stdin=stdin)
    workers = args.workers if args.workers is not None else runtime.config.delivery.resolved_workers()
    total = estimate_total(inputs)
    events: Any = records
    if runtime.config.sources:  # serve's enrichment module, imported only when a run may use it (~70 ms)
        from shipmap.connectors._serve import enrich_records, enrichments

        declared = enrichments(runtime.config)
        if declared:  # skinny events: fetched in the event loop as they are read, so in this process
            events, workers = enrich_records(runtime, records, declared, refetch=args.refetch), 0
    summary = run_with_progress(
        lambda progress: runtime.run(events, progress=progress, total=total, workers=workers),
        no_progress=args.no_progress,
        verbose=args.verbose,
    )
    code = exit_code(summary)
    if args.format == "json":  # the report alone on stdout, as validate's and test's
        sys.stdout.write(summary_text(summary, exit_code=code))
    else:
        print_summary(summary, sys.stdout)
    if args.summary_json is not None:
        try:
            write_summary_json(summary, args.summary_json, exit_code=code)
        except OSError as error:
            print(
                f"shipmap run: cannot write {args.summary_json}: {error.strerror or error}", file=sys.stderr
            )
            return EXIT_USAGE
    return code


def install_redaction(runtime: Runtime) -> None:
    """Mask the runtime's secrets in every log record, whichever library wrote it (httpx logs URLs)."""
    redacting = RedactingFilter(runtime.redactor)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redacting)


def run_with_progress(
    execute: Execute, *, no_progress: bool, verbose: int, stream: IO[str] | None = None
) -> RunSummary:
    """Run with a progress bar on a terminal; when not on one, with the run's INFO log lines and a line of
    progress every ``PROGRESS_LINE_EVERY_S`` (``-v`` adds a line per delivery)."""
    stream = stream or sys.stderr
    logger = logging.getLogger(_LOGGER)
    level, propagate = logger.level, logger.propagate
    if not stream.isatty() or no_progress:
        if verbose == 0:
            logger.setLevel(logging.INFO)
        try:
            with delivery_lines(verbose):
                return execute(ProgressLines())
        finally:
            logger.setLevel(level)
    bar = ProgressBar(stream)
    handler = _BarAwareHandler(bar)
    for root_handler in logging.getLogger().handlers:
        for item in root_handler.filters:
            handler.addFilter(item)
    logger.addHandler(handler)
    logger.propagate = False
    if verbose == 0:
        logger.setLevel(logging.WARNING)
    try:
        return execute(bar.update)
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        logger.setLevel(level)
        bar.close()


class ProgressLines:
    """Off a terminal: the progress bar's counts as a log line every ``PROGRESS_LINE_EVERY_S``, so a long run
    in CI or under a scheduler says how far it is without a line per delivery."""

    def __init__(self, every: float | None = None) -> None:
        self._log = logging.getLogger(f"{_LOGGER}.progress")
        self._every = PROGRESS_LINE_EVERY_S if every is None else every
        self._due = time.monotonic() + self._every

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if now >= self._due:
            self._due = now + self._every
            self._log.info("%s", progress_text(progress))


def progress_text(p: Progress) -> str:
    """Events read (of the total, when known), what became of them, and the rate."""
    settled = p.delivered + p.dead + p.skipped
    rate = settled / p.elapsed if p.elapsed > 0 else 0.0
    counts = (
        f"delivered {p.delivered}  dead {p.dead}  skipped {p.skipped}  unrouted {p.unrouted}"
        f"  in flight {p.in_flight}  {rate:.0f}/s"
    )
    events = f"{p.events}/{counted(p.total, 'event')}" if p.total else counted(p.events, "event")
    return f"{events}  {counts}"


class ProgressBar:
    """A one-line bar on stderr, redrawn at most ten times a second. No dependency: it is 40 lines."""

    WIDTH = 24

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.last: Progress | None = None
        self._drawn_at = 0.0
        self._visible = False

    def update(self, progress: Progress) -> None:
        self.last = progress
        now = time.monotonic()
        if now - self._drawn_at >= 0.1:
            self._drawn_at = now
            self.draw()

    def line(self) -> str:
        p = self.last
        if p is None:
            return ""
        if p.total:
            filled = int(min(p.events / p.total, 1.0) * self.WIDTH)
            return f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {progress_text(p)}"
        return progress_text(p)

    def draw(self) -> None:
        self.stream.write("\r\x1b[K" + self.line())
        self.stream.flush()
        self._visible = True

    def clear(self) -> None:
        if self._visible:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._visible = False

    def close(self) -> None:
        if self.last is not None:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()
            self._visible = False


class _BarAwareHandler(logging.Handler):
    """Writes a log line above the bar instead of through it."""

    def __init__(self, bar: ProgressBar) -> None:
        super().__init__()
        self.bar = bar
        self.setFormatter(root_formatter())  # the --log-format chosen, timestamps included

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            self.bar.clear()
            self.bar.stream.write(text + "\n")
            self.bar.draw()
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def print_plan_texts(rendered: Iterable[tuple[str, int, int]], out: IO[str]) -> int:
    """The dry run's output, from ``render_plan`` results in order: each request as it would go on the wire
    (secrets masked), each non-request, then the count line. Returns the worst exit code."""
    code = EXIT_OK
    count = 0
    for text, entries, chunk_code in rendered:
        out.write(text)
        count += entries
        code = max(code, chunk_code)
    out.write(f"# dry run: {count} entr{'y' if count == 1 else 'ies'}; nothing was sent\n")
    return code


def render_plan(entries: Iterable[PlanEntry]) -> tuple[str, int, int]:
    """The text of some plan entries, how many there were, and the exit code they call for."""
    parts: list[str] = []
    code = EXIT_OK
    count = 0
    for entry in entries:
        count += 1
        where = entry.origin or "-"
        if entry.action == "send":
            parts.append(f"### {where}  {entry.mapping}.{entry.target}  key {entry.key}\n")
            parts.append(f"{entry.method} {entry.url}\n")
            parts.extend(f"{name}: {value}\n" for name, value in entry.headers.items())
            parts.append("\n" + json.dumps(entry.body, ensure_ascii=False, indent=2) + "\n\n")
            continue
        label = f"{entry.mapping}.{entry.target or '(mapping)'}  " if entry.mapping else ""
        parts.append(f"### {where}  {label}{entry.action.upper()}: {entry.reason}\n\n")
        if entry.action in ("dead", "rejected"):
            code = EXIT_DEAD_LETTERS
    return "".join(parts), count, code


def _plan_chunk(runtime: Runtime, chunk: SourceChunk) -> tuple[str, int, int]:
    """One chunk of the dry run, in a ``--jobs`` worker (forked: it inherits the runtime)."""
    return render_plan(runtime.plan(chunk.documents()))


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def exit_code(summary: RunSummary) -> int:
    """What a finished run or replay exits with (docs/runtime.md#exit-codes)."""
    return outcome_exit_code(parked=summary.parked, failed=not summary.ok, held=bool(summary.held))


def outcome_exit_code(*, parked: int, failed: bool, held: bool = False) -> int:
    """Deliveries left pending by an outage first, then dead letters (a replay's: still dead) and rejections,
    then deliveries other live workers still hold. Dead letters of earlier runs that a run skips are not its
    failures: the run that made them exited 8, and a replay is what sends them."""
    if parked:
        return EXIT_OUTAGE
    if failed:
        return EXIT_DEAD_LETTERS
    if held:  # this worker's part is done, but the input is not delivered yet
        return EXIT_HELD
    return EXIT_OK


def print_summary(summary: RunSummary, out: IO[str]) -> None:
    headers = ("target", "delivered", "retried", "dead", "skipped", "p50", "p95", "p99")
    rows = []
    for stats in sorted(summary.targets.values(), key=lambda s: s.label):
        p = stats.percentiles()
        rows.append(
            (
                stats.label,
                str(stats.delivered),
                str(stats.retried),
                str(stats.dead),
                f"{stats.skipped}" + (f" ({stats.skipped_dead} dead)" if stats.skipped_dead else ""),
                _ms(p["p50"]),
                _ms(p["p95"]),
                _ms(p["p99"]),
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    out.write("  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(headers)))
    out.write("\n")
    for row in rows:
        out.write("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)))
        out.write("\n")
    out.write(
        f"events {summary.events}  unrouted {summary.unrouted}  rejected input records {summary.rejected}"
        f"  recovered {summary.recovered}  in {summary.elapsed:.2f} s\n"
    )
    for hint in summary_hints(summary):
        out.write(hint + "\n")
