"""Outages and refused credentials (issue 13, classes 3, 6 and 9): the circuit breaker per connection, the
overall request deadline, capped body reads, strict Retry-After, and max_rate.

The two scenarios of the reliability suite are here: an endpoint that goes down mid-run and comes back
(0 dead letters, everything delivered), and a permanent 401 (logins bounded by the breaker's probes)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from shipmap.connectors import EXIT_OUTAGE, Runtime, Sandbox
from shipmap.connectors._cli import main
from shipmap.connectors._deliver._auth import FenixSessionAuth
from shipmap.connectors._deliver._breaker import (
    Admission,
    BreakerSettings,
    CircuitBreaker,
    MemoryStore,
    Outage,
    OutageWaits,
)
from shipmap.connectors._deliver._rate_limiter import RateLimiter
from shipmap.connectors._deliver._retry_timing import parse_retry_after
from shipmap.connectors._store._journal import Journal

sys.path.insert(0, str(Path(__file__).parents[1] / "connectors"))
from test_breaker_support import Clock
from test_runtime_support import WAIT_DEADLINE, environ, order_event, wait_until, write_config

FAST_BREAKER = {"failures": 3, "cooldown": "50ms", "cooldown_cap": "200ms", "outage_wait": "20s"}
# An endpoint that stays down: the run gives up on it (exit 9) after half a second.
OUTAGE_BREAKER = {"failures": 3, "cooldown": "50ms", "cooldown_cap": "100ms", "outage_wait": "500ms"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def down_url() -> Iterator[str]:
    """An endpoint that refuses connections for the whole test: its port stays bound (not listening), so a
    Sandbox the test starts later cannot be given the same port, which would make the "moved" endpoint the
    old one (it did once, in a full run: the old base URL's port went to the new sandbox)."""
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{reserved.getsockname()[1]}"


def record_failure(state: dict[str, Any], body: Callable[[], None]) -> None:
    try:
        body()
    except Exception as error:  # reported by the test's own assertion, not lost in the thread
        state["failure"] = repr(error)


def orders_only(directory: Path, url: str, **delivery: Any) -> Path:
    from test_runtime_support import FIXTURES

    mappings = [{"mapping": str(FIXTURES / "orders.yaml"), "topic": "orders/create"}]
    return write_config(directory, url, mappings=mappings, delivery=delivery)


def test_an_outage_mid_run_dead_letters_nothing_and_everything_is_delivered_after_recovery(
    tmp_path: Path,
) -> None:
    port = free_port()
    first = Sandbox(port=port).start()
    config = orders_only(tmp_path, first.url, breaker=FAST_BREAKER, concurrency=4)
    runtime = Runtime.from_config(config, environ=environ(first.url))
    state: dict[str, Any] = {}
    down = threading.Event()

    def outage_then_recovery() -> None:
        # Down after the 20th accepted order, for as long as it takes the breaker to open and probe twice.
        wait_until(lambda: len(first.requests(endpoint="fenix.orders")) >= 20, "the first 20 orders")
        state["before"] = len(first.requests(endpoint="fenix.orders"))
        first.stop()
        down.set()
        breaker = runtime.breaker_store.breaker("fenix")
        wait_until(lambda: breaker.probes >= 2, "two probes of the open breaker")
        state["second"] = Sandbox(port=port).start()

    async def events() -> AsyncIterator[dict[str, Any]]:
        # The 21st event is read only once the endpoint is down, so a loaded machine cannot deliver all 60
        # before the outage begins (the breaker would then never probe, and the outage thread wait forever).
        for n in range(1, 61):
            if n == 21:
                await asyncio.to_thread(down.wait, WAIT_DEADLINE)
            yield order_event(n)

    thread = threading.Thread(target=lambda: record_failure(state, outage_then_recovery))
    thread.start()
    summary = runtime.run(events())
    thread.join()
    assert "second" in state, state.get("failure")
    second: Sandbox = state["second"]
    try:
        breaker = runtime.breaker_store.breaker("fenix")
        received = {r.order_id for r in first.requests(endpoint="fenix.orders")} | {
            r.order_id for r in second.requests(endpoint="fenix.orders")
        }
        assert summary.dead == 0 and summary.parked == 0 and summary.ok
        assert received == {str(1000 + n) for n in range(1, 61)}
        assert breaker.opened >= 1 and breaker.phase == "closed"
        print(
            f"outage mid-run: 60 events, down after {state['before']} delivered, breaker opened "
            f"{breaker.opened}x, {breaker.probes} probes; dead letters 0, delivered {len(received)} of 60"
        )
    finally:
        second.stop()


def test_a_permanent_401_opens_the_breaker_with_one_login_per_probe_and_leaves_all_pending(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    breaker = {"failures": 3, "cooldown": "50ms", "cooldown_cap": "100ms", "outage_wait": "700ms"}
    config = orders_only(tmp_path, sandbox.url, breaker=breaker)
    config.write_text(config.read_text().replace("demo-store", "wrong-store"))  # login works, calls do not
    runtime = Runtime.from_config(config, environ=environ(sandbox.url))
    summary = runtime.run([order_event(n) for n in range(1, 51)])
    state = runtime.breaker_store.breaker("fenix")
    logins = len(sandbox.requests(endpoint="fenix.login"))
    posts = sandbox.stats()
    assert summary.dead == 0 and summary.parked == 50 and summary.delivered == 0
    assert summary.outages["fenix"].count(FenixSessionAuth.refused_reason) == 1
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        assert journal.counts() == {"pending": 50}
    # The first login, the re-login whose token was refused too (which opened the breaker), then at most
    # one per probe: the probe's own re-login after its 401.
    assert state.probes >= 1 and logins <= 2 + state.probes
    print(
        f"permanent 401: 50 events, {state.probes} probes, {logins} logins, "
        f"refused requests {posts['rejected']}; dead 0, pending 50"
    )


def test_a_wrong_dg_secret_written_into_the_file_leaves_its_deliveries_pending_not_dead(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """Credentials that cannot be read again (a literal in the config) and are refused: every delivery of that
    connection would fail alike, so the 401 is a refusal of the credentials, as for those that can be read
    again. The breaker opens, one request per probe; the deliveries wait pending and the run after the fix
    sends them. None is a dead letter needing a replay."""
    from test_runtime_support import FIXTURES, shipment_event

    mappings = [{"mapping": str(FIXTURES / "shipments.yaml"), "topic": "shipments/create"}]
    config = write_config(tmp_path, sandbox.url, mappings=mappings, delivery={"breaker": OUTAGE_BREAKER})
    text = config.read_text()
    assert "${DG_API_SECRET}" in text
    config.write_text(text.replace("${DG_API_SECRET}", "rotated-out-dg-secret"))
    runtime = Runtime.from_config(config, environ={})
    summary = runtime.run([shipment_event(n) for n in range(1, 21)])
    state = runtime.breaker_store.breaker("dg")
    refused = sandbox.stats()["rejected"].get("dg.execution", {}).get("401", 0)
    assert (summary.delivered, summary.dead, summary.parked) == (20, 0, 20), summary  # Fenix's 20, DG's 20
    assert summary.outages["dg"].count("HTTP 401: the credentials are refused") == 1, summary.outages
    # Those in flight when the first refusal came (at most concurrency), then one per probe.
    assert state.probes >= 1 and refused <= runtime.config.delivery.concurrency + state.probes
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        assert journal.counts() == {"delivered": 20, "pending": 20}

    config.write_text(text.replace("${DG_API_SECRET}", "demo-secret"))  # the secret the sandbox wants
    again = Runtime.from_config(config, environ={}).run([])
    assert (again.delivered, again.dead, again.recovered) == (20, 0, 20), again
    assert len({r.external_id for r in sandbox.requests(endpoint="dg.execution")}) == 20
    print(f"wrong literal DG secret: 20 events, {refused} refused requests, {state.probes} probes; dead 0, "
          "pending 20; the run after the fix delivered 20")  # fmt: skip


def test_shipmap_run_exits_9_when_the_endpoint_stays_down_and_the_next_run_delivers_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = orders_only(tmp_path, url, breaker=OUTAGE_BREAKER)
    events = tmp_path / "events.ndjson"
    # More than a page of the journal's pending rows (1,000): the next run takes them over page by page.
    events.write_text("".join(json.dumps(order_event(n)) + "\n" for n in range(1, 2101)))
    argv = ["run", str(config), "--input", str(events), "--no-progress", "--workers", "0"]
    assert main(argv) == EXIT_OUTAGE  # connection refused throughout
    out = capsys.readouterr().out
    assert "2100 deliveries left pending" in out
    # The connection is named once, by the line itself; the rest is how long, why, and what became of them.
    [down] = [line for line in out.splitlines() if "is down" in line]
    assert re.fullmatch(
        r"connection fenix is down: unavailable for \d+ s \(circuit breaker open: .+\); left pending for the next run",
        down,
    ), down
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        assert journal.counts() == {"pending": 2100}
    with Sandbox(port=port) as sandbox:
        assert main(argv) == 0
        delivered = [r.order_id for r in sandbox.requests(endpoint="fenix.orders")]
        assert len(delivered) == len(set(delivered)) == 2100  # each once
    print("endpoint down: 2,100 events, exit 9, 0 dead letters, 2,100 pending; next run delivered 2,100")


def test_the_run_after_an_edit_of_base_url_sends_what_waited_for_the_old_one_to_the_new_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, down_url: str
) -> None:
    """The endpoint moved while deliveries waited for it: the run after the config's edit points them at the
    new base_url (the journal recorded the last run's) and delivers them there, each once."""
    events = tmp_path / "events.ndjson"
    events.write_text("".join(json.dumps(order_event(n)) + "\n" for n in range(1, 4)))
    config = orders_only(tmp_path, down_url, breaker=OUTAGE_BREAKER)
    assert main(["run", str(config), "-i", str(events), "--no-progress"]) == EXIT_OUTAGE
    assert "3 deliveries left pending" in capsys.readouterr().out
    empty = tmp_path / "nothing.ndjson"
    empty.write_text("")
    with Sandbox() as sandbox:
        orders_only(tmp_path, sandbox.url, breaker=OUTAGE_BREAKER)  # the edit: the new endpoint
        assert main(["run", str(config), "-i", str(empty), "--no-progress"]) == 0
        assert sorted(r.order_id or "" for r in sandbox.requests(endpoint="fenix.orders")) == [
            "1001", "1002", "1003",
        ]  # fmt: skip
        moved = [r.getMessage() for r in caplog.records if "base_url changed" in r.getMessage()]
        # dg moved too, with nothing waiting for it: not worth a line.
        assert moved == [
            "connections.fenix: base_url changed: 3 pending deliveries journaled for the old one go to the new one"
        ]
        caplog.clear()
        assert main(["run", str(config), "-i", str(empty), "--no-progress"]) == 0  # unchanged: nothing moves
        assert "base_url changed" not in caplog.text
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        assert journal.counts() == {"delivered": 3}


def test_on_postgresql_a_run_names_what_waits_for_an_old_base_url_and_move_pending_sends_it_to_the_new(
    tmp_path: Path,
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    down_url: str,
) -> None:
    """A PostgreSQL journal's workers may run two configs during a rollout, so a run does not move pending
    deliveries by itself: it names them, with the command, once; ``journal move-pending`` moves them."""
    from test_runtime_support import FIXTURES

    events = tmp_path / "events.ndjson"
    events.write_text("".join(json.dumps(order_event(n)) + "\n" for n in range(1, 4)))
    mappings = [{"mapping": str(FIXTURES / "orders.yaml"), "topic": "orders/create"}]
    old = down_url

    def configured(url: str) -> Path:
        return write_config(
            tmp_path, url, mappings=mappings, delivery={"breaker": OUTAGE_BREAKER}, journal=postgres_url
        )

    config = configured(old)
    assert main(["run", str(config), "-i", str(events), "--no-progress"]) == EXIT_OUTAGE
    assert "3 deliveries left pending" in capsys.readouterr().out
    empty = tmp_path / "nothing.ndjson"
    empty.write_text("")
    with Sandbox() as sandbox:
        configured(sandbox.url)  # the edit: the new endpoint
        # The run still sends them where they were journaled for (the old endpoint is still down), and says so.
        assert main(["run", str(config), "-i", str(empty), "--no-progress"]) == EXIT_OUTAGE
        named = [r.getMessage() for r in caplog.records if "another base_url" in r.getMessage()]
        assert named == [
            f"connections.fenix: 3 pending deliveries journaled for another base_url (such as {old}/"
            "api/v1/orders/1001/created) go there, not to this one; if the endpoint moved, `shipmap journal"
            " move-pending JOURNAL fenix --from OLD_BASE_URL --to BASE_URL` sends them here"
        ], named
        assert sandbox.requests(endpoint="fenix.orders") == []
        capsys.readouterr()
        # A monitor sees them too, with `shipmap status` on the run's config (no sources: no service to ask).
        assert main(["status", str(config)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[:3] == [
            "service     none: the config has no sources (the journal of `shipmap run`)",
            "deliveries  pending 3",
            f"base_url    fenix: 3 pending deliveries journaled for another base_url, such as {old}/api/v1/orders/"
            "1001/created (shipmap journal move-pending)",
        ], lines
        assert main(["status", str(config), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert (report["service"], report["inbox"], report["deliveries"]) == (None, None, {"pending": 3})
        assert report["pending_for_another_base_url"] == {
            "fenix": {"count": 3, "or_more": False, "example_url": f"{old}/api/v1/orders/1001/created"}
        }
        # A service runs again and again (after each stall): it names them once.
        caplog.clear()
        runtime = Runtime.from_config(config)
        assert [runtime.run([]).parked for _ in range(2)] == [3, 3]
        assert sum("another base_url" in r.getMessage() for r in caplog.records) == 1
        capsys.readouterr()

        move = ["journal", "move-pending", postgres_url, "fenix", "--from", old, "--to", sandbox.url]
        assert main([*move, "--dry-run"]) == 0
        assert capsys.readouterr().out.endswith(
            f"would move 3 pending deliveries of fenix from {old} to {sandbox.url}\n"
        )
        mistyped = [*move[:5], "http://127.0.0.1:9", *move[6:]]  # a base nothing was journaled for
        assert main([*mistyped, "--dry-run"]) == 0
        output = capsys.readouterr()
        assert output.out.endswith(
            f"would move 0 pending deliveries of fenix from http://127.0.0.1:9 to {sandbox.url}\n"
        )
        assert output.err == (
            f"3 pending deliveries of fenix are journaled for another base_url, such as {old}/api/v1/orders/1001/created\n"
        )
        assert main(mistyped) == 0
        output = capsys.readouterr()
        assert output.out.endswith(
            f"moved 0 pending deliveries of fenix from http://127.0.0.1:9 to {sandbox.url}\n"
        )
        assert output.err == (
            f"3 pending deliveries of fenix are journaled for a base_url other than {sandbox.url}, such as"
            f" {old}/api/v1/orders/1001/created\n"
        )
        assert main(move) == 0
        output = capsys.readouterr()
        assert output.out.endswith(f"moved 3 pending deliveries of fenix from {old} to {sandbox.url}\n")
        assert output.err == ""

        caplog.clear()
        assert main(["run", str(config), "-i", str(empty), "--no-progress"]) == 0
        assert sorted(r.order_id or "" for r in sandbox.requests(endpoint="fenix.orders")) == [
            "1001", "1002", "1003",
        ]  # fmt: skip
        assert "another base_url" not in caplog.text
    with Journal(postgres_url, readonly=True) as journal:
        assert journal.counts() == {"delivered": 3}


def test_on_postgresql_the_shared_breaker_is_per_base_url_and_a_reload_with_fixed_credentials_closes_it(
    tmp_path: Path, postgres_url: str, sandbox: Sandbox
) -> None:
    """The workers of a PostgreSQL journal share each connection's breaker, which outlives a run: a refused
    credential opens it at once, for a five-minute cooldown here. A reload with the right credential closes it,
    and the next run sends what waited at once; a connection moved to another base_url starts closed there."""
    from test_runtime_support import FIXTURES

    mappings = [{"mapping": str(FIXTURES / "orders.yaml"), "topic": "orders/create"}]
    breaker = {"failures": 3, "cooldown": "5m", "cooldown_cap": "5m", "outage_wait": "300ms"}

    def configured(store: str, base_url: str = sandbox.url) -> Any:
        path = write_config(
            tmp_path, base_url, mappings=mappings, delivery={"breaker": breaker}, journal=postgres_url
        )
        path.write_text(path.read_text().replace("demo-store", store))  # the login works, the calls do not
        return Runtime.from_config(path, environ=environ(base_url))

    runtime = configured("wrong-store")
    assert runtime.run([order_event(n) for n in range(1, 4)]).parked == 3
    assert runtime.run([]).parked == 3  # the next run finds it open, as another worker would
    runtime.use_mapper(configured("demo-store").mapper)  # the reload: the credential fixed
    summary = runtime.run([])
    assert (summary.delivered, summary.parked, summary.dead) == (3, 0, 0)

    # Refused again, then moved: the old base's breaker stays open, the new one's is closed.
    runtime.use_mapper(configured("wrong-store").mapper)
    assert runtime.run([order_event(4)]).parked == 1
    with Sandbox() as moved:
        runtime.use_mapper(configured("demo-store", moved.url).mapper)
        summary = runtime.run([])
        assert (summary.delivered, summary.parked) == (1, 0)
        assert [r.order_id for r in moved.requests(endpoint="fenix.orders")] == ["1004"]
    with Journal(postgres_url, readonly=True) as journal:
        assert journal.counts() == {"delivered": 4}


def test_journal_move_pending_names_the_connections_that_have_pending_deliveries_when_it_finds_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_journal import pending

    with Journal(tmp_path / "journal.db") as journal:
        pending(journal, "p1", url="http://old.example/api/v1/orders/1/created")
    argv = [
        "journal",
        "move-pending",
        str(tmp_path / "journal.db"),
        "fenxi",
        "--from",
        "http://old.example/api",
    ]
    assert main([*argv, "--to", "http://new.example/api"]) == 0
    output = capsys.readouterr()
    assert output.out.endswith(
        "moved 0 pending deliveries of fenxi from http://old.example/api to http://new.example/api\n"
    )
    assert output.err == "fenxi has no pending deliveries here (pending, by connection: fenix 1)\n"
    assert main(["journal", "info", str(tmp_path / "journal.db")]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["pending by connection: fenix 1"]
    moved = [
        "journal",
        "move-pending",
        str(tmp_path / "journal.db"),
        "fenix",
        "--from",
        "http://old.example/api",
    ]
    assert main([*moved, "--to", "http://new.example/api"]) == 0
    assert capsys.readouterr().err == ""
    assert main([*moved, "--to", "http://new.example/api"]) == 0  # again: nothing left to move
    assert (
        capsys.readouterr().err == "its 1 pending delivery is journaled for http://new.example/api already\n"
    )


def test_journal_move_pending_refuses_what_it_cannot_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped path creates no journal; a URL that is not a base URL is a usage error; an SQLite journal
    that a run holds is that run's to move."""
    missing = tmp_path / "journl.db"
    assert (
        main(["journal", "move-pending", str(missing), "fenix", "--from", "http://a", "--to", "http://b"])
        == 7
    )
    assert (
        capsys.readouterr().err
        == f"error: no journal at {missing}: no such file (a run creates it; check the path)\n"
    )
    assert not missing.exists()
    with pytest.raises(SystemExit) as usage:
        main(
            ["journal", "move-pending", str(missing), "fenix", "--from", "127.0.0.1:8080", "--to", "http://b"]
        )
    assert usage.value.code == 2
    assert "argument --from: '127.0.0.1:8080' is not a base URL" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # a password would be journaled with every moved URL
        main(
            [
                "journal",
                "move-pending",
                str(missing),
                "fenix",
                "--from",
                "http://a",
                "--to",
                "https://u:s3cret@b/api",
            ]
        )
    error = capsys.readouterr().err
    assert (
        usage.value.code == 2
        and "argument --to: credentials in the URL (user:password@host) are refused" in error
    )
    assert "s3cret" not in error
    with Journal(tmp_path / "journal.db", exclusive=True):  # a run holds it
        code = main(
            [
                "journal",
                "move-pending",
                str(tmp_path / "journal.db"),
                "fenix",
                "--from",
                "http://a",
                "--to",
                "http://b",
            ]
        )
    assert code == 7
    assert (
        "moves the pending deliveries of a connection whose base_url changed itself"
        in capsys.readouterr().err
    )


def test_shipmap_replay_exits_9_when_the_endpoint_is_down_and_the_next_run_delivers_the_replayed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_runtime_support import FIXTURES

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    events = tmp_path / "events.ndjson"
    events.write_text("".join(json.dumps(order_event(n)) + "\n" for n in range(1, 4)))
    # Dead letters first: a path the sandbox refuses (400) for every order.
    wrong_path = {"order": {"path": "/api/v1/orders/{number}/created"}}
    mappings = [{"mapping": str(FIXTURES / "orders.yaml"), "topic": "orders/create", "targets": wrong_path}]
    with Sandbox(port=port):
        write_config(tmp_path, url, mappings=mappings, delivery={"breaker": OUTAGE_BREAKER})
        assert main(["run", str(tmp_path / "shipmap.yaml"), "-i", str(events), "--no-progress"]) == 8
    capsys.readouterr()
    # The mapping fixed, the endpoint down: the replay parks them, exit 9 (not 8: nothing is dead now).
    config = orders_only(tmp_path, url, breaker=OUTAGE_BREAKER)
    assert main(["replay", str(config), "--no-progress"]) == EXIT_OUTAGE
    out = capsys.readouterr().out
    assert "3 deliveries left pending" in out and "connection fenix is down" in out
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        assert journal.counts() == {"pending": 3}
    empty = tmp_path / "nothing.ndjson"
    empty.write_text("")
    with Sandbox(port=port) as sandbox:
        assert main(["run", str(config), "-i", str(empty), "--no-progress"]) == 0
        assert sorted(r.order_id or "" for r in sandbox.requests(endpoint="fenix.orders")) == [
            "1001", "1002", "1003",
        ]  # fmt: skip
    with Journal(tmp_path / "journal.db", readonly=True) as journal:
        assert journal.counts() == {"delivered": 3}


# --- units: the breaker's states, the rate limiter, Retry-After ------------------------------------------


def test_the_breaker_opens_after_n_failures_probes_once_and_closes_on_the_probes_success() -> None:
    clock = Clock()
    breaker = CircuitBreaker("c", BreakerSettings(failures=3, cooldown=1.0, cooldown_cap=4.0), clock=clock)

    async def scenario() -> list[str]:
        seen = []
        for _ in range(2):
            await breaker.failure("HTTP 503", await breaker.admit(give_up_at=100.0))
        seen.append(breaker.state.phase)  # closed: 2 < 3
        await breaker.failure("HTTP 503", await breaker.admit(give_up_at=100.0))
        seen.append(breaker.state.phase)  # open
        clock.now = 1.0
        probe = await breaker.admit(give_up_at=100.0)
        seen.append(f"{breaker.state.phase} {probe}")
        await breaker.failure("ConnectError", probe)  # reopen, cooldown doubled
        seen.append(f"{breaker.state.phase} retry_at={breaker.state.retry_at}")
        clock.now = 3.0
        probe = await breaker.admit(give_up_at=100.0)
        assert probe.is_probe
        await breaker.success(probe)
        seen.append(breaker.state.phase)
        closed = await breaker.admit(give_up_at=100.0)
        assert closed == Admission(opened=1)
        await breaker.failure("HTTP 401", closed, refused=True)  # refused credentials: open at once
        seen.append(breaker.state.phase)
        with pytest.raises(Outage, match="left pending"):
            await breaker.admit(give_up_at=clock.now)
        return seen

    assert asyncio.run(scenario()) == [
        "closed",
        "open",
        "half_open Admission(opened=1, probe=1)",
        "open retry_at=3.0",
        "closed",
        "open",
    ]


def test_a_delivery_that_does_not_wait_for_the_open_breaker_says_how_long_it_has_been_open() -> None:
    """serve parks the deliveries past the senders that wait for an open breaker; their reason said
    "unavailable for 0 s" 45 s into an outage (timed from when the run met it, not from when it opened)."""
    clock = Clock()
    breaker = CircuitBreaker("fenix", BreakerSettings(failures=1, cooldown=1.0), clock=clock)

    async def scenario() -> str:
        clock.now = 10.0
        await breaker.failure("HTTP 503 Service Unavailable", breaker.admission())
        clock.now = 55.0
        return breaker.outage().detail

    assert asyncio.run(scenario()) == (
        "unavailable for 45 s (circuit breaker open: HTTP 503 Service Unavailable); left pending for the next run"
    )


def test_waiting_for_the_breaker_to_close_never_takes_the_probe_and_ends_at_its_deadline() -> None:
    """A run's watcher of held-back deliveries learns that the breaker closed; the senders waiting in admit()
    probe. A watcher that took the probe would leave it unsent, and the breaker half-open for nobody."""
    breaker = CircuitBreaker("fenix", BreakerSettings(failures=1, cooldown=0.01))

    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        await breaker.failure("HTTP 503 Service Unavailable", breaker.admission())
        seen = [f"at the deadline: {await breaker.wait_closed(give_up_at=loop.time() + 0.05)}"]
        assert breaker.state.probes == 0 and breaker.state.phase == "open"  # due since 0.01 s: not taken
        watcher = asyncio.create_task(breaker.wait_closed(give_up_at=loop.time() + 60.0))
        probe = await breaker.admit(give_up_at=loop.time() + 60.0)
        seen.append(f"sender probe={probe.is_probe}, watcher waiting: {not watcher.done()}")
        await breaker.success(probe)
        async with asyncio.timeout(5.0):
            seen.append(f"after the probe's success: {await watcher}")
        return seen

    assert asyncio.run(scenario()) == [
        "at the deadline: False",
        "sender probe=True, watcher waiting: True",
        "after the probe's success: True",
    ]


def test_a_move_stays_a_move_when_the_end_of_the_run_follows_it_during_a_probe() -> None:
    """``shipmap serve``'s reload moves a connection (``stop_waiting("moved")``), then ends the run, which
    parks what waits (``stop_waiting("run ends")``). A probe in flight across both failed after them: its
    delivery was parked as an outage of the old endpoint, and the log never said the connection moved."""
    breaker = CircuitBreaker("fenix", BreakerSettings(failures=1, cooldown=0.01))

    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        await breaker.failure("HTTP 503 Service Unavailable", breaker.admission())
        probe = await breaker.admit(give_up_at=loop.time() + 60.0)  # the probe, its request in flight
        assert probe.is_probe
        breaker.stop_waiting("moved")
        breaker.stop_waiting("run ends")
        await breaker.failure("ConnectError: refused", probe)
        with pytest.raises(Outage) as stopped:
            await breaker.admit(give_up_at=loop.time() + 60.0)
        return [stopped.value.detail, breaker.outage().detail]

    moved = (
        "moved by a reload while its circuit breaker was open (ConnectError: refused); left pending for the"
        " next run, which sends to the new endpoint"
    )
    assert asyncio.run(scenario()) == [moved, moved]


def test_a_retry_backoff_ends_at_a_move_and_the_reason_says_the_delivery_was_retrying() -> None:
    """A delivery waiting out its backoff (the breaker closed: too few failures to open it) follows a move
    at once, not after the backoff, and its reason says what it waited for."""
    breaker = CircuitBreaker("fenix", BreakerSettings(failures=5, cooldown=1.0))

    async def scenario() -> tuple[float, bool, str]:
        await breaker.failure("HTTP 503 Service Unavailable", breaker.admission())
        backoff = asyncio.create_task(breaker.pause(30.0))
        await asyncio.sleep(0.05)
        assert not backoff.done()  # it waits: nothing moved yet
        started = asyncio.get_running_loop().time()
        breaker.stop_waiting("moved")
        async with asyncio.timeout(5.0):
            await backoff
        return (
            asyncio.get_running_loop().time() - started,
            breaker.moved,
            breaker.outage("HTTP 503 Service Unavailable").detail,
        )

    waited, moved, detail = asyncio.run(scenario())
    assert waited < 1.0 and moved, waited
    assert detail == (
        "moved by a reload while a delivery was retrying (HTTP 503 Service Unavailable); left pending for the"
        " next run, which sends to the new endpoint"
    )


def test_a_backoff_ends_at_the_end_of_the_run_and_says_it_was_cut_short() -> None:
    """``shipmap serve`` ends a run to look at parked work, for a replay or a reload (``stop_waiting("run
    ends")``): a delivery waiting out its backoff stops at once (and is left pending), not when it is over,
    and is not taken for a moved one. A backoff that runs its course says so."""
    breaker = CircuitBreaker("fenix", BreakerSettings(failures=5, cooldown=1.0))

    async def scenario() -> tuple[bool, float, bool, bool]:
        loop = asyncio.get_running_loop()
        assert not await breaker.pause(0.01)  # over before anything stopped it
        backoff = asyncio.create_task(breaker.pause(30.0))
        await asyncio.sleep(0.05)
        assert not backoff.done()
        started = loop.time()
        breaker.stop_waiting("run ends")
        async with asyncio.timeout(5.0):
            cut = await backoff
        return cut, loop.time() - started, breaker.moved, await breaker.pause(30.0)

    cut, waited, moved, cut_at_once = asyncio.run(scenario())
    assert cut and waited < 1.0 and not moved and cut_at_once, (cut, waited, moved, cut_at_once)


def test_max_rate_spaces_request_starts_evenly() -> None:
    clock = Clock()
    limiter = RateLimiter("c", 4.0, store=MemoryStore(), clock=clock, sleep=clock.sleep)

    async def five() -> list[float]:
        starts = []
        for _ in range(5):
            await limiter.acquire()
            starts.append(clock.now)
        return starts

    assert asyncio.run(five()) == [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), (" 12 ", 12.0), ("\u00b2", None), ("1.5", None), ("-1", None), ("\u0663", None), ("", None)],
)
def test_retry_after_is_parsed_strictly(header: str, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_as_an_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 99 Oct 2015 07:28:00 GMT") is None


# --- a server that trickles or floods: the deadline and the body cap ------------------------------------


class RawServer:
    """A TCP server that answers every connection with ``respond(socket)``; counts the bytes it sent."""

    def __init__(self, respond: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.sent = 0
        self.respond = respond
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            with contextlib.suppress(OSError):  # the client hung up: what we measure
                self.respond(self, conn)

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


@pytest.fixture
def raw_server() -> Iterator[Any]:
    servers: list[RawServer] = []

    def make(respond: Any) -> RawServer:
        servers.append(RawServer(respond))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def plain_config(directory: Path, url: str, timeout: Any) -> Path:
    """Orders to a Fenix-shaped endpoint without auth, one attempt per delivery."""
    import yaml
    from test_runtime_support import FIXTURES

    config = {
        "version": 1,
        "connections": {"plain": {"api": "fenix", "base_url": url, "timeout": timeout}},
        "events": {"body": "payload"},
        "mappings": [{"mapping": str(FIXTURES / "orders.yaml")}],
        "delivery": {"retry": {"max_attempts": 1}},
        "journal": {"path": "journal.db"},
    }
    path = directory / "shipmap.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 1000000\r\n\r\n",  # then the body, a byte at a time
        b"",  # the status line and headers themselves, a byte at a time
    ],
)
def test_a_server_that_trickles_one_byte_at_a_time_hits_the_overall_deadline(
    tmp_path: Path, raw_server: Any, head: bytes
) -> None:
    def trickle(server: RawServer, conn: socket.socket) -> None:
        conn.sendall(head)
        while not server.stopped.wait(0.1):
            conn.sendall(
                b"x" if head else b"HTTP/1.1 200 OK\r\nX-Slow: 1"[server.sent % 27 : server.sent % 27 + 1]
            )
            server.sent += 1

    server = raw_server(trickle)
    config = plain_config(tmp_path, server.url, {"read": "5s", "total": "600ms"})
    summary = Runtime.from_config(config).run([order_event(1)])
    [dead] = Runtime.from_config(config).dead_letters()
    assert summary.dead == 1 and "no answer within the 0.6 s deadline" in (dead.reason or "")
    print(f"trickling server: {server.sent} bytes trickled (read timeout 5 s), then: {dead.reason}")


def test_the_body_of_a_2xx_is_not_read_at_all(tmp_path: Path, raw_server: Any) -> None:
    def endless(server: RawServer, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 1000000\r\n\r\n")
        while not server.stopped.wait(0.1):
            conn.sendall(b"x")

    config = plain_config(tmp_path, raw_server(endless).url, {"read": "5s", "total": "30s"})
    assert Runtime.from_config(config).run([order_event(1)]).delivered == 1


def test_a_huge_error_body_is_read_up_to_the_cap_only(tmp_path: Path, raw_server: Any) -> None:
    size = 300 * 1024 * 1024

    def flood(server: RawServer, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % size)
        chunk = b"e" * 65536
        while server.sent < size:
            conn.sendall(chunk)
            server.sent += len(chunk)

    server = raw_server(flood)
    config = plain_config(tmp_path, server.url, "5s")
    summary = Runtime.from_config(config).run([order_event(1)])
    [dead] = Runtime.from_config(config).dead_letters()
    assert summary.dead == 1 and dead.status == 400
    assert dead.response_excerpt is not None and len(dead.response_excerpt) <= 2048
    # The client stopped reading at the cap and hung up: the server could not push anywhere near 300 MB.
    threading.Event().wait(0.2)
    assert server.sent < 32 * 1024 * 1024
    print(f"300 MB error body: the server got {server.sent / 1048576:.1f} MB out before the client hung up")


def test_a_run_gives_up_on_an_open_breaker_outage_wait_after_it_first_found_it_open_and_forgets_once_closed() -> (
    None
):
    """``OutageWaits``, which a run's deliveries and its enrichment GETs both count their ``give_up_at`` by."""
    clock = Clock()
    fenix = CircuitBreaker("fenix", BreakerSettings(failures=1, outage_wait=300.0), clock=clock)
    dg = CircuitBreaker("dg", BreakerSettings(failures=1, outage_wait=60.0), clock=clock)
    waits = OutageWaits(clock)
    clock.now = 10.0
    waits.found_open("fenix")  # a failed attempt found it open
    clock.now = 50.0
    assert waits.give_up_at(fenix) == 310.0  # from when it was first found open, not from now
    assert waits.give_up_at(dg) == 110.0  # first asked now: counted from now, with its own outage_wait
    clock.now = 70.0
    waits.found_open("fenix")  # found open again: the same outage, the same deadline
    assert (waits.give_up_at(fenix), waits.give_up_at(dg)) == (310.0, 110.0)
    waits.found_closed("fenix")
    assert waits.since == {"dg": 50.0}
    clock.now = 400.0  # the next outage counts from its own start
    assert waits.give_up_at(fenix) == 700.0


def test_a_request_sent_while_closed_that_fails_under_the_probe_leaves_the_breaker_to_the_probe(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """A slow request sent while the breaker was closed failed (its deadline) after the breaker had opened and
    its probe was in flight: it reopened the breaker and doubled the cooldown under the probe, which then
    closed it (or doubled again). Only the probe's outcome decides a half-open breaker."""
    from test_breaker_support import late_failure_under_the_probe

    breaker = CircuitBreaker("dg", BreakerSettings(failures=1, cooldown=0.1, cooldown_cap=10.0))
    with caplog.at_level(logging.DEBUG, logger="shipmap"):
        seen = asyncio.run(late_failure_under_the_probe(sandbox, breaker, breaker))
    assert seen.probe_in_flight
    after = seen.after_late_failure
    assert (after.phase, after.opened, after.probes, after.cooldown) == ("half_open", 1, 1, 0.1)
    assert (seen.after_probe.phase, seen.after_probe.opened, seen.after_probe.cooldown) == ("closed", 1, 0.1)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("shipmap.connectors.breaker")]
    assert not [line for line in lines if "probe failed" in line], lines
    assert [line for line in lines if "not counted" in line] == [
        "connection dg: Timeout: no answer within the deadline (timeout.total) of a request sent while the"
        " breaker was closed: not counted (it is half-open)"
    ]


def test_only_the_outcome_of_a_request_admitted_in_the_state_it_comes_back_to_counts() -> None:
    """Late outcomes on the breaker's own clock: a failure of a request sent while closed, coming back once the
    breaker is open, half-open or closed again, is not counted, nor is its success (the probe says whether the
    destination is up); nor is the outcome of a probe that is no longer the breaker's (closed by a reload)."""
    clock = Clock()
    store = MemoryStore()
    breaker = CircuitBreaker(
        "c", BreakerSettings(failures=2, cooldown=1.0, cooldown_cap=8.0), store=store, clock=clock
    )

    def seen() -> tuple[str, int, int, float, int]:
        state = breaker.state
        return state.phase, state.failures, state.opened, state.cooldown, state.probes

    async def scenario() -> list[tuple[str, int, int, float, int]]:
        states = []
        early, late, slow = [await breaker.admit(100.0) for _ in range(3)]
        await breaker.failure("HTTP 503", early)
        await breaker.failure("HTTP 503", early)  # its retry, admitted in the same closed spell: counted
        states.append(seen())  # open
        await breaker.failure("Timeout", late)  # open: not counted
        await breaker.success(late)  # nor is a success: not closed before the probe
        states.append(seen())
        clock.now = 1.0
        probe = await breaker.admit(100.0)
        await breaker.failure("Timeout", slow)  # half-open: the probe decides, not this
        states.append(seen())
        await breaker.failure("HTTP 503", probe)  # the probe's own failure reopens, doubled
        states.append(seen())
        clock.now = 3.0
        probe = await breaker.admit(100.0)
        await breaker.success(probe)
        states.append(seen())  # closed
        await breaker.failure("Timeout", late)  # closed again, but since a later opening: not counted
        states.append(seen())
        await breaker.failure("HTTP 503", await breaker.admit(100.0))  # this spell's: counted
        states.append(seen())
        await breaker.failure("HTTP 503", breaker.admission())
        clock.now = 5.0
        probe = await breaker.admit(100.0)
        store.close_breaker("c")  # a reload changed the credentials while the probe was out
        await breaker.failure("HTTP 401", probe, refused=True)  # the old credentials' probe: not counted
        states.append(seen())
        return states

    assert asyncio.run(scenario()) == [
        ("open", 2, 1, 1.0, 0),
        ("open", 2, 1, 1.0, 0),
        ("half_open", 2, 1, 1.0, 1),
        ("open", 2, 1, 2.0, 1),
        ("closed", 0, 1, 2.0, 2),
        ("closed", 0, 1, 2.0, 2),
        ("closed", 1, 1, 2.0, 2),
        ("closed", 0, 2, 0.0, 3),
    ]


def test_a_run_whose_slow_delivery_times_out_under_the_probe_leaves_the_breaker_to_the_probe(
    tmp_path: Path, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """The same over ``shipmap run``'s deliveries. The sandbox holds the first order past its 2 s deadline and
    answers the second 503, which opens the breaker; the probe (the second order again, after 0.2 s) is held
    too. The first order's deadline comes first (it was sent before the probe, with the same deadline), while
    the probe is out: it waits for the breaker, uncounted. The probe's own timeout reopens it for 0.4 s, the
    next probe closes it, and both orders are delivered. Before, the first order's timeout reopened the
    breaker under the probe ("probe failed" twice, the cooldown doubled twice)."""
    breaker = {"failures": 1, "cooldown": "200ms", "cooldown_cap": "10s", "outage_wait": "30s"}
    config = orders_only(tmp_path, sandbox.url, breaker=breaker, concurrency=2)
    settings = yaml.safe_load(config.read_text())
    settings["delivery"]["timeout"] = {"total": "2s"}  # the deadline: no read timeout before it
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    sandbox.set_faults("schedule=slow:3,503,slow:3", api="fenix")
    runtime = Runtime.from_config(config, environ=environ(sandbox.url))
    with caplog.at_level(logging.DEBUG, logger="shipmap"):
        summary = runtime.run([order_event(1), order_event(2)])
    state = runtime.breaker_store.breaker("fenix")
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("shipmap.connectors.breaker")]
    assert summary.delivered == 2 and summary.dead == 0, summary
    assert (state.phase, state.opened, state.probes) == ("closed", 1, 2), lines
    assert [line for line in lines if "probe failed" in line] == [
        "connection fenix: probe failed (Timeout: no answer within the 2 s deadline (timeout.total)); next"
        " probe in 0.4 s"
    ]
    assert [line for line in lines if "not counted" in line] == [
        "connection fenix: Timeout: no answer within the 2 s deadline (timeout.total) of a request sent while"
        " the breaker was closed: not counted (it is half-open)"
    ]
