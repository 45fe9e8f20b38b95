"""``kill -HUP`` of a live ``shipmap serve``: the config file is read again and its sources applied without a
restart, as a webhook secret rotation needs (add the new secret, switch the platform, drop the old one), and
its mappings, as a mapping fix needs (reload, then replay the dead letters). A bad file, or a change a reload
cannot make, is refused in the log with its place in the file, and the running configuration stays.
Secrets come from ``${file:...}`` references, read again at each reload."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from shipmap.connectors import ConfigError, Runtime, Sandbox
from shipmap.connectors._serve import Reloaded, Service
from shipmap.connectors._serve._reload import log_reload

from .harness import (
    REAL_SHOPIFY,
    SERVE_FIXTURES,
    ServeProcess,
    environment,
    shopify_headers,
    standard_webhooks_headers,
)

ORDER = (REAL_SHOPIFY / "orders_cancelled_webhook.json").read_bytes()
OLD, NEW = "shpss_rotation_old_secret_1", "shpss_rotation_new_secret_2"
RUNNING = 'secret: ["${SHOPIFY_SECRET}", "${SHOPIFY_PREVIOUS_SECRET}"]'


def _serve_fixtures_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The serve fixtures copied into ``tmp_path``, their environment in the process's (a reload reads it)."""
    for item in SERVE_FIXTURES.glob("*.yaml"):
        shutil.copy(item, tmp_path / item.name)
    for name, value in environment("http://127.0.0.1:9").items():
        monkeypatch.setenv(name, value)


def test_a_reload_rotates_a_secret_adds_a_source_and_refuses_what_it_cannot_apply(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    (tmp_path / "old.secret").write_text(OLD + "\n")
    (tmp_path / "new.secret").write_text(NEW + "\n")
    old_file, new_file = (
        "${file:" + str(tmp_path / "old.secret") + "}",
        "${file:" + str(tmp_path / "new.secret") + "}",
    )
    serve = ServeProcess(tmp_path, source_sandbox.url)
    started = serve.config.read_text()
    assert RUNNING in started
    serve.config.write_text(started.replace(RUNNING, f'secret: "{old_file}"'))
    serve.start()
    seen = 0

    def outcomes() -> list[str]:
        return [line for line in serve.errors if "reloaded " in line or "reload refused" in line]

    def reload(text: str, expect: str) -> str:
        """Write the config, send SIGHUP, and return the log line the reload wrote."""
        nonlocal seen
        serve.config.write_text(text)
        assert serve.process is not None
        serve.process.send_signal(signal.SIGHUP)
        serve.wait_until(lambda: len(outcomes()) > seen, timeout=30, what="the reload's log line")
        lines = outcomes()
        seen = len(lines)
        assert expect in lines[-1], lines[-1]
        return lines[-1]

    def status(client: httpx.Client, source: str, secret: str, webhook_id: str) -> int:
        body = json.dumps({**json.loads(ORDER), "id": 9_100_000 + int(webhook_id[1:])}).encode()
        return serve.post(
            client, source, body, shopify_headers(body, "orders/create", webhook_id, secret)
        ).status_code

    def app_status(client: httpx.Client, webhook_id: str) -> int:
        headers = standard_webhooks_headers(b"{}", webhook_id, int(time.time()), "t")
        return serve.post(client, "app", b"{}", headers).status_code

    try:
        with httpx.Client(timeout=10) as client:
            assert (status(client, "shop", OLD, "r1"), status(client, "shop", NEW, "r2")) == (200, 401)
            assert status(client, "shop2", NEW, "r3") == 404
            # app's rate_limit: a burst of 3, then one per 100 s.
            assert [app_status(client, f"a{n}") for n in range(4)] == [200, 200, 200, 429]

            # 1. The new secret first, the old one still accepted; a source added.
            step1 = started.replace(RUNNING, f'secret: ["{new_file}", "{old_file}"]')
            step1 = step1.replace(
                "  woo:\n", f'  shop2:\n    type: shopify\n    secret: "{new_file}"\n  woo:\n'
            )
            line = reload(step1, "reloaded ")
            assert line.rstrip().endswith("serve.yaml: shop: secrets; shop2: added"), line
            assert (status(client, "shop", OLD, "r4"), status(client, "shop", NEW, "r5")) == (200, 200)
            assert status(client, "shop2", NEW, "r6") == 200
            assert app_status(client, "a4") == 429  # its limit did not change: a reload keeps its tokens

            # 2. The platform signs with the new secret: the old one is dropped. app's limit changes (a new
            # bucket, full). A connection's headers change (applied to delivery) and
            # serve's drain_timeout, which a reload does not apply: the log says so.
            step2 = step1.replace(f'secret: ["{new_file}", "{old_file}"]', f'secret: "{new_file}"')
            step2 = step2.replace(
                "rate_limit: {per_second: 0.01, burst: 3}", "rate_limit: {per_second: 1, burst: 3}"
            )
            step2 = step2.replace(
                "  dg:\n    api: dg\n", "  dg:\n    api: dg\n    headers: {X-Shipmap-Test: reload}\n"
            )
            step2 = step2.replace("drain_timeout: 30s", "drain_timeout: 20s")
            line = reload(step2, "reloaded ")
            assert line.rstrip().endswith(
                "serve.yaml: app: rate_limit; shop: secrets; connections.dg: headers"
            ), line
            assert app_status(client, "a5") == 200
            assert any(
                "serve.drain_timeout changed in" in line
                and "but a reload does not apply it: restart to apply" in line
                for line in serve.errors
            ), serve.errors[-5:]
            assert (status(client, "shop", OLD, "r7"), status(client, "shop", NEW, "r8")) == (401, 200)

            # 3. A file with a mistake: refused, located, and the running sources stay.
            broken = step2.replace(
                "rate_limit: {per_second: 1, burst: 3}", 'rate_limit: {per_second: "fast"}'
            )
            line = reload(broken, "reload refused; the running configuration stays: ")
            assert re.search(re.escape(str(serve.config)) + r":\d+:\d+: error: ", line), line
            assert "sources.app.rate_limit.per_second" in line, line

            # 4. An enrich section over a connection no enrich fetched over at start applies (its breaker,
            # rate limiter and shared records are set up at the reload); over a connection the same reload
            # adds too, as the file has it (delivery takes it at the end of its run in progress).
            enriched = step2.replace("connection: bc_store", "connection: dg")
            assert enriched != step2
            line = reload(enriched, "reloaded ")
            assert line.rstrip().endswith("serve.yaml: bc: enrich.connection"), line
            added = enriched.replace(
                "  bc_store:\n",
                "  bc_store_2:\n    api: generic\n    base_url: ${SANDBOX_URL}\n  bc_store:\n",
            ).replace("connection: dg", "connection: bc_store_2")
            assert added.count("bc_store_2") == 2, added
            line = reload(added, "reloaded ")
            assert line.rstrip().endswith(
                "serve.yaml: bc: enrich.connection; connections.bc_store_2: added"
            ), line
            assert (status(client, "shop", OLD, "r9"), status(client, "shop", NEW, "r10")) == (401, 200)
            assert status(client, "shop2", NEW, "r11") == 200
            metrics = client.get(f"{serve.url}/metrics").text
            # A configured source's series is there before any request; an added one's after its first.
            assert 'shipmap_webhooks_received_total{source="woo"} 0.0' in metrics
            assert 'shipmap_webhooks_received_total{source="shop2"} 2.0' in metrics
        assert serve.terminate() == 0
    finally:
        serve.kill()
    said = "".join(serve.errors) + "".join(serve.output)
    assert OLD not in said and NEW not in said


def test_a_reload_that_fails_unexpectedly_is_logged_and_the_service_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug inside a reload (not a wrong file) must not end in a traceback from a signal's task: the log says
    what failed, and the sources stay."""
    for item in SERVE_FIXTURES.glob("*.yaml"):
        shutil.copy(item, tmp_path / item.name)
    service = Service(Runtime.from_config(tmp_path / "serve.yaml", environ=environment("http://127.0.0.1:9")))
    before = service.settings.sources

    async def broken() -> Reloaded:
        raise RuntimeError("a bug in reload")

    service.reload = broken  # type: ignore[method-assign]
    with caplog.at_level("ERROR", logger="shipmap.connectors"):
        asyncio.run(service._reload_logged())
    assert "reload failed; the running configuration stays: RuntimeError: a bug in reload" in caplog.text
    assert service.settings.sources is before


def test_a_reload_refuses_a_secret_reference_without_its_brace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taken as text, ${WOO_SECRET would become the source's secret: every real webhook 401, and one signed
    with that text accepted. The reload is refused, located, and the running secret stays."""
    for item in SERVE_FIXTURES.glob("*.yaml"):
        shutil.copy(item, tmp_path / item.name)
    secret = "woo-test-secret"
    for name, value in environment("http://127.0.0.1:9").items():  # a reload reads the process's environment
        monkeypatch.setenv(name, value)
    assert os.environ["WOO_SECRET"] == secret
    config = tmp_path / "serve.yaml"
    service = Service(Runtime.from_config(config))
    before = service.settings.sources
    assert before["woo"].secrets == (secret.encode(),)
    written = config.read_text()
    line = 1 + written[: written.index("secret: ${WOO_SECRET}")].count("\n")
    config.write_text(written.replace("secret: ${WOO_SECRET}", "secret: ${WOO_SECRET"))

    located = f"{config}:{line}:13: error: sources.woo.secret: a reference '${{' has no closing '}}'"
    with pytest.raises(ConfigError) as refused:
        asyncio.run(service.reload())
    assert str(refused.value).startswith(located + "\n")
    with caplog.at_level("INFO", logger="shipmap.connectors"):
        asyncio.run(service._reload_logged())
    [said] = [record.getMessage() for record in caplog.records if record.getMessage().startswith("reload ")]
    assert said.startswith(f"reload refused; the running configuration stays: {located}"), said
    assert service.settings.sources is before and before["woo"].secrets == (secret.encode(),)
    assert secret not in caplog.text and secret not in str(refused.value)


def test_a_reload_whose_reading_outlives_its_deadline_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config on a mount that hangs: the reload gives up at its deadline, as a refusal in the log, and the
    next reload is not held behind it."""
    from shipmap.connectors._serve import _reload

    _serve_fixtures_in(tmp_path, monkeypatch)
    service = Service(Runtime.from_config(tmp_path / "serve.yaml"))
    released = threading.Event()
    real = _reload._read_again

    def hanging(file: str, runtime: Runtime) -> Any:
        released.wait(10)  # the first reload's reading hangs until the test lets it go
        return real(file, runtime)

    monkeypatch.setattr(_reload, "RELOAD_DEADLINE_S", 0.2)
    monkeypatch.setattr(_reload, "_read_again", hanging)

    async def twice() -> None:
        await service._reload_logged()
        released.set()
        # The lock was let go: this one reads (no longer hanging), and compiles the mappings, in its own time.
        monkeypatch.setattr(_reload, "RELOAD_DEADLINE_S", 30.0)
        await service._reload_logged()

    with caplog.at_level("INFO", logger="shipmap.connectors"):
        asyncio.run(twice())
    said = [r.getMessage() for r in caplog.records]
    refused = (
        "reload refused; the running configuration stays: error: reading the config file, its secrets and"
        " its mappings took"
    )
    assert any(f"{refused} more than 0.2 s" in m for m in said), said
    assert any(m.endswith("serve.yaml: no change it applies") for m in said), said


def test_a_reload_applies_a_changed_mapping_and_a_replay_maps_dead_letters_with_it(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """The mapping a service runs is fixed without a restart: edit the file, ``kill -HUP``, ``shipmap
    replay``. Events after the reload are mapped with the new file, a replay maps the dead letters with it,
    and a mapping file with a mistake is refused, located, with the running mapping kept."""
    packaged = (Path(__file__).resolve().parents[3] / "mappings" / "shopify" / "order.yaml").read_text()
    literal = "source: {literal: Shopify}"
    assert literal in packaged
    serve = ServeProcess(tmp_path, source_sandbox.url)
    mapping = tmp_path / "shopify_order.yaml"
    mapping.write_text(packaged)
    serve.config.write_text(
        serve.config.read_text().replace("- mapping: shopify/order\n", "- mapping: ./shopify_order.yaml\n")
    )
    serve.start()
    seen = 0

    def reload(text: str, expect: str) -> str:
        nonlocal seen
        mapping.write_text(text)
        assert serve.process is not None
        serve.process.send_signal(signal.SIGHUP)

        def outcomes() -> list[str]:
            return [line for line in serve.errors if "reloaded " in line or "reload refused" in line]

        serve.wait_until(lambda: len(outcomes()) > seen, timeout=30, what="the reload's log line")
        lines = outcomes()
        seen = len(lines)
        assert expect in lines[-1], lines[-1]
        return lines[-1]

    def applied() -> int:
        return sum("the last reload's mappings, connections and delivery settings in use" in line
                   for line in serve.errors)  # fmt: skip

    def post(client: httpx.Client, order_id: int) -> None:
        body = json.dumps({**json.loads(ORDER), "id": order_id}).encode()
        headers = shopify_headers(body, "orders/create", f"m{order_id}")
        assert serve.post(client, "shop", body, headers).status_code == 200

    def delivered() -> dict[str, str]:
        return {
            str(r.order_id): r.body["shipping_info"]["source"]
            for r in source_sandbox.requests(endpoint="fenix.orders")
        }

    try:
        with httpx.Client(timeout=10) as client:
            post(client, 7_100_001)
            serve.wait_until(lambda: "7100001" in delivered(), timeout=30, what="the first order")

            # 1. A mapping that writes a number where Fenix wants text: each event is its own dead letter.
            line = reload(packaged.replace(literal, "source: {path: id}"), "reloaded ")
            assert line.rstrip().endswith("serve.yaml: mappings[0] shopify-order: changed"), line
            serve.wait_until(lambda: applied() == 1, timeout=30, what="the new mapping in use")
            post(client, 7_100_002)
            serve.wait_until(
                lambda: any("dead letter shopify-order.order" in line for line in serve.errors),
                timeout=30,
                what="the second order's dead letter",
            )
            assert any("shipping_info.source" in line and "not of type 'string'" in line
                       for line in serve.errors), serve.errors[-5:]  # fmt: skip

            # 2. A mapping file that does not compile: refused, located in it; the running mapping stays.
            line = reload(packaged.replace(literal, 'source: {path: "id["}'), "reload refused; ")
            at = packaged[: packaged.index(literal)].count("\n") + 1  # the broken expression's line
            assert re.search(rf"stays: shopify_order\.yaml:{at}:\d+: error: JMESPath syntax error", line), (
                line
            )
            assert applied() == 1

            # 3. The fix: the next event and the replayed dead letter are both mapped with it.
            line = reload(packaged.replace(literal, "source: {literal: Shopify POS}"), "reloaded ")
            assert line.rstrip().endswith("serve.yaml: mappings[0] shopify-order: changed"), line
            serve.wait_until(lambda: applied() == 2, timeout=30, what="the fixed mapping in use")
            post(client, 7_100_003)
            serve.wait_until(lambda: "7100003" in delivered(), timeout=30, what="the third order")
            replay = subprocess.run(
                [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", "replay",
                 str(serve.config), "--no-progress"],
                capture_output=True, text=True, env=serve.env, cwd=tmp_path, timeout=120, check=False,
            )  # fmt: skip
            assert replay.returncode == 0, replay.stdout + replay.stderr
            assert delivered() == {"7100001": "Shopify", "7100002": "Shopify POS", "7100003": "Shopify POS"}
            assert len(source_sandbox.requests(endpoint="fenix.orders")) == 3  # each once
        # The problems are in the log, and no line per delivery (that is -v's).
        assert not [line for line in serve.errors if "delivered shopify-order.order" in line], serve.errors
        assert serve.terminate() == 0
    finally:
        serve.kill()


def test_a_reload_applies_connections_and_delivery_and_keeps_what_it_cannot_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mappings, events, connections and delivery settings are applied (in a service not serving yet, to the
    runtime at once). A connection that did not change keeps its auth object (its session); one added by the
    same edit as a mapping that needs it is there for it; the connection enrichment fetches over is applied
    too (its next GETs take it); and a connection gone from the file is refused, located."""
    _serve_fixtures_in(tmp_path, monkeypatch)
    config = tmp_path / "serve.yaml"
    service = Service(Runtime.from_config(config, concurrency=3))  # as `shipmap serve --concurrency 3`
    runtime = service.runtime
    started, fenix_auth, bc_auth = runtime.mapper, runtime.auths["fenix"], runtime.auths["bc_store"]
    text = config.read_text()

    config.write_text(
        text.replace("events:\n  topic: topic\n", "events:\n  topic: topic\n  routing: first\n")
    )
    reloaded = asyncio.run(service.reload())
    assert reloaded.changed == ("events",) and reloaded.not_applied == ()
    assert runtime.mapper is not started and runtime.config.events.routing == "first"
    assert runtime.auths["fenix"] is fenix_auth  # unchanged: the same session goes on

    added = (
        text.replace(
            "  bc_store:\n",
            "  fenix2:\n    api: fenix\n    base_url: http://127.0.0.1:9/v2\n    auth: {scheme: none}\n  bc_store:\n",
        )
        .replace(
            "  - mapping: shopify/order\n    topic: orders/create\n",
            "  - mapping: shopify/order\n    topic: orders/create\n    targets: {order: {connection: fenix2}}\n",
        )
        .replace(  # two connections of api fenix now: the other mapping names its own
            '    body: "@"\n', '    body: "@"\n    targets: {order: {connection: fenix}}\n'
        )
        .replace("max_attempts: 4,", "max_attempts: 6,")
        .replace("header: X-Auth-Token", "header: X-Auth-Token-2")  # enrichment's connection
    )
    config.write_text(added)
    reloaded = asyncio.run(service.reload())
    assert reloaded.changed == (
        "events",  # routing: back to its default
        "mappings[0] shopify-order: changed",
        "mappings[1] bigcommerce-order: changed",
        "connections.fenix2: added",
        "connections.bc_store: auth.header",
        "delivery: retry",
    )
    assert reloaded.not_applied == ()
    assert runtime.config.delivery.retry.max_attempts == 6
    assert runtime.config.delivery.concurrency == 3  # the command line's outranks the file's, as at start
    assert runtime.connections["fenix2"].base_url == "http://127.0.0.1:9/v2" and "fenix2" in runtime.auths
    assert runtime.auths["fenix"] is fenix_auth
    # Enrichment's connection: its new header, with a new auth object, for the enricher's next GETs.
    assert runtime.connections["bc_store"].auth.header == "X-Auth-Token-2"  # type: ignore[union-attr]
    assert runtime.auths["bc_store"] is not bc_auth
    assert [route.targets["order"].connection.name for route in runtime.routes[:1]] == ["fenix2"]

    # Fenix moves: a new auth object (a new login), and its breaker, which counted the old endpoint's
    # failures, closes (its count of openings stays).
    breaker = runtime.breaker_store.breaker("fenix")
    breaker.phase, breaker.failures, breaker.opened = "open", 5, 1
    moved = added.replace(
        "    base_url: ${SANDBOX_URL}\n    auth:\n      scheme: fenix_session",
        "    base_url: ${SANDBOX_URL}/moved\n    auth:\n      scheme: fenix_session",
    )
    assert moved != added
    config.write_text(moved)
    assert asyncio.run(service.reload()).changed == ("connections.fenix: base_url",)
    assert runtime.connections["fenix"].base_url == "http://127.0.0.1:9/moved"
    assert runtime.auths["fenix"] is not fenix_auth
    assert (breaker.phase, breaker.failures, breaker.opened) == ("closed", 0, 1)

    config.write_text(
        moved.replace("  fenix2:\n    api: fenix\n", "  fenix3:\n    api: fenix\n").replace(
            "{connection: fenix2}", "{connection: fenix3}"
        )
    )
    with pytest.raises(ConfigError) as refused:
        asyncio.run(service.reload())
    assert re.search(
        r"serve\.yaml:\d+:\d+: error: connection 'fenix2' is gone from the file", str(refused.value)
    )
    assert "restart the service to remove it" in str(refused.value)
    assert "fenix2" in runtime.connections and runtime.config.delivery.retry.max_attempts == 6  # they stay


def test_a_reload_applies_the_intake_deadlines_and_names_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sources.S.intake_deadline`` is a source key: a reload applies it (the next request's deadline) and
    names it, as it does a rate limit; serve's own, ``serve.intake_deadline`` and ``intake_max_waiting``, too
    (read at each request), while the other serve keys still wait for a restart."""
    _serve_fixtures_in(tmp_path, monkeypatch)
    config = tmp_path / "serve.yaml"
    text = config.read_text()
    service = Service(Runtime.from_config(config))
    assert service.settings.sources["woo"].intake_deadline is None  # serve's, 3s

    woo = "    secret: ${WOO_SECRET}\n"
    config.write_text(
        text.replace(woo, f"{woo}    intake_deadline: 50s\n").replace(
            "  drain_timeout: 30s\n", "  drain_timeout: 20s\n  intake_deadline: 2s\n  intake_max_waiting: 8\n"
        )
    )
    reloaded = asyncio.run(service.reload())
    assert reloaded == Reloaded(
        changed=("woo: intake_deadline", "serve: intake_deadline, intake_max_waiting"),
        not_applied=("serve.drain_timeout",),
    )
    assert service.settings.sources["woo"].intake_deadline == 50.0
    assert (service.settings.intake_deadline, service.settings.intake_max_waiting) == (2.0, 8)
    assert service.settings.drain_timeout == 30.0  # as started, until a restart


def test_a_reload_names_the_serve_keys_it_does_not_apply_and_refuses_keep_bodies_past_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve.dedup_window`` is the inbox's, set at start: a reload names it for a restart and the service
    goes on with the window it started with; a ``keep_bodies`` longer than the window is refused, located."""
    _serve_fixtures_in(tmp_path, monkeypatch)
    config = tmp_path / "serve.yaml"
    text = config.read_text()
    config.write_text(text.replace("  drain_timeout: 30s\n", "  drain_timeout: 30s\n  dedup_window: 2d\n"))
    service = Service(Runtime.from_config(config))
    assert service.settings.dedup_window == 2 * 86400

    config.write_text(text.replace("  drain_timeout: 30s\n", "  drain_timeout: 20s\n  dedup_window: 1d\n"))
    reloaded = asyncio.run(service.reload())
    assert reloaded == Reloaded(changed=(), not_applied=("serve.dedup_window", "serve.drain_timeout"))
    assert service.settings.dedup_window == 2 * 86400  # as started, until a restart

    config.write_text(text.replace("  drain_timeout: 30s\n", "  dedup_window: 1d\n  keep_bodies: 2d\n"))
    with pytest.raises(ConfigError) as refused:
        asyncio.run(service.reload())
    line = config.read_text().splitlines().index("  keep_bodies: 2d") + 1
    assert str(refused.value).startswith(
        f"{config}:{line}:16: error: serve.keep_bodies: must be at most dedup_window (1d): the inbox forgets a"
        " webhook, its id and its body, that long after it arrived"
    ), str(refused.value)


def test_a_reload_moves_an_endpoint_and_the_deliveries_waiting_for_it_follow(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """Fenix moved: the service runs with a base_url where nothing answers, so an order waits, pending, behind
    the open breaker (for up to ten minutes of outage_wait). The fixed base_url, applied by ``kill -HUP``,
    takes that order along at once (it stops waiting, its URL points at the new base, its breaker starts
    closed) and the next order too: each delivered once, nothing dead."""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    working = serve.config.read_text()
    fenix = "  fenix:\n    api: fenix\n    base_url: ${SANDBOX_URL}\n"
    assert fenix in working
    working = working.replace(
        "delivery:\n",
        "delivery:\n  breaker: {failures: 2, cooldown: 50ms, cooldown_cap: 100ms, outage_wait: 10m}\n",
    )
    serve.config.write_text(working.replace(fenix, fenix.replace("${SANDBOX_URL}", "http://127.0.0.1:9")))
    serve.start()

    def post(client: httpx.Client, order_id: int) -> None:
        body = json.dumps({**json.loads(ORDER), "id": order_id}).encode()
        headers = shopify_headers(body, "orders/create", f"move{order_id}")
        assert serve.post(client, "shop", body, headers).status_code == 200

    def delivered() -> list[str]:
        return sorted(str(r.order_id) for r in source_sandbox.requests(endpoint="fenix.orders"))

    try:
        with httpx.Client(timeout=10) as client:
            post(client, 7_200_001)
            serve.wait_until(
                lambda: any("connection fenix: circuit breaker open" in line for line in serve.errors),
                timeout=30,
                what="the order waiting behind fenix's open breaker",
            )
            serve.config.write_text(working)
            assert serve.process is not None
            serve.process.send_signal(signal.SIGHUP)
            serve.wait_until(lambda: delivered() == ["7200001"], timeout=30, what="the waiting order")
            assert any("reloaded " in line and line.rstrip().endswith("connections.fenix: base_url")
                       for line in serve.errors), serve.errors[-5:]  # fmt: skip
            assert any("connections.fenix: base_url changed: 1 pending delivery journaled for the old one go to"
                       " the new one" in line for line in serve.errors), serve.errors[-5:]  # fmt: skip
            assert any("connection fenix moved by a reload while its circuit breaker was open" in line
                       for line in serve.errors), serve.errors[-5:]  # fmt: skip
            post(client, 7_200_002)
            serve.wait_until(lambda: delivered() == ["7200001", "7200002"], timeout=30, what="the next order")
        assert serve.terminate() == 0
    finally:
        serve.kill()
    assert not [line for line in serve.errors if "dead letter" in line], serve.errors
    # The outage the move ended is over at stop: the summary does not call Fenix down.
    summary = "".join(serve.output)
    assert "connection fenix was down meanwhile; its circuit breaker has closed since\n" in summary, summary
    assert "is down" not in summary and "left pending" not in summary


FENIX_SESSION = "      store_name: demo-store\n"  # the last line of the fixture's fenix_session auth


def test_a_reload_that_only_writes_refresh_margin_retimes_the_session_it_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writing ``refresh_margin: 5m`` where the file left it out is a change even though 5m is its default:
    left out, it adapts to a short token (half of an 8m one); written, it is used as written. The reload keeps
    the connection's session (no new login, its breaker as it was) and gives it the new margin. A change
    that is not the auth's (max_rate) keeps the session as it is; new credentials make a new one."""
    _serve_fixtures_in(tmp_path, monkeypatch)
    config = tmp_path / "serve.yaml"
    text = config.read_text()
    assert FENIX_SESSION in text
    left_out = text.replace(FENIX_SESSION, FENIX_SESSION + "      token_ttl: 8m\n")
    config.write_text(left_out)
    service = Service(Runtime.from_config(config))
    runtime = service.runtime
    session = runtime.auths["fenix"]
    assert session.refresh_margin == 240.0  # type: ignore[attr-defined]  # adapted: half the token's life
    breaker = runtime.breaker_store.breaker("fenix")
    breaker.phase, breaker.failures, breaker.opened = "open", 5, 1

    config.write_text(left_out.replace("token_ttl: 8m\n", "token_ttl: 8m\n      refresh_margin: 5m\n"))
    assert asyncio.run(service.reload()).changed == ("connections.fenix: auth.refresh_margin",)
    assert runtime.auths["fenix"] is session and session.refresh_margin == 300.0  # type: ignore[attr-defined]
    # When to log in again says nothing about the endpoint: what the breaker saw stands.
    assert (breaker.phase, breaker.failures, breaker.opened) == ("open", 5, 1)

    config.write_text(left_out)  # left out again: adapting again
    assert asyncio.run(service.reload()).changed == ("connections.fenix: auth.refresh_margin",)
    assert runtime.auths["fenix"] is session and session.refresh_margin == 240.0  # type: ignore[attr-defined]

    config.write_text(
        left_out.replace("  fenix:\n    api: fenix\n", "  fenix:\n    api: fenix\n    max_rate: 50\n")
    )
    assert asyncio.run(service.reload()).changed == ("connections.fenix: max_rate",)
    assert runtime.auths["fenix"] is session  # nothing about the auth changed: no new login
    assert breaker.phase == "open"

    config.write_text(left_out.replace("store_name: demo-store", "store_name: other-store"))
    assert asyncio.run(service.reload()).changed == ("connections.fenix: auth.store_name, max_rate",)
    assert runtime.auths["fenix"] is not session  # other credentials: a new session, and the breaker closes
    assert (breaker.phase, breaker.failures) == ("closed", 0)


def test_a_reload_to_a_shorter_token_than_the_old_margin_makes_a_new_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a 4h token renewed 1h early to a 30m token, its margin left out: the reload asked whether only the
    margin changed by building the new settings with the old margin (1h on a 30m token), which broke their
    pair and refused the reload with ConfigError. The token's life changed too: a new session, adapting."""
    _serve_fixtures_in(tmp_path, monkeypatch)
    config = tmp_path / "serve.yaml"
    text = config.read_text()
    assert FENIX_SESSION in text
    config.write_text(
        text.replace(FENIX_SESSION, FENIX_SESSION + "      token_ttl: 4h\n      refresh_margin: 1h\n")
    )
    service = Service(Runtime.from_config(config))
    session = service.runtime.auths["fenix"]
    assert session.refresh_margin == 3600.0  # type: ignore[attr-defined]
    config.write_text(text.replace(FENIX_SESSION, FENIX_SESSION + "      token_ttl: 30m\n"))
    assert asyncio.run(service.reload()).changed == (
        "connections.fenix: auth.token_ttl, auth.refresh_margin",
    )
    renewed = service.runtime.auths["fenix"]
    assert renewed is not session and renewed.refresh_margin == 300.0  # type: ignore[attr-defined]


def test_the_reload_log_names_the_auth_keys_that_changed_never_their_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``connections.fenix: auth`` said that something of the auth changed, not what. The log line now names
    the keys (a rotated password and a username), and never a value: neither the new nor the old secret."""
    _serve_fixtures_in(tmp_path, monkeypatch)
    config = tmp_path / "serve.yaml"
    service = Service(Runtime.from_config(config))
    rotated = "rotated-fenix-pass-7f3a"
    monkeypatch.setenv("FENIX_PASSWORD", rotated)
    monkeypatch.setenv("FENIX_USERNAME", "ops-user-2")
    log = logging.getLogger("shipmap.test.reload")
    with caplog.at_level(logging.INFO, logger=log.name):
        asyncio.run(log_reload(service.reload, str(config), log))
    [line] = [record.getMessage() for record in caplog.records if record.name == log.name]
    assert line == f"reloaded {config}: connections.fenix: auth.username, auth.password", line
    assert all(secret not in caplog.text for secret in (rotated, "demo-pass", "ops-user-2", "demo-user"))


def test_a_sighup_that_writes_refresh_margin_renews_the_token_when_the_new_margin_says(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """A live ``shipmap serve`` with 301 s Fenix tokens renews them 150.5 s before they run out while the file
    leaves refresh_margin out (the default, 5m, adapts to at most half the token's life). ``kill -HUP`` after
    the file writes ``refresh_margin: 5m``: no login at the reload, and the next order, a second or more into
    the token's life, logs in again first, as 5m written says. (Before, the settings compared equal, the
    reload applied nothing, and the order went with the old token.)"""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    text = serve.config.read_text()
    assert FENIX_SESSION in text
    left_out = text.replace(FENIX_SESSION, FENIX_SESSION + "      token_ttl: 301s\n")
    serve.config.write_text(left_out)
    serve.start()

    def post(client: httpx.Client, order_id: int) -> None:
        body = json.dumps({**json.loads(ORDER), "id": order_id}).encode()
        headers = shopify_headers(body, "orders/create", f"margin{order_id}")
        assert serve.post(client, "shop", body, headers).status_code == 200

    def delivered() -> list[str]:
        return sorted(str(r.order_id) for r in source_sandbox.requests(endpoint="fenix.orders"))

    def logins() -> int:
        return len(source_sandbox.requests(endpoint="fenix.login"))

    try:
        with httpx.Client(timeout=10) as client:
            post(client, 7_300_001)
            serve.wait_until(lambda: delivered() == ["7300001"], timeout=30, what="the first order")
            token_from = time.monotonic()  # the token is at least this old from here on
            assert logins() == 1
            serve.config.write_text(
                left_out.replace("token_ttl: 301s\n", "token_ttl: 301s\n      refresh_margin: 5m\n")
            )
            assert serve.process is not None
            serve.process.send_signal(signal.SIGHUP)
            serve.wait_until(
                lambda: any("reloaded " in line for line in serve.errors), timeout=30, what="the reload"
            )
            [reloaded] = [line for line in serve.errors if "reloaded " in line]
            assert reloaded.rstrip().endswith("serve.yaml: connections.fenix: auth.refresh_margin"), reloaded
            assert logins() == 1  # the reload itself logs nobody in again
            threading.Event().wait(max(0.0, token_from + 1.2 - time.monotonic()))  # past 301 s - 5m
            age = time.monotonic() - token_from
            post(client, 7_300_002)
            serve.wait_until(lambda: len(delivered()) == 2, timeout=30, what="the second order")
            # Well inside the old, adapted 150.5 s margin: only the new margin renews the token here.
            assert age < 140.0, f"the second order came {age:.1f} s into the token's life: too late to tell"
            assert logins() == 2
        assert serve.terminate() == 0
    finally:
        serve.kill()
    *_, login, second = source_sandbox.requests()  # logged in again, then sent
    assert (login.endpoint, second.endpoint, second.order_id) == ("fenix.login", "fenix.orders", "7300002")


def test_a_sighup_that_writes_the_auth_keys_at_their_defaults_keeps_the_session(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """``kill -HUP`` after the file writes the Fenix session's keys at what they run with left out
    (``login_path: /login``, ``token_ttl: 4h``, ``refresh_margin: 5m``): nothing changed, so the session goes
    on and the next order goes without a login. (Before, the settings compared as written: the reload made a
    new session, and the next order logged in again.)"""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    text = serve.config.read_text()
    assert FENIX_SESSION in text
    serve.start()

    def post(client: httpx.Client, order_id: int) -> None:
        body = json.dumps({**json.loads(ORDER), "id": order_id}).encode()
        headers = shopify_headers(body, "orders/create", f"defaults{order_id}")
        assert serve.post(client, "shop", body, headers).status_code == 200

    def delivered() -> list[str]:
        return sorted(str(r.order_id) for r in source_sandbox.requests(endpoint="fenix.orders"))

    def logins() -> int:
        return len(source_sandbox.requests(endpoint="fenix.login"))

    try:
        with httpx.Client(timeout=10) as client:
            post(client, 7_400_001)
            serve.wait_until(lambda: delivered() == ["7400001"], timeout=30, what="the first order")
            assert logins() == 1
            written = "      login_path: /login\n      token_ttl: 4h\n      refresh_margin: 5m\n"
            serve.config.write_text(text.replace(FENIX_SESSION, FENIX_SESSION + written))
            assert serve.process is not None
            serve.process.send_signal(signal.SIGHUP)
            serve.wait_until(
                lambda: any("reloaded " in line for line in serve.errors), timeout=30, what="the reload"
            )
            [reloaded] = [line for line in serve.errors if "reloaded " in line]
            assert reloaded.rstrip().endswith("serve.yaml: no change it applies"), reloaded
            post(client, 7_400_002)
            serve.wait_until(lambda: len(delivered()) == 2, timeout=30, what="the second order")
            assert logins() == 1  # the session went on: no login for the second order
        assert serve.terminate() == 0
    finally:
        serve.kill()


def test_a_reload_that_writes_delivery_settings_at_their_defaults_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timeout's phases, a retry's backoff_base and a breaker's cooldown written at what they run with left
    out: the reload finds no change (no line, no new mapper, the session kept)."""
    _serve_fixtures_in(tmp_path, monkeypatch)
    config = tmp_path / "serve.yaml"
    text = config.read_text()
    assert "  timeout: 10s\n" in text and "backoff_base: 50ms, " in text
    left_out = text.replace("  timeout: 10s\n", "  timeout: {total: 60s}\n").replace(
        "backoff_base: 50ms, ", ""
    )
    config.write_text(left_out)
    service = Service(Runtime.from_config(config))
    session, mapper = service.runtime.auths["fenix"], service.runtime.mapper
    config.write_text(
        left_out.replace(
            "  timeout: {total: 60s}\n",
            "  timeout: {connect: 5s, read: 30s, write: 30s, pool: 30s, total: 60s}\n"
            "  breaker: {cooldown: 1s}\n",
        ).replace("retry: {", "retry: {backoff_base: 500ms, ")
    )
    assert asyncio.run(service.reload()) == Reloaded((), ())
    assert service.runtime.auths["fenix"] is session and service.runtime.mapper is mapper
