"""What a ``shipmap serve`` process looks at while it waits for webhooks: its parked work, ``serve.resweep``
after it was parked (doubling up to ``resweep_cap``), not after the feed's idle poll."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from shipmap.connectors import Sandbox

from .harness import (
    BC_API_TOKEN,
    SERVE_FIXTURES,
    SOURCE_DOCUMENTS,
    ServeProcess,
)

BC_HEADERS = {"Content-Type": "application/json", "X-Shipmap-Secret": "bc-webhook-secret-value"}
LOOK = "looking again at parked work"


def _with(text: str, anchor: str, added: str) -> str:
    assert anchor in text, anchor
    return text.replace(anchor, anchor + added, 1)


@pytest.mark.parametrize("webhooks", [1, 2])
def test_parked_webhooks_are_looked_at_every_resweep_doubling_to_the_cap(
    tmp_path: Path, webhooks: int
) -> None:
    """The store's API down, its webhooks parked, ``resweep: 50ms`` doubling to ``resweep_cap: 200ms``, the
    breaker due for a probe at every look. Each look's probe was in flight when the feed next asked whether
    anything was parked: nothing was (the webhook parks when its GET fails), so the outage counted as over and
    the next look was planned only after the feed's one-second idle poll: one webhook came back about every
    1.1 s (4 looks in 4 s); with two, the second's GET woke the feed at once, but the wait never doubled (72
    looks in 4 s, every 50 ms). Now a row still being fetched keeps the outage on, and the next look is planned
    as soon as the webhooks park again: in a window of T seconds once the waits have doubled to the cap, at
    least T / (3 x cap) looks (a slow machine makes them late, never more than that), and at most
    T / cap + 2 (each wait is the cap by then)."""
    resweep, cap, window = 0.05, 0.2, 4.0
    with Sandbox(
        source_documents=SOURCE_DOCUMENTS, source_token=BC_API_TOKEN, source_faults="5xx=1"
    ) as sandbox:
        serve = ServeProcess(tmp_path, sandbox.url)
        # A probe due at every look: the looks' pace is resweep's, not the breaker's.
        text = _with(serve.config.read_text(), "  bc_store:\n",
                     "    breaker: {failures: 1, cooldown: 50ms, cooldown_cap: 50ms}\n")  # fmt: skip
        text = _with(text, "  drain_timeout: 30s\n", f"  resweep: {resweep}s\n  resweep_cap: {cap}s\n")
        serve.config.write_text(text)
        serve.start()
        try:
            payload = json.loads(
                (SERVE_FIXTURES / "webhooks" / "bigcommerce_order_created_100.json").read_text()
            )
            with httpx.Client(timeout=10) as client:
                for order in range(100, 100 + webhooks):
                    body = dict(payload, hash=f"resweep-{order}", data={"type": "order", "id": order})
                    answer = serve.post(client, "bc", json.dumps(body).encode(), BC_HEADERS)
                    assert answer.json()["status"] == "accepted", answer.text

            def looks() -> int:
                return sum(LOOK in line for line in list(serve.errors))

            # 50, 100, 200 ms: the waits are the cap from the fourth look on.
            serve.wait_until(lambda: looks() >= 4, timeout=30, what="four looks at the parked webhooks")
            first, started = looks(), time.monotonic()
            time.sleep(window)
            seen, elapsed = looks() - first, time.monotonic() - started
            assert serve.terminate() == 0
        finally:
            serve.kill()
    assert elapsed / (3 * cap) <= seen <= elapsed / cap + 2, (seen, elapsed)
