"""A live ``shipmap serve`` process for the tests, or a service embedded on a thread, and webhook signing as
each platform does it; the fixtures' webhooks (a Shopify order posted, a skinny BigCommerce one) and the lines
of their config that tests change; the store API and the config of the enrichment tests, and a sampler of the
GETs the store API holds."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families
from shipmap.connectors import Sandbox
from shipmap.connectors._serve import Service
from test_runtime_support import environ

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
SERVE_FIXTURES = FIXTURES / "serve"
REAL_SHOPIFY = FIXTURES / "real" / "shopify"
SOURCE_DOCUMENTS = SERVE_FIXTURES / "source_api"
WEBHOOKS = SERVE_FIXTURES / "webhooks"
# A skinny webhook of order 100 created: the store API has the rest.
BC_ORDER_CREATED = WEBHOOKS / "bigcommerce_order_created_100.json"
BC_API_TOKEN = "bc-api-token-for-tests"

SECRETS = {
    "SHOPIFY_SECRET": "shpss_test_current_secret",
    "SHOPIFY_PREVIOUS_SECRET": "shpss_test_previous_secret",
    "WOO_SECRET": "woo-test-secret",
    "BC_WEBHOOK_SECRET": "bc-webhook-secret-value",
    "BC_API_TOKEN": BC_API_TOKEN,
    "APP_SECRET": "whsec_" + base64.b64encode(b"standard-webhooks-test-key").decode(),
    "EASYPOST_WEBHOOK_SECRET": "easypost-test-webhook-secret",
    # Not ASCII: the precomposed é and the ligature ﬁ, which NFKD writes as e + U+0301 and "fi".
    "EASYPOST_UNICODE_SECRET": "caf\u00e9-\ufb01ligree-test-secret",
}


def outcome_counters(metrics: str, family: str, target: str) -> dict[str, float]:
    """``outcome -> value`` of the counter ``family`` (``shipmap_deliveries``, ``shipmap_replays``) for
    ``target``, as scraped from /metrics (a family not exposed yet reads as empty)."""
    return {
        sample.labels["outcome"]: sample.value
        for found in text_string_to_metric_families(metrics)
        if found.name == family
        for sample in found.samples
        if sample.name == f"{family}_total" and sample.labels["target"] == target
    }


def environment(sandbox_url: str) -> dict[str, str]:
    """This process's environment, the sandbox's demo credentials (as the runtime tests name them) and the
    sources' secrets: what the serve fixtures' configs read."""
    return {**os.environ, **environ(sandbox_url), **SECRETS}


def delivered_orders(sandbox: Sandbox) -> list[str]:
    """The ids of the orders Fenix has received, sorted."""
    return sorted(str(r.order_id) for r in sandbox.requests(endpoint="fenix.orders"))


def post_order(serve: ServeProcess, client: httpx.Client, order_id: int, webhook_id: str) -> None:
    """The real Shopify order as ``order_id``, posted to ``serve`` as the orders/create webhook ``webhook_id``:
    accepted."""
    order = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_bytes())
    body = json.dumps({**order, "id": order_id}).encode()
    headers = shopify_headers(body, "orders/create", webhook_id)
    assert serve.post(client, "shop", body, headers).status_code == 200


def shopify_signature(body: bytes, secret: str = SECRETS["SHOPIFY_SECRET"]) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def shopify_headers(
    body: bytes, topic: str, webhook_id: str, secret: str = SECRETS["SHOPIFY_SECRET"]
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": shopify_signature(body, secret),
        "X-Shopify-Shop-Domain": "acme-outfitters.myshopify.com",
        "X-Shopify-API-Version": "2026-04",
        "X-Shopify-Webhook-Id": webhook_id,
    }


def easypost_headers(body: bytes, secret: str = SECRETS["EASYPOST_WEBHOOK_SECRET"]) -> dict[str, str]:
    """As EasyPost signs a webhook: the hex HMAC-SHA256 of the body under the NFKD form of the secret."""
    key = unicodedata.normalize("NFKD", secret).encode("utf-8")
    digest = hmac.new(key, body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Hmac-Signature": f"hmac-sha256-hex={digest}"}


def standard_webhooks_headers(body: bytes, webhook_id: str, timestamp: int, topic: str) -> dict[str, str]:
    key = base64.b64decode(SECRETS["APP_SECRET"].removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "Content-Type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
        "x-app-topic": topic,
    }


def retries_reach_the_breaker(config: Path) -> None:
    """The fixture's retries give up before its breaker opens (4 attempts, 5 failures: four 5xx dead-letter a
    delivery, as tests need), which the config warns about on stderr; a test that reads a command's whole
    stderr gives ``config`` 5 attempts, and so nothing to warn about."""
    text = config.read_text()
    assert "{max_attempts: 4," in text, config
    config.write_text(text.replace("{max_attempts: 4,", "{max_attempts: 5,"))


def store_api(into: Path, orders: range, platform: str = "bigcommerce") -> Path:
    """The fixture store API under ``platform``, with orders past 101 as copies of 101 under their own ids."""
    shutil.copytree(SOURCE_DOCUMENTS / "bigcommerce", into / platform)
    folder = into / platform / "stores" / "abc123" / "v2" / "orders"
    for order in orders:
        if not (folder / f"{order}.json").exists():
            text = (folder / "101.json").read_text()
            (folder / f"{order}.json").write_text(
                text.replace('"id": 101', f'"id": {order}').replace("/101/", f"/{order}/")
            )
            shutil.copytree(folder / "101", folder / str(order))
    return into


BC_HEADERS = {"Content-Type": "application/json", "X-Shipmap-Secret": SECRETS["BC_WEBHOOK_SECRET"]}


def bc_webhook(order: int, webhook_id: str | None = None) -> dict[str, Any]:
    """The fixture's skinny BigCommerce webhook of ``order`` created, its hash (its webhook id) ``webhook_id``,
    the fixture's own by default."""
    body = json.loads(BC_ORDER_CREATED.read_text())
    return dict(body, hash=webhook_id or body["hash"], data={"type": "order", "id": order})


def enrich_config(
    work: Path, *, max_rate: float | None = None, platform: str = "bigcommerce", concurrency: int = 4
) -> Path:
    """The serve fixture's config: one delivery at a time (deliveries in hand-over order), the bc store API
    under ``platform``, with ``max_rate``, and ``concurrency`` bc webhooks fetched at once."""
    for item in SERVE_FIXTURES.glob("*.yaml"):
        shutil.copy(item, work / item.name)
    config = work / "serve.yaml"
    document = yaml.safe_load(config.read_text())
    document["delivery"]["concurrency"] = 1
    store = document["connections"]["bc_store"]
    store["base_url"] = store["base_url"].replace("/_source/bigcommerce/", f"/_source/{platform}/")
    if max_rate is not None:
        store["max_rate"] = max_rate
    document["sources"]["bc"]["enrich"]["concurrency"] = concurrency
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    return config


class InFlight:
    """The most GETs the store API held at once (sampled: received, less answered)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.most = 0
        self._sandbox = sandbox
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> InFlight:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            stats = self._sandbox.stats()["source_api"]
            self.most = max(self.most, stats["received"] - stats["served"])


# A line of the serve section of the fixtures' config: the serve settings a test adds go after it.
DRAIN_LINE = "  drain_timeout: 30s\n"
FIXTURE_RETRY = (  # the fixtures' delivery.retry
    "  retry: {max_attempts: 4, backoff_base: 50ms, backoff_cap: 1s, jitter: full, retry_after_cap: 2s}\n"
)
CONCURRENCY_LINE = "  concurrency: 8\n"  # the fixtures' delivery.concurrency
# What a service logs as a reload's run (or the run after a replay it was handed) starts.
NEXT_RUN = "the last reload's mappings, connections and delivery settings in use"


def with_added(text: str, anchor: str, added: str) -> str:
    """A config's ``text`` with the lines ``added`` just after the first ``anchor`` line, which must be there."""
    assert anchor in text, anchor
    return text.replace(anchor, anchor + added, 1)


def with_drain_timeout(text: str, drain: str) -> str:
    """A config's ``text`` with ``serve.drain_timeout`` ``drain`` instead of the fixtures' 30s."""
    assert DRAIN_LINE in text, text
    return text.replace(DRAIN_LINE, f"  drain_timeout: {drain}\n")


def moving_nothing(text: str) -> str:
    """A config's ``text`` with one change that moves no connection (delivery.concurrency 6): a reload of it
    ends the run in progress, and nothing else."""
    assert CONCURRENCY_LINE in text, text
    return text.replace(CONCURRENCY_LINE, "  concurrency: 6\n")


# SQLite's busy timeout on an inbox's connection (the Inbox default): how long a statement waits for a lock
# another connection holds.
SQLITE_BUSY_TIMEOUT_S = 5.0

SQLITE_JOURNAL = "journal:\n  path: .shipmap/journal.db\n"  # the journal of the configs ServeProcess writes


def on_postgres(config_text: str, url: str) -> str:
    """A serve config's text with its SQLite journal replaced by the PostgreSQL database at ``url``."""
    assert SQLITE_JOURNAL in config_text, config_text
    return config_text.replace(SQLITE_JOURNAL, f"journal:\n  url: {url}\n")


class ServeProcess:
    """``shipmap serve CONFIG`` in a subprocess; ``url`` once it listens. Copies the config into ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        sandbox_url: str,
        config: Path = SERVE_FIXTURES / "serve.yaml",
        port: int = 0,
        host: str | None = None,
        options: tuple[str, ...] = (),
    ) -> None:
        """``options``: the command line's global options, before ``serve`` (``--log-format json``)."""
        self.workdir = workdir
        self.config = workdir / config.name
        if not self.config.exists():
            for item in config.parent.glob("*.yaml"):
                shutil.copy(item, workdir / item.name)
        self.env = environment(sandbox_url)
        self.port = port
        self.host = host  # None: the config's
        self.options = options
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []
        self.errors: list[str] = []

    def start(self, timeout: float = 90.0) -> ServeProcess:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from shipmap.connectors._cli import entry; entry()",
                *self.options,
                "serve",
                str(self.config),
                "--port",
                str(self.port),
                *(["--host", self.host] if self.host is not None else []),
            ],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = threading.Event()

        def read_stdout() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                self.output.append(line)
                if line.startswith("shipmap serve: listening on "):
                    # The hooks' URLs, "(http://127.0.0.1:PORT/hooks/shop, ...", are this host's way in.
                    found = re.search(r"\((http://[^/\s]+)/hooks/", line)
                    assert found is not None, line
                    self.url = found.group(1)
                    ready.set()

        def read_stderr() -> None:
            assert self.process is not None and self.process.stderr is not None
            for line in self.process.stderr:
                self.errors.append(line)

        threading.Thread(target=read_stdout, daemon=True).start()
        threading.Thread(target=read_stderr, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError("shipmap serve did not start:\n" + "".join(self.errors))
        return self

    def post(
        self, client: httpx.Client, source: str, body: bytes, headers: Mapping[str, str]
    ) -> httpx.Response:
        return client.post(f"{self.url}/hooks/{source}", content=body, headers=dict(headers))

    def reload(self, text: str) -> float:
        """``text`` written over its config, then SIGHUP; returns once the reload's run has started, with the
        seconds that took."""
        assert self.process is not None
        self.config.write_text(text)
        self.process.send_signal(signal.SIGHUP)
        signalled = time.monotonic()
        self.wait_until(lambda: self.said(NEXT_RUN) > 0, timeout=40, what="the run after the reload")
        return time.monotonic() - signalled

    def said(self, text: str) -> int:
        """How many of the lines it wrote to stderr so far hold ``text``."""
        return sum(text in line for line in self.errors)

    def attempts(self) -> list[tuple[str, int]]:
        """(state, attempts) of each delivery to the target ``order`` in its SQLite journal."""
        with sqlite3.connect(self.workdir / ".shipmap" / "journal.db") as db:
            return list(db.execute("SELECT state, attempts FROM deliveries WHERE target = 'order'"))

    def terminate(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def wait_until(self, predicate: Any, timeout: float = 60.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; stderr:\n" + "".join(self.errors[-30:]))
            time.sleep(
                0.2
            )  # not faster: predicates walk the sandbox's records, which slows what they wait for


@contextlib.contextmanager
def embedded(service: Service, outcome: dict[str, Any]) -> Iterator[Service]:
    """``service`` served on a thread, as a program embeds it, until the block ends (then stopped); its
    summary, or what it raised, in ``outcome``."""
    ready = threading.Event()

    def serve() -> None:
        try:
            outcome["summary"] = asyncio.run(service.serve(on_ready=lambda _: ready.set()))
        except BaseException as error:  # reported by the caller's assertions
            outcome["error"] = error

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(30), outcome
    try:
        yield service
    finally:
        service.stop()
        thread.join(60)


class RetryingSender:
    """Posts each webhook (signed as Shopify signs ``orders/create``, webhook id ``{prefix}-{index}``) until it
    gets a 2xx, retrying every non-2xx and every connection error as Shopify does, from ``threads`` threads;
    records which were acknowledged. With several service URLs, webhook i goes first to URL i % n and each
    retry to the next one: a sender's retry reaching another instance behind a load balancer."""

    def __init__(self, urls: list[str], bodies: list[bytes], *, prefix: str, threads: int) -> None:
        self.urls = urls
        self.bodies = bodies
        self.prefix = prefix
        self.acked: set[int] = set()
        self.non_2xx = Counter[str]()
        self.lock = threading.Lock()
        self.deadline = time.monotonic() + 300
        self.threads = [threading.Thread(target=self._run, args=(part, threads)) for part in range(threads)]

    def start(self) -> RetryingSender:
        for thread in self.threads:
            thread.start()
        return self

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            thread.join(timeout)

    def _run(self, part: int, step: int) -> None:
        with httpx.Client(timeout=5) as client:
            for index in range(part, len(self.bodies), step):
                body = self.bodies[index]
                headers = shopify_headers(body, "orders/create", f"{self.prefix}-{index}")
                first = index % len(self.urls)
                for url in itertools.cycle(self.urls[first:] + self.urls[:first]):
                    if time.monotonic() > self.deadline:
                        return
                    try:
                        answer = client.post(f"{url}/hooks/shop", content=body, headers=headers)
                    except httpx.HTTPError as error:
                        failure = type(error).__name__
                    else:
                        if 200 <= answer.status_code < 300:
                            with self.lock:
                                self.acked.add(index)
                            break
                        failure = str(answer.status_code)
                    with self.lock:
                        self.non_2xx[failure] += 1
                    time.sleep(0.05)
