"""The journal writer thread (``connectors/_store/_writer.py``) keeps the journal's guarantees: a kill while
the thread holds uncommitted work loses nothing and re-sends at most what the docs say, and a journal error
raised on the thread stops the run with the same message and exit code as one raised on the event loop."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from shipmap.connectors import Sandbox
from shipmap.connectors._cli import main
from shipmap.connectors._store._journal import Journal

sys.path.insert(0, str(Path(__file__).parents[1] / "connectors"))
from test_runtime_support import environ, order_event, write_config

EVENTS = 240
CONCURRENCY = 4  # test_runtime_support's config

# A run whose journal writer thread stops, holding a flush of delivered marks, after a few flushes went
# through: it writes the marks' keys to a file, then waits to be killed.
STALLED_RUN = """
import json, sys, threading
from pathlib import Path
from shipmap.connectors import _runtime
from shipmap.connectors._cli import main
from shipmap.connectors._store._journal import Journal

held = Path(sys.argv[1])

class StalledJournal(Journal):
    flushes = 0

    def mark_delivered_many(self, rows):
        if threading.current_thread().name.startswith("shipmap-journal"):
            StalledJournal.flushes += 1
            if StalledJournal.flushes == 4:
                held.write_text(json.dumps([key for key, _, _ in rows]))
                threading.Event().wait(120)  # killed long before
        return super().mark_delivered_many(rows)

_runtime.Journal = StalledJournal
sys.exit(main(sys.argv[2:]))
"""


def _events(path: Path) -> Path:
    path.write_text("".join(json.dumps(order_event(n)) + "\n" for n in range(1, EVENTS + 1)))
    return path


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_kill_while_the_writer_holds_uncommitted_marks_loses_nothing(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = write_config(tmp_path, sandbox.url)
    events = _events(tmp_path / "events.ndjson")
    held = tmp_path / "held.json"
    argv = ["run", str(config), "--input", str(events), "--no-progress", "--workers", "0"]
    child = subprocess.Popen(
        [sys.executable, "-c", STALLED_RUN, str(held), *argv],
        env={**os.environ, **environ(sandbox.url)},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not held.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    held_keys = json.loads(held.read_text()) if held.exists() else None
    child.send_signal(signal.SIGKILL)
    _, stderr = child.communicate(timeout=60)
    assert held_keys, f"the writer never held a flush (exit {child.returncode}): {stderr.decode()[-2000:]}"
    assert child.returncode == -signal.SIGKILL

    # The marks the writer held were never committed: those deliveries are pending, to be sent again.
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        states = journal.lookup(held_keys)
        pending = journal.counts().get("pending", 0)
    assert {state for state, _ in states.values()} == {"pending"}
    sent_before = len(sandbox.requests(endpoint="fenix.orders"))
    assert 0 < sent_before < EVENTS

    assert main(argv) == 0  # the next run resumes
    orders = collections.Counter(r.order_id for r in sandbox.requests(endpoint="fenix.orders"))
    assert set(orders) == {str(1000 + n) for n in range(1, EVENTS + 1)}  # nothing lost
    # Only deliveries answered but not marked, or in flight, arrive twice: at most concurrency + 16.
    twice = sum(count - 1 for count in orders.values())
    assert len(held_keys) <= twice <= CONCURRENCY + 16, (twice, pending)
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        assert journal.counts() == {"delivered": EVENTS}


def test_a_journal_error_on_the_writer_thread_is_a_clear_exit_7_and_the_next_run_resumes(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shipmap.connectors import _runtime

    config = write_config(tmp_path, sandbox.url)
    events = _events(tmp_path / "events.ndjson")
    failed_on: list[str] = []

    class ReadOnlyLater(Journal):
        """The journal turns read-only (as a remounted disk would) while the run is under way: the first
        write to fail is a flush of delivered marks on the writer thread, which nothing awaits."""

        def mark_delivered_many(self, rows: Any) -> int:
            if not failed_on:
                failed_on.append(threading.current_thread().name)
                self._db.execute("PRAGMA query_only = 1")
            return super().mark_delivered_many(rows)

    monkeypatch.setattr(_runtime, "Journal", ReadOnlyLater)
    argv = ["run", str(config), "--input", str(events), "--no-progress", "--workers", "0"]
    assert main(argv) == 7
    err = capsys.readouterr().err
    assert failed_on and failed_on[0].startswith("shipmap-journal")
    assert "journal write failed" in err and "the journal is read-only" in err
    assert "Nothing is lost" in err and "Traceback" not in err
    monkeypatch.undo()  # the cause is fixed
    assert main(argv) == 0
    delivered = {r.order_id for r in sandbox.requests(endpoint="fenix.orders")}
    assert delivered == {str(1000 + n) for n in range(1, EVENTS + 1)}


def test_a_stalled_writer_holds_back_the_senders_with_answers_never_the_event_loop(
    tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush of delivered marks stalls on the writer thread (as behind a long checkpoint). The senders
    with answers wait for room, so never more than 16 answered deliveries wait for their mark, and nothing
    more is sent meanwhile; the event loop itself keeps running (a task of its own is watching)."""
    from shipmap.connectors import Runtime, _runtime
    from shipmap.connectors._store._outbox import Outbox

    stalled, release = threading.Event(), threading.Event()

    class StallingJournal(Journal):
        flushes = 0  # flushes of marks on the writer thread (only it counts them)

        def mark_delivered_many(self, rows: Any) -> int:
            on_writer = threading.current_thread().name.startswith("shipmap-journal")
            if on_writer and not self._db.in_transaction:  # a flush, not a batch's commit
                StallingJournal.flushes += 1
                if StallingJournal.flushes == 3:
                    stalled.set()
                    release.wait(60)  # the watcher releases it; the deadline only ends a broken test
            return int(super().mark_delivered_many(rows))

    outboxes: list[WatchedOutbox] = []

    class WatchedOutbox(Outbox):
        most_unmarked = 0
        waiting = 0  # senders waiting for room, answer in hand

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            outboxes.append(self)

        def unmarked(self) -> int:
            return len(self._marks) + self._marking

        async def room_for_mark(self) -> None:
            self.waiting += 1
            try:
                await super().room_for_mark()
            finally:
                self.waiting -= 1

        def delivered(self, key: str, status: int, attempts: int) -> None:
            super().delivered(key, status, attempts)
            self.most_unmarked = max(self.most_unmarked, self.unmarked())

    monkeypatch.setattr(_runtime, "Journal", StallingJournal)
    monkeypatch.setattr(_runtime, "Outbox", WatchedOutbox)
    sandbox.set_faults("slow=1:0.005")  # answers slower than mapping: the send queue is full at the stall
    runtime = Runtime.from_config(write_config(tmp_path, sandbox.url), environ=environ(sandbox.url))
    held: dict[str, int] = {}

    async def watch() -> None:
        deadline = time.monotonic() + 30
        while not (stalled.is_set() and outboxes and outboxes[0].waiting == CONCURRENCY):
            assert time.monotonic() < deadline, "the senders never all waited for room behind the stall"
            await asyncio.sleep(0.002)
        outbox = outboxes[0]  # every sender holds an answer and waits, and this task still runs
        with Journal(tmp_path / "journal.db", readonly=True) as journal:
            held["committed"] = journal.counts().get("delivered", 0)
        held["unmarked"] = outbox.unmarked()
        held["sent"] = len(sandbox.requests(endpoint="fenix.orders"))
        release.set()

    async def run() -> Any:
        summary, _ = await asyncio.gather(
            runtime.run_async(order_event(n) for n in range(1, EVENTS + 1)), watch()
        )
        return summary

    try:
        summary = asyncio.run(run())
    finally:
        release.set()
    assert summary.delivered == EVENTS
    assert held["unmarked"] == 16  # the bound, reached and not passed
    # Sent while stalled: what was committed, the 16 answers waiting for their mark, one answer per sender.
    assert held["sent"] == held["committed"] + 16 + CONCURRENCY
    assert outboxes[0].most_unmarked <= 16
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        assert journal.counts() == {"delivered": EVENTS}
