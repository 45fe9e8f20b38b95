"""A replay that fails again is not a new dead letter: ``shipmap_deliveries_total{outcome="dead"}`` counts the
events that became dead letters, and what replays did is ``shipmap_replays_total``, so an alert on the rate
of dead letters stays quiet while an operator replays old ones that are still broken. A real service, the
sandbox over HTTP, a mapping broken then fixed (``kill -HUP``), ``shipmap replay`` as a user runs it."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from shipmap.connectors import EXIT_DEAD_LETTERS, EXIT_OUTAGE, Sandbox

from .harness import DRAIN_LINE, ServeProcess, outcome_counters, post_order, with_added
from .rejected_support import shipmap
from .replay_support import fix_the_mapping, serve_a_broken_mapping

TARGET = "shopify-order.order"
ZERO = {"delivered": 0.0, "dead": 0.0, "skipped": 0.0, "retried": 0.0}
# serve.yaml's targets, each mapping's own stage (where an event it fails on is dead-lettered) among them.
CONFIGURED = ["bigcommerce-order (mapping)", "bigcommerce-order.order", "shopify-order (mapping)", TARGET]


def _counters(metrics: str, family: str) -> dict[str, float]:
    return outcome_counters(metrics, family, TARGET)


def _exported(metrics: str) -> dict[str, dict[str, dict[str, float]]]:
    """``family -> target -> outcome or count -> value`` for the per-target families of a scrape (the
    histogram by its ``_count``)."""
    found: dict[str, dict[str, dict[str, float]]] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name in ("shipmap_deliveries_total", "shipmap_replays_total"):
                key = sample.labels["outcome"]
            elif sample.name == "shipmap_delivery_seconds_count":
                key = "count"
            else:
                continue
            found.setdefault(family.name, {}).setdefault(sample.labels["target"], {})[key] = sample.value
    return found


def test_every_configured_target_is_exported_at_0_from_the_start_and_a_reload_adds_without_removing(
    tmp_path: Path,
) -> None:
    """Prometheus's "avoid missing metrics": a series that appears with its first delivery starts at that
    delivery's count, a rise increase() cannot see (a first delivery that is a dead letter raised no alert).
    Before any webhook every target of the config is there at 0; a reload that adds a mapping adds its
    targets at 0, and one it removes keeps what it counted (a counter never vanishes)."""
    with Sandbox() as sandbox:
        serve = ServeProcess(tmp_path, sandbox.url)
        serve.start()
        try:
            with httpx.Client(timeout=10) as client:

                def scrape() -> dict[str, dict[str, dict[str, float]]]:
                    return _exported(client.get(f"{serve.url}/metrics").text)

                assert scrape() == {
                    "shipmap_deliveries": {label: ZERO for label in CONFIGURED},
                    "shipmap_replays": {label: ZERO for label in CONFIGURED},
                    "shipmap_delivery_seconds": {label: {"count": 0.0} for label in CONFIGURED},
                }
                post_order(serve, client, 7_300_021, "configured-1")
                serve.wait_until(
                    lambda: scrape()["shipmap_deliveries"][TARGET]["delivered"] == 1, timeout=30, what="order"
                )

                # The Shopify orders' mapping replaced by WooCommerce's: its target counted, so it stays.
                text = serve.config.read_text()
                shopify = "  - mapping: shopify/order\n    topic: orders/create\n"
                assert shopify in text
                serve.config.write_text(
                    text.replace(shopify, "  - mapping: woocommerce/order\n    topic: order.created\n")
                )
                assert serve.process is not None
                serve.process.send_signal(signal.SIGHUP)
                serve.wait_until(
                    lambda: any("reloaded " in line for line in serve.errors), timeout=30, what="the reload"
                )
                reloaded = next(line for line in serve.errors if "reloaded " in line)
                assert reloaded.rstrip().endswith("serve.yaml: mappings[0] woocommerce-order: changed"), (
                    reloaded
                )
                after = scrape()
            assert serve.terminate() == 0
        finally:
            serve.kill()
    added = ["woocommerce-order (mapping)", "woocommerce-order.order"]
    delivered = {**ZERO, "delivered": 1.0}
    assert after["shipmap_deliveries"] == {
        **{label: ZERO for label in [*CONFIGURED, *added]},
        TARGET: delivered,
    }
    assert after["shipmap_replays"] == {label: ZERO for label in [*CONFIGURED, *added]}
    assert after["shipmap_delivery_seconds"] == {
        **{label: {"count": 0.0} for label in [*CONFIGURED, *added]},
        TARGET: {"count": 1.0},
    }


def test_a_replay_that_fails_again_counts_as_a_replay_not_as_a_new_dead_letter(tmp_path: Path) -> None:
    with Sandbox() as sandbox:
        serve = serve_a_broken_mapping(tmp_path, sandbox)

        def shipmap_replay() -> subprocess.CompletedProcess[str]:
            return shipmap(tmp_path, sandbox, "replay", str(serve.config), "--no-progress")

        def post(client: httpx.Client, order_id: int) -> None:
            post_order(serve, client, order_id, f"replay-metrics-{order_id}")

        def delivered() -> list[str]:
            return sorted(str(r.order_id) for r in sandbox.requests(endpoint="fenix.orders"))

        try:
            with httpx.Client(timeout=10) as client:

                def scrape() -> tuple[dict[str, float], dict[str, float]]:
                    text = client.get(f"{serve.url}/metrics").text
                    return _counters(text, "shipmap_deliveries"), _counters(text, "shipmap_replays")

                # Before the first delivery, a dead letter: its series is there at 0, a rise increase() sees.
                assert scrape() == (ZERO, ZERO)
                post(client, 7_300_001)
                post(client, 7_300_002)
                serve.wait_until(lambda: scrape()[0].get("dead") == 2, timeout=30, what="2 dead letters")
                deliveries, replays = scrape()
                assert (deliveries["delivered"], deliveries["dead"], replays) == (0, 2, ZERO), (
                    deliveries,
                    replays,
                )

                # 1. A replay with the mapping still broken: both fail again. They are the same dead letters.
                still = shipmap_replay()
                assert still.returncode == EXIT_DEAD_LETTERS, still.stdout + still.stderr
                assert "shipmap serve is running: it replays 2 dead letters (request 1)\n" in still.stdout
                assert (
                    "replayed by shipmap serve: delivered 0, still dead 2, left pending 0, skipped 0\n"
                    in still.stdout
                ), still.stdout
                assert still.stdout.count("  still dead: ") == 2, still.stdout
                deliveries, replays = scrape()  # the service counts a replay before it answers the command
                assert (deliveries["delivered"], deliveries["dead"]) == (0, 2), deliveries
                assert (replays["delivered"], replays["dead"]) == (0, 2), replays
                assert any("replay request 1: delivered 0, still dead 2" in line for line in serve.errors)

                # 2. The fix, applied without a restart, and a replay that delivers both.
                fix_the_mapping(tmp_path)
                assert serve.process is not None
                serve.process.send_signal(signal.SIGHUP)
                serve.wait_until(
                    lambda: any("the last reload's mappings" in line for line in serve.errors),
                    timeout=30,
                    what="the fixed mapping in use",
                )
                fixed = shipmap_replay()
                assert fixed.returncode == 0, fixed.stdout + fixed.stderr
                assert (
                    "replayed by shipmap serve: delivered 2, still dead 0, left pending 0, skipped 0\n"
                    in fixed.stdout
                ), fixed.stdout
                assert delivered() == ["7300001", "7300002"]
                deliveries, replays = scrape()
                assert (deliveries["delivered"], deliveries["dead"]) == (0, 2), deliveries
                assert (replays["delivered"], replays["dead"]) == (2, 2), replays

                # 3. A new order is the service's own delivery again, and a replay with nothing left says so.
                post(client, 7_300_003)
                serve.wait_until(lambda: scrape()[0].get("delivered") == 1, timeout=30, what="the new order")
                deliveries, replays = scrape()
                assert (deliveries["dead"], replays["delivered"], replays["dead"]) == (2, 2, 2)
                nothing = shipmap_replay()
                assert (nothing.returncode, nothing.stdout.strip()) == (0, "no dead letters to replay")
            assert serve.terminate() == 0
            assert delivered() == ["7300001", "7300002", "7300003"]  # each once
        finally:
            serve.kill()
    # The stop summary: the table is the service's own deliveries, the replays are a line of their own.
    summary = "".join(serve.output)
    row = next(line for line in serve.output if line.startswith(TARGET))
    assert row.split()[1:5] == ["1", "0", "2", "0"], row  # delivered, retried, dead, skipped
    assert "replayed while serving: delivered 2, still dead 2, left pending 0, skipped 0\n" in summary, (
        summary
    )
    assert (
        "2 dead-lettered while serving; no dead letters in the journal now (replayed meanwhile)\n" in summary
    )


def test_a_replay_left_pending_by_an_outage_exits_9_through_the_service(tmp_path: Path) -> None:
    """A replay whose destination is down past ``outage_wait`` leaves its deliveries pending: the command
    exits 9, as a standalone replay does (it exited 0, as if all had been delivered), and nothing failed
    again. Then the destination is back and the service's next runs deliver it, once, and count it as their
    delivery, not the replay's (its pending row does not say that a replay made it: docs/serve.md#operations)."""
    # Four 5xx in a row: the delivery gives up after its 4 attempts (the breaker needs 5 to open): dead.
    with Sandbox(faults="schedule=500,500,500,500") as sandbox:
        serve = ServeProcess(tmp_path, sandbox.url)
        breaker = "    breaker: {failures: 5, cooldown: 200ms, outage_wait: 1s}\n"
        text = with_added(serve.config.read_text(), "  fenix:\n", breaker)
        serve.config.write_text(with_added(text, DRAIN_LINE, "  resweep: 200ms\n  resweep_cap: 1s\n"))
        serve.start()
        try:
            with httpx.Client(timeout=10) as client:

                def scrape() -> tuple[dict[str, float], dict[str, float]]:
                    text = client.get(f"{serve.url}/metrics").text
                    return _counters(text, "shipmap_deliveries"), _counters(text, "shipmap_replays")

                post_order(serve, client, 7_300_009, "replay-left-pending")
                serve.wait_until(lambda: scrape()[0].get("dead") == 1, timeout=30, what="a dead letter")
                # Fenix down: its four 5xx and the replay's first make five failures in a row, the breaker
                # opens, and the replay waits outage_wait (1 s), then leaves the delivery pending.
                sandbox.set_faults("5xx=1:503")
                replay = shipmap(tmp_path, sandbox, "replay", str(serve.config), "--no-progress")
                assert replay.returncode == EXIT_OUTAGE, replay.stdout + replay.stderr
                assert (
                    "replayed by shipmap serve: delivered 0, still dead 0, left pending 1, skipped 0\n"
                    in replay.stdout
                ), replay.stdout
                deliveries, replays = scrape()
                assert (deliveries["dead"], replays.get("dead", 0)) == (1, 0), (deliveries, replays)
                sandbox.set_faults(None)  # Fenix is back: a run after the replay sends what it left pending
                serve.wait_until(
                    lambda: len(sandbox.requests(endpoint="fenix.orders")) == 1, timeout=30, what="the order"
                )
                # Sent by one of the service's runs, not by the replay: a delivery of that run, in
                # shipmap_deliveries_total, and no replay outcome (docs/serve.md#operations says why: its
                # journal row, pending again, does not say that a replay made it so).
                serve.wait_until(lambda: scrape()[0].get("delivered") == 1, timeout=30, what="the count")
                deliveries, replays = scrape()
                assert (deliveries["delivered"], deliveries["dead"]) == (1, 1), deliveries
                assert (replays.get("delivered", 0), replays.get("dead", 0)) == (0, 0), replays
            assert serve.terminate() == 0
        finally:
            serve.kill()
    # The summary at stop says the same: the table's delivered 1 (and its dead letter), the replay left it.
    summary = "".join(serve.output)
    row = next(line for line in serve.output if line.startswith(TARGET))
    assert row.split()[1] == "1" and row.split()[3] == "1", row  # delivered, dead
    assert "replayed while serving: delivered 0, still dead 0, left pending 1, skipped 0\n" in summary, (
        summary
    )
    assert (
        "1 dead-lettered while serving; no dead letters in the journal now (replayed meanwhile)\n" in summary
    )
