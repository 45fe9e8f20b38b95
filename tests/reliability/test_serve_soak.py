"""``shipmap serve`` left running under steady traffic, with its resources watched.

A real ``shipmap serve`` process (SQLite inbox and journal) takes signed Shopify order webhooks, skinny
BigCommerce ones enriched from the sandbox's store API, and bad ones (forged, not JSON, a mapping that fails,
an order the store does not have), plus repeats of accepted webhook ids, while the sandbox injects 5xx, 429,
dropped connections and token expiry into both the receivers and the store API, and a SIGHUP reloads a
rotated secret every so often. Its RSS, open file descriptors and threads (/proc) and its /metrics are sampled
throughout. At the end every webhook is reconciled against the sandbox's recorder and the journal, and the
resources must plateau.

    .venv/bin/pytest -q -s tests/reliability/test_serve_soak.py                 # 60 s, part of make test
    .venv/bin/pytest -q -s -m soak tests/reliability/test_serve_soak.py         # make soak: 5 minutes
    SHIPMAP_SERVE_SOAK_SECONDS=900 .venv/bin/pytest -q -s -m soak tests/reliability/test_serve_soak.py

``SHIPMAP_FAULTS`` and ``SHIPMAP_SEED`` change the fault schedule and the traffic mix, as for the other runs.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import fault_spec, seed
from prometheus_client.parser import text_string_to_metric_families
from shipmap.connectors import Journal, Sandbox

sys.path.insert(0, str(Path(__file__).parents[1] / "connectors"))
from serve.harness import (
    BC_API_TOKEN,
    BC_HEADERS,
    REAL_SHOPIFY,
    ServeProcess,
    bc_webhook,
    on_postgres,
    shopify_headers,
    store_api,
)

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="samples /proc")

SECONDS_ENV = "SHIPMAP_SERVE_SOAK_SECONDS"
RATE_ENV = "SHIPMAP_SERVE_SOAK_RATE"
# No `slow`: the service's read timeout is 10 s, so a slow answer would be a re-send (a duplicate the
# harness explains), and this run asserts exactly once. Drops and 5xx are answered before the recorder.
SERVE_FAULTS = "5xx=0.05,429=0.02,drop=0.01,expire-every=200,retry-after=1,seed=11"
SOURCE_FAULTS = "5xx=0.04,429=0.02,drop=0.01,retry-after=1,seed=12"
SENDERS = 4
ORDER = json.loads((REAL_SHOPIFY / "orders_cancelled_webhook.json").read_text())
RUNNING = 'secret: ["${SHOPIFY_SECRET}", "${SHOPIFY_PREVIOUS_SECRET}"]'
# The traffic mix: kind -> weight.
MIX = {
    "shop": 50,
    "bc": 20,
    "bc-missing": 2,
    "poison": 5,
    "forged": 5,
    "not-json": 3,
    "repeat": 10,
}


def _seconds(default: float) -> float:
    text = os.environ.get(SECONDS_ENV, "").strip()
    return float(text) if text else default


TITLE = re.compile(r"title: \{literal: Standard[^}]*\}")


def _rate() -> float:
    text = os.environ.get(RATE_ENV, "").strip()
    return float(text) if text else 20.0


# --- what the service is sent ------------------------------------------------------------------------------


@dataclass
class Sent:
    kind: str
    order: str  # the order id the webhook carries ("" when none)
    webhook_id: str
    status: int = 0
    answer: str = ""  # the answer's status ("accepted", "duplicate") or error reason
    row: int | None = None  # the inbox row, when accepted (or a duplicate of an accepted one)
    attempts: int = 0


@dataclass
class Traffic:
    """Posts the mix from ``SENDERS`` threads at ``rate`` webhooks a second until ``ends``; a webhook answered
    503 or 429, or whose connection failed, is posted again as a platform retries it (its final answer kept)."""

    url: str
    rate: float
    ends: float
    bc_orders: list[int]
    rng: random.Random
    sent: list[Sent] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.threads = [
            threading.Thread(target=self._send, args=(random.Random(self.rng.random()),))
            for _ in range(SENDERS)
        ]

    def start(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def join(self) -> None:
        for thread in self.threads:
            thread.join(max(self.ends - time.monotonic(), 0) + 120)
            assert not thread.is_alive(), "a sender did not finish"

    def _next(self, rng: random.Random) -> tuple[str, str, str, bytes, dict[str, str]]:
        """kind, order id, webhook id, body, headers."""
        with self.lock:
            n = next(self.numbers)
            kind = rng.choices(list(MIX), weights=list(MIX.values()))[0]
            if kind == "bc" and not self.bc_orders:
                kind = "shop"
            if kind == "repeat":
                earlier = [s for s in self.sent[-500:] if s.kind == "shop" and s.answer == "accepted"]
                if not earlier:
                    kind = "shop"
                else:
                    first = rng.choice(earlier)
                    body = _shop_body(first.order, valid=True)
                    return kind, first.order, first.webhook_id, body, _shop(body, first.webhook_id)
            bc_order = self.bc_orders.pop() if kind == "bc" else 0
        webhook_id = f"soak-{kind}-{n}"
        if kind in ("shop", "poison", "forged", "not-json"):
            order = str(7_000_000_000 + n)
            body = _shop_body(order, valid=kind != "poison")
            if kind == "not-json":
                body = body[:-1]  # cut short: signed, but not JSON
            headers = _shop(body, webhook_id)
            if kind == "forged":
                headers = shopify_headers(body, "orders/create", webhook_id, secret="shpss_forged_secret")
            return kind, order, webhook_id, body, headers
        order_id = bc_order if kind == "bc" else 900_000_000 + n  # bc-missing: the store has no such order
        body = json.dumps(bc_webhook(order_id, f"soak-{order_id}")).encode()
        return kind, str(order_id), f"soak-{order_id}", body, BC_HEADERS

    def _send(self, rng: random.Random) -> None:
        interval = SENDERS / self.rate
        due = time.monotonic() + rng.uniform(0, interval)
        with httpx.Client(timeout=10) as client:
            while due < self.ends:
                time.sleep(max(due - time.monotonic(), 0))
                due += interval
                kind, order, webhook_id, body, headers = self._next(rng)
                source = "bc" if kind.startswith("bc") else "shop"
                record = Sent(kind, order, webhook_id)
                give_up = time.monotonic() + 60
                while True:
                    record.attempts += 1
                    try:
                        answer = client.post(f"{self.url}/hooks/{source}", content=body, headers=headers)
                    except httpx.HTTPError as error:
                        failure = type(error).__name__
                    else:
                        if answer.status_code not in (429, 503):
                            record.status = answer.status_code
                            found = answer.json()
                            record.answer = found.get("status") or found.get("error", "")
                            record.row = found.get("id")
                            break
                        failure = str(answer.status_code)
                    with self.lock:
                        self.retries[failure] += 1
                    if time.monotonic() > give_up:
                        record.answer = f"gave up: {failure}"
                        break
                    time.sleep(0.2)
                with self.lock:
                    self.sent.append(record)


def _shop_body(order: str, *, valid: bool) -> bytes:
    document = dict(ORDER, id=int(order), name=f"#S{order}")
    if not valid:
        document["created_at"] = f"the {order}th of never"  # the mapping cannot read it: a dead letter
    return json.dumps(document).encode()


def _shop(body: bytes, webhook_id: str) -> dict[str, str]:
    return shopify_headers(body, "orders/create", webhook_id)


# --- what the process holds ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the traffic started
    rss_kb: int
    fds: int
    threads: int
    series: int  # samples on /metrics: a label set that grows without bound would show here
    accepted: float


class Sampler:
    """Every ``every`` seconds: the process's RSS and threads (/proc/PID/status), open fds (/proc/PID/fd) and
    its /metrics, on a thread of its own."""

    def __init__(self, pid: int, url: str, every: float) -> None:
        self.pid = pid
        self.url = url
        self.every = every
        self.samples: list[Sample] = []
        self.began = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def sample(self, client: httpx.Client) -> Sample:
        status = dict(
            line.split(":", 1)
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines()
            if ":" in line
        )
        rss = int(status["VmRSS"].split()[0])  # kB
        threads = int(status["Threads"])
        fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        metrics = client.get(f"{self.url}/metrics").text
        families = list(text_string_to_metric_families(metrics))
        series = sum(len(f.samples) for f in families)
        accepted = sum(
            s.value for f in families for s in f.samples if s.name == "shipmap_webhooks_accepted_total"
        )
        return Sample(time.monotonic() - self.began, rss, fds, threads, series, accepted)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.wait(self.every):
                self.samples.append(self.sample(client))


@dataclass(frozen=True)
class Plateau:
    """The samples of the warm-up (the first third, less its first tenth of the run: start-up) against those
    of the last third."""

    warm: list[Sample]
    last: list[Sample]

    @classmethod
    def of(cls, samples: list[Sample], seconds: float) -> Plateau:
        warm = [s for s in samples if seconds * 0.1 <= s.at <= seconds / 3]
        last = [s for s in samples if s.at >= seconds * 2 / 3]
        assert len(warm) >= 3 and len(last) >= 3, f"too few samples: {len(samples)}"
        return cls(warm, last)

    def most(self, what: str, part: str) -> int:
        return max(getattr(s, what) for s in getattr(self, part))

    def median(self, what: str, part: str) -> float:
        return statistics.median(getattr(s, what) for s in getattr(self, part))


# --- the run ------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    traffic: Traffic
    sandbox: Sandbox
    serve: ServeProcess
    samples: list[Sample]
    reloads: int
    seconds: float
    metrics: str
    journal: Path | str  # the SQLite file, or the PostgreSQL URL


def _soak(
    tmp_path: Path, seconds: float, sample_every: float, reload_every: float, postgres: str | None = None
) -> Outcome:
    rate = _rate()
    rng = random.Random(seed(2026))
    bc_count = int(seconds * rate * MIX["bc"] / sum(MIX.values()) * 1.3) + 20
    bc_orders = list(range(200_000, 200_000 + bc_count))
    store_api(tmp_path / "store", range(200_000, 200_000 + bc_count))
    work = tmp_path / "work"
    work.mkdir()
    (work / "rotating.secret").write_text("shpss_rotating_0\n")
    sandbox = Sandbox(
        faults=fault_spec(SERVE_FAULTS),
        source_faults=SOURCE_FAULTS,
        source_documents=tmp_path / "store",
        source_token=BC_API_TOKEN,
        keep=0,  # reconciled request by request
    ).start()
    serve = ServeProcess(work, sandbox.url)
    text = serve.config.read_text()
    assert RUNNING in text
    if postgres is not None:
        text = on_postgres(text, postgres)
    journal = postgres or work / ".shipmap" / "journal.db"
    serve.config.write_text(
        # A second secret, rotated in its file and reloaded while the first signs the traffic.
        text.replace(
            RUNNING, 'secret: ["${SHOPIFY_SECRET}", "${file:' + str(work / "rotating.secret") + '}"]'
        )
    )
    try:
        serve.start()
        assert serve.process is not None
        sampler = Sampler(serve.process.pid, serve.url, sample_every)
        traffic = Traffic(serve.url, rate, time.monotonic() + seconds, bc_orders, rng)
        sampler.start()
        traffic.start()
        reloads = 0
        # The first reload comes early, within the warm-up, so the thread its file reading starts is counted there.
        next_reload = time.monotonic() + min(seconds * 0.05, reload_every)
        while time.monotonic() < traffic.ends:
            time.sleep(min(max(next_reload - time.monotonic(), 0), max(traffic.ends - time.monotonic(), 0)))
            if time.monotonic() >= next_reload and time.monotonic() < traffic.ends - 5:
                reloads += 1
                (work / "rotating.secret").write_text(f"shpss_rotating_{reloads}\n")
                mapping = work / "bigcommerce_order.yaml"  # a changed mapping: the shipping's title
                text, changes = TITLE.subn(f"title: {{literal: Standard {reloads}}}", mapping.read_text(), 1)
                assert changes == 1, text
                mapping.write_text(text)
                serve.process.send_signal(signal.SIGHUP)
                serve.wait_until(
                    lambda done=reloads: len(_reloaded(serve)) >= done,
                    timeout=30,
                    what=f"reload {reloads}'s log line",
                )
                next_reload += reload_every
        traffic.join()
        serve.wait_until(lambda: _settled(serve, journal), timeout=180, what="all settled")
        with httpx.Client(timeout=10) as client:
            sampler.samples.append(sampler.sample(client))  # settled: what an idle service holds
            metrics = client.get(f"{serve.url}/metrics").text
        sampler.stop()
        assert serve.terminate(timeout=90) == 0
    except BaseException:
        serve.kill()
        sandbox.stop()
        raise
    return Outcome(traffic, sandbox, serve, sampler.samples, reloads, seconds, metrics, journal)


def _reloaded(serve: ServeProcess) -> list[str]:
    return [line for line in serve.errors if "reloaded " in line or "reload refused" in line]


def _settled(serve: ServeProcess, journal_at: Path | str) -> bool:
    """Nothing pending in the inbox or the journal (one look at each)."""
    with httpx.Client(timeout=10) as client:
        metrics = client.get(f"{serve.url}/metrics").text
    depth = sum(
        s.value
        for f in text_string_to_metric_families(metrics)
        for s in f.samples
        if s.name in ("shipmap_queue_depth", "shipmap_deliveries_in_flight")
    )
    if depth:
        return False
    with Journal(journal_at, readonly=True) as journal:
        return not any(True for _ in journal.entries("pending"))


# --- reconciliation -----------------------------------------------------------------------------------------


@dataclass
class Reconciled:
    counts: Counter[str] = field(default_factory=Counter)
    dead_reasons: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


def _order_of(document: Any) -> str:
    """The order id of a journal source document: a Shopify order, or an enriched BigCommerce event."""
    if isinstance(document, dict) and isinstance(document.get("order"), dict):
        return str(document["order"].get("id"))
    return str(document.get("id")) if isinstance(document, dict) else ""


def reconcile(outcome: Outcome) -> Reconciled:
    found = Reconciled()
    problems = found.problems
    arrived: dict[str, list[Any]] = {}
    for record in outcome.sandbox.requests(endpoint="fenix.orders"):
        arrived.setdefault(str(record.body["id"]), []).append(record)
    rows: dict[str, Any] = {}
    with Journal(outcome.journal, readonly=True) as journal:
        for entry in journal.entries():
            rows[_order_of(journal.source(entry.source_hash))] = entry
        rejected = {r.origin: r.reason for r in journal.rejected()}
    owed: set[str] = set()
    for sent in outcome.traffic.sent:
        where = f"{sent.kind} {sent.webhook_id} (order {sent.order})"
        found.counts[sent.kind] += 1
        copies = arrived.get(sent.order, [])
        row = rows.get(sent.order)
        expected_answer = {
            "forged": (401, "bad_signature"),
            "not-json": (400, "not_json"),
            "repeat": (200, "duplicate"),
        }.get(sent.kind, (200, "accepted"))
        if sent.kind != "repeat" and sent.attempts > 1 and (sent.status, sent.answer) == (200, "duplicate"):
            pass  # a retry after a 503 whose commit landed all the same (serve.md, intake's deadline)
        elif (sent.status, sent.answer) != expected_answer:
            problems.append(f"answered {sent.status} {sent.answer!r}, expected {expected_answer}: {where}")
            continue
        if sent.kind in ("forged", "not-json"):
            found.counts["rejected at intake"] += 1
            if copies or row is not None:
                problems.append(f"a refused webhook got in: {where}")
            continue
        if sent.kind == "repeat":
            continue  # its first posting is reconciled as itself
        owed.add(sent.order)
        origin_reason = rejected.get(f"bc#{sent.row}", "")
        if sent.kind == "bc-missing":
            if "enrichment failed: GET" in origin_reason and "HTTP 404" in origin_reason:
                found.counts["rejected input (404)"] += 1
            elif re.match(r"enrichment failed: GET \S+ failed after \d+ attempts: ", origin_reason):
                found.counts["rejected input (enrichment)"] += (
                    1  # the store's faults used up its retries first
                )
            else:
                problems.append(f"not rejected for its 404: {where}: {origin_reason!r}")
            if copies or row is not None:
                problems.append(f"delivered an order the store does not have: {where}")
            continue
        if sent.kind == "poison":
            if copies:
                problems.append(f"a webhook whose mapping fails was delivered: {where}")
            elif row is not None and row.state == "dead" and "datetime()" in (row.reason or ""):
                found.counts["dead-lettered"] += 1
                found.dead_reasons["mapping failed"] += 1
            else:
                problems.append(f"lost (expected a dead letter): {where}: {row and (row.state, row.reason)}")
            continue
        # shop and bc: delivered exactly once, or dead-lettered / rejected with a reason the faults explain.
        keys = {r.headers.get("idempotency-key") for r in copies}
        if copies:
            if len(copies) > 1 and not (len(keys) == 1 and any(r.fault == "slow" for r in copies)):
                problems.append(f"delivered {len(copies)} times: {where}")
            if row is None or row.state != "delivered" or keys != {row.idempotency_key}:
                problems.append(f"delivered, but the journal says {row and row.state}: {where}")
            found.counts["delivered"] += 1
        elif row is not None and row.state == "dead" and (row.reason or "").startswith("gave up after"):
            found.counts["dead-lettered"] += 1
            found.dead_reasons["retries exhausted"] += 1
        elif sent.kind == "bc" and origin_reason.startswith("enrichment failed"):
            found.counts["rejected input (enrichment)"] += 1
        else:
            problems.append(
                f"lost: {where}: journal {row and (row.state, row.reason)}, rejected {origin_reason!r}"
            )
    for order, copies in arrived.items():
        if order not in owed:
            problems.append(f"the sandbox accepted an order nobody owed: {order} ({len(copies)} times)")
    return found


def _metric(metrics: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for f in text_string_to_metric_families(metrics)
        for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _check(outcome: Outcome, counts: Callable[[str], None], *, name: str, rss: bool) -> None:
    found = reconcile(outcome)
    sent = outcome.traffic.sent
    answers = Counter(s.answer for s in sent)
    plateau = Plateau.of(outcome.samples[:-1], outcome.seconds)
    first, settled = outcome.samples[0], outcome.samples[-1]
    line = (
        f"{name}: {outcome.seconds:.0f} s, webhooks={len(sent)} ({len(sent) / outcome.seconds:.1f}/s) "
        f"delivered={found.counts['delivered']} dead_lettered={found.counts['dead-lettered']} "
        f"rejected_input={found.counts['rejected input (404)'] + found.counts['rejected input (enrichment)']} "
        f"rejected_at_intake={found.counts['rejected at intake']} duplicates_answered={answers['duplicate']} "
        f"reloads={outcome.reloads} lost=0\n"
        f"  RSS MB start {first.rss_kb / 1024:.1f}, warm-up max {plateau.most('rss_kb', 'warm') / 1024:.1f}, "
        f"last third max {plateau.most('rss_kb', 'last') / 1024:.1f}, settled {settled.rss_kb / 1024:.1f}; "
        f"fds warm-up max {plateau.most('fds', 'warm')}, last third max {plateau.most('fds', 'last')}, "
        f"settled {settled.fds}; threads warm-up max {plateau.most('threads', 'warm')}, last third max "
        f"{plateau.most('threads', 'last')}, settled {settled.threads}; /metrics samples "
        f"{plateau.most('series', 'warm')} -> {settled.series}\n"
        f"  by kind: {dict(sorted(found.counts.items()))}; dead letters: {dict(found.dead_reasons)}; "
        f"sender retries: {dict(outcome.traffic.retries)}\n"
        f"  faults injected: receivers {outcome.sandbox.stats().get('faults')}, store API "
        f"{outcome.sandbox.stats()['source_api'].get('faults')}"
    )
    counts(line)
    timeline = "  timeline (s: MB, fds, threads): " + ", ".join(
        f"{s.at:.0f}: {s.rss_kb / 1024:.1f}, {s.fds}, {s.threads}" for s in outcome.samples
    )
    line += "\n" + timeline
    if found.problems:
        shown = "\n  ".join(found.problems[:30])
        raise AssertionError(f"{line}\nproblems ({len(found.problems)}):\n  {shown}")
    assert not [line for line in outcome.serve.errors if "Traceback" in line], "".join(
        outcome.serve.errors[-40:]
    )
    assert outcome.reloads >= 2
    # Each reload applied the rotated secret (not refused, not "no change").
    reloaded = _reloaded(outcome.serve)
    assert len(reloaded) == outcome.reloads and all(
        "no change it applies" not in line and "shop" in line and "bigcommerce" in line for line in reloaded
    ), reloaded
    # The sandbox's own duplicate check (a Fenix order id accepted twice): none, unless a slow answer made it.
    records = {r.seq: r for r in outcome.sandbox.requests(endpoint="fenix.orders")}
    repeated = [group for groups in outcome.sandbox.duplicates().values() for group in groups]
    assert not [g for g in repeated if not any(records[q].fault == "slow" for q in g["seqs"] if q in records)]
    # The service's own counts agree with the senders'.
    metrics = outcome.metrics
    assert _metric(metrics, "shipmap_webhooks_accepted_total") == answers["accepted"]
    assert _metric(metrics, "shipmap_webhooks_duplicate_total") == answers["duplicate"]
    assert (
        _metric(metrics, "shipmap_webhooks_rejected_total", reason="bad_signature")
        == answers["bad_signature"]
    )
    assert _metric(metrics, "shipmap_webhooks_rejected_total", reason="not_json") == answers["not_json"]
    # Plateaus: every pool is bounded and in full use during the warm-up (the connections of deliveries, 8,
    # of enrichment, 4, and the senders' 4; the two event loops' default executors, which start a thread when
    # a reload reads its files or a new connection resolves its address, up to 6 each), so after it neither
    # count may grow (slack below).
    assert plateau.most("fds", "last") <= plateau.most("fds", "warm") + FD_SLACK, line
    assert plateau.most("threads", "last") <= plateau.most("threads", "warm") + THREAD_SLACK, line
    assert settled.fds <= plateau.most("fds", "warm") + FD_SLACK, line
    if rss:
        assert plateau.most("rss_kb", "last") <= plateau.most("rss_kb", "warm") * RSS_MARGIN, line


# A connection a fault closed is opened again while the old socket may not be gone yet: a few fds. One thread
# for an executor's second worker, started the first time two of its calls overlap (rare, bounded by the pool).
FD_SLACK = 4
THREAD_SLACK = 1
# RSS may still rise a little after the warm-up: CPython keeps freed memory in its arenas and glibc in its
# heaps, so a burst (retries after a run of faults, a reload) raises the high mark once. 15 minutes rose
# 1.2-1.7% past the warm-up's most (68.9 -> 69.7 MB, 69.0 -> 70.2); 10% leaves room for that noise on a busier
# machine. A leak of 1 KB a webhook over the last two thirds of a 15-minute run (12,000 webhooks) is 12 MB,
# 17%: caught; over the default 5 minutes it is 4 MB, under the margin, which is why the long run is the one
# for small leaks.
RSS_MARGIN = 1.10


def test_serve_for_a_minute_reconciles_and_its_fds_and_threads_plateau(
    tmp_path: Path, counts: Callable[[str], None]
) -> None:
    outcome = _soak(tmp_path, seconds=min(_seconds(60.0), 60.0), sample_every=2.0, reload_every=15.0)
    try:
        _check(outcome, counts, name="serve run", rss=False)
    finally:
        outcome.sandbox.stop()


@pytest.mark.soak
@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_serve_soak(
    tmp_path: Path, counts: Callable[[str], None], store: str, request: pytest.FixtureRequest
) -> None:
    postgres = request.getfixturevalue("postgres_url") if store == "postgresql" else None
    outcome = _soak(tmp_path, seconds=_seconds(300.0), sample_every=5.0, reload_every=60.0, postgres=postgres)
    try:
        _check(outcome, counts, name=f"serve soak ({store})", rss=True)
    finally:
        outcome.sandbox.stop()
