"""A real HTTP client against a live ``shipmap serve``: verification, durable acceptance, refusals, delivery."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from shipmap.connectors import Sandbox

from .harness import (
    DRAIN_LINE,
    REAL_SHOPIFY,
    SECRETS,
    SERVE_FIXTURES,
    ServeProcess,
    retries_reach_the_breaker,
    shopify_headers,
    standard_webhooks_headers,
    with_added,
)

ORDER = (REAL_SHOPIFY / "orders_cancelled_webhook.json").read_bytes()  # byte-identical to orders/create


def test_shopify_signed_accepted_forged_refused_repeat_delivered_once(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    serve = ServeProcess(tmp_path, source_sandbox.url).start()
    try:
        with httpx.Client(timeout=10) as client:
            signed = serve.post(client, "shop", ORDER, shopify_headers(ORDER, "orders/create", "wh-1"))
            assert signed.status_code == 200, signed.text
            assert signed.json()["status"] == "accepted"
            # The same webhook id again (Shopify retrying): acknowledged, not stored or delivered twice.
            again = serve.post(client, "shop", ORDER, shopify_headers(ORDER, "orders/create", "wh-1"))
            assert (again.status_code, again.json()["status"]) == (200, "duplicate")
            # Signed with the previous secret, during a rotation: accepted too (same body, so the same delivery).
            rotated = serve.post(
                client, "shop", ORDER,
                shopify_headers(ORDER, "orders/create", "wh-2", SECRETS["SHOPIFY_PREVIOUS_SECRET"]),
            )  # fmt: skip
            assert rotated.status_code == 200
            forged = serve.post(
                client, "shop", ORDER, shopify_headers(ORDER, "orders/create", "wh-3", "not-the-secret")
            )
            assert forged.status_code == 401
            assert forged.json()["error"] == "bad_signature"
            tampered_headers = shopify_headers(ORDER, "orders/create", "wh-4")
            tampered = serve.post(
                client, "shop", ORDER.replace(b"customer", b"Customer", 1), tampered_headers
            )
            assert tampered.status_code == 401
            headers = shopify_headers(ORDER, "orders/create", "wh-5")
            del headers["X-Shopify-Hmac-Sha256"]
            unsigned = serve.post(client, "shop", ORDER, headers)
            assert (unsigned.status_code, unsigned.json()["error"]) == (401, "unsigned")
            serve.wait_until(
                lambda: len(source_sandbox.requests(endpoint="fenix.orders")) >= 1, what="delivery"
            )
            delivered = 'shipmap_deliveries_total{outcome="delivered",target="shopify-order.order"} 1.0'
            serve.wait_until(lambda: delivered in client.get(f"{serve.url}/metrics").text, what="metrics")
            metrics = client.get(f"{serve.url}/metrics").text
            serve.wait_until(
                lambda: client.get(f"{serve.url}/readyz").json()["queue_depth"] == 0, what="empty queue"
            )
            status = subprocess.run(
                [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()",
                 "status", str(serve.config), "--url", serve.url],
                capture_output=True, text=True, env=serve.env, check=True,
            )  # fmt: skip
        assert 'shipmap_webhooks_rejected_total{reason="bad_signature",source="shop"} 2.0' in metrics
        assert 'shipmap_webhooks_rejected_total{reason="unsigned",source="shop"} 1.0' in metrics
        assert 'shipmap_webhooks_accepted_total{source="shop"} 2.0' in metrics
        assert 'shipmap_webhooks_duplicate_total{source="shop"} 1.0' in metrics
        assert serve.terminate() == 0
    finally:
        serve.kill()
    assert f"service     ready at {serve.url}/readyz" in status.stdout, status.stdout
    assert "queue       0 waiting" in status.stdout
    assert "webhooks    shop/processed 2" in status.stdout  # wh-1 and wh-2; the duplicate was not stored
    assert "deliveries  delivered 1" in status.stdout
    assert "journal     keeps 30d; oldest delivered row less than a minute ago" in status.stdout
    assert "shipmap_webhook_ack_seconds_bucket" in metrics and "shipmap_queue_depth 0.0" in metrics
    # The delivery's latency is a histogram a dashboard can average (_sum / _count), not a NaN sum.
    latency = {
        (sample.name, sample.labels.get("le")): sample.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "shipmap_delivery_seconds"
        for sample in family.samples
        if sample.labels.get("target") == "shopify-order.order"
    }
    assert latency[("shipmap_delivery_seconds_count", None)] == 1.0
    within = min(float(le) for (name, le), count in latency.items() if le and count == 1.0)
    assert 0.0 < latency[("shipmap_delivery_seconds_sum", None)] <= within, latency
    orders = source_sandbox.requests(endpoint="fenix.orders")
    # wh-1 and wh-2 carry the same order document: one delivery (content keys), and nothing forged arrived.
    assert len(orders) == 1
    assert orders[0].body["id"] == str(json.loads(ORDER)["id"])


def test_refusals_have_their_status_and_reason(source_sandbox: Sandbox, tmp_path: Path) -> None:
    serve = ServeProcess(tmp_path, source_sandbox.url).start()
    try:
        with httpx.Client(timeout=10) as client:
            url = serve.url
            assert client.post(f"{url}/hooks/nope", content=b"{}").status_code == 404
            big = b'{"x": "' + b"a" * 70000 + b'"}'
            now = int(time.time())
            too_large = serve.post(client, "app", big, standard_webhooks_headers(big, "msg_big", now, "t"))
            assert (too_large.status_code, too_large.json()["error"]) == (413, "too_large")
            form = b"a=1"
            wrong_type = {
                **standard_webhooks_headers(form, "msg_form", now, "t"),
                "Content-Type": "text/plain",
            }
            typed = serve.post(client, "app", form, wrong_type)
            assert (typed.status_code, typed.json()["error"]) == (415, "unsupported_media_type")
            stale = serve.post(
                client, "app", b"{}", standard_webhooks_headers(b"{}", "msg_old", now - 3600, "t")
            )
            assert (stale.status_code, stale.json()["error"]) == (401, "stale_timestamp")
            # rate_limit: a burst of 3, then one per 100 s: the three requests above used the burst.
            limited = serve.post(client, "app", b"{}", standard_webhooks_headers(b"{}", "msg_rl", now, "t"))
            assert limited.status_code == 429
            assert limited.json()["error"] == "rate_limited"
            assert int(limited.headers["Retry-After"]) >= 1
            # WooCommerce: the unsigned ping when a webhook is created gets a 200 and is not stored.
            ping = client.post(
                f"{url}/hooks/woo", content=b"webhook_id=17",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )  # fmt: skip
            assert (ping.status_code, ping.json()["status"]) == (200, "ping")
            body = b'{"id": 5, "status": "processing"}'
            signature = base64.b64encode(
                hmac.new(SECRETS["WOO_SECRET"].encode(), body, hashlib.sha256).digest()
            )
            woo = {"Content-Type": "application/json", "X-WC-Webhook-Topic": "order.created",
                   "X-WC-Webhook-Delivery-ID": "d-1", "X-WC-Webhook-Signature": signature.decode()}  # fmt: skip
            assert serve.post(client, "woo", body, woo).json()["status"] == "accepted"
            # Signed, under the body cap, but nested past the JSON parser's depth: a 400, not a 500.
            deep = b'{"id": 6, "notes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
            deep_woo = {**woo, "X-WC-Webhook-Delivery-ID": "d-deep", "X-WC-Webhook-Signature": base64.b64encode(
                hmac.new(SECRETS["WOO_SECRET"].encode(), deep, hashlib.sha256).digest()).decode()}  # fmt: skip
            nested = serve.post(client, "woo", deep, deep_woo)
            assert (nested.status_code, nested.json()) == (
                400, {"error": "not_json", "message": "the body is not JSON: arrays or objects nested too deeply"}
            )  # fmt: skip
            # No mappings entry takes WooCommerce's topics: the warning names the source (woo#row) and topic.
            unrouted = re.compile(
                r"woo#\d+: unrouted: no mappings entry matches this event \(topic 'order\.created'\)$"
            )
            serve.wait_until(
                lambda: any(unrouted.search(line) for line in serve.errors), what="the unrouted warning"
            )
            woo["X-WC-Webhook-Signature"] = base64.b64encode(b"x" * 32).decode()
            assert serve.post(client, "woo", body, woo).status_code == 401
            # BigCommerce: the configured secret header, compared whole.
            bc = (SERVE_FIXTURES / "webhooks" / "bigcommerce_order_created_101.json").read_bytes()
            wrong = {"Content-Type": "application/json", "X-Shipmap-Secret": "bc-webhook-secret-valuX"}
            assert serve.post(client, "bc", bc, wrong).json()["error"] == "bad_secret"
            serve.wait_until(lambda: client.get(f"{url}/readyz").status_code == 200, what="ready")
            ready = client.get(f"{url}/readyz").json()
            assert ready["inbox_writable"] is True and ready["delivering"] is True
            assert ready["serve_processes"] == 1  # an SQLite inbox is this process's alone
            assert all(state == "closed" for state in ready["breakers"].values())
            assert client.get(f"{url}/healthz").json() == {"status": "ok"}
        assert serve.terminate() == 0
    finally:
        serve.kill()


def test_a_service_on_every_interface_says_so(source_sandbox: Sandbox, tmp_path: Path) -> None:
    """``host: 0.0.0.0`` (the deploy example's) listens on every interface: the start line says so, not just
    the loopback URL that reaches it from this host."""
    serve = ServeProcess(tmp_path, source_sandbox.url, host="0.0.0.0").start()
    try:
        port = serve.url.rsplit(":", 1)[1]
        assert serve.url == f"http://127.0.0.1:{port}"
        assert serve.output[0] == (
            f"shipmap serve: listening on 0.0.0.0:{port}, every interface ({serve.url}/hooks/shop,"
            f" {serve.url}/hooks/woo, {serve.url}/hooks/bc, {serve.url}/hooks/app from this host); SIGTERM drains"
            " and stops, SIGHUP reloads the config\n"
        )
        with httpx.Client(timeout=10) as client:
            accepted = serve.post(client, "shop", ORDER, shopify_headers(ORDER, "orders/create", "any-1"))
            assert accepted.json()["status"] == "accepted"
        assert serve.terminate() == 0
    finally:
        serve.kill()
    assert any(line.rstrip().endswith(f"serving on 0.0.0.0:{port}, every interface") for line in serve.errors)


def test_a_port_already_taken_is_said_as_such(tmp_path: Path) -> None:
    """A port held by another process (a service still draining, a second one started by mistake) is the
    operator's to fix: it said 'internal error: OSError at _local_server.py:26 (a bug in shipmap)', exit 70."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        serve = ServeProcess(tmp_path, "http://127.0.0.1:9", port=port)  # for its copy of the config files
        retries_reach_the_breaker(serve.config)  # stderr is read whole
        stopped = subprocess.run(
            [sys.executable, "-c", "from shipmap.connectors._cli import entry; entry()", "serve", str(serve.config),
             "--port", str(port)],
            capture_output=True, text=True, env=serve.env, cwd=tmp_path, timeout=120, check=False,
        )  # fmt: skip
    assert (stopped.returncode, stopped.stderr) == (
        1,
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use (serve.host and serve.port, or --host"
        " and --port)\n",
    )


def _read_answer(sock: socket.socket) -> bytes:
    """What the service writes until it closes the connection (each read bounded by the socket's timeout)."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def test_a_sender_that_stalls_mid_body_gets_408_and_its_connection_closed(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    """Every wait has a deadline: a sender that sent its headers and part of its body, then nothing, held a
    connection (and a file descriptor) for as long as it liked; a drain waited for it too."""
    serve = ServeProcess(tmp_path, source_sandbox.url)
    serve.config.write_text(with_added(serve.config.read_text(), DRAIN_LINE, "  body_timeout: 1s\n"))
    serve.start()
    try:
        host, port = serve.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                b"POST /hooks/app HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n" + b'{"id": 1, '
            )
            answer = _read_answer(sock)  # the service closes it: the body's framing is lost
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ")
        assert json.loads(body) == {
            "error": "body_timeout",
            "message": "the body did not arrive within 1 s (serve.body_timeout)",
        }
        with httpx.Client(timeout=10) as client:  # the next sender is served as usual
            now = int(time.time())
            sent = serve.post(client, "app", b"{}", standard_webhooks_headers(b"{}", "msg_after", now, "t"))
            assert sent.json()["status"] == "accepted"
            metrics = client.get(f"{serve.url}/metrics").text
        assert 'shipmap_webhooks_rejected_total{reason="body_timeout",source="app"} 1.0' in metrics
        assert serve.terminate() == 0
    finally:
        serve.kill()
