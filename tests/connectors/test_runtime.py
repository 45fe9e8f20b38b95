"""The runtime against the sandbox over real HTTP: routing, retries, dead letters, replay, idempotency."""

from __future__ import annotations

import asyncio
import copy
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from shipmap.connectors import (
    AuthSettings,
    ConfigError,
    Connection,
    DeliverySettings,
    JournalSettings,
    MappingRoute,
    RetryPolicy,
    Runtime,
    RuntimeConfig,
    Sandbox,
    TargetKey,
    TargetRoute,
)
from shipmap.connectors._store._journal import Journal
from shipmap.engine import load_mapping, read_documents
from test_runtime_support import (
    BASE_CONFIG,
    FIXTURES,
    SECRETS,
    environ,
    order_event,
    shipment_event,
    write_config,
)


def runtime_for(tmp_path: Path, sandbox: Sandbox, **changes: Any) -> Runtime:
    return Runtime.from_config(write_config(tmp_path, sandbox.url, **changes), environ=environ(sandbox.url))


def mixed_events() -> list[dict[str, Any]]:
    return [
        order_event(1),
        shipment_event(1),
        {"topic": "customers/update", "payload": {"id": 7}},
        order_event(2),
    ]


def test_a_mixed_stream_is_routed_delivered_summarised_and_skipped_on_rerun(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    runtime = runtime_for(tmp_path, sandbox)
    summary = runtime.run(mixed_events())
    assert summary.ok and summary.events == 4 and summary.unrouted == 1
    assert summary.get("acme-orders.order").delivered == 2
    assert summary.get("acme-shipments.fulfillment").delivered == 1
    assert summary.get("acme-shipments.notify").delivered == 1
    p = summary.get("acme-orders.order").percentiles()
    assert p["p50"] is not None and p["p99"] is not None and 0 < p["p50"] <= p["p99"] < 5
    assert [r.order_id for r in sandbox.requests(endpoint="fenix.orders")] in (
        ["1001", "1002"],
        ["1002", "1001"],
    )
    [fulfillment] = sandbox.requests(endpoint="fenix.fulfillment")
    assert (fulfillment.order_id, fulfillment.fulfillment_id) == ("1001", "S-1")
    accepted = sandbox.stats()["accepted"]

    again = Runtime.from_config(tmp_path / "shipmap.yaml", environ=environ(sandbox.url)).run(mixed_events())
    assert again.delivered == 0 and again.skipped == 4 and again.unrouted == 1
    assert sandbox.stats()["accepted"] == accepted  # nothing sent, not even a login
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        assert journal.counts() == {"delivered": 4}
        assert journal.unrouted_count() == 1


def test_dg_external_ids_are_deterministic_per_event_and_unique_across_events(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    events = [shipment_event(n) for n in range(5)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    runtime_for(tmp_path / "a", sandbox).run(events)
    runtime_for(tmp_path / "b", sandbox).run(events)  # another journal: everything is sent again
    recorded = sandbox.requests(endpoint="dg.execution")
    assert len(recorded) == 10
    first, second = recorded[:5], recorded[5:]
    by_shipment = {r.body["inputs"]["shipment_data"]["shipment_id"]: r.external_id for r in first}
    assert len(set(by_shipment.values())) == 5
    assert {r.body["inputs"]["shipment_data"]["shipment_id"]: r.external_id for r in second} == by_shipment
    for record in recorded:
        assert record.external_id == record.body["inputs"]["external_id"]
        assert record.headers["idempotency-key"] == record.external_id
        assert record.external_id is not None and record.external_id.startswith("sm-")
    assert all(entry["count"] == 2 for entry in sandbox.duplicates()["dg_external_id"])


def test_an_external_id_set_by_the_mapping_is_kept(tmp_path: Path, sandbox: Sandbox) -> None:
    mapping = (
        (FIXTURES / "shipments.yaml")
        .read_text()
        .replace(
            "      action_id: {literal: flow-shipment-update}\n",
            '      action_id: {literal: flow-shipment-update}\n      external_id: "{{ this.shipment_id }}-v1"\n',
        )
    )
    (tmp_path / "shipments.yaml").write_text(mapping)
    mappings = [{"mapping": "./shipments.yaml", "topic": "shipments/create"}]
    runtime_for(tmp_path, sandbox, mappings=mappings).run([shipment_event(3)])
    [record] = sandbox.requests(endpoint="dg.execution")
    assert record.external_id == "S-3-v1" == record.body["inputs"]["external_id"]


def test_429_with_retry_after_is_honoured(tmp_path: Path, sandbox: Sandbox) -> None:
    sandbox.set_faults("schedule=429,retry-after=1")
    runtime = runtime_for(tmp_path, sandbox)
    started = time.monotonic()
    summary = runtime.run([order_event(1)])
    elapsed = time.monotonic() - started
    stats = summary.get("acme-orders.order")
    assert (stats.delivered, stats.retried, stats.attempts) == (1, 1, 2)
    assert elapsed >= 0.95  # waited the second the server asked for, not the 10 ms backoff
    assert sandbox.stats()["faults"]["429"] == 1


def test_retry_after_is_capped(tmp_path: Path, sandbox: Sandbox) -> None:
    sandbox.set_faults("schedule=429,retry-after=30")
    runtime = runtime_for(tmp_path, sandbox, delivery={"retry": {"retry_after_cap": "100ms"}})
    started = time.monotonic()
    summary = runtime.run([order_event(1)])
    assert summary.get("acme-orders.order").delivered == 1
    assert time.monotonic() - started < 5


def test_5xx_then_success_keeps_the_idempotency_key(tmp_path: Path, sandbox: Sandbox) -> None:
    sandbox.set_faults("schedule=503,502")
    mappings = [
        {
            "mapping": str(FIXTURES / "shipments.yaml"),
            "topic": "shipments/create",
            "targets": {"fulfillment": {"enabled": False}},
        }
    ]
    summary = runtime_for(tmp_path, sandbox, mappings=mappings).run([shipment_event(1, notify=True)])
    stats = summary.get("acme-shipments.notify")
    assert summary.ok and (stats.delivered, stats.retried, stats.attempts) == (1, 1, 3)
    [dg] = sandbox.requests(endpoint="dg.execution")
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        keys = {e.target: e.idempotency_key for e in journal.entries("delivered")}
    assert dg.external_id == keys["notify"]


def test_a_dropped_connection_is_retried(tmp_path: Path, sandbox: Sandbox) -> None:
    sandbox.set_faults("schedule=drop")
    summary = runtime_for(tmp_path, sandbox).run([order_event(1)])
    stats = summary.get("acme-orders.order")
    assert (stats.delivered, stats.attempts) == (1, 2)


def test_5xx_until_attempts_run_out_is_dead_lettered(tmp_path: Path, sandbox: Sandbox) -> None:
    sandbox.set_faults("schedule=500,500,500")
    summary = runtime_for(tmp_path, sandbox, delivery={"retry": {"max_attempts": 3}}).run([order_event(1)])
    assert not summary.ok
    stats = summary.get("acme-orders.order")
    assert (stats.dead, stats.attempts) == (1, 3)
    [dead] = Runtime.from_config(tmp_path / "shipmap.yaml", environ=environ(sandbox.url)).dead_letters()
    assert (
        dead.status == 500 and dead.reason == "gave up after 3 attempts; last: HTTP 500 Internal Server Error"
    )
    assert "injected server error" in (dead.response_excerpt or "")


def test_a_400_is_dead_lettered_without_retry_then_replayed_after_the_fix(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    # A wrong path override: the sandbox answers 400 because the URL's order id is not the payload's.
    mappings = [
        {
            "mapping": str(FIXTURES / "orders.yaml"),
            "topic": "orders/create",
            "targets": {"order": {"path": "/api/v1/orders/{number}/created"}},
        }
    ]
    config = write_config(tmp_path, sandbox.url, mappings=mappings)
    summary = Runtime.from_config(config, environ=environ(sandbox.url)).run([order_event(1), order_event(2)])
    assert summary.get("acme-orders.order").dead == 2
    assert summary.get("acme-orders.order").attempts == 2  # no retries for a 400
    assert sandbox.stats()["rejected"]["fenix.orders"] == {"400": 2}
    runtime = Runtime.from_config(config, environ=environ(sandbox.url))
    dead = runtime.dead_letters()
    assert [d.status for d in dead] == [400, 400]
    assert "the URL names order '#1001'" in (dead[0].response_excerpt or "")
    assert dead[0].url is not None and dead[0].url.endswith("/api/v1/orders/%231001/created")

    mappings[0].pop("targets")  # the fix
    write_config(tmp_path, sandbox.url, mappings=mappings)
    fixed = Runtime.from_config(config, environ=environ(sandbox.url))
    replayed = fixed.replay([dead[0].key[:10]])  # a key prefix is enough
    assert replayed.ok and replayed.delivered == 1
    assert [r.order_id for r in sandbox.requests(endpoint="fenix.orders")] == ["1001"]
    assert [d.key for d in fixed.dead_letters()] == [dead[1].key]
    rest = fixed.replay()
    assert rest.delivered == 1 and fixed.dead_letters() == []
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        entry = journal.get(dead[0].key)
        assert entry is not None and entry.state == "delivered"
        assert entry.idempotency_key == dead[0].idempotency_key  # the key survives the replay
    # A later run of the same events skips them: delivered by the replay.
    again = fixed.run([order_event(1), order_event(2)])
    assert again.skipped == 2 and again.delivered == 0


def test_a_mapping_failure_is_dead_lettered_and_replay_uses_the_fixed_mapping(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    (tmp_path / "orders.yaml").write_text((FIXTURES / "orders.yaml").read_text())
    mappings = [{"mapping": "./orders.yaml", "topic": "orders/create"}]
    config = write_config(tmp_path, sandbox.url, mappings=mappings)
    bad = order_event(1, created_at="the day before yesterday")
    summary = Runtime.from_config(config, environ=environ(sandbox.url)).run([bad, order_event(2)])
    assert summary.get("acme-orders.").dead == 1  # the mapping stage: target ""
    assert summary.get("acme-orders.order").delivered == 1
    runtime = Runtime.from_config(config, environ=environ(sandbox.url))
    [dead] = runtime.dead_letters()
    assert dead.target == "" and dead.status is None
    assert "created_at" in (dead.reason or "")
    # Re-running does not retry a dead letter: replay is the explicit way.
    assert runtime.run([bad]).get("acme-orders.").skipped_dead == 1

    fixed_text = (
        (tmp_path / "orders.yaml")
        .read_text()
        .replace("      created_at: {path: created_at, type: datetime}\n", "")
    )
    (tmp_path / "orders.yaml").write_text(fixed_text)
    fixed = Runtime.from_config(config, environ=environ(sandbox.url))
    replayed = fixed.replay()
    assert replayed.get("acme-orders.order").delivered == 1
    assert fixed.dead_letters() == []
    assert sorted(r.order_id or "" for r in sandbox.requests(endpoint="fenix.orders")) == ["1001", "1002"]


def test_a_replay_of_more_dead_letters_than_a_page_sends_each_once_with_the_fixed_mapping(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """A replay reads its dead letters a page (1,000) at a time; the ones it has taken, delivered or dead
    again, are not read again."""
    (tmp_path / "orders.yaml").write_text((FIXTURES / "orders.yaml").read_text())
    mappings = [{"mapping": "./orders.yaml", "topic": "orders/create"}]
    config = write_config(tmp_path, sandbox.url, mappings=mappings)
    events = [order_event(n, created_at="the day before yesterday") for n in range(1, 2502)]
    assert Runtime.from_config(config, environ=environ(sandbox.url)).run(events).dead == 2501
    # Replayed before the fix: each dies again, once, and is not taken again by a later page.
    again = Runtime.from_config(config, environ=environ(sandbox.url)).replay()
    assert (again.delivered, again.dead) == (0, 2501), again

    fixed_text = (tmp_path / "orders.yaml").read_text()
    fixed_text = fixed_text.replace("      created_at: {path: created_at, type: datetime}\n", "")
    (tmp_path / "orders.yaml").write_text(fixed_text)
    replayed = Runtime.from_config(config, environ=environ(sandbox.url)).replay()
    assert (replayed.delivered, replayed.dead) == (2501, 0), replayed
    received = [r.order_id for r in sandbox.requests(endpoint="fenix.orders")]
    assert len(received) == len(set(received)) == 2501


def test_an_invalid_payload_is_dead_lettered_before_anything_is_sent(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    event = order_event(1)
    del event["payload"]["email"]
    summary = runtime_for(tmp_path, sandbox).run([event])
    assert summary.get("acme-orders.order").dead == 1
    assert sandbox.stats()["accepted"] == 0
    [dead] = Runtime.from_config(tmp_path / "shipmap.yaml", environ=environ(sandbox.url)).dead_letters()
    assert "customer.email: is required but missing" in (dead.reason or "")


def test_a_run_counts_every_dead_letter_and_lists_the_first_thousand_keys(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """A service's run can last for months: its summary lists the first DEAD_KEYS_KEPT dead letters' keys
    (what `shipmap replay` reports), and counts them all, instead of keeping every key in memory."""
    from shipmap.connectors._summary import DEAD_KEYS_KEPT

    events = []
    for number in range(1, DEAD_KEYS_KEPT + 51):
        event = order_event(number)
        del event["payload"]["email"]
        events.append(event)
    runtime = runtime_for(tmp_path, sandbox)
    summary = runtime.run(events)
    assert summary.get("acme-orders.order").dead == DEAD_KEYS_KEPT + 50
    assert len(summary.dead_keys) == DEAD_KEYS_KEPT == len(set(summary.dead_keys))
    assert sandbox.stats()["accepted"] == 0
    # A program that embeds the runtime reads them a page at a time: each once, none kept but the page.
    pages = [[entry.key for entry in page] for page in runtime.dead_letter_pages(size=400)]
    assert [len(page) for page in pages] == [400, 400, 250]
    assert sorted(key for page in pages for key in page) == sorted(d.key for d in runtime.dead_letters())
    assert [len(page) for page in runtime.dead_letter_pages([pages[0][0][:12]])] == [1]
    with pytest.raises(ConfigError, match="size must be at least 1"):
        runtime.dead_letter_pages(size=0)  # at the call, before any page is asked for


def test_dead_letter_pages_of_a_runtime_that_has_not_run_are_none(tmp_path: Path, sandbox: Sandbox) -> None:
    assert list(runtime_for(tmp_path, sandbox).dead_letter_pages()) == []


def test_bad_input_lines_are_rejected_and_the_rest_is_delivered(tmp_path: Path, sandbox: Sandbox) -> None:
    events = tmp_path / "events.ndjson"
    lines = [
        json.dumps(order_event(1)),
        '{"topic": "orders/create", "payload": {',
        json.dumps(order_event(2)),
    ]
    events.write_text("\n".join(lines) + "\n")
    summary = runtime_for(tmp_path, sandbox).run(read_documents([events]))
    assert summary.rejected == 1 and not summary.ok
    assert summary.get("acme-orders.order").delivered == 2
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        [bad] = journal.rejected()
    assert bad.origin == f"{events}:2" and bad.reason.startswith("not JSON")


def test_duplicate_events_in_one_run_are_sent_once(tmp_path: Path, sandbox: Sandbox) -> None:
    summary = runtime_for(tmp_path, sandbox).run([order_event(1)] * 3)
    stats = summary.get("acme-orders.order")
    assert (stats.delivered, stats.skipped) == (1, 2)
    assert len(sandbox.requests(endpoint="fenix.orders")) == 1


def test_tokens_expiring_mid_run_cost_one_login_each(tmp_path: Path, sandbox: Sandbox) -> None:
    sandbox.set_faults("expire-every=20")  # the server expires every token each 20th authenticated request
    summary = runtime_for(tmp_path, sandbox, delivery={"concurrency": 4}).run(
        [order_event(n) for n in range(40)]
    )
    assert summary.ok and summary.get("acme-orders.order").delivered == 40
    stats = sandbox.stats()
    logins, expiries = stats["by_endpoint"]["fenix.login"], stats["faults"]["expire"]
    assert expiries >= 2
    # One login at the start and at most one per expiry, however many requests the expiry hit.
    assert 2 <= logins <= expiries + 1
    assert len({r.order_id for r in sandbox.requests(endpoint="fenix.orders")}) == 40


def test_a_token_that_expires_by_age_is_refreshed_before_it_is_refused(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox]
) -> None:
    # A token is refreshed at 1 s of age and the server refuses it at 2 s: a whole second for a request to
    # travel from the client's check to the server's, even on a loaded machine (200 ms was not always enough).
    server = sandbox_factory(token_ttl=2.0, faults="slow=1:0.05")
    connections = copy.deepcopy(BASE_CONFIG["connections"])
    connections["fenix"]["auth"].update(token_ttl="2s", refresh_margin="1s")
    connections["dg"]["auth"] = {"scheme": "none"}
    runtime = runtime_for(tmp_path, server, connections=connections, delivery={"concurrency": 2})
    summary = runtime.run([order_event(n) for n in range(60)])  # 30 rounds of 50 ms: about 1.5 s
    assert summary.get("acme-orders.order").delivered == 60
    assert server.stats()["by_endpoint"]["fenix.login"] >= 2
    assert server.stats()["rejected"].get("fenix.orders", {}).get("401", 0) == 0


def test_the_dry_run_shows_exact_requests_without_secrets_or_a_login(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    runtime = runtime_for(tmp_path, sandbox)
    entries = list(runtime.plan(mixed_events()))
    assert [e.action for e in entries] == ["send", "send", "send", "unrouted", "send"]
    order = entries[0]
    assert (order.method, order.url) == ("POST", f"{sandbox.url}/api/v1/orders/1001/created")
    assert order.headers["authToken"] == "***" and order.headers["store_name"] == "demo-store"
    assert order.body["id"] == "1001"
    dg = next(e for e in entries if e.target == "notify")
    assert dg.headers["Authorization"] == "Basic ***"
    assert dg.body["external_id"] == dg.headers["Idempotency-Key"]
    text = json.dumps([[e.headers, e.body, e.url] for e in entries])
    assert not [secret for secret in SECRETS if secret in text]
    assert sandbox.stats()["accepted"] == 0 and sandbox.stats()["rejected"] == {}
    assert not (tmp_path / "journal.db").exists()


def test_the_journal_holds_payloads_and_sources_but_no_secret(tmp_path: Path, sandbox: Sandbox) -> None:
    runtime = runtime_for(tmp_path, sandbox)
    event = order_event(9)
    del event["payload"]["email"]
    runtime.run([*mixed_events(), event])
    token = runtime.auths["fenix"]._token  # type: ignore[attr-defined]
    assert isinstance(token, str)
    db = sqlite3.connect(tmp_path / "journal.db")
    dump = "\n".join(db.iterdump())
    db.close()
    assert "1001" in dump and "Lovelace" in dump  # sources and payloads are there
    for secret in (*SECRETS, token, "demo-key"):
        assert secret not in dump


def test_a_runtime_built_from_objects_runs_async_with_an_in_memory_journal(sandbox: Sandbox) -> None:
    config = RuntimeConfig(
        connections=(
            Connection(
                name="fenix",
                api="fenix",
                base_url=sandbox.url,
                auth=AuthSettings(
                    scheme="fenix_session",
                    username="demo-user",
                    password="demo-pass",
                    api_key="demo-api-key",
                    store_name="demo-store",
                ),
            ),
            Connection(
                name="dg",
                api="dg",
                base_url=sandbox.url,
                auth=AuthSettings("basic", "demo-key", "demo-secret"),
            ),
        ),
        mappings=(
            MappingRoute(
                load_mapping(str(FIXTURES / "orders.yaml")), match="payload.number != null", body="payload"
            ),
            MappingRoute(
                load_mapping(str(FIXTURES / "shipments.yaml")),
                match="payload.shipment_id",
                body="payload",
                targets={"fulfillment": TargetRoute(enabled=False)},
            ),
        ),
        delivery=DeliverySettings(concurrency=2, retry=RetryPolicy(backoff_base=0.01)),
        journal=JournalSettings(path=None),
    )
    runtime = Runtime(config, seed=1)

    async def events() -> Any:
        for event in mixed_events():
            yield event

    summary = asyncio.run(runtime.run_async(events()))
    assert summary.unrouted == 1 and summary.delivered == 3
    # Keyed by (mapping, target), typed: what an embedding program iterates or looks up.
    assert set(summary.targets) == {("acme-orders", "order"), ("acme-shipments", "notify")}
    orders = summary.targets[TargetKey("acme-orders", "order")]
    assert orders is summary.get("acme-orders.order") and orders.delivered == 2
    assert all(
        type(key) is TargetKey and key.mapping == stats.mapping for key, stats in summary.targets.items()
    )
    assert ("acme-shipments", "fulfillment") not in summary.targets  # disabled: mapped, never sent
    assert sandbox.stats()["by_endpoint"] == {"dg.execution": 1, "fenix.login": 1, "fenix.orders": 2}
    again = runtime.run(mixed_events())  # in memory: nothing remembered, everything sent again
    assert again.delivered == 3
    assert sandbox.stats()["by_endpoint"]["fenix.login"] == 1  # the session outlives the run


def test_a_runtime_embedded_in_a_uvloop_program_delivers_on_the_direct_path(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """uvicorn runs its apps on uvloop, whose transports are not asyncio.Transport subclasses: the direct
    HTTP/1.1 path (login and orders) must not care."""
    uvloop = pytest.importorskip("uvloop")
    runtime = runtime_for(tmp_path, sandbox)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        summary = runner.run(runtime.run_async([order_event(n) for n in range(5)]))
        assert type(runner.get_loop()).__module__.startswith("uvloop")
    assert summary.ok and summary.get("acme-orders.order").delivered == 5
    assert summary.dead == 0
    assert sandbox.stats()["by_endpoint"] == {"fenix.login": 1, "fenix.orders": 5}


def test_a_runtime_refuses_to_run_twice_at_once(tmp_path: Path, sandbox: Sandbox) -> None:
    sandbox.set_faults("slow=1:0.3")
    runtime = runtime_for(tmp_path, sandbox)

    async def both() -> None:
        first = asyncio.create_task(runtime.run_async([order_event(1)]))
        await asyncio.sleep(0.05)
        with pytest.raises(Exception, match="already running"):
            await runtime.run_async([order_event(2)])
        await first

    asyncio.run(both())


def test_fifty_deliveries_in_flight_on_an_expired_token_cause_one_login(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    runtime = runtime_for(tmp_path, sandbox, delivery={"concurrency": 50})
    assert runtime.run([order_event(0)]).delivered == 1
    sandbox.expire_tokens()  # the runtime still believes its token is good for hours
    summary = runtime.run([order_event(n) for n in range(1, 51)])
    assert summary.ok and summary.get("acme-orders.order").delivered == 50
    stats = sandbox.stats()
    assert stats["by_endpoint"]["fenix.login"] == 2
    assert stats["rejected"]["fenix.orders"]["401"] >= 1
