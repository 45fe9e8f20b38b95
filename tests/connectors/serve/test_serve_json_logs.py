"""``shipmap serve --log-format json``: every line it writes on stderr is a JSON record, the summary at a
SIGTERM's stop one of them (its numbers as fields), so that a log shipper (Vector, Loki) parses them all. A
live serve over HTTP, the sandbox as the destination; an error's stop is ``test_serve_journal_lost``'s."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from shipmap.connectors import Sandbox

from .harness import REAL_SHOPIFY, ServeProcess, retries_reach_the_breaker, shopify_headers

ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())
ORDERS = 3


def test_a_sigterm_stop_with_json_logs_is_json_records_the_summary_one_of_them(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    serve = ServeProcess(tmp_path, sandbox.url, options=("--log-format", "json"))
    retries_reach_the_breaker(serve.config)  # no config warning: stderr is the service's alone
    serve.start()
    try:
        with httpx.Client(timeout=10) as client:
            for index in range(ORDERS):
                body = json.dumps(dict(ORDER, id=9_200_000 + index)).encode()
                headers = shopify_headers(body, "orders/create", f"json-logs-{index}")
                assert serve.post(client, "shop", body, headers).status_code == 200
        serve.wait_until(
            lambda: len(sandbox.requests(endpoint="fenix.orders")) == ORDERS, what="every order delivered"
        )
        code = serve.terminate()
    finally:
        serve.kill()
    serve.wait_until(lambda: any("summary at stop" in line for line in serve.errors), what="the summary")
    stderr = "".join(serve.errors)
    assert code == 0, stderr[-3000:]
    records = [json.loads(line) for line in stderr.splitlines()]  # every line parses
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records), stderr[-3000:]
    messages = [record["message"] for record in records]
    assert any(m.startswith("draining: intake closed; delivering what was accepted") for m in messages)
    assert not any(m.startswith("stopping on an error") for m in messages)
    summary = records[-1]  # the last line it writes
    assert (summary["level"], summary["logger"], summary["message"]) == (
        "INFO",
        "shipmap.connectors.serve",
        "summary at stop",
    ), summary
    fields = summary["summary"]
    assert (fields["exit_code"], fields["ok"], fields["events"]) == (0, True, ORDERS), fields
    assert (fields["delivered"], fields["dead"], fields["retried"], fields["skipped"]) == (ORDERS, 0, 0, 0)
    [target] = fields["targets"]
    assert (target["mapping"], target["target"], target["delivered"], target["attempts"]) == (
        "shopify-order",
        "order",
        ORDERS,
        ORDERS,
    ), target
    assert set(target["latency_seconds"]) == {"p50", "p95", "p99"}
    assert all(0 < seconds < 30 for seconds in target["latency_seconds"].values()), target
    # What the text prints beside its table: nothing down, nothing left pending, no replays, no dead letters.
    assert (fields["outages"], fields["outages_ended"], fields["parked"]) == ({}, [], 0), fields
    assert (fields["replays"], fields["dead_letters_now"]) == (None, 0), fields
    # Standard output holds the listening line alone: the summary is not printed as a table too.
    assert len(serve.output) == 1 and serve.output[0].startswith("shipmap serve: listening on "), serve.output
