"""Two live ``shipmap serve`` processes on one PostgreSQL database (the real server `make test` starts),
behind no balancer but a client that alternates between them, as one would.

- A source's ``rate_limit`` is the service's: two processes each allow half of it, and one left alone
  allows the whole again.

- Webhooks posted alternately to both, some ids posted to both: each acknowledged webhook is delivered
  exactly once, and a repeated id is a duplicate whichever process took the first copy.
- ``kill -9`` of one process while the client posts, retrying every non-2xx (or refused connection) on the
  other, as Shopify retries: nothing acknowledged is lost (the survivor takes the dead one's claimed inbox
  rows and its journal leases over), and every duplicate is a re-send of a delivery the dead process held
  ``pending`` in the journal at the kill, under the same idempotency key, with the same body.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import psycopg
from shipmap.connectors import Journal, Sandbox

from .harness import REAL_SHOPIFY, RetryingSender, ServeProcess, shopify_headers, standard_webhooks_headers

ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())
LEASE = "10s"  # a lapse among live processes would be a takeover too; the kill test waits one lease


def _bodies(count: int, first_id: int) -> list[bytes]:
    """The real order webhook, each copy with its own order id and name."""
    return [json.dumps(dict(ORDER, id=first_id + i, name=f"#P{i}")).encode() for i in range(count)]


def _two_services(
    tmp_path: Path, sandbox_url: str, database: str, edits: dict[str, str] | None = None
) -> tuple[ServeProcess, ServeProcess]:
    first = ServeProcess(tmp_path, sandbox_url)
    config = first.config.read_text()
    edits = {
        "journal:\n  path: .shipmap/journal.db\n": f"journal:\n  url: {database}\n  lease: {LEASE}\n"
    } | (edits or {})
    for old, new in edits.items():
        assert old in config
        config = config.replace(old, new)
    first.config.write_text(config)
    return first.start(), ServeProcess(tmp_path, sandbox_url).start()


def _unsettled(postgres_url: str) -> tuple[int, int]:
    """Inbox rows still pending, and journal deliveries not yet delivered."""
    with psycopg.connect(postgres_url) as db:
        inbox = db.execute("SELECT count(*) FROM inbox WHERE state = 'pending'").fetchone()
        deliveries = db.execute("SELECT count(*) FROM deliveries WHERE state <> 'delivered'").fetchone()
    assert inbox is not None and deliveries is not None
    return inbox[0], deliveries[0]


def _delivered_ids(sandbox: Sandbox) -> Counter[str]:
    return Counter(str(r.body["id"]) for r in sandbox.requests(endpoint="fenix.orders"))


def test_two_services_share_intake_each_webhook_delivered_once(
    source_sandbox: Sandbox, tmp_path: Path, postgres_url: str
) -> None:
    bodies = _bodies(240, 7_000_000)
    a, b = _two_services(tmp_path, source_sandbox.url, postgres_url)
    answers: Counter[str] = Counter()
    try:
        with httpx.Client(timeout=10) as client:
            for index, body in enumerate(bodies):
                first, other = (a, b) if index % 2 == 0 else (b, a)
                headers = shopify_headers(body, "orders/create", f"pg-{index}")
                answer = first.post(client, "shop", body, headers)
                assert answer.status_code == 200, answer.text
                answers[answer.json()["status"]] += 1
                if index % 4 == 0:  # the same webhook id again, to the other process
                    again = other.post(client, "shop", body, headers)
                    assert (again.status_code, again.json()["status"]) == (200, "duplicate"), again.text
                    assert again.json()["id"] == answer.json()["id"]  # the one shared inbox row
                    answers["repeated"] += 1
        a.wait_until(
            lambda: len(_delivered_ids(source_sandbox)) >= len(bodies), what="every webhook delivered"
        )
        # A live worker elsewhere holds a delivery for an hour: a service's drain leaves it to that worker,
        # it does not wait for it (a batch run's end would, up to three leases, past serve's drain deadline).
        with Journal(postgres_url, lease=3600) as elsewhere:
            elsewhere.put_source("e" * 64, '{"id": 1}')
            elsewhere.mark_pending(
                "held-elsewhere", source_digest="e" * 64, mapping="m", target="t", connection="fenix",
                method="POST", url="http://127.0.0.1:9/x", payload={"id": "1"}, idempotency_key="sm-e",
                origin="elsewhere",
            )  # fmt: skip
        assert a.terminate() == 0 and b.terminate() == 0
    finally:
        a.kill()
        b.kill()
    assert answers == {"accepted": 240, "repeated": 60}
    delivered = _delivered_ids(source_sandbox)
    assert set(delivered) == {str(7_000_000 + i) for i in range(len(bodies))}
    assert set(delivered.values()) == {1}, [k for k, n in delivered.items() if n > 1]
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT state, count(*) FROM inbox GROUP BY state").fetchall() == [
            ("processed", 240)
        ]
        assert sorted(db.execute("SELECT state, count(*) FROM deliveries GROUP BY state").fetchall()) == [
            ("delivered", 240),
            ("pending", 1),  # still the other worker's
        ]
    for service in (a, b):  # both drained cleanly, without waiting for the other worker's delivery
        assert "draining: intake closed" in "".join(service.errors)
        assert "drain deadline reached" not in "".join(service.errors)


def test_two_services_share_a_sources_rate_limit(
    source_sandbox: Sandbox, tmp_path: Path, postgres_url: str
) -> None:
    # A burst of 4 and then one per 100 s, for the whole service: each of two processes allows 2.
    limited = {"rate_limit: {per_second: 0.01, burst: 3}": "rate_limit: {per_second: 0.01, burst: 4}"}
    a, b = _two_services(tmp_path, source_sandbox.url, postgres_url, limited)
    try:
        # b counted both at its start; a counts again within RATE_SHARE_EVERY_S (5 s).
        for service in (a, b):
            service.wait_until(
                lambda s=service: "rate limits: 2 serve processes" in "".join(s.errors),
                timeout=30,
                what="the processes counting each other",
            )
        with httpx.Client(timeout=10) as client:  # what each process says to its operator
            for service in (a, b):
                assert client.get(f"{service.url}/readyz").json()["serve_processes"] == 2
                assert "\nshipmap_serve_processes 2.0\n" in client.get(f"{service.url}/metrics").text
        status = subprocess.run(
            [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", "status", str(a.config),
             "--url", a.url],
            capture_output=True, text=True, timeout=60, cwd=tmp_path, env=a.env,
        )  # fmt: skip
        assert (
            f"service     ready at {a.url}/readyz (one of 2 serve processes on its inbox)\n" in status.stdout
        ), status.stdout + status.stderr
        answers: dict[str, Counter[int]] = {"a": Counter(), "b": Counter()}
        now = int(time.time())
        with httpx.Client(timeout=10) as client:
            for index in range(12):
                name, service = ("a", a) if index % 2 == 0 else ("b", b)
                body = json.dumps({"n": index}).encode()
                answer = service.post(
                    client, "app", body, standard_webhooks_headers(body, f"rl-{index}", now, "t")
                )
                answers[name][answer.status_code] += 1
                if answer.status_code == 429:
                    assert answer.json()["message"] == "more than 0.01 requests per second from this source"
        assert answers == {"a": {200: 2, 429: 4}, "b": {200: 2, 429: 4}}, answers
        assert b.terminate() == 0
        a.wait_until(
            lambda: (
                "rate limits: this is the only serve process on this inbox now; it allows each source's"
                " whole rate_limit" in "".join(a.errors)
            ),
            timeout=30,
            what="the survivor counting itself alone",
        )
        assert a.terminate() == 0
    finally:
        a.kill()
        b.kill()


WEBHOOKS = 600
CLIENTS = 8
KILL_AFTER = 200


def test_kill_9_of_one_service_loses_nothing_the_other_takes_over(
    source_sandbox: Sandbox, tmp_path: Path, postgres_url: str
) -> None:
    a, b = _two_services(tmp_path, source_sandbox.url, postgres_url)
    bodies = _bodies(WEBHOOKS, 8_000_000)
    client = RetryingSender([a.url, b.url], bodies, prefix="kill-pg", threads=CLIENTS).start()
    try:
        a.wait_until(lambda: len(client.acked) >= KILL_AFTER, timeout=180, what="acknowledgements")
        assert a.process is not None
        killed_pid = a.process.pid
        a.kill()  # SIGKILL
        acked_before_kill = len(client.acked)
        # What the dead process held in the journal: a re-send of one of these is the only duplicate
        # allowed. Read at once: its leases run for another lease at least, so nobody has taken them yet.
        with psycopg.connect(postgres_url) as db:
            held_at_kill = {
                row[0]
                for row in db.execute(
                    "SELECT idempotency_key FROM deliveries WHERE state = 'pending' AND lease_owner LIKE %s",
                    (f"%:{killed_pid}:%",),
                )
            }
            claimed_at_kill = db.execute(
                "SELECT count(*) FROM inbox WHERE state = 'pending' AND lease_owner LIKE %s",
                (f"%:{killed_pid}:%",),
            ).fetchone()[0]
        client.join(320)
        assert len(client.acked) == WEBHOOKS, f"the client gave up: {client.non_2xx}"
        # Every webhook at the sink is not the end: deliveries the dead process sent but never marked stay
        # under its lease until the survivor takes them over (one lease after the kill) and marks them.
        b.wait_until(
            lambda: len(_delivered_ids(source_sandbox)) >= WEBHOOKS and _unsettled(postgres_url) == (0, 0),
            timeout=300,
            what="every acknowledged webhook delivered, and the dead process's leases taken over and marked",
        )
        assert b.terminate() == 0
    finally:
        a.kill()
        b.kill()
    arrived = source_sandbox.requests(endpoint="fenix.orders")
    delivered = Counter(str(r.body["id"]) for r in arrived)
    assert not {str(8_000_000 + i) for i in client.acked} - set(delivered)  # 0 lost
    duplicates = [r for r in arrived if delivered[str(r.body["id"])] > 1]
    assert not [r for r in duplicates if r.headers.get("idempotency-key") not in held_at_kill]
    for order_id in {r.body["id"] for r in duplicates}:  # each copy is the very same request
        copies = [r for r in duplicates if r.body["id"] == order_id]
        assert len({json.dumps(c.body, sort_keys=True) for c in copies}) == 1
        assert len({c.headers.get("idempotency-key") for c in copies}) == 1
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT count(*) FROM inbox WHERE state = 'pending'").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM deliveries WHERE state <> 'delivered'").fetchone()[0] == 0
    print(
        f"\ntwo services, kill -9 of one: webhooks={WEBHOOKS} acknowledged before the kill={acked_before_kill}"
        f" inbox rows the dead one had claimed={claimed_at_kill} journal deliveries it held={len(held_at_kill)}"
        f" delivered={len(delivered)} lost=0 duplicates={len(duplicates) - len({r.body['id'] for r in duplicates})}"
        f" (all re-sends of deliveries it held) non-2xx and errors seen by the client={dict(client.non_2xx)}"
    )
