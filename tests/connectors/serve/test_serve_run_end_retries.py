"""The end of one of ``shipmap serve``'s runs (a reload that moves nothing, a replay handed to it) while a
delivery waits out a 20 s retry backoff: the run ends at once, the delivery stays ``pending`` with its
attempts in the journal, and the next run retries it when the backoff would have ended, going on with its
retry budget (not starting it again).

A live service over HTTP; the sandbox's fault injection answers Fenix ``503`` as the test says."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from shipmap.connectors import FaultPlan, Journal, Sandbox

from .harness import (
    BC_HEADERS,
    BC_ORDER_CREATED,
    DRAIN_LINE,
    FIXTURE_RETRY,
    ServeProcess,
    delivered_orders,
    moving_nothing,
    on_postgres,
    post_order,
    shopify_headers,
    with_drain_timeout,
)

BACKOFF_S = 20.0
# The run's end (a reload, a replay, a restart) comes this far into the 20 s wait, so that a wait started over
# there would end at 28 s at the earliest: a retry before that went when the first wait ended, with 8 s to
# spare on a busy machine. A retry can never come early under load: before 19 s is too soon, however busy.
INTO_THE_WAIT_S = 8.0
STARTED_OVER_S = INTO_THE_WAIT_S + BACKOFF_S
DRAIN_TIMEOUT_S = 30.0  # the fixture's drain_timeout


def _start(serve: ServeProcess, max_attempts: int) -> str:
    """Start ``serve`` with a 20 s backoff and ``max_attempts``; return its config with one change that moves
    no connection (a reload of it ends the run in progress, and nothing else)."""
    text = serve.config.read_text()
    assert FIXTURE_RETRY in text
    retry = f"  retry: {{max_attempts: {max_attempts}, backoff_base: 20s, backoff_cap: 20s, jitter: none}}\n"
    working = text.replace(FIXTURE_RETRY, retry)
    reloaded = moving_nothing(working)
    serve.config.write_text(working)
    serve.start()
    return reloaded


def _first_failure(serve: ServeProcess) -> float:
    """Wait for the first attempt's failure and its 20 s backoff; when it was seen (monotonic)."""
    serve.wait_until(lambda: serve.said("attempt 1 failed (HTTP 503") > 0, timeout=30,
                     what="the first attempt's 503")  # fmt: skip
    failed_at = time.monotonic()
    assert serve.said("retrying in 20.00s") == 1, serve.errors[-10:]
    return failed_at


def _into_the_wait(failed_at: float) -> None:
    """Sleep until ``INTO_THE_WAIT_S`` after the first attempt failed (``failed_at``, monotonic)."""
    time.sleep(max(0.0, failed_at + INTO_THE_WAIT_S - time.monotonic()))


def test_a_reload_ends_the_run_at_once_and_the_retry_goes_when_its_backoff_ends(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """The reload's run used to end only once the backoff was over (about 20 s, every delivery after it
    waiting as long), the retry made in it; now it ends at once, the delivery left pending, not yet retried.
    The delivery is retried once, when its backoff ends (not at the next run's start, not 20 s after it),
    and delivered: 2 attempts in the journal."""
    source_sandbox.set_faults(FaultPlan(schedule=("503",)), api="fenix")
    serve = ServeProcess(tmp_path, source_sandbox.url)
    reloaded = _start(serve, max_attempts=4)
    try:
        with httpx.Client(timeout=10) as client:
            post_order(serve, client, 7_400_001, "run-end7400001")
            failed_at = _first_failure(serve)
            _into_the_wait(failed_at)
            took = serve.reload(reloaded)
            print(f"\nreload: the next run started {took:.1f} s after SIGHUP (backoff {BACKOFF_S:.0f} s)")
            # The run ended before the backoff did: the next one has started and the retry is still owed,
            # neither made in the old run nor at the next run's start.
            assert delivered_orders(source_sandbox) == []
            assert serve.attempts() == [("pending", 1)]
            serve.wait_until(lambda: delivered_orders(source_sandbox) == ["7400001"], timeout=30,
                             what="the retry after the backoff")  # fmt: skip
            retried_after = time.monotonic() - failed_at
            print(f"reload: retried {retried_after:.1f} s after the first attempt failed")
            assert BACKOFF_S - 1.0 < retried_after < STARTED_OVER_S, retried_after
            assert serve.said("left pending at the end of the run, waiting to retry") == 1, serve.errors[-10:]
        assert serve.terminate() == 0
    finally:
        serve.kill()
    assert serve.attempts() == [("delivered", 2)]
    assert serve.said("attempt 2 failed") == 0 and serve.said("dead letter") == 0, serve.errors[-10:]


def test_a_replay_handed_to_serve_is_not_held_by_a_backoff_and_the_retry_budget_goes_on(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """``shipmap replay`` waited for the run in progress to end, about 20 s behind the backoff, the retry
    made first; now it is answered before the retry. The delivery's budget (max_attempts 2) goes on in the
    next run: its second attempt, when the backoff ends, is its last, and it is dead-lettered after 2
    attempts, not given 2 more."""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    _start(serve, max_attempts=2)
    try:
        with httpx.Client(timeout=10) as client:
            # A dead letter for the replay to try again: an order that the mapping cannot map.
            body = json.dumps({"id": 7_400_099}).encode()
            headers = shopify_headers(body, "orders/create", "run-end-unmappable")
            assert serve.post(client, "shop", body, headers).status_code == 200
            serve.wait_until(lambda: serve.said("dead letter") == 1, timeout=30, what="the unmappable order")
            source_sandbox.set_faults(FaultPlan(schedule=("503", "503", "503")), api="fenix")
            post_order(serve, client, 7_400_002, "run-end7400002")
            failed_at = _first_failure(serve)
            _into_the_wait(failed_at)
            asked = time.monotonic()
            replay = subprocess.run(
                [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", "replay",
                 str(serve.config), "--no-progress"],
                capture_output=True, text=True, env=serve.env, cwd=tmp_path, timeout=120, check=False,
            )  # fmt: skip
            took = time.monotonic() - asked
            print(f"\nreplay: answered in {took:.1f} s (backoff {BACKOFF_S:.0f} s)")
            assert replay.returncode == 8, (replay.stdout, replay.stderr)
            assert "replayed by shipmap serve: delivered 0, still dead 1, left pending 0" in replay.stdout
            # Answered before the backoff ended: the retry is still owed.
            assert serve.said("gave up after") == 0, serve.errors[-10:]
            assert ("pending", 1) in serve.attempts()
            serve.wait_until(lambda: serve.said("gave up after") > 0, timeout=40, what="the last attempt")
            given_up_after = time.monotonic() - failed_at
            assert BACKOFF_S - 1.0 < given_up_after < STARTED_OVER_S, given_up_after
            assert serve.said("gave up after 2 attempts; last: HTTP 503") == 1, serve.errors[-10:]
            assert serve.said("attempt 3") == 0, serve.errors[-10:]
        assert serve.terminate() == 0
    finally:
        serve.kill()
    assert ("dead", 2) in serve.attempts()


def test_sigterm_still_drains_a_delivery_in_its_backoff(source_sandbox: Sandbox, tmp_path: Path) -> None:
    """A stop is not the end of a run that another follows: the drain finishes the runtime's deliveries
    within ``drain_timeout`` (30 s in the fixture), as docs/serve.md says, so the delivery in its 20 s backoff
    is retried and delivered before the process exits 0; nothing is left pending."""
    source_sandbox.set_faults(FaultPlan(schedule=("503",)), api="fenix")
    serve = ServeProcess(tmp_path, source_sandbox.url)
    assert DRAIN_LINE in serve.config.read_text()  # DRAIN_TIMEOUT_S
    _start(serve, max_attempts=4)
    try:
        with httpx.Client(timeout=10) as client:
            post_order(serve, client, 7_400_003, "run-end7400003")
            failed_at = _first_failure(serve)
        assert serve.terminate() == 0
        drained_after = time.monotonic() - failed_at
        # The retry came at the backoff's end, and the drain ended with it, not at its own 30 s deadline.
        assert BACKOFF_S - 1.0 < drained_after < DRAIN_TIMEOUT_S, drained_after
    finally:
        serve.kill()
    assert delivered_orders(source_sandbox) == ["7400003"]
    assert serve.attempts() == [("delivered", 2)]
    assert serve.said("left pending at the end of the run") == 0, serve.errors[-10:]


def test_a_retry_after_holds_up_no_run_and_is_still_honoured_by_the_next(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """Fenix answers one order ``503`` with ``Retry-After: 20``: no request of the connection may start for
    20 s, and a second order, never sent, waits out that hold when a reload ends the run. The run used to end
    once the hold was over; now at once, with both left pending, and the next run sends neither before the
    20 s are over: both are delivered once, when the Retry-After allows."""
    source_sandbox.set_faults(FaultPlan(schedule=("503:20",)), api="fenix")
    serve = ServeProcess(tmp_path, source_sandbox.url)
    reloaded = _start(serve, max_attempts=4)  # retry_after_cap left out: 60 s, the hold is the 20 s asked
    try:
        with httpx.Client(timeout=10) as client:
            post_order(serve, client, 7_400_004, "run-end7400004")
            failed_at = _first_failure(serve)
            post_order(serve, client, 7_400_005, "run-end7400005")
            # Journaled and taken by a sender, which waits for the hold (no line says so), by then.
            _into_the_wait(failed_at)
            took = serve.reload(reloaded)
            print(f"\nRetry-After: the next run started {took:.1f} s after SIGHUP (Retry-After 20 s)")
            # The run ended before the hold did: both left pending, neither sent yet.
            assert serve.said("left pending at the end of the run, waiting for a Retry-After") == 1, (
                serve.errors
            )
            assert delivered_orders(source_sandbox) == []  # the next run honours the Retry-After
            serve.wait_until(lambda: delivered_orders(source_sandbox) == ["7400004", "7400005"], timeout=30,
                             what="both orders after the Retry-After")  # fmt: skip
            assert BACKOFF_S - 1.0 < time.monotonic() - failed_at < STARTED_OVER_S
        assert serve.terminate() == 0
    finally:
        serve.kill()
    assert sorted(serve.attempts()) == [("delivered", 1), ("delivered", 2)]


def test_a_retry_after_holds_the_new_deliveries_of_the_run_after_a_reload(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """Fenix answers one order ``429`` with ``Retry-After: 20``. A reload ends the run, and a second order is
    posted to the next run: it is not sent before the 20 s are over either (nor is the first order's retry),
    so Fenix gets no request in the wait it asked for, and both are delivered once. Before, the next run's new
    rate limiter knew nothing of the 429, and the second order went at once, into the wait."""
    source_sandbox.set_faults(FaultPlan(schedule=("429:20",)), api="fenix")
    serve = ServeProcess(tmp_path, source_sandbox.url)
    reloaded = _start(serve, max_attempts=4)  # retry_after_cap left out: 60 s, the hold is the 20 s asked
    try:
        with httpx.Client(timeout=10) as client:
            post_order(serve, client, 7_400_020, "run-end7400020")
            serve.wait_until(lambda: serve.said("attempt 1 failed (HTTP 429") > 0, timeout=30,
                             what="the first attempt's 429")  # fmt: skip
            serve.reload(reloaded)
            # The next run's limiter took the rest of the wait (each run started in it says so).
            serve.wait_until(lambda: serve.said("the Retry-After its server asked an earlier run for") > 0,
                             timeout=30, what="the next run's hold")  # fmt: skip
            post_order(serve, client, 7_400_021, "run-end7400021")
            serve.wait_until(lambda: delivered_orders(source_sandbox) == ["7400020", "7400021"], timeout=60,
                             what="both orders after the Retry-After")  # fmt: skip
        assert serve.terminate() == 0
    finally:
        serve.kill()
    [told] = source_sandbox.faulted()
    assert (told.endpoint, told.status) == ("fenix.orders", 429), told
    accepted = source_sandbox.requests(endpoint="fenix.orders")
    assert sorted(str(r.order_id) for r in accepted) == ["7400020", "7400021"], accepted  # each once
    # When the sandbox received them: none before the wait it asked for was over (a second of slack for the
    # clocks' reading; under load a request only comes later).
    wait_over = datetime.fromisoformat(told.received_at) + timedelta(seconds=BACKOFF_S - 1.0)
    early = [
        (r.order_id, r.received_at) for r in accepted if datetime.fromisoformat(r.received_at) < wait_over
    ]
    assert early == [], (told.received_at, early)
    assert sorted(serve.attempts()) == [("delivered", 1), ("delivered", 2)]


def test_a_drain_deadline_in_a_backoff_keeps_the_attempts_for_the_next_start(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """``SIGTERM`` with a 2 s ``drain_timeout`` while the delivery waits out its 20 s backoff: the deadline
    cancels the wait, and the delivery stays ``pending`` with its attempt in the journal (it used to keep none,
    so the next start gave it its whole budget again). The next start goes on with it: max_attempts 2, so its
    second attempt is its last, dead-lettered after 2 attempts, not given 2 more."""
    source_sandbox.set_faults(FaultPlan(schedule=("503", "503", "503")), api="fenix")
    serve = ServeProcess(tmp_path, source_sandbox.url)
    serve.config.write_text(with_drain_timeout(serve.config.read_text(), "2s"))
    _start(serve, max_attempts=2)
    try:
        with httpx.Client(timeout=10) as client:
            post_order(serve, client, 7_400_006, "run-end7400006")
            _first_failure(serve)
        assert serve.terminate() == 0
        assert serve.attempts() == [("pending", 1)]
        assert serve.said("left pending at the stop, waiting to retry (HTTP 503") == 1, "".join(serve.errors)
        serve.errors.clear()
        serve.start()
        serve.wait_until(lambda: serve.said("dead letter") > 0, timeout=60, what="the last attempt")
        assert serve.said("gave up after 2 attempts; last: HTTP 503") == 1, serve.errors[-10:]
        assert serve.said("retrying in") == 0, serve.errors[-10:]
        assert serve.terminate() == 0
    finally:
        serve.kill()
    assert serve.attempts() == [("dead", 2)]
    assert delivered_orders(source_sandbox) == []


def test_a_run_end_neither_waits_for_nor_cuts_short_an_enrichment_retry(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """Enrichment's GETs retry in the feed's lanes, which outlast a run: a reload that ends the run while a
    skinny BigCommerce webhook's GET waits out a ``Retry-After: 20`` from the store API is not held up by it
    (the next run has started before the GET is tried again), and the wait is neither cut short nor started
    over: the GET is tried again once, 20 s after its 503, and the order is delivered. Nothing to keep across
    the run's end, so nothing changed for it (docs/serve.md)."""
    source_sandbox.set_source_faults(FaultPlan(schedule=("503:20",)))
    serve = ServeProcess(tmp_path, source_sandbox.url)
    reloaded = _start(serve, max_attempts=4)
    try:
        with httpx.Client(timeout=10) as client:
            body = BC_ORDER_CREATED.read_bytes()
            assert serve.post(client, "bc", body, BC_HEADERS).json()["status"] == "accepted"
            _into_the_wait(_first_failure(serve))
            failed = [get for get in source_sandbox.source_requests() if get["status"] == 503]
            assert len(failed) == 1, source_sandbox.source_requests()
            serve.reload(reloaded)
            tried_again = [
                get for get in source_sandbox.source_requests() if get["path"] == failed[0]["path"]
            ]
            assert len(tried_again) == 1, tried_again  # the run's end did not wait for the GET's retry
            serve.wait_until(
                lambda: delivered_orders(source_sandbox) == ["100"], timeout=40, what="the order"
            )
        assert serve.terminate() == 0
    finally:
        serve.kill()
    gets = [get for get in source_sandbox.source_requests() if get["path"] == failed[0]["path"]]
    assert [get["status"] for get in gets] == [503, 200], gets
    waited = gets[1]["at"] - gets[0]["at"]
    assert BACKOFF_S - 1.0 < waited < STARTED_OVER_S, waited
    assert serve.said("retrying in") == 1 and serve.said("left pending") == 0, serve.errors[-10:]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_rest_of_a_retry_after_cut_by_a_stop_is_honoured_by_the_next_process(
    source_sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    """Fenix answers ``503`` with ``Retry-After: 20``; a stop (``drain_timeout`` 2 s) cuts the wait short. The
    row keeps when the wait ends (``not_before``), so the next process, after a restart or on a shared
    PostgreSQL journal another worker claiming the row, waits out the rest: the order is delivered once, not
    before the 20 s are over (it went at once before: the rest of the wait was this process's memory)."""
    source_sandbox.set_faults(FaultPlan(schedule=("503:20",)), api="fenix")
    serve = ServeProcess(tmp_path, source_sandbox.url)
    text = with_drain_timeout(serve.config.read_text(), "2s")
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    serve.config.write_text(on_postgres(text, url) if url else text)
    _start(serve, max_attempts=4)
    try:
        with httpx.Client(timeout=10) as client:
            post_order(serve, client, 7_400_007, "run-end7400007")
            failed_at = _first_failure(serve)
        assert serve.terminate() == 0
        with Journal(url or str(tmp_path / ".shipmap" / "journal.db"), readonly=True) as journal:
            [entry] = journal.entries("pending")
        assert entry.attempts == 1
        serve.errors.clear()
        _into_the_wait(failed_at)
        serve.start()
        serve.wait_until(
            lambda: delivered_orders(source_sandbox) == ["7400007"], timeout=40, what="the retry"
        )
        waited = time.monotonic() - failed_at
        print(f"\n{backend}: delivered {waited:.1f} s after the 503 (Retry-After 20 s, a restart between)")
        assert BACKOFF_S - 1.0 < waited < STARTED_OVER_S, waited
        assert serve.terminate() == 0
    finally:
        serve.kill()
    with Journal(url or str(tmp_path / ".shipmap" / "journal.db"), readonly=True) as journal:
        assert [(e.state, e.attempts) for e in journal.entries()] == [("delivered", 2)]


def test_a_drain_deadline_with_a_request_in_flight_keeps_its_attempts_and_sends_it_again(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """Fenix answers the first attempt ``503`` and holds the answer to the second for 20 s; ``SIGTERM`` with a
    2 s ``drain_timeout`` cancels it in flight. The delivery stays ``pending`` with both attempts in the journal,
    the one in flight among them, as it may have landed (it kept none before: the next start gave it its whole
    budget again). The next start sends it again at once, under the same idempotency key, and the sandbox
    sees the same key twice: 3 attempts in all."""
    source_sandbox.set_faults(FaultPlan(schedule=("503", "slow:20")), api="fenix")
    serve = ServeProcess(tmp_path, source_sandbox.url)
    text = serve.config.read_text()
    assert FIXTURE_RETRY in text and "  timeout: 10s\n" in text
    serve.config.write_text(with_drain_timeout(text, "2s"))
    serve.start()
    try:
        with httpx.Client(timeout=10) as client:
            post_order(serve, client, 7_400_008, "run-end7400008")
            # The sandbox records the second attempt, then holds its answer.
            serve.wait_until(lambda: delivered_orders(source_sandbox) == ["7400008"], timeout=30,
                             what="the second attempt, in flight")  # fmt: skip
        assert serve.terminate() == 0
        assert serve.attempts() == [("pending", 2)]
        assert serve.said("left pending at the stop with a request in flight, which may have landed") == 1, (
            "".join(serve.errors)
        )
        serve.errors.clear()
        serve.start()
        serve.wait_until(lambda: len(source_sandbox.requests(endpoint="fenix.orders")) == 2, timeout=30,
                         what="the order sent again")  # fmt: skip
        serve.wait_until(lambda: serve.attempts() == [("delivered", 3)], timeout=30, what="the mark")
        assert serve.terminate() == 0
    finally:
        serve.kill()
    keys = [r.headers.get("idempotency-key") for r in source_sandbox.requests(endpoint="fenix.orders")]
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1], keys


def test_a_drain_deadline_in_an_enrichment_retry_leaves_the_webhook_in_the_inbox_its_attempts_started_over(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """What docs/serve.md says of a GET cut at a stop, checked, not changed: the store API answers ``503``, the
    GET waits out its 20 s backoff, and ``SIGTERM`` with a 2 s ``drain_timeout`` cancels it. Its webhook stays
    pending in the inbox (nothing was journaled for it), and the next start fetches it again with its attempts
    started over: with ``max_attempts: 2``, its first GET there fails as attempt 1 and is retried, not given
    up on (the inbox keeps no count of a webhook's GETs)."""
    source_sandbox.set_source_faults(FaultPlan(schedule=("503",) * 6))
    serve = ServeProcess(tmp_path, source_sandbox.url)
    serve.config.write_text(with_drain_timeout(serve.config.read_text(), "2s"))
    _start(serve, max_attempts=2)
    try:
        with httpx.Client(timeout=10) as client:
            body = BC_ORDER_CREATED.read_bytes()
            assert serve.post(client, "bc", body, BC_HEADERS).json()["status"] == "accepted"
            serve.wait_until(lambda: serve.said("retrying in 20.00s") > 0, timeout=30,
                             what="a GET's 503 and its backoff")  # fmt: skip
        assert serve.terminate() == 0
        with sqlite3.connect(serve.workdir / ".shipmap" / "inbox.db") as db:
            assert list(db.execute("SELECT source, state FROM inbox")) == [("bc", "pending")]
        assert serve.said("owed at stop: 1 webhook waiting in the inbox") == 1, serve.errors[-10:]
        serve.errors.clear()
        serve.start()
        serve.wait_until(lambda: serve.said("attempt 1 failed (HTTP 503") > 0, timeout=30,
                         what="the GET at the next start")  # fmt: skip
        assert serve.said("retrying in 20.00s") >= 1, serve.errors[-10:]
        assert serve.said("failed after") == 0, serve.errors[-10:]
        assert serve.terminate() == 0
    finally:
        serve.kill()
    assert delivered_orders(source_sandbox) == []


def test_a_drain_deadline_in_max_rates_wait_after_an_attempt_keeps_it(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """Fenix at ``max_rate: 0.1`` (a request every 10 s) answers the first attempt ``503``; its retry, past a
    50 ms backoff, waits for its turn under max_rate when ``SIGTERM`` with a 2 s ``drain_timeout`` cancels it.
    The delivery stays ``pending`` with its attempt in the journal (it kept none before), and the next start
    goes on with it: delivered after 2 attempts in all."""
    source_sandbox.set_faults(FaultPlan(schedule=("503",)), api="fenix")
    serve = ServeProcess(tmp_path, source_sandbox.url)
    text = serve.config.read_text()
    fenix = "  fenix:\n    api: fenix\n"
    assert FIXTURE_RETRY in text and text.count(fenix) == 1
    text = with_drain_timeout(text, "2s")
    serve.config.write_text(text.replace(fenix, fenix + "    max_rate: 0.1\n"))
    serve.start()
    try:
        with httpx.Client(timeout=10) as client:
            post_order(serve, client, 7_400_009, "run-end7400009")
            serve.wait_until(lambda: serve.said("attempt 1 failed (HTTP 503") > 0, timeout=30,
                             what="the first attempt's 503")  # fmt: skip
        assert serve.terminate() == 0
        assert serve.attempts() == [("pending", 1)]
        assert serve.said("left pending at the stop waiting for its turn under max_rate") == 1, "".join(
            serve.errors
        )
        serve.errors.clear()
        serve.start()
        serve.wait_until(lambda: serve.attempts() == [("delivered", 2)], timeout=30, what="the retry")
        assert serve.terminate() == 0
    finally:
        serve.kill()
    assert delivered_orders(source_sandbox) == ["7400009"]
