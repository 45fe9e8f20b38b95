"""What a ``shipmap serve`` process looks at while it waits for webhooks: the shared delivery breakers of a
PostgreSQL journal (so an idle process's /readyz and /metrics say what the busy one's do), and its parked work,
``serve.resweep`` after it was parked (doubling up to ``resweep_cap``), not after the feed's idle poll."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from shipmap.connectors import Sandbox
from shipmap.connectors._store._breaker_pg import breaker_row

from .harness import (
    BC_API_TOKEN,
    BC_HEADERS,
    DRAIN_LINE,
    REAL_SHOPIFY,
    SOURCE_DOCUMENTS,
    ServeProcess,
    bc_webhook,
    on_postgres,
    shopify_headers,
    with_added,
)

ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())
LOOK = "looking again at parked work"


def _deliveries(sandbox: Sandbox) -> list[object]:
    """The requests Fenix accepted, but its logins."""
    return [r for r in sandbox.requests() if r.endpoint.startswith("fenix.") and r.endpoint != "fenix.login"]


def _breaker_in_metrics(metrics: str, connection: str) -> str:
    """The state whose ``shipmap_breaker_state`` gauge is 1 for ``connection``."""
    (family,) = [f for f in text_string_to_metric_families(metrics) if f.name == "shipmap_breaker_state"]
    (state,) = [
        s.labels["state"] for s in family.samples if s.labels["connection"] == connection and s.value == 1
    ]
    return state


def test_an_idle_process_reports_the_shared_delivery_breaker_as_the_busy_one_does(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two serve processes on one PostgreSQL journal, Fenix down (its own fault plan, set over HTTP), every
    webhook posted to one of them. The idle one's copy of the shared breaker stayed as its last delivery left
    it: its /readyz and /metrics said "closed" while the busy one's said "open". Now its feed reads the
    delivery breakers' records again while it waits, as it does the enrichment ones: both say open, then
    both closed once Fenix is back. The idle process has nothing to send and sends nothing: the requests
    Fenix got during the outage are the busy one's (the deliveries it had in flight as the breaker opened)
    and the probes the shared record counted; each order arrives once."""
    failures, cooldown, orders = 2, 0.3, 3
    with Sandbox() as sandbox, httpx.Client(timeout=10) as client:
        busy = ServeProcess(tmp_path, sandbox.url)
        text = with_added(
            busy.config.read_text(),
            "  fenix:\n",
            f"    breaker: {{failures: {failures}, cooldown: {cooldown}s, cooldown_cap: {cooldown}s,"
            " outage_wait: 500ms}\n",
        )
        text = with_added(text, DRAIN_LINE, "  resweep: 200ms\n  resweep_cap: 1s\n")
        busy.config.write_text(on_postgres(text, postgres_url))
        idle = ServeProcess(tmp_path, sandbox.url)  # the same config file
        busy.start()
        idle.start()
        try:

            def states(serve: ServeProcess) -> tuple[str, str]:
                ready = client.get(f"{serve.url}/readyz").json()["breakers"]["fenix"]
                return ready, _breaker_in_metrics(client.get(f"{serve.url}/metrics").text, "fenix")

            def order(serve: ServeProcess, number: int) -> None:
                body = json.dumps(dict(ORDER, id=7_100_000 + number, name=f"#IDLE{number}")).encode()
                headers = shopify_headers(body, "orders/create", f"idle-breaker-{number}")
                assert serve.post(client, "shop", body, headers).status_code == 200

            # The idle one's run delivers an order first: it has read the breaker (closed), and its run goes
            # on, idle, through the outage (a run that starts during it counts the journal's parked deliveries
            # and looks at them, busy too).
            order(idle, orders)
            idle.wait_until(
                lambda: len(sandbox.requests(endpoint="fenix.orders")) == 1, what="the idle one's first order"
            )
            before = len(_deliveries(sandbox))
            assert states(busy) == states(idle) == ("closed", "closed")
            down = client.post(f"{sandbox.url}/_sandbox/faults", params={"api": "fenix"}, content="5xx=1")
            assert down.status_code == 200, down.text
            for number in range(orders):
                order(busy, number)
            for serve in (busy, idle):
                serve.wait_until(
                    lambda s=serve: all(state in ("open", "half_open") for state in states(s)),
                    timeout=30,
                    what="an open fenix breaker in /readyz and /metrics",
                )
            time.sleep(1.5)  # the outage goes on: probes only, one per cooldown
            assert len(_deliveries(sandbox)) == before
            up = client.delete(f"{sandbox.url}/_sandbox/faults", params={"api": "fenix"})
            assert up.status_code == 200, up.text
            busy.wait_until(
                lambda: len(sandbox.requests(endpoint="fenix.orders")) >= orders + 1,
                timeout=30,
                what="every order once Fenix is back",
            )
            for serve in (busy, idle):
                serve.wait_until(
                    lambda s=serve: states(s) == ("closed", "closed"),
                    timeout=30,
                    what="a closed fenix breaker in /readyz and /metrics",
                )
            assert busy.terminate() == 0 and idle.terminate() == 0
        finally:
            busy.kill()
            idle.kill()
        ids = sorted(str(o.body["id"]) for o in sandbox.requests(endpoint="fenix.orders"))
        faulted = [f for f in sandbox.faulted() if f.endpoint.startswith("fenix.")]
        row_name = breaker_row("fenix", sandbox.url)
    with psycopg.connect(postgres_url) as db:
        row = db.execute(
            "SELECT opened, probes FROM connection_state WHERE name = %s", (row_name,)
        ).fetchone()
        owed = db.execute("SELECT count(*) FROM deliveries WHERE connection = 'fenix'").fetchone()
    assert ids == [str(7_100_000 + i) for i in range(orders + 1)], ids  # each order once
    assert row is not None and owed is not None
    opened, probes = row
    assert opened == 1, row
    # Before the breaker opened, at most one request per delivery (the busy process sends them concurrently);
    # after, probes only, every process's counted in the shared record.
    assert 1 <= len(faulted) - probes <= max(failures, owed[0] - before), (
        len(faulted),
        probes,
        owed,
        faulted,
    )
    # The idle process read the record the busy one's failures opened (its own copy said closed until then).
    assert any("opened by another worker" in line for line in idle.errors), "".join(idle.errors)


RESWEEP, RESWEEP_CAP = 0.05, 0.2  # seconds: the waits between looks double to the cap from the fourth look on


def _quick_looks(serve: ServeProcess, connection: str, breaker: str) -> None:
    """``connection``'s breaker due for a probe at every look (the looks' pace is resweep's, not the
    breaker's), and quick looks."""
    text = with_added(serve.config.read_text(), f"  {connection}:\n", f"    breaker: {{{breaker}}}\n")
    serve.config.write_text(
        with_added(text, DRAIN_LINE, f"  resweep: {RESWEEP}s\n  resweep_cap: {RESWEEP_CAP}s\n")
    )


def _assert_looks_paced_by_resweep(serve: ServeProcess, window: float = 4.0) -> None:
    """The waits double to the cap and stay there while the outage lasts: from the fourth look on, each look
    plans the next one at the cap (an outage counted as over, or a wait that never doubled, plans a shorter
    one), and looks keep coming (ten more, within a generous deadline). In a window of T seconds, at most
    T / cap + 2 looks (each wait is the cap by then; a slow machine only makes them late)."""

    def looks() -> list[str]:
        return [line for line in list(serve.errors) if LOOK in line]

    serve.wait_until(lambda: len(looks()) >= 4, timeout=30, what="four looks at parked work")
    first, started = len(looks()), time.monotonic()
    time.sleep(window)
    seen, elapsed = len(looks()) - first, time.monotonic() - started
    assert seen <= elapsed / RESWEEP_CAP + 2, (seen, elapsed)
    serve.wait_until(lambda: len(looks()) >= first + 10, timeout=60, what="ten more looks at parked work")
    planned = [re.search(r"\(next look in ([0-9.]+) s at the latest\)", line) for line in looks()[3:]]
    assert all(planned) and {found.group(1) for found in planned if found} == {f"{RESWEEP_CAP:.1f}"}, looks()


@pytest.mark.parametrize("webhooks", [1, 2])
def test_parked_webhooks_are_looked_at_every_resweep_doubling_to_the_cap(
    tmp_path: Path, webhooks: int
) -> None:
    """The store's API down, its webhooks parked, ``resweep: 50ms`` doubling to ``resweep_cap: 200ms``, the
    breaker due for a probe at every look. Each look's probe was in flight when the feed next asked whether
    anything was parked: nothing was (the webhook parks when its GET fails), so the outage counted as over and
    the next look was planned only after the feed's one-second idle poll: one webhook came back about every
    1.1 s (3 looks in 4 s); with two, the second's GET woke the feed at once, but the wait never doubled
    (about 70 looks in 4 s, every 50 ms). Now the outage lasts while a breaker is open, and the next look is
    planned as soon as the webhooks park again."""
    with Sandbox(
        source_documents=SOURCE_DOCUMENTS, source_token=BC_API_TOKEN, source_faults="5xx=1"
    ) as sandbox:
        serve = ServeProcess(tmp_path, sandbox.url)
        _quick_looks(serve, "bc_store", "failures: 1, cooldown: 50ms, cooldown_cap: 50ms")
        serve.start()
        try:
            with httpx.Client(timeout=10) as client:
                for order in range(100, 100 + webhooks):
                    body = bc_webhook(order, f"resweep-{order}")
                    answer = serve.post(client, "bc", json.dumps(body).encode(), BC_HEADERS)
                    assert answer.json()["status"] == "accepted", answer.text
            _assert_looks_paced_by_resweep(serve)
            assert serve.terminate() == 0
        finally:
            serve.kill()


@pytest.mark.parametrize("orders", [1, 6])
def test_parked_deliveries_are_looked_at_every_resweep_doubling_to_the_cap(
    tmp_path: Path, orders: int
) -> None:
    """Fenix down (its own fault plan), its orders parked past ``outage_wait``, the same quick looks. Each look
    starts a run, which reads the deliveries that may wait for the breaker (half of ``concurrency``) and parks
    them once they have waited ``outage_wait``: a single order was not parked yet when the run's feed first
    asked (the outage counted as over) and, once it was, nothing woke the feed, so its next look came after the
    idle poll (3 looks in 4 s, never doubling). Now a parked delivery wakes the feed, and the outage lasts
    while the breaker is open. Six orders (more than may wait) were paced right before as after."""
    with Sandbox() as sandbox:
        sandbox.set_faults("5xx=1", api="fenix")
        serve = ServeProcess(tmp_path, sandbox.url)
        _quick_looks(serve, "fenix", "failures: 1, cooldown: 50ms, cooldown_cap: 50ms, outage_wait: 100ms")
        serve.start()
        try:
            with httpx.Client(timeout=10) as client:
                for number in range(orders):
                    body = json.dumps(dict(ORDER, id=7_200_000 + number, name=f"#LOOK{number}")).encode()
                    headers = shopify_headers(body, "orders/create", f"resweep-delivery-{number}")
                    assert serve.post(client, "shop", body, headers).status_code == 200
            _assert_looks_paced_by_resweep(serve)
            assert serve.terminate() == 0
        finally:
            serve.kill()
        assert sandbox.requests(endpoint="fenix.orders") == []
