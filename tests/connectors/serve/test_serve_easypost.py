"""EasyPost's webhooks into a live ``shipmap serve`` (docs/serve.md, "EasyPost"): a generic source checking
``X-Hmac-Signature: hmac-sha256-hex=…``, tracker events routed to ``easypost/tracker`` by their description, and
the mapped Digital Genius execution delivered to the sandbox."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import httpx
import pytest
from shipmap.connectors import Sandbox, load_config
from shipmap.connectors._serve._settings import serve_settings
from shipmap.engine import load_mapping

from .harness import FIXTURES, SECRETS, SERVE_FIXTURES, ServeProcess, easypost_headers, environment

CONFIG = SERVE_FIXTURES / "serve_easypost.yaml"
DELIVERED = (FIXTURES / "derived" / "easypost" / "event_delivered.json").read_bytes()
FAILURE = (FIXTURES / "derived" / "easypost" / "event_failure.json").read_bytes()
BATCH = (
    b'{"description": "batch.created", "object": "Event", "id": "evt_batch", "result": {"object": "Batch"}}'
)


def test_easypost_signed_event_is_accepted_forged_refused_and_delivered_to_dg(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    serve = ServeProcess(tmp_path, source_sandbox.url, config=CONFIG).start()
    try:
        with httpx.Client(timeout=10) as client:
            signed = serve.post(client, "easypost", DELIVERED, easypost_headers(DELIVERED))
            assert signed.status_code == 200, signed.text
            assert signed.json()["status"] == "accepted"
            forged = serve.post(client, "easypost", DELIVERED, easypost_headers(DELIVERED, "not-the-secret"))
            assert (forged.status_code, forged.json()["error"]) == (401, "bad_signature")
            tampered = serve.post(
                client,
                "easypost",
                DELIVERED.replace(b"delivered", b"returned", 1),
                easypost_headers(DELIVERED),
            )
            assert (tampered.status_code, tampered.json()["error"]) == (401, "bad_signature")
            bare_digest = easypost_headers(DELIVERED)["X-Hmac-Signature"].removeprefix("hmac-sha256-hex=")
            unprefixed = {"Content-Type": "application/json", "X-Hmac-Signature": bare_digest}
            assert serve.post(client, "easypost", DELIVERED, unprefixed).status_code == 401
            unsigned = serve.post(client, "easypost", DELIVERED, {"Content-Type": "application/json"})
            assert (unsigned.status_code, unsigned.json()["error"]) == (401, "unsigned")
            # Signed by EasyPost with a secret that is not ASCII, to the source that normalises it (NFKD).
            secret = SECRETS["EASYPOST_UNICODE_SECRET"]
            unicode_signed = serve.post(
                client, "easypost_unicode", FAILURE, easypost_headers(FAILURE, secret)
            )
            assert unicode_signed.status_code == 200, unicode_signed.text
            # An event about something else is accepted (EasyPost sends every event to the URL), and unrouted.
            batch = serve.post(client, "easypost", BATCH, easypost_headers(BATCH))
            assert batch.status_code == 200
            serve.wait_until(
                lambda: len(source_sandbox.requests(endpoint="dg.execution")) >= 2, what="DG deliveries"
            )
            serve.wait_until(
                lambda: client.get(f"{serve.url}/readyz").json()["queue_depth"] == 0, what="empty queue"
            )
            metrics = client.get(f"{serve.url}/metrics").text
        assert serve.terminate() == 0
    finally:
        serve.kill()
    assert "events 3  unrouted 1  rejected input records 0" in "".join(serve.output)  # the batch event
    assert 'shipmap_webhooks_accepted_total{source="easypost"} 2.0' in metrics
    assert 'shipmap_webhooks_rejected_total{reason="bad_signature",source="easypost"} 3.0' in metrics
    assert 'shipmap_webhooks_rejected_total{reason="unsigned",source="easypost"} 1.0' in metrics
    mapping = load_mapping("easypost/tracker")
    delivered = mapping.transform(json.loads(DELIVERED))["delivered"]
    delayed = mapping.transform(json.loads(FAILURE))["delayed"]
    executions = {
        request.body["external_id"]: request.body
        for request in source_sandbox.requests(endpoint="dg.execution")
    }
    assert executions == {delivered["external_id"]: delivered, delayed["external_id"]: delayed}
    assert delivered["external_id"] == "trk_9135862729734d96ad2f9ed0f0565a27-delivered"
    fulfillments = source_sandbox.requests(endpoint="fenix.fulfillment")
    statuses = sorted(request.body["shipment_status"] for request in fulfillments)
    assert statuses == ["DELIVERED", "DELIVERY_EXCEPTION"]


def test_a_secret_that_is_not_ascii_is_signed_in_its_nfkd_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environment("http://127.0.0.1:9").items():
        monkeypatch.setenv(name, value)
    config = tmp_path / CONFIG.name
    config.write_text(CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
    sources = serve_settings(load_config(config)).sources
    secret = SECRETS["EASYPOST_UNICODE_SECRET"]
    assert sources["easypost_unicode"].secrets == (unicodedata.normalize("NFKD", secret).encode(),)
    assert unicodedata.normalize("NFKD", secret).encode() != secret.encode()  # the option matters here
    # An ASCII secret is the same bytes either way; without the option a secret is taken as written.
    assert sources["easypost"].secrets == (SECRETS["EASYPOST_WEBHOOK_SECRET"].encode(),)
    assert sources["easypost"].secret_normalization == "none"
