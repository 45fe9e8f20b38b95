"""What ``/readyz`` says during a start, read from a real ``shipmap serve`` from its first line.

``delivering`` was true as soon as the delivery thread existed, before it had built its feed: it said that
delivery had started when it had not. Readiness is a load balancer's question, "may webhooks come here?", and
intake answers it: a webhook committed while delivery is still starting waits in the inbox, as it does
during an outage, so the service is ready from its first line and says which of the two delivery is doing."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from shipmap.connectors import Sandbox

from .harness import REAL_SHOPIFY, ServeProcess, shopify_headers

ORDER = (REAL_SHOPIFY / "orders_cancelled_webhook.json").read_bytes()


def test_readyz_from_the_first_line_is_ready_and_says_whether_delivery_has_started(
    source_sandbox: Sandbox, tmp_path: Path
) -> None:
    serve = ServeProcess(tmp_path, source_sandbox.url).start()  # returns at its first line
    try:
        answers: list[tuple[int, dict[str, object]]] = []
        with httpx.Client(timeout=10) as client:
            deadline = time.monotonic() + 30
            while not answers or not answers[-1][1]["delivering"]:
                assert time.monotonic() < deadline, answers[-3:]
                response = client.get(f"{serve.url}/readyz")
                answers.append((response.status_code, response.json()))
            # A webhook taken now is delivered: intake did not wait for anything else.
            accepted = serve.post(client, "shop", ORDER, shopify_headers(ORDER, "orders/create", "wh-ready"))
            assert (accepted.status_code, accepted.json()["status"]) == (200, "accepted")
            serve.wait_until(
                lambda: len(source_sandbox.requests(endpoint="fenix.orders")) == 1, what="delivery"
            )
            after = client.get(f"{serve.url}/readyz").json()
        # Ready from the first answer on; delivery either starting or started, never both nor neither, and
        # once started it stays so.
        assert all(status == 200 and body["ready"] is True for status, body in answers), answers
        states = [(body["delivery_starting"], body["delivering"]) for _, body in answers]
        assert set(states) <= {(True, False), (False, True)}, states
        first_started = states.index((False, True))
        assert all(state == (False, True) for state in states[first_started:]), states
        assert (after["ready"], after["delivering"], after["delivery_starting"]) == (True, True, False)
        assert serve.terminate() == 0
        # Drained and stopped: the last lines say so, and nothing is owed.
        assert not any("owed at stop" in line for line in serve.errors), serve.errors
    finally:
        serve.kill()
