"""The reliability harness: many mixed events through a real ``shipmap run`` into a faulty sandbox, then a
reconciliation that proves nothing was lost and nothing unexpected got in.

    workload = build_workload(1000, seed=7)              # mixed events from the real fixtures, varied ids
    with Sandbox(faults=fault_spec()) as sandbox:        # SHIPMAP_FAULTS overrides the fault spec
        run = ShipmapRun(tmp_path, sandbox, workload)
        run.until_done()                                 # or run.with_kills(kills=3, rng=...) for kill -9
        report = reconcile(workload, sandbox, run)
    print(report.line())                                 # sent=… delivered=… dead_lettered=… duplicates=… lost=0
    report.check()                                       # AssertionError naming every problem

How an expected delivery is recognised, without trusting the runtime's own bookkeeping: the harness maps every
event itself with the engine (``load_mapping(...).transform``) and expects, per event and target, either that
exact payload at the sandbox (matched by endpoint and canonical JSON body) or a dead letter in the journal
(matched by mapping, target and the stored source document) with a reason. Then:

* delivered: the sandbox's recorder holds the expected body at least once;
* dead-lettered: not delivered, and the journal row is ``dead`` with a non-empty reason;
* lost: neither, which must never happen;
* duplicates: the sandbox's own duplicate count (a key accepted more than once). Each extra copy must be
  explained: the same body and the same idempotency key sent again because the client gave up waiting (the
  copy was a ``slow`` fault, or the runner logged a timeout for that delivery), or because the delivery was
  in flight (``pending`` in the journal) when the runner was killed; or a *different* event for the same
  id (an order, then its cancel), which downstream is an update.

Environment knobs, so a run can be repeated with a schedule the tests do not contain:

    SHIPMAP_FAULTS        a sandbox fault spec (docs/sandbox.md), e.g. "5xx=0.1,429=0.05,drop=0.02,seed=99"
    SHIPMAP_SEED          seed of the event mix and of the kill points (default: each test's own)
    SHIPMAP_SOAK_EVENTS   events of the soak runs (default 20000)
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from shipmap.connectors import Journal, Sandbox
from shipmap.engine import CompiledMapping, ShipmapError, load_mapping

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
CONFIG_TEMPLATE = FIXTURES / "reliability" / "shipmap.yaml"

# The schedule: 5% 5xx, 2% 429 with Retry-After, 1% dropped connections, 1% answers slower than the
# client's read timeout (1 s below), all tokens expired every 500 Fenix requests.
DEFAULT_FAULTS = "5xx=0.05,429=0.02,drop=0.01,slow=0.01:2.5,expire-every=500,retry-after=1,seed=7"
FAULTS_ENV = "SHIPMAP_FAULTS"
SEED_ENV = "SHIPMAP_SEED"
SOAK_EVENTS_ENV = "SHIPMAP_SOAK_EVENTS"

# Short timeouts and backoffs so a run finishes fast; the read timeout is what turns a slow answer into a retry.
DELIVERY: dict[str, Any] = {
    "concurrency": 8,
    "timeout": {"connect": "2s", "read": "1s", "write": "2s", "pool": "30s"},
    "retry": {
        "max_attempts": 5,
        "backoff_base": "20ms",
        "backoff_cap": "200ms",
        "jitter": "full",
        "retry_after_cap": "1s",
    },
}

# The credentials the sandbox and the runner share (the sandbox's demo values unless a test sets others).
DEMO_CREDENTIALS = {
    "FENIX_USERNAME": "demo-user",
    "FENIX_PASSWORD": "demo-pass",
    "FENIX_API_KEY": "demo-api-key",
    "FENIX_STORE_NAME": "demo-store",
    "DG_API_KEY": "demo-key",
    "DG_API_SECRET": "demo-secret",
}


def fault_spec(default: str = DEFAULT_FAULTS) -> str:
    """The fault spec of a run: ``SHIPMAP_FAULTS`` when set, else ``default``."""
    return os.environ.get(FAULTS_ENV, "").strip() or default


def seed(default: int) -> int:
    text = os.environ.get(SEED_ENV, "").strip()
    return int(text) if text else default


def soak_events(default: int = 20_000) -> int:
    text = os.environ.get(SOAK_EVENTS_ENV, "").strip()
    return int(text) if text else default


def shipmap_command() -> list[str]:
    """The installed ``shipmap`` script beside this interpreter (a real subprocess, as a user runs it)."""
    script = Path(sys.executable).with_name("shipmap")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from shipmap.connectors._cli import main; sys.exit(main())"]


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --- the workload -------------------------------------------------------------------------------------------

Outcome = Literal["deliver", "dead"]
Identity = tuple[str, str, str]  # (mapping name, target name or "" for the mapping stage, canonical source)


@dataclass(frozen=True, slots=True)
class Expectation:
    """One delivery the run owes: one target of one distinct event (or the mapping stage, when it fails)."""

    line: int  # 1-based line of the event in the input file
    kind: str  # what the generator made: order, cancel, fulfillment, ..., invalid-order, ...
    mapping: str
    target: str  # "" when the mapping itself is expected to fail
    source: str  # canonical JSON of the source document
    outcome: Outcome
    endpoint: str | None = None  # the sandbox endpoint it should arrive at
    body: str | None = None  # canonical JSON of the expected request body
    downstream: tuple[str, str] | None = None  # the sandbox's duplicate key, e.g. ("fenix_order_id", "42")
    reason: str | None = None  # a regular expression the dead letter's reason must match

    @property
    def identity(self) -> Identity:
        return (self.mapping, self.target, self.source)


@dataclass
class Workload:
    lines: list[str]
    expectations: list[Expectation]
    kinds: Counter[str]
    rejected_lines: list[int] = field(default_factory=list)  # lines that are not JSON
    unrouted: int = 0  # distinct events no mapping entry takes
    repeats: int = 0  # events that repeat an earlier event exactly (a webhook delivered twice)

    @property
    def events(self) -> int:
        return len(self.lines)

    def write(self, path: Path) -> Path:
        path.write_text("".join(line + "\n" for line in self.lines), encoding="utf-8")
        return path


@dataclass(frozen=True, slots=True)
class Route:
    mapping: str
    topics: frozenset[str]
    paths: Mapping[str, str]  # target -> path override
    name: str  # what the journal calls this entry's deliveries (docs/runtime.md, delivery keys)


@cache
def routes() -> tuple[Route, ...]:
    config = yaml.safe_load(CONFIG_TEMPLATE.read_text(encoding="utf-8"))
    entries = config["mappings"]
    # One mapping serving several entries keys each entry's deliveries as "name#position" (1-based).
    names = [mapping(entry["mapping"]).name for entry in entries]
    found = []
    for position, (entry, name) in enumerate(zip(entries, names, strict=True), start=1):
        topic = entry["topic"]
        topics = frozenset([topic] if isinstance(topic, str) else topic)
        paths = {target: t["path"] for target, t in (entry.get("targets") or {}).items() if "path" in t}
        shared = names.count(name) > 1
        found.append(Route(entry["mapping"], topics, paths, f"{name}#{position}" if shared else name))
    return tuple(found)


@cache
def mapping(name: str) -> CompiledMapping:
    return load_mapping(name)


@cache
def _fixture(relative: str) -> Any:
    return json.loads((FIXTURES / relative).read_text(encoding="utf-8"))


def fixture(relative: str) -> Any:
    """A fresh copy of a fixture file under tests/fixtures/ (real/ or derived/)."""
    return copy.deepcopy(_fixture(relative))


# The route the sandbox answers 400; under a heavy fault schedule every attempt may fail before it gets there.
_REFUSED = r"^HTTP 400 Bad Request$|^gave up after \d+ attempts?; last: "
_ENDPOINTS = {"fenix.fulfillment": "fenix.fulfillment", "dg.execution": "dg.execution"}


def expect(line: int, kind: str, event: Any) -> list[Expectation]:
    """What ``shipmap run`` owes for one event, worked out with the engine alone."""
    if not isinstance(event, dict):
        return []
    chosen = [r for r in routes() if event.get("topic") in r.topics]
    found: list[Expectation] = []
    for route in chosen:
        compiled = mapping(route.mapping)
        source = event.get("payload")
        text = canonical(source)
        name = route.name
        if source is None:
            found.append(Expectation(line, kind, name, "", text, "dead", reason="no source document"))
            continue
        try:
            payloads = compiled.transform(source, validate=False)
        except ShipmapError as error:
            reason = re.escape(error.message[:40])
            found.append(Expectation(line, kind, name, "", text, "dead", reason=reason))
            continue
        for target, payload in payloads.items():
            compiled_target = compiled.target(target)
            kind_name = compiled_target.kind.name
            if compiled_target.problems(payload):
                reason = rf"not a valid {re.escape(kind_name)}"
                found.append(Expectation(line, kind, name, target, text, "dead", reason=reason))
                continue
            endpoint = _ENDPOINTS.get(kind_name, "fenix.orders")
            if target in route.paths:  # the route that sends to a URL the sandbox refuses
                found.append(Expectation(line, kind, name, target, text, "dead", reason=_REFUSED))
                continue
            found.append(
                Expectation(
                    line,
                    kind,
                    name,
                    target,
                    text,
                    "deliver",
                    endpoint=endpoint,
                    body=canonical(payload),
                    downstream=_downstream(kind_name, payload),
                )
            )
    return found


def _downstream(kind: str, payload: dict[str, Any]) -> tuple[str, str]:
    if kind == "dg.execution":
        return ("dg_external_id", str(payload["external_id"]))
    if kind == "fenix.fulfillment":
        return ("fenix_fulfillment", f"{payload['order_id']}/{payload['id']}")
    return ("fenix_order_id", str(payload["id"]))


class _Ids:
    """Unique 64-bit ids (above 2**53, so a float anywhere would show) and other per-event values."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.next = 2**62 + rng.randrange(10**6)

    def id(self) -> int:
        self.next += self.rng.randrange(1, 1000)
        return self.next


def _order_rest(n: int, ids: _Ids) -> tuple[str, Any, int]:
    doc = fixture("real/shopify/order_rest_get_with_fulfillment.json")
    order = doc["order"]
    oid = ids.id()
    order.update(id=oid, name=f"#R{n}", order_number=n, email=f"shopper{n}@example.com")
    return "orders/create", doc, oid


def _order_webhook(n: int, ids: _Ids) -> tuple[str, Any, int]:
    doc = fixture("real/shopify/orders_cancelled_webhook.json")
    oid = ids.id()
    doc.update(id=oid, name=f"#W{n}", cancelled_at=None, cancel_reason=None, email=f"buyer{n}@example.com")
    doc["note"] = "gift wrap ✓ — 注文 🎁"
    return "orders/updated", doc, oid


def _cancel(n: int, oid: int) -> tuple[str, Any]:
    doc = fixture("real/shopify/orders_cancelled_webhook.json")
    doc.update(id=oid, name=f"#C{n}")
    return "orders/cancelled", doc


def _fulfillment(n: int, ids: _Ids) -> tuple[str, Any]:
    doc = fixture("real/shopify/fulfillments_create_webhook.json")
    doc.update(
        id=ids.id(), order_id=ids.id(), tracking_number=f"1Z{n:012d}", tracking_numbers=[f"1Z{n:012d}"]
    )
    return ("fulfillments/create" if n % 2 else "fulfillments/update"), doc


def _shipstation(n: int, ids: _Ids) -> tuple[str, Any]:
    doc = fixture("real/shipstation/shipments_list_ship_notify_resource.json")["shipments"][0]
    doc.update(shipmentId=ids.id(), orderId=ids.id(), trackingNumber=f"9400{n:018d}")
    return "shipstation/shipment", doc


def _aftership(n: int, ids: _Ids) -> tuple[str, Any]:
    if n % 2:
        doc = fixture("derived/aftership/tracking_with_order.json")
        tracking = doc["data"]["tracking"]
    else:
        doc = fixture("derived/aftership/webhook_exception.json")
        tracking = doc["msg"]
    tracking["id"] = f"trk{n:010d}{ids.rng.randrange(10**6):06d}"
    tracking["order_id"] = str(ids.id())
    tracking["tracking_number"] = f"{n:012d}"
    tracking["custom_fields"]["fulfillment_id"] = str(ids.id())
    return "aftership/tracking", doc


MIX = (  # (kind, weight)
    ("order", 22),
    ("order-webhook", 8),
    ("cancel", 8),
    ("fulfillment", 20),
    ("shipstation", 16),
    ("aftership", 16),
    ("repeat", 2),
    ("invalid-order", 2),
    ("mapping-fails", 2),
    ("refused-400", 2),
    ("unrouted", 2),
)


def build_workload(count: int, *, seed: int, kinds: Sequence[str] | None = None) -> Workload:
    """``count`` input lines: mostly valid events of every mapping, with a few of each hard case: invalid
    payloads, mappings that fail, a route the server refuses, unrouted topics, repeats, lines not JSON.

    ``kinds`` (names from ``MIX``, and ``not-json``) fixes the kind of each line instead of drawing it."""
    rng = random.Random(seed)
    if kinds is not None:
        count = len(kinds)
        unknown = set(kinds) - {k for k, _ in MIX} - {"not-json"}
        if unknown:
            raise ValueError(f"unknown event kinds: {sorted(unknown)}")
    ids = _Ids(rng)
    names = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    lines: list[str] = []
    expectations: list[Expectation] = []
    made: Counter[str] = Counter()
    orders: list[int] = []
    valid_lines: list[str] = []
    seen: set[Identity] = set()
    workload = Workload(lines, expectations, made)
    bad_json_at = {count // 3, (2 * count) // 3} if count >= 10 and kinds is None else set()
    for n in range(count):
        line_no = n + 1
        if n in bad_json_at or (kinds is not None and kinds[n] == "not-json"):
            lines.append('{"topic": "orders/create", "payload": {"id": 1, "name": "#broken"')
            workload.rejected_lines.append(line_no)
            made["not-json"] += 1
            continue
        kind = rng.choices(names, weights)[0] if kinds is None else kinds[n]
        if kind == "repeat" and not valid_lines:
            kind = "order"
        if kind == "repeat":
            text = rng.choice(valid_lines)
            lines.append(text)
            workload.repeats += 1
            made[kind] += 1
            continue
        event: dict[str, Any]
        if kind == "order":
            topic, doc, oid = _order_rest(n, ids)
            orders.append(oid)
            event = {"topic": topic, "payload": doc}
        elif kind == "order-webhook":
            topic, doc, oid = _order_webhook(n, ids)
            orders.append(oid)
            event = {"topic": topic, "payload": doc}
        elif kind == "cancel":
            # Half cancel an order sent earlier (downstream an update of that order), half a fresh one.
            oid = orders.pop(rng.randrange(len(orders))) if orders and rng.random() < 0.5 else ids.id()
            topic, doc = _cancel(n, oid)
            event = {"topic": topic, "payload": doc}
        elif kind == "fulfillment":
            topic, doc = _fulfillment(n, ids)
            event = {"topic": topic, "payload": doc}
        elif kind == "shipstation":
            topic, doc = _shipstation(n, ids)
            event = {"topic": topic, "payload": doc}
        elif kind == "aftership":
            topic, doc = _aftership(n, ids)
            event = {"topic": topic, "payload": doc}
        elif kind == "invalid-order":  # no shipping line: Fenix requires shipping_info
            topic, doc, _ = _order_rest(n, ids)
            doc["order"]["shipping_lines"] = []
            event = {"topic": topic, "payload": doc}
        elif kind == "mapping-fails":  # a date nobody can read
            topic, doc, _ = _order_rest(n, ids)
            doc["order"]["created_at"] = f"the {n}th of never"
            event = {"topic": topic, "payload": doc}
        elif kind == "refused-400":
            _, doc, _ = _order_rest(n, ids)
            event = {"topic": "legacy/orders", "payload": doc}
        else:  # unrouted
            event = {"topic": "customers/update", "payload": {"id": ids.id(), "n": n}}
            workload.unrouted += 1
        text = json.dumps(event, ensure_ascii=False)
        lines.append(text)
        made[kind] += 1
        owed = expect(line_no, kind, event)
        if kind != "unrouted" and not owed:
            raise AssertionError(f"the generator made an event that owes nothing: {kind}")
        for item in owed:
            if item.identity in seen:
                raise AssertionError(f"the generator made two events with one identity: {kind}")
            seen.add(item.identity)
            expectations.append(item)
        if all(item.outcome == "deliver" for item in owed) and owed:
            valid_lines.append(text)
    bodies = Counter((e.endpoint, e.body) for e in expectations if e.outcome == "deliver")
    clash = [key for key, n in bodies.items() if n > 1]
    if clash:
        raise AssertionError(f"two expected deliveries share a body: {clash[0]}")
    return workload


# --- running shipmap ----------------------------------------------------------------------------------------


def write_config(directory: Path, *, delivery: Mapping[str, Any] | None = None) -> Path:
    config = yaml.safe_load(CONFIG_TEMPLATE.read_text(encoding="utf-8"))
    config["delivery"] = copy.deepcopy(dict(delivery or DELIVERY))
    config["journal"] = {"path": "journal.db"}
    path = directory / "shipmap.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def environment(sandbox_url: str, credentials: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIPMAP_", "FENIX_", "DG_"))}
    env.update(DEMO_CREDENTIALS)
    env.update(credentials or {})
    env["SANDBOX_URL"] = sandbox_url
    env["NO_COLOR"] = "1"
    return env


@dataclass
class Kill:
    number: int
    how: str  # start-up, recovery or mid-run
    after: float  # seconds into that process's life
    accepted: int  # requests the sandbox had accepted when the kill was sent
    pending: set[Identity]  # deliveries the journal showed in flight right after the kill


class ShipmapRun:
    """``shipmap run`` as a subprocess over one workload, one journal and one sandbox; every process it starts
    is killed when it outlives its deadline or when the test fails (``close``)."""

    def __init__(
        self,
        directory: Path,
        sandbox: Sandbox,
        workload: Workload,
        *,
        delivery: Mapping[str, Any] | None = None,
        credentials: Mapping[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.directory = directory
        self.sandbox = sandbox
        self.workload = workload
        self.config = write_config(directory, delivery=delivery)
        self.input = workload.write(directory / "events.ndjson")
        self.journal: Path | str = directory / "journal.db"  # or a postgresql:// URL (many workers)
        self.stderr = directory / "run.log"
        self.env = environment(sandbox.url, credentials)
        self.extra_args = extra_args
        self.kills: list[Kill] = []
        self.processes = 0
        self.outputs: list[str] = []
        self.exit_codes: list[int] = []
        self.elapsed = 0.0
        self._process: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        command = [*shipmap_command(), "run", str(self.config), "--input", str(self.input), "--no-progress"]
        self.processes += 1
        with self.stderr.open("ab") as log:  # the child writes through its own copy of the descriptor
            log.write(f"--- process {self.processes}\n".encode())
            log.flush()
            process = subprocess.Popen(
                [*command, *self.extra_args],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
                env=self.env,
            )
        self._process = process
        return process

    def _finish(self, process: subprocess.Popen[bytes], timeout: float) -> int:
        try:
            out, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(f"shipmap run did not finish within {timeout:.0f} s") from None
        self._process = None
        self.outputs.append(out.decode("utf-8", "replace"))
        self.exit_codes.append(process.returncode)
        return process.returncode

    def until_done(self, *, timeout: float = 120.0) -> int:
        """One run from start to end; its exit code (0, or 8 when something was dead-lettered)."""
        started = time.monotonic()
        code = self._finish(self._start(), timeout)
        self.elapsed += time.monotonic() - started
        return code

    def with_kills(self, kills: int, rng: random.Random, *, timeout: float = 300.0) -> int:
        """``kill -9`` the runner ``kills`` times at seeded random points, restarting it after each, then let
        the last process finish. The first kill comes during start-up; with three or more, the one after the
        first mid-run kill comes right after its restart, while it re-sends what was in flight (recovery);
        the others when the sandbox has accepted a random share of the deliveries owed."""
        owed = sum(1 for e in self.workload.expectations if e.outcome == "deliver")
        recovery_kill = kills >= 3
        marks = sorted(rng.uniform(0.05, 0.9) for _ in range(max(kills - 1 - recovery_kill, 0)))
        plan: list[tuple[str, float]] = [("start-up", rng.uniform(0.3, 1.2))] if kills else []
        for index, mark in enumerate(marks):
            plan.append(("mid-run", mark * owed))
            if index == 0 and recovery_kill:
                plan.append(("recovery", rng.uniform(0.4, 1.0)))
        started = time.monotonic()
        deadline = started + timeout
        accepted = 0
        cursor = 0
        for number, (how, mark) in enumerate(plan, start=1):
            process = self._start()
            born = time.monotonic()
            while True:
                new = self.sandbox.requests(since=cursor)
                if new:
                    cursor = new[-1].seq
                    accepted += sum(1 for r in new if r.endpoint != "fenix.login")
                due = accepted >= mark if how == "mid-run" else time.monotonic() - born >= mark
                if due or process.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.002)
            if process.poll() is not None:  # it finished before the mark: nothing left to interrupt
                self._finish(process, 5)
                break
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=10)  # reaps it and closes its stdout pipe
            self._process = None
            self.exit_codes.append(process.returncode)
            self.kills.append(Kill(number, how, time.monotonic() - born, accepted, self.pending()))
            if time.monotonic() > deadline:
                raise AssertionError("the kill -9 run did not get through its kills in time")
        code = self._finish(self._start(), max(deadline - time.monotonic(), 30.0))
        self.elapsed += time.monotonic() - started
        return code

    def pending(self) -> set[Identity]:
        if not journal_exists(self.journal):
            return set()
        with Journal(self.journal, readonly=True) as journal:
            return {_identity(journal, entry) for entry in journal.entries("pending")}

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)

    def log(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace") if self.stderr.exists() else ""


def journal_exists(location: Path | str) -> bool:
    return isinstance(location, str) or location.exists()


def _identity(journal: Journal, entry: Any) -> Identity:
    return (entry.mapping, entry.target, canonical(journal.source(entry.source_hash)))


# --- reconciliation -----------------------------------------------------------------------------------------


@dataclass
class Report:
    name: str
    events: int
    expected: int
    delivered: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    lost: int = 0
    landed_then_dead: int = 0  # delivered per the recorder, yet dead-lettered (the answer never came back)
    dead_reasons: Counter[str] = field(default_factory=Counter)
    duplicate_causes: Counter[str] = field(default_factory=Counter)
    overtaken: int = 0  # updated keys whose last accepted request came from an older event than the newest
    overtaken_examples: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    rejected: int = 0
    unrouted: int = 0
    repeats: int = 0
    kills: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0

    def line(self) -> str:
        return (
            f"sent={self.events} delivered={self.delivered} dead_lettered={self.dead_lettered} "
            f"duplicates={self.duplicates} lost={self.lost}"
        )

    def details(self) -> str:
        causes = ", ".join(f"{k} {v}" for k, v in sorted(self.duplicate_causes.items())) or "none"
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.dead_reasons.items())) or "none"
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        return (
            f"  [{self.name}] {self.expected} deliveries owed by {self.events} input lines "
            f"({self.rejected} not JSON, {self.unrouted} unrouted, {self.repeats} repeats of an earlier event); "
            f"kills {self.kills}; {self.elapsed:.1f} s\n"
            f"  dead letters by reason: {reasons}; delivered but dead-lettered: {self.landed_then_dead}\n"
            f"  duplicates by cause: {causes}; updates whose final state is an older event's: "
            f"{self.overtaken}\n"
            f"  faults injected: {faults}"
            + "".join(f"\n  overtaken: {example}" for example in self.overtaken_examples)
        )

    def check(self) -> None:
        if self.lost or self.problems:
            shown = "\n  ".join(self.problems[:30])
            more = f"\n  … and {len(self.problems) - 30} more" if len(self.problems) > 30 else ""
            raise AssertionError(f"{self.line()}\n{self.details()}\nproblems:\n  {shown}{more}")


def _reason_class(reason: str) -> str:
    if reason.startswith("gave up after"):
        return "retries exhausted"
    if "HTTP 400" in reason:
        return "refused by the server (400)"
    if "is not a valid" in reason:
        return "invalid payload"
    if "no source document" in reason:
        return "no source document"
    if ": error: " in reason:
        return "mapping failed"
    return "other: " + reason[:60]


def reconcile(workload: Workload, sandbox: Sandbox, run: ShipmapRun, *, name: str = "run") -> Report:
    """Match what the sandbox accepted and what the journal says against what the workload owes."""
    report = Report(name, workload.events, len(workload.expectations), repeats=workload.repeats)
    report.kills = len(run.kills)
    report.elapsed = run.elapsed
    problems = report.problems
    by_identity = {e.identity: e for e in workload.expectations}
    by_body = {(e.endpoint, e.body): e for e in workload.expectations if e.outcome == "deliver"}

    # What arrived: every accepted request, so the sandbox must have kept them all.
    dropped = sandbox.stats()["dropped"]
    if dropped:
        problems.append(
            f"the sandbox let go of {dropped} requests (keep={sandbox.config.keep}): start it with keep=0"
        )
    # Its duplicates are counted from the duplicate check, so it must have remembered every key too.
    forgotten = sandbox.stats()["duplicate_keys_forgotten"]
    if forgotten:
        problems.append(
            f"the sandbox's duplicate check let go of {forgotten} keys (duplicate_keys="
            f"{sandbox.config.duplicate_keys}): start it with a larger duplicate_keys"
        )
    copies: dict[Identity, list[Any]] = {}
    records = {r.seq: r for r in sandbox.requests() if r.endpoint != "fenix.login"}
    for record in records.values():
        owed = by_body.get((record.endpoint, canonical(record.body)))
        if owed is None:
            problems.append(f"the sandbox accepted a request nobody owed: {record.endpoint} {record.path}")
            continue
        copies.setdefault(owed.identity, []).append(record)

    # What the journal says.
    rows: dict[Identity, Any] = {}
    keys: dict[Identity, str] = {}
    if not journal_exists(run.journal):
        problems.append("there is no journal")
    else:
        with Journal(run.journal, readonly=True) as journal:
            for entry in journal.entries():
                identity = _identity(journal, entry)
                if identity not in by_identity:
                    problems.append(f"journal row nobody owed: {entry.mapping}.{entry.target} {entry.state}")
                    continue
                rows[identity] = entry
                keys[identity] = entry.key
                if entry.state == "pending":
                    problems.append(f"still pending after the last run: {entry.mapping}.{entry.target}")
            rejected = {r.origin for r in journal.rejected()}
            report.rejected = len(rejected)
            report.unrouted = journal.unrouted_count()
        missing = [n for n in workload.rejected_lines if not any(o.endswith(f":{n}") for o in rejected)]
        if missing:
            problems.append(f"lines that are not JSON but were not recorded as rejected: {missing}")
        if report.unrouted != workload.unrouted:
            problems.append(f"unrouted events: journal {report.unrouted}, sent {workload.unrouted}")

    for expectation in workload.expectations:
        identity = expectation.identity
        arrived = copies.get(identity, [])
        row = rows.get(identity)
        dead = row is not None and row.state == "dead"
        where = f"line {expectation.line} ({expectation.kind}) {expectation.mapping}.{expectation.target}"
        if dead and not (row.reason or "").strip():
            problems.append(f"dead letter without a reason: {where}")
        if expectation.outcome == "dead":
            if arrived:
                problems.append(f"let in: the sandbox accepted what should have been refused: {where}")
            if dead:
                report.dead_lettered += 1
                report.dead_reasons[_reason_class(row.reason or "")] += 1
                if expectation.reason and not re.search(expectation.reason, row.reason or ""):
                    problems.append(f"dead letter for the wrong reason: {where}: {row.reason[:200]!r}")
            else:
                report.lost += 1
                problems.append(f"lost (expected a dead letter): {where}; journal: {row and row.state}")
            continue
        if arrived:
            report.delivered += 1
            if dead:
                report.landed_then_dead += 1
            elif row is None or row.state != "delivered":
                problems.append(f"delivered, but the journal says {row and row.state}: {where}")
            headers = {r.headers.get("idempotency-key") for r in arrived}
            if row is not None and headers != {row.idempotency_key}:
                problems.append(f"idempotency keys {headers} differ from the journal's: {where}")
        elif dead:
            report.dead_lettered += 1
            cause = _reason_class(row.reason or "")
            report.dead_reasons[cause] += 1
            if cause != "retries exhausted":  # the engine's payload was fine: only the faults may stop it
                problems.append(f"a valid payload was dead-lettered: {where}: {(row.reason or '')[:200]!r}")
        else:
            report.lost += 1
            problems.append(f"lost: {where}; journal: {row and row.state}")

    _explain_duplicates(report, workload, sandbox, run, copies, keys, records, by_body)
    report.faults = dict(sandbox.stats().get("faults", {}))
    return report


def _timeouts_logged(log: str) -> Counter[str]:
    """Per delivery-key prefix (12 hex digits), how many attempts the runner logged as timed out."""
    found: Counter[str] = Counter()
    for match in re.finditer(r" ([0-9a-f]{12}): attempt \d+ failed \((?:Read|Write|Pool)?Timeout", log):
        found[match.group(1)] += 1
    return found


def _explain_duplicates(
    report: Report,
    workload: Workload,
    sandbox: Sandbox,
    run: ShipmapRun,
    copies: dict[Identity, list[Any]],
    keys: dict[Identity, str],
    records: dict[int, Any],
    by_body: dict[tuple[str | None, str | None], Expectation],
) -> None:
    groups = [group for entries in sandbox.duplicates().values() for group in entries]
    report.duplicates = sum(group["count"] - 1 for group in groups)
    timeouts = _timeouts_logged(run.log())
    at_kills = Counter(identity for kill in run.kills for identity in kill.pending)
    resent_total = 0
    for identity, arrived in copies.items():
        extra = len(arrived) - 1
        if extra <= 0:
            continue
        resent_total += extra
        if len({canonical(r.body) for r in arrived}) != 1:  # cannot happen: matched by body
            report.problems.append(f"copies of one delivery with different bodies: {identity[:2]}")
        slow = sum(1 for r in arrived if r.fault == "slow")
        killed = at_kills[identity]
        timed_out = timeouts[keys.get(identity, "?")[:12]]
        explained = 0
        for cause, available in (
            ("client timeout on a slow answer", slow),
            ("in flight at kill -9", killed),
            ("client timeout", max(timed_out - slow, 0)),
        ):
            use = min(available, extra - explained)
            if use:
                report.duplicate_causes[cause] += use
                explained += use
        if explained < extra:
            owed = next(e for e in workload.expectations if e.identity == identity)
            report.problems.append(
                f"unexplained duplicate: line {owed.line} ({owed.kind}) {owed.mapping}.{owed.target} arrived "
                f"{len(arrived)} times (slow copies {slow}, pending at kills {killed}, timeouts logged "
                f"{timed_out}), seqs {[r.seq for r in arrived]}"
            )
    # Other duplicates: different events under one downstream key (an order, then its cancel).
    updates = 0
    for group in groups:
        arrived = [records[seq] for seq in sorted(group["seqs"]) if seq in records]
        owners = [by_body.get((r.endpoint, canonical(r.body))) for r in arrived]
        distinct = {id(owner) for owner in owners}
        updates += len(distinct) - 1
        known = [owner for owner in owners if owner is not None]
        if len(distinct) > 1 and known:
            # Not a guarantee (there is no ordering across events), but worth knowing: the receiver's final
            # state is the last request it accepted; is that the latest event of the input?
            newest = max(known, key=lambda owner: owner.line)
            if known[-1] is not newest:
                report.overtaken += 1
                if len(report.overtaken_examples) < 3:
                    story = ", ".join(
                        f"#{r.seq} line {o.line if o else '?'} {o.kind if o else '?'}{' (slow)' if r.fault else ''}"
                        for r, o in zip(arrived, owners, strict=True)
                    )
                    report.overtaken_examples.append(f"{group['key']}: {story}")
    if updates:
        report.duplicate_causes["a later event for the same id (an update)"] += updates
    if resent_total + updates != report.duplicates:
        report.problems.append(
            f"the sandbox counts {report.duplicates} duplicates; re-sent copies {resent_total} and "
            f"updates {updates} account for {resent_total + updates}"
        )
