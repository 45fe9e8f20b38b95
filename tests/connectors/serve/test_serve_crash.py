"""``kill -9`` of ``shipmap serve`` while a client posts 2,000 webhooks, retrying every non-2xx as Shopify does;
and a SIGTERM drain. Every acknowledged webhook must be delivered after the restart, and every duplicate must
be a re-send of a delivery the journal held ``pending`` at the kill."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from shipmap.connectors import Sandbox

from .harness import REAL_SHOPIFY, RetryingSender, ServeProcess, shopify_headers

WEBHOOKS = 2000
CLIENTS = 16
KILL_AFTER = 600  # acknowledgements before the kill
ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())


def _bodies() -> list[bytes]:
    """The real order webhook, each copy with its own order id and name."""
    out = []
    for i in range(WEBHOOKS):
        order = dict(ORDER, id=5_000_000 + i, name=f"#K{i}")
        out.append(json.dumps(order).encode())
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_kill_9_while_posting_loses_nothing_acknowledged(source_sandbox: Sandbox, tmp_path: Path) -> None:
    port = _free_port()
    began = time.monotonic()
    serve = ServeProcess(tmp_path, source_sandbox.url, port=port).start()
    client = RetryingSender([serve.url], _bodies(), prefix="kill", threads=CLIENTS).start()
    try:
        serve.wait_until(
            lambda: len(client.acked) >= KILL_AFTER, timeout=180, what="acknowledgements before the kill"
        )
        serve.kill()  # SIGKILL
        killed_at = time.monotonic() - began
        acked_before_kill = len(client.acked)
        # What the journal owes at the kill: a re-send of one of these is the only duplicate allowed.
        with sqlite3.connect(tmp_path / ".shipmap" / "journal.db") as journal:
            pending_at_kill = {
                row[0]
                for row in journal.execute("SELECT idempotency_key FROM deliveries WHERE state = 'pending'")
            }
        restarted = ServeProcess(tmp_path, source_sandbox.url, port=port).start()
        client.join(320)
        assert len(client.acked) == WEBHOOKS, f"client gave up: {client.non_2xx}"
        all_acked_at = time.monotonic() - began
        restarted.wait_until(
            lambda: len({r.body["id"] for r in source_sandbox.requests(endpoint="fenix.orders")}) >= WEBHOOKS,
            timeout=300,
            what="every acknowledged webhook delivered",
        )
        delivered_at = time.monotonic() - began
        assert restarted.terminate() == 0
    finally:
        serve.kill()
        if "restarted" in locals():
            restarted.kill()
    arrived = source_sandbox.requests(endpoint="fenix.orders")
    delivered = Counter(r.body["id"] for r in arrived)
    lost = {str(5_000_000 + i) for i in client.acked} - set(delivered)
    assert not lost
    duplicates = [r for r in arrived if delivered[r.body["id"]] > 1]
    unexplained = [r for r in duplicates if r.headers.get("idempotency-key") not in pending_at_kill]
    assert not unexplained
    for order_id in {r.body["id"] for r in duplicates}:  # each copy is the very same request
        copies = [r for r in duplicates if r.body["id"] == order_id]
        assert len({json.dumps(c.body, sort_keys=True) for c in copies}) == 1
        assert len({c.headers.get("idempotency-key") for c in copies}) == 1
    print(
        f"\nkill -9 run: webhooks={WEBHOOKS} acknowledged before the kill={acked_before_kill}"
        f" delivered={len(delivered)} lost=0 duplicates={len(duplicates) - len({r.body['id'] for r in duplicates})}"
        f" (all re-sends of deliveries pending at the kill) non-2xx seen by the client={dict(client.non_2xx)}"
        f" killed at {killed_at:.1f} s, all acknowledged at {all_acked_at:.1f} s, all delivered at {delivered_at:.1f} s"
    )


def test_sigterm_drains_what_is_accepted_and_stops(source_sandbox: Sandbox, tmp_path: Path) -> None:
    serve = ServeProcess(tmp_path, source_sandbox.url).start()
    bodies = _bodies()[:60]
    try:
        with httpx.Client(timeout=10) as client:
            for index, body in enumerate(bodies):
                answer = serve.post(
                    client, "shop", body, shopify_headers(body, "orders/create", f"term-{index}")
                )
                assert answer.status_code == 200
        signalled = time.monotonic()
        assert serve.terminate(timeout=90) == 0  # drain_timeout is 30 s in serve.yaml
        stopped_in = time.monotonic() - signalled
    finally:
        serve.kill()
    log = "".join(serve.errors)
    assert "draining: intake closed" in log and "drain deadline reached" not in log
    assert stopped_in < 15, f"a drain with nothing held took {stopped_in:.1f} s (its deadline is 30 s)"
    # The drain delivers what was accepted before SIGTERM (the sandbox is healthy, so well within the
    # deadline); what a deadline cuts off would stay owed for the next start.
    assert len({r.body["id"] for r in source_sandbox.requests(endpoint="fenix.orders")}) == len(bodies)
    with sqlite3.connect(tmp_path / ".shipmap" / "inbox.db") as inbox:
        assert inbox.execute("SELECT count(*) FROM inbox WHERE state = 'pending'").fetchone()[0] == 0
    assert "stopped:" in "".join(serve.errors) and "owed at stop" not in "".join(serve.errors)
    assert os.path.exists(tmp_path / ".shipmap" / "journal.db")


def test_the_drain_deadline_parks_what_is_in_flight_and_a_restart_resends_it(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    source_sandbox.set_faults("slow=1.0:3")  # every answer held 3 s, past the 1 s drain deadline below
    serve = ServeProcess(tmp_path, source_sandbox.url)
    serve.config.write_text(serve.config.read_text().replace("drain_timeout: 30s", "drain_timeout: 1s"))
    bodies = _bodies()[:3]
    serve.start()
    try:
        with httpx.Client(timeout=10) as client:
            for index, body in enumerate(bodies):
                headers = shopify_headers(body, "orders/create", f"park-{index}")
                assert serve.post(client, "shop", body, headers).status_code == 200
        serve.wait_until(
            lambda: len(source_sandbox.requests(endpoint="fenix.orders")) == 3, what="3 posts in flight"
        )
        assert serve.terminate() == 0
    finally:
        serve.kill()
    assert "drain deadline reached" in "".join(serve.errors)
    with sqlite3.connect(tmp_path / ".shipmap" / "journal.db") as journal:
        parked = {
            row[0]
            for row in journal.execute("SELECT idempotency_key FROM deliveries WHERE state = 'pending'")
        }
    assert len(parked) == 3  # in flight at the deadline: parked, not lost, not dead
    # The stop report says what is owed now, as the journal and the inbox hold it (it said nothing of it).
    with sqlite3.connect(tmp_path / ".shipmap" / "inbox.db") as inbox:
        waiting = inbox.execute("SELECT count(*) FROM inbox WHERE state = 'pending'").fetchone()[0]
    in_inbox = f" and {waiting} webhook{'s' * (waiting != 1)} waiting in the inbox" if waiting else ""
    owed = (
        f"WARNING shipmap.connectors.serve: owed at stop: 3 deliveries pending in the journal{in_inbox}; the next"
        " start sends them, nothing acknowledged is lost\n"
    )
    assert any(line.endswith(owed) for line in serve.errors), "".join(serve.errors[-5:])
    # The run the deadline cancelled counts its time too (the summary said "events 3 ... in 0.00 s").
    assert " in 0.00 s" not in "".join(serve.output), "".join(serve.output)
    source_sandbox.set_faults(None)
    restarted = ServeProcess(tmp_path, source_sandbox.url).start()
    try:
        restarted.wait_until(
            lambda: len(source_sandbox.requests(endpoint="fenix.orders")) == 6, what="the re-sends"
        )
        assert restarted.terminate() == 0
    finally:
        restarted.kill()
    resent = source_sandbox.requests(endpoint="fenix.orders")[3:]
    assert {r.headers.get("idempotency-key") for r in resent} == parked  # the same requests, sent again
    with sqlite3.connect(tmp_path / ".shipmap" / "journal.db") as journal:
        assert journal.execute("SELECT count(*) FROM deliveries WHERE state = 'delivered'").fetchone()[0] == 3


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c twice", "sigterm twice"])
def test_a_second_signal_cuts_the_drain_short_and_a_restart_delivers_what_is_owed(
    source_sandbox: Sandbox, tmp_path: Path, signum: signal.Signals
) -> None:
    """Ctrl-C pressed again, or a supervisor's second SIGTERM, during a drain that would run to its 30 s
    deadline: the service stops now, as the deadline would stop it (same exit code, same report), and what
    it owes stays in the journal and the inbox for the next start."""
    webhooks = 12  # delivery.concurrency is 8: some wait behind the 8 in flight
    source_sandbox.set_faults("slow=1.0:60")  # every answer held past the drain deadline
    serve = ServeProcess(tmp_path, source_sandbox.url)
    # Sends wait for their answers (no client timeout, so no retry) until the drain is cut.
    serve.config.write_text(serve.config.read_text().replace("  timeout: 10s", "  timeout: 120s"))
    serve.start()
    assert serve.process is not None
    try:
        with httpx.Client(timeout=10) as client:
            for index, body in enumerate(_bodies()[:webhooks]):
                headers = shopify_headers(body, "orders/create", f"cut-{index}")
                assert serve.post(client, "shop", body, headers).status_code == 200
        serve.wait_until(
            lambda: len(source_sandbox.requests(endpoint="fenix.orders")) == 8, what="8 posts in flight"
        )
        serve.process.send_signal(signum)
        serve.wait_until(lambda: "draining: intake closed" in "".join(serve.errors), what="the drain")
        cut_at = time.monotonic()
        serve.process.send_signal(signum)
        code = serve.process.wait(60)
        stopped_in = time.monotonic() - cut_at
    finally:
        serve.kill()
    assert code == 0  # as a drain that its deadline cut off exits
    assert stopped_in < 15, f"stopped {stopped_in:.1f} s after the second signal (the deadline is 30 s)"
    cut = (
        f"WARNING shipmap.connectors.serve: a second {signum.name} cut the drain short: deliveries still in"
        " flight stay pending and are re-sent on restart\n"
    )
    assert any(line.endswith(cut) for line in serve.errors), "".join(serve.errors[-10:])
    assert "drain deadline reached" not in "".join(serve.errors)
    with sqlite3.connect(tmp_path / ".shipmap" / "journal.db") as journal:
        states = dict(journal.execute("SELECT state, count(*) FROM deliveries GROUP BY state").fetchall())
        owed_keys = {
            row[0]
            for row in journal.execute("SELECT idempotency_key FROM deliveries WHERE state = 'pending'")
        }
    with sqlite3.connect(tmp_path / ".shipmap" / "inbox.db") as inbox:
        waiting = inbox.execute("SELECT count(*) FROM inbox WHERE state = 'pending'").fetchone()[0]
    # Nothing was delivered (every answer was held), nothing was lost: each webhook is owed, in one place.
    assert set(states) <= {"pending"} and len(owed_keys) >= 8, states
    assert len(owed_keys) + waiting == webhooks
    in_inbox = f" and {waiting} webhook{'s' * (waiting != 1)} waiting in the inbox" if waiting else ""
    owed = (
        f"WARNING shipmap.connectors.serve: owed at stop: {len(owed_keys)} deliveries pending in the"
        f" journal{in_inbox}; the next start sends them, nothing acknowledged is lost\n"
    )
    assert any(line.endswith(owed) for line in serve.errors), "".join(serve.errors[-10:])

    before_restart = len(source_sandbox.requests(endpoint="fenix.orders"))
    source_sandbox.set_faults(None)
    restarted = ServeProcess(tmp_path, source_sandbox.url).start()
    try:
        restarted.wait_until(
            lambda: (
                len({r.body["id"] for r in source_sandbox.requests(endpoint="fenix.orders")[before_restart:]})
                == webhooks
            ),
            what="every owed webhook delivered by the next start",
        )
        assert restarted.terminate() == 0
    finally:
        restarted.kill()
    resent = source_sandbox.requests(endpoint="fenix.orders")[before_restart:]
    assert owed_keys <= {r.headers.get("idempotency-key") for r in resent}  # the same requests, sent again
    with sqlite3.connect(tmp_path / ".shipmap" / "journal.db") as journal:
        delivered = journal.execute("SELECT count(*) FROM deliveries WHERE state = 'delivered'").fetchone()[0]
    assert delivered == webhooks


def test_a_drain_cutting_off_requests_mid_body_logs_one_line_not_a_traceback_each(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """Senders still sending their bodies when the drain's graceful shutdown ends are cut off (they get no
    answer and retry): uvicorn says so in one line. Its traceback per request (40 lines, at ERROR) is dropped:
    300 of them were 12,000 lines at every stop, over the drain's own report."""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    serve.config.write_text(serve.config.read_text().replace("drain_timeout: 30s", "drain_timeout: 2s"))
    serve.start()
    host, port = serve.url.removeprefix("http://").rsplit(":", 1)
    senders = [socket.create_connection((host, int(port))) for _ in range(3)]
    try:
        for sender in senders:  # a body of 1,000 bytes, of which one is sent
            sender.sendall(
                b"POST /hooks/shop HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n{"
            )
        with httpx.Client(timeout=10) as client:
            body = _bodies()[0]
            answer = serve.post(client, "shop", body, shopify_headers(body, "orders/create", "mid-body"))
            assert answer.status_code == 200

            def received() -> float:  # counted as each request reaches the hook, before its body is read
                metrics = client.get(f"{serve.url}/metrics").text
                found = re.search(r'^shipmap_webhooks_received_total\{source="shop"\} (\S+)$', metrics, re.M)
                return float(found.group(1)) if found else 0.0

            serve.wait_until(
                lambda: received() == 4, what="the three requests mid-body in the service's hands"
            )
        assert serve.terminate() == 0
    finally:
        serve.kill()
        for sender in senders:
            sender.close()
    log = "".join(serve.errors)
    assert "Cancel 3 running task(s), timeout graceful shutdown exceeded" in log, log[-2000:]
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-2000:]
