"""Log lines of the command line: timestamped text, or one JSON object a line with the event's fields."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import selectors
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from shipmap.connectors import RedactingFilter, Redactor, Sandbox
from shipmap.connectors._cli._logging import LOG_FORMATS, StderrHandler, formatter
from shipmap.connectors._redact import get_logger
from test_runtime_support import order_event, write_config

CLI = [sys.executable, "-c", "import sys; from shipmap.connectors._cli import main; sys.exit(main())"]
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def run_logged(
    tmp_path: Path, sandbox: Sandbox, *options: str, run_options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    config = write_config(tmp_path, sandbox.url, delivery={"concurrency": 1})
    events = tmp_path / "events.ndjson"
    events.write_text("".join(json.dumps(order_event(n)) + "\n" for n in range(6)) + "not json\n")
    return subprocess.run(
        [*CLI, *options, "run", str(config), "--input", str(events), "--no-progress", *run_options],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )


def test_run_with_json_logs_and_format_json_is_machine_readable_on_both_streams(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox]
) -> None:
    """``--log-format json --format json``: stderr one JSON object a line, stdout one JSON document, the run
    summary as ``--summary-json`` writes it (before, stdout held the text table whatever the options)."""
    summary_file = tmp_path / "summary.json"
    done = run_logged(
        tmp_path,
        sandbox_factory(),
        "--log-format",
        "json",
        run_options=("--format", "json", "--summary-json", str(summary_file)),
    )
    assert done.returncode == 8, done.stderr  # the line that is not JSON is rejected
    assert all(json.loads(line)["level"] for line in done.stderr.splitlines())
    summary = json.loads(done.stdout)
    assert summary == json.loads(summary_file.read_text(encoding="utf-8"))
    assert (summary["format_version"], summary["exit_code"], summary["ok"]) == (1, 8, False)
    assert (summary["events"], summary["delivered"], summary["rejected"]) == (7, 6, 1)
    assert [t["target"] for t in summary["targets"] if t["delivered"]] == ["order"]


def test_run_format_json_refuses_a_dry_run(tmp_path: Path) -> None:
    """A dry run prints requests, not a summary: ``--format json`` with it is a usage error, before anything."""
    done = subprocess.run(
        [*CLI, "run", "shipmap.yaml", "--dry-run", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert "--dry-run prints requests, not a summary" in done.stderr


def test_json_logs_are_one_object_a_line_with_the_event_fields(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox]
) -> None:
    # The first two order posts answer 500: retries are logged with their attempt.
    sandbox = sandbox_factory(faults="schedule=ok,500,500")
    done = run_logged(tmp_path, sandbox, "--log-format", "json", "-v")  # -v: a line per delivery
    assert done.returncode == 8, done.stderr  # the line that is not JSON is rejected
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert records and all(re.fullmatch(TIMESTAMP, r["time"]) for r in records)
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    delivered = [r for r in records if r["message"].startswith("delivered ")]
    assert len(delivered) == 6
    for record in delivered:
        assert record["level"] == "INFO" and record["logger"].startswith("shipmap.connectors")
        assert record["target"] == "acme-orders.order" and len(record["key"]) >= 32
        assert record["message"].split()[1] == "acme-orders.order" and record["key"][:12] in record["message"]
    retries = [r for r in records if "retrying in" in r["message"]]
    assert [r["attempt"] for r in retries] == [1, 2]
    assert retries[0]["key"] == retries[1]["key"] and retries[0]["target"] == "acme-orders.order"
    assert retries[0]["key"] in {
        r["key"] for r in delivered
    }  # the delivery's key, also when mapped in a worker
    assert max(r["attempt"] for r in delivered) == 3
    assert any(r["level"] == "WARNING" and "rejected input record" in r["message"] for r in records)


def test_by_default_a_run_off_a_terminal_logs_progress_and_problems_and_v_adds_a_line_per_delivery(
    tmp_path: Path, sandbox: Sandbox, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line per delivery drowns the warnings at a few hundred events a second (and a log collector's rate
    limit drops them with it): by default a run says how far it is every 10 s, and what went wrong."""
    from shipmap.connectors._cli import main
    from shipmap.connectors._cli import run as run_command

    monkeypatch.setattr(run_command, "PROGRESS_LINE_EVERY_S", 0.0)  # a progress line at every report
    config = write_config(tmp_path, sandbox.url)
    events = tmp_path / "events.ndjson"
    events.write_text("".join(json.dumps(order_event(n)) + "\n" for n in range(6)) + "not json\n")
    argv = ["run", str(config), "--input", str(events), "--no-progress", "--workers", "0"]
    with caplog.at_level(logging.DEBUG, logger="shipmap"):
        assert main(argv) == 8
    said = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert not [m for _, _, m in said if m.startswith("delivered ")], said
    progress = [m for name, _, m in said if name == "shipmap.connectors.progress"]
    assert progress and progress[-1].startswith("7/7 events  delivered 6  dead 0  skipped 0"), progress
    assert any(level == "WARNING" and "rejected input record" in m for _, level, m in said)

    caplog.clear()
    more = tmp_path / "more.ndjson"
    more.write_text("".join(json.dumps(order_event(n)) + "\n" for n in range(6, 9)))
    with caplog.at_level(logging.DEBUG, logger="shipmap"):
        assert main(["-v", "run", str(config), "--input", str(more), "--no-progress", "--workers", "0"]) == 0
    delivered = [r for r in caplog.records if r.getMessage().startswith("delivered acme-orders.order ")]
    assert len(delivered) == 3 and {r.name for r in delivered} == {"shipmap.connectors.deliveries"}


def test_text_logs_carry_a_timestamp(tmp_path: Path, sandbox_factory: Callable[..., Sandbox]) -> None:
    done = run_logged(tmp_path, sandbox_factory())
    lines = done.stderr.splitlines()
    assert lines
    assert all(
        re.match(rf"{TIMESTAMP} (INFO|WARNING) shipmap\.connectors[\w.]*: ", line) for line in lines
    ), lines


def test_v_adds_shipmaps_line_per_delivery_and_httpx_request_lines_wait_for_vv(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox]
) -> None:
    sandbox = sandbox_factory()
    (tmp_path / "v").mkdir()
    (tmp_path / "vv").mkdir()
    done = run_logged(tmp_path / "v", sandbox, "-v")
    loggers = {re.sub(rf"^{TIMESTAMP} \w+ ([\w.]+): .*", r"\1", line) for line in done.stderr.splitlines()}
    assert "shipmap.connectors.deliveries" in loggers
    assert not [name for name in loggers if not name.startswith("shipmap.")], done.stderr
    done = run_logged(tmp_path / "vv", sandbox, "-vv")
    assert re.search(rf"^{TIMESTAMP} INFO httpx: HTTP Request: POST \S+/login ", done.stderr, re.M), (
        done.stderr
    )


def test_log_format_after_the_command_and_a_bad_value(tmp_path: Path) -> None:
    bad = subprocess.run([*CLI, "validate", "x.yaml", "--log-format", "xml"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "argument --log-format: invalid choice: 'xml'" in bad.stderr


class _Writes(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _stderr_logger(name: str, stream: io.StringIO) -> tuple[logging.Logger, StderrHandler]:
    handler = StderrHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"shipmap.test.{name}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, handler


def test_lines_an_event_loop_logs_are_written_once_an_iteration_and_before_it_waits() -> None:
    stream = _Writes()
    logger, handler = _stderr_logger("batched", stream)
    logged: list[str] = []
    waits: list[tuple[str, str]] = []  # (lines logged, lines written) whenever the loop may block

    class Watching(selectors.DefaultSelector):
        def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
            if timeout is None or timeout > 0:
                waits.append(("".join(logged), stream.getvalue()))
            return super().select(timeout)

    async def deliver(name: str) -> None:
        for n in range(3):
            for line in (f"{name} {n} a", f"{name} {n} b"):
                logger.info(line)
                logged.append(line + "\n")
            assert not stream.getvalue().endswith(f"{name} {n} b\n")  # kept until the next iteration
            await asyncio.sleep(0.001)  # the loop waits for a timer

    async def run() -> None:
        await asyncio.gather(deliver("x"), deliver("y"))

    loop = asyncio.SelectorEventLoop(Watching())
    try:
        loop.run_until_complete(run())
    finally:
        loop.close()
        logger.removeHandler(handler)
    assert stream.getvalue() == "".join(logged)
    assert waits and all(written == so_far for so_far, written in waits)
    assert stream.writes < len(logged)  # x's and y's lines of one iteration go out in one write


def test_lines_without_an_event_loop_are_written_at_once_after_the_kept_ones() -> None:
    stream = _Writes()
    logger, handler = _stderr_logger("unbatched", stream)
    logger.info("before")
    assert stream.getvalue() == "before\n"

    async def with_a_thread() -> None:
        logger.info("in the loop")
        thread = threading.Thread(target=logger.info, args=("from a thread",))
        thread.start()
        thread.join()
        assert stream.getvalue() == "before\nin the loop\nfrom a thread\n"  # in the order logged
        logger.info("kept")
        handler.flush()
        assert stream.getvalue().endswith("from a thread\nkept\n")
        for n in range(StderrHandler.MAX_KEPT):
            logger.info("burst %d", n)
        assert stream.getvalue().endswith(f"burst {StderrHandler.MAX_KEPT - 1}\n")  # bounded

    try:
        asyncio.run(with_a_thread())
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().count("\n") == 4 + StderrHandler.MAX_KEPT


def test_a_warning_an_event_loop_logs_is_written_at_once_after_the_kept_lines() -> None:
    # A warning may be the last line before the loop's thread blocks (the wait for a database that refuses
    # sessions): kept until the next iteration, it showed only once the wait was over.
    stream = _Writes()
    logger, handler = _stderr_logger("warned", stream)

    async def then_block() -> None:
        logger.info("delivered")
        logger.warning("the database does not take a new session yet")
        assert stream.getvalue() == "delivered\nthe database does not take a new session yet\n"
        logger.info("after")
        assert not stream.getvalue().endswith("after\n")  # an INFO line is still kept for the iteration

    try:
        asyncio.run(then_block())
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().endswith("after\n")


@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_a_runtime_line_is_the_same_whether_or_not_a_record_is_made(log_format: str) -> None:
    # Alone on the way to the root, the command line's handler takes the runtime's lines without records;
    # with another handler there (an embedding program's), records are made, and that handler gets each one.
    stream = io.StringIO()
    handler = StderrHandler(stream)
    handler.setFormatter(formatter(log_format))
    redactor = Redactor(["s3cret-token"])
    handler.addFilter(RedactingFilter(redactor))
    runtime = get_logger("linetest", redactor)
    logger = logging.getLogger("shipmap.connectors.linetest")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    theirs: list[logging.LogRecord] = []
    embedding = logging.Handler()
    embedding.emit = theirs.append  # type: ignore[method-assign]
    try:
        fields = {"key": "k" * 64, "target": "m.t", "attempt": 2}
        made = 0
        make = logging.getLogRecordFactory()

        def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
            nonlocal made
            made += 1
            return make(*args, **kwargs)

        logging.setLogRecordFactory(counting)
        try:
            runtime.info("delivered %s: HTTP %d", "m.t s3cret-token", 201, extra=fields)
        finally:
            logging.setLogRecordFactory(make)
        assert made == 0  # written without a record
        logger.propagate = True
        logging.getLogger("shipmap.connectors").addHandler(embedding)
        runtime.info("delivered %s: HTTP %d", "m.t s3cret-token", 201, extra=fields)
    finally:
        logger.removeHandler(handler)
        logging.getLogger("shipmap.connectors").removeHandler(embedding)
        logger.propagate = True
    direct, recorded = stream.getvalue().splitlines()
    assert len(theirs) == 1 and theirs[0].getMessage() == "delivered m.t ***: HTTP 201"
    if log_format == "json":
        direct_entry, recorded_entry = json.loads(direct), json.loads(recorded)
        assert re.fullmatch(TIMESTAMP, direct_entry.pop("time")) and recorded_entry.pop("time")
        assert direct_entry == recorded_entry == {
            "level": "INFO", "logger": "shipmap.connectors.linetest", "message": "delivered m.t ***: HTTP 201",
            **fields,
        }  # fmt: skip
    else:
        assert re.fullmatch(
            rf"{TIMESTAMP} INFO shipmap\.connectors\.linetest: delivered m\.t \*\*\*: HTTP 201", direct
        )
        assert direct[24:] == recorded[24:]


def test_commands_without_an_event_loop_start_without_asyncio_and_still_log() -> None:
    # asyncio is ~30 ms of a one-document preview's start-up; the handler imports it only through a loop that runs.
    repo = Path(__file__).resolve().parents[2]
    probe = (
        "import logging, sys; from shipmap.connectors._cli import main;"
        "code = main(['preview', 'mappings/shopify/order.yaml',"
        " 'tests/fixtures/real/shopify/order_rest_get_with_fulfillment.json', '--json']);"
        "logging.getLogger('shipmap.probe').warning('after the preview');"
        "print(code, 'asyncio' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=repo)
    assert done.stdout.strip().splitlines()[-1] == "0 False"
    assert re.fullmatch(rf"{TIMESTAMP} WARNING shipmap\.probe: after the preview", done.stderr.strip())


@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_the_error_that_ends_a_command_is_a_json_record_with_json_logs(
    tmp_path: Path, log_format: str
) -> None:
    """A log shipper parses every line on stderr: with JSON logs the error line is a record too (its text as
    the text format prints it, and the exit code); the text format prints it as it always has."""
    (tmp_path / "bad.yaml").write_text("connections: [\n")
    done = subprocess.run(
        [*CLI, "--log-format", log_format, "run", "bad.yaml", "--input", "events.ndjson"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    text = "bad.yaml:2:1: error: not valid YAML: expected the node content, but found '<stream end>'"
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    if log_format == "text":
        assert done.stderr == text + "\n"
        return
    [line] = done.stderr.splitlines()
    record = json.loads(line)
    assert re.fullmatch(TIMESTAMP, record.pop("time")), record
    assert record == {"level": "ERROR", "logger": "shipmap.cli", "message": text, "exit_code": 2}
