"""Delivery guarantees at the edges of routing: one mapping used by two ``mappings`` entries.

docs/runtime.md: with ``events.routing: all`` an event goes to every matching entry, and ``targets.T.connection``
sends a target to a connection. So one mapping may fan out to two stores, or serve two topics with different
routes. Every (entry, target) is then a delivery the run owes, and a replay must go where the run would have.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from harness import FIXTURES, environment, shipmap_command
from shipmap.connectors import Sandbox

SESSION = (
    "{scheme: fenix_session, username: demo-user, password: demo-pass, api_key: demo-api-key, "
    "store_name: demo-store}"
)


def _config(directory: Path, a: Sandbox, b: Sandbox, routes: str) -> Path:
    path = directory / "shipmap.yaml"
    path.write_text(
        f"""\
version: 1
env_file: false
connections:
  store_a: {{api: fenix, base_url: "{a.url}", auth: {SESSION}}}
  store_b: {{api: fenix, base_url: "{b.url}", auth: {SESSION}}}
  dg: {{api: dg, base_url: "{a.url}"}}
events: {{topic: topic, body: payload}}
mappings:
{routes}
delivery:
  timeout: 2s
  retry: {{max_attempts: 2, backoff_base: 10ms, backoff_cap: 20ms}}
journal: {{path: journal.db}}
""",
        encoding="utf-8",
    )
    return path


def _order(topic: str, order_id: int = 450789469) -> str:
    document = json.loads((FIXTURES / "real/shopify/order_rest_get_with_fulfillment.json").read_text())
    document["order"]["id"] = order_id
    return json.dumps({"topic": topic, "payload": document}) + "\n"


def _shipmap(directory: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*shipmap_command(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=directory,
        env=environment(url),
    )


def test_one_mapping_on_two_topics_delivers_each_topic_to_its_own_store(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox]
) -> None:
    """The case that works: two entries, two different orders, each to its own connection. (The same order
    on both topics would share one delivery key, the fan-out bug below.)"""
    a, b = sandbox_factory(), sandbox_factory()
    routes = (
        "  - {mapping: shopify/order, topic: orders/create, targets: {order: {connection: store_a}}}\n"
        "  - {mapping: shopify/order, topic: orders/b, targets: {order: {connection: store_b}}}\n"
    )
    config = _config(tmp_path, a, b, routes)
    events = _order("orders/create", 1001) + _order("orders/b", 1002)
    (tmp_path / "events.ndjson").write_text(events, encoding="utf-8")
    done = _shipmap(tmp_path, a.url, "run", str(config), "--input", "events.ndjson", "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(a.requests(endpoint="fenix.orders")) == 1
    assert len(b.requests(endpoint="fenix.orders")) == 1


def test_one_mapping_fanned_out_to_two_stores_reaches_both(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox]
) -> None:
    a, b = sandbox_factory(), sandbox_factory()
    routes = (
        "  - {mapping: shopify/order, topic: orders/create, targets: {order: {connection: store_a}}}\n"
        "  - {mapping: shopify/order, topic: orders/create, targets: {order: {connection: store_b}}}\n"
    )
    config = _config(tmp_path, a, b, routes)
    (tmp_path / "events.ndjson").write_text(_order("orders/create"), encoding="utf-8")
    done = _shipmap(tmp_path, a.url, "run", str(config), "--input", "events.ndjson", "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(a.requests(endpoint="fenix.orders")) == 1
    assert len(b.requests(endpoint="fenix.orders")) == 1, "store B never got the order"


def test_replay_sends_a_dead_letter_where_its_own_entry_routes_it(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox]
) -> None:
    a, b = sandbox_factory(), sandbox_factory(faults="5xx=1:503")  # store B is down
    routes = (
        "  - {mapping: shopify/order, topic: orders/create, targets: {order: {connection: store_a}}}\n"
        "  - {mapping: shopify/order, topic: orders/b, targets: {order: {connection: store_b}}}\n"
    )
    config = _config(tmp_path, a, b, routes)
    (tmp_path / "events.ndjson").write_text(_order("orders/b"), encoding="utf-8")
    done = _shipmap(tmp_path, a.url, "run", str(config), "--input", "events.ndjson", "--no-progress")
    assert done.returncode == 8, done.stderr[-2000:]
    assert "gave up after 2 attempts" in _shipmap(tmp_path, a.url, "dead-letters", str(config)).stdout
    b.set_faults(None)  # store B is back
    replayed = _shipmap(tmp_path, a.url, "replay", str(config), "--no-progress")
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert len(a.requests(endpoint="fenix.orders")) == 0, "store A got store B's order"
    assert len(b.requests(endpoint="fenix.orders")) == 1


def test_a_line_nested_5000_deep_is_rejected_and_the_run_goes_on(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox]
) -> None:
    a, b = sandbox_factory(), sandbox_factory()
    routes = "  - {mapping: shopify/order, topic: orders/create, targets: {order: {connection: store_a}}}\n"
    config = _config(tmp_path, a, b, routes)
    deep = '{"topic": "orders/create", "payload": ' + "[" * 5000 + "]" * 5000 + "}\n"
    (tmp_path / "events.ndjson").write_text(deep + _order("orders/create"), encoding="utf-8")
    done = _shipmap(tmp_path, a.url, "run", str(config), "--input", "events.ndjson", "--no-progress")
    assert "Traceback" not in done.stderr, done.stderr[-1500:]
    assert done.returncode == 8  # a rejected input record
    assert "events.ndjson:1: rejected input record" in done.stderr
    assert len(a.requests(endpoint="fenix.orders")) == 1  # the event after it was delivered


def test_a_delivery_allowed_one_attempt_gave_up_after_1_attempt(
    tmp_path: Path, sandbox_factory: Callable[..., Sandbox]
) -> None:
    a, b = sandbox_factory(), sandbox_factory(faults="5xx=1:503")  # store B is down
    routes = "  - {mapping: shopify/order, topic: orders/b, targets: {order: {connection: store_b}}}\n"
    config = _config(tmp_path, a, b, routes)
    config.write_text(config.read_text().replace("max_attempts: 2", "max_attempts: 1"), encoding="utf-8")
    (tmp_path / "events.ndjson").write_text(_order("orders/b"), encoding="utf-8")
    done = _shipmap(tmp_path, a.url, "run", str(config), "--input", "events.ndjson", "--no-progress")
    assert done.returncode == 8, done.stderr[-2000:]
    listed = _shipmap(tmp_path, a.url, "dead-letters", str(config)).stdout
    assert "gave up after 1 attempt; last: HTTP 503" in listed, listed
