"""The recorder: accepted requests in memory (the newest ``keep``; optionally all in a JSONL file), counts of
every one, and duplicates."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from array import array
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from ._config import DEFAULT_DUPLICATE_KEYS, DEFAULT_FAULTED

log = logging.getLogger("shipmap.sandbox")

REDACTED = "***"
# Lower-case, as the server sees header names.
SECRET_HEADERS = frozenset({"authtoken", "x-api-key", "x-identity", "authorization", "password"})


def redact_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers as recorded: names lower-cased, every credential replaced by ``***``."""
    return {name.lower(): REDACTED if name.lower() in SECRET_HEADERS else value for name, value in headers}


class FaultedRequest(NamedTuple):
    """A request the sandbox failed on purpose (not recorded as accepted): answered with an injected 5xx or
    429, or its connection dropped."""

    received_at: str
    endpoint: str  # fenix.login, fenix.orders, fenix.fulfillment, dg.execution
    status: int | None  # None: a drop, the connection closed without an answer
    plan: str  # the fault plan that injected it: both, or the api's own (fenix, dg)

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One accepted request, as it arrived (secrets redacted)."""

    seq: int
    received_at: str
    api: str
    endpoint: str
    kind: str | None
    method: str
    path: str
    status: int
    headers: Mapping[str, str]
    body: Any
    region: str | None = None
    order_id: str | None = None
    fulfillment_id: str | None = None
    external_id: str | None = None
    fault: str | None = None
    fault_plan: str | None = None  # the fault plan that answered it: both, or the api's own (fenix, dg)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "received_at": self.received_at,
            "api": self.api,
            "endpoint": self.endpoint,
            "kind": self.kind,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "region": self.region,
            "order_id": self.order_id,
            "fulfillment_id": self.fulfillment_id,
            "external_id": self.external_id,
            "fault": self.fault,
            "fault_plan": self.fault_plan,
            "headers": dict(self.headers),
            "body": self.body,
        }


@dataclass(slots=True)
class _Seen:
    """One duplicate key's sightings. Machine integers in arrays, not a list and a set of objects: a key listed
    in full (100 seqs, 100 distinct bodies) holds ~2.1 KB, not the ~24 KB a list of ints and a set of hex
    digests held (tracemalloc); a key seen once ~0.6 KB."""

    count: int = 0
    seqs: array[int] = field(default_factory=lambda: array("q"))  # the first _MAX_LISTED
    bodies: array[int] = field(default_factory=lambda: array("Q"))  # the first _MAX_LISTED distinct hashes
    kinds: list[str] = field(default_factory=list)  # distinct, a handful at most


_MAX_LISTED = 100  # sequence numbers and distinct bodies listed per duplicate key; its count covers all


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _body_hash(body: Any) -> int:
    """64 bits of the body's SHA-256: two of a key's (at most 100) bodies collide with odds below 1e-15."""
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, default=str)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


class Recorder:
    """Thread-safe: the server's loop records, tests read from their own thread."""

    def __init__(
        self,
        path: Path | None = None,
        keep: int = 0,
        duplicate_keys: int = DEFAULT_DUPLICATE_KEYS,
        faulted: int = DEFAULT_FAULTED,
    ) -> None:
        """``keep``: how many accepted requests ``requests()`` holds, the newest; 0 holds all.
        ``duplicate_keys``: how many distinct keys the duplicate check remembers, the newest.
        ``faulted``: how many injected error answers and drops ``faulted_requests()`` holds, the newest."""
        self._path = path
        if path is not None:
            # Fail at start, not on the first accepted request, when the file cannot be written.
            path.open("a", encoding="utf-8").close()
        self._lock = threading.Lock()
        self._records: deque[RecordedRequest] = deque(maxlen=keep or None)
        self._dropped = 0  # the oldest records let go to stay within keep
        self._seq = 0
        self._accepted: Counter[str] = Counter()
        self._kinds: Counter[str] = Counter()
        self._rejected: defaultdict[str, Counter[str]] = defaultdict(Counter)
        # When each injected error answer went out (bounded): the times a client hit an endpoint that is down.
        self._faulted: deque[FaultedRequest] = deque(maxlen=faulted)
        self._faulted_forgotten = 0
        self._by_key: dict[str, dict[str, _Seen]] = {}
        self._duplicate_keys = duplicate_keys
        self._key_order: deque[tuple[str, str]] = deque()  # first sightings, oldest first
        self._forgotten_keys = 0
        self._clear_keys()

    @property
    def path(self) -> Path | None:
        return self._path

    def _clear_keys(self) -> None:
        self._by_key = {name: {} for name in ("dg_external_id", "fenix_order_id", "fenix_fulfillment")}
        self._key_order.clear()
        self._forgotten_keys = 0

    def record(
        self,
        *,
        api: str,
        endpoint: str,
        kind: str | None,
        method: str,
        path: str,
        status: int,
        headers: Iterable[tuple[str, str]],
        body: Any,
        region: str | None = None,
        order_id: str | None = None,
        fulfillment_id: str | None = None,
        external_id: str | None = None,
        fault: str | None = None,
        fault_plan: str | None = None,
    ) -> RecordedRequest:
        with self._lock:
            self._seq += 1
            entry = RecordedRequest(
                seq=self._seq,
                received_at=_now(),
                api=api,
                endpoint=endpoint,
                kind=kind,
                method=method,
                path=path,
                status=status,
                headers=MappingProxyType(redact_headers(headers)),
                body=body,
                region=region,
                order_id=order_id,
                fulfillment_id=fulfillment_id,
                external_id=external_id,
                fault=fault,
                fault_plan=fault_plan,
            )
            if len(self._records) == self._records.maxlen:
                self._dropped += 1
            self._records.append(entry)
            self._accepted[endpoint] += 1
            if kind:
                self._kinds[kind] += 1
            key = self._duplicate_key(entry)
            if key is not None:
                self._see(key, entry.seq, body, kind)
            if self._path is not None:
                self._append(entry)
        return entry

    def _see(self, key: tuple[str, str], seq: int, body: Any, kind: str | None) -> None:
        """One more sighting of ``key``; past ``duplicate_keys`` distinct keys, the oldest is let go."""
        seen_by_key = self._by_key[key[0]]
        seen = seen_by_key.get(key[1])
        if seen is None:
            seen = seen_by_key[key[1]] = _Seen()
            self._key_order.append(key)
            if len(self._key_order) > self._duplicate_keys:
                name, oldest = self._key_order.popleft()
                del self._by_key[name][oldest]
                self._forgotten_keys += 1
        seen.count += 1
        if len(seen.seqs) < _MAX_LISTED:
            seen.seqs.append(seq)
        if len(seen.bodies) < _MAX_LISTED:
            digest = _body_hash(body)
            if digest not in seen.bodies:  # a scan of 100 at most
                seen.bodies.append(digest)
        if kind and kind not in seen.kinds:
            seen.kinds.append(kind)

    @staticmethod
    def _duplicate_key(entry: RecordedRequest) -> tuple[str, str] | None:
        if entry.endpoint == "dg.execution" and entry.external_id is not None:
            return "dg_external_id", entry.external_id
        if entry.endpoint == "fenix.orders" and entry.order_id is not None:
            return "fenix_order_id", entry.order_id
        if entry.endpoint == "fenix.fulfillment" and entry.order_id is not None:
            return "fenix_fulfillment", json.dumps([entry.order_id, entry.fulfillment_id])
        return None

    def _append(self, entry: RecordedRequest) -> None:
        assert self._path is not None
        line = json.dumps(entry.to_dict(), ensure_ascii=False, default=str)
        try:
            with self._path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        except OSError as error:
            # The in-memory record stands; a full disk must not turn an accepted request into a 500.
            log.error("cannot append to %s: %s", self._path, error)

    def faulted(self, endpoint: str, status: int | None, plan: str) -> None:
        """An API request answered with an injected error status by fault plan ``plan``, or dropped (``status``
        None) by it; it is not recorded as accepted."""
        with self._lock:
            if len(self._faulted) == self._faulted.maxlen:
                self._faulted_forgotten += 1
            self._faulted.append(FaultedRequest(_now(), endpoint, status, plan))

    def faulted_requests(self) -> tuple[list[FaultedRequest], int]:
        """The latest injected error answers and drops (the newest ``faulted``), oldest first, and how many
        older ones were let go to stay within that."""
        with self._lock:
            return list(self._faulted), self._faulted_forgotten

    def reject(self, endpoint: str, status: int) -> None:
        with self._lock:
            self._rejected[endpoint][str(status)] += 1

    def requests(
        self,
        *,
        api: str | None = None,
        endpoint: str | None = None,
        kind: str | None = None,
        since: int = 0,
    ) -> list[RecordedRequest]:
        """Accepted requests in arrival order, filtered by api, endpoint or kind, after sequence ``since``."""
        with self._lock:
            return [
                r
                for r in self._records
                if r.seq > since
                and (api is None or r.api == api)
                and (endpoint is None or r.endpoint == endpoint)
                and (kind is None or r.kind == kind)
            ]

    def duplicates(self) -> dict[str, list[dict[str, Any]]]:
        """Keys that arrived more than once; ``distinct_bodies`` 1 means the very same payload was resent."""
        with self._lock:
            result: dict[str, list[dict[str, Any]]] = {}
            for name, seen_by_key in self._by_key.items():
                entries = []
                for key, seen in seen_by_key.items():
                    if seen.count < 2:
                        continue
                    item: dict[str, Any] = {"key": key}
                    if name == "fenix_fulfillment":
                        order_id, fulfillment_id = json.loads(key)
                        item = {"key": f"{order_id}/{fulfillment_id}", "order_id": order_id}
                        item["fulfillment_id"] = fulfillment_id
                    item.update(
                        count=seen.count,
                        distinct_bodies=len(seen.bodies),
                        kinds=sorted(seen.kinds),
                        seqs=list(seen.seqs),
                    )
                    entries.append(item)
                result[name] = entries
            return result

    def stats(self) -> dict[str, Any]:
        with self._lock:
            accepted = dict(sorted(self._accepted.items()))
            kinds = dict(sorted(self._kinds.items()))
            rejected = {name: dict(sorted(c.items())) for name, c in sorted(self._rejected.items())}
            kept, dropped = len(self._records), self._dropped
            remembered, forgotten = len(self._key_order), self._forgotten_keys
            faulted_forgotten = self._faulted_forgotten
        return {
            "accepted": sum(accepted.values()),
            "kept": kept,
            "dropped": dropped,
            "duplicate_keys_remembered": remembered,
            "duplicate_keys_forgotten": forgotten,
            "faulted_forgotten": faulted_forgotten,
            "by_endpoint": accepted,
            "by_kind": kinds,
            "rejected": rejected,
            "duplicates": self.duplicates(),
        }

    def reset(self) -> None:
        """Forget everything in memory. The JSONL file is an append-only log and keeps its lines."""
        with self._lock:
            # seq keeps counting, so JSONL lines and ``since`` cursors stay unambiguous across resets.
            self._records.clear()
            self._dropped = 0
            self._accepted.clear()
            self._kinds.clear()
            self._rejected.clear()
            self._faulted.clear()
            self._faulted_forgotten = 0
            self._clear_keys()
