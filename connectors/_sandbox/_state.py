"""What one sandbox server knows: its config, the Fenix tokens it issued, the recorder and the fault plans."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from ._api_faults import Api, ApiFaults
from ._config import SandboxConfig
from ._faults import FaultPlan
from ._recorder import Recorder
from ._source_api import SourceApi

# Tokens expired longer ago than this are forgotten, so a long soak does not grow the table.
_TOKEN_MEMORY_SECONDS = 3600.0


class SandboxState:
    """Everything one server knows: config, issued tokens, the recorder and the fault injector."""

    # Tokens remembered at most, the newest: a client that logs in for every request (at 1,000 a second for
    # the 4 hours a token lives) must not grow the table without end; an older token is then unknown (401).
    MAX_TOKENS = 100_000

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.recorder = Recorder(config.record, config.keep, config.duplicate_keys, config.faulted)
        own: dict[Api, FaultPlan | None] = {"fenix": config.fenix_faults, "dg": config.dg_faults}
        own_plans = {api: plan for api, plan in own.items() if plan is not None}
        self.faults = ApiFaults(config.faults, own_plans, config.fault_identities)
        self.source_api = SourceApi(
            config.source_documents, config.source_token, config.source_faults, config.fault_identities
        )
        # The seed says x-identity rotates every 3 months: one per server, unlike the per-login authToken.
        self.identity = secrets.token_hex(18)
        self._tokens: dict[str, float] = {}
        self._tokens_forgotten = 0  # let go an hour past expiry, or the oldest past MAX_TOKENS
        self._lock = threading.Lock()

    def issue_token(self) -> str:
        token = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            tokens = self._tokens
            # Issued in order, with one lifetime (an expiry all at once keeps the order): the oldest are first.
            while tokens:
                oldest = next(iter(tokens))
                if tokens[oldest] > now - _TOKEN_MEMORY_SECONDS and len(tokens) < self.MAX_TOKENS:
                    break
                del tokens[oldest]
                self._tokens_forgotten += 1
            tokens[token] = now + self.config.token_ttl
        return token

    def token_problem(self, token: str) -> str | None:
        """Why ``token`` is not accepted now, or ``None`` when it is."""
        with self._lock:
            expiry = self._tokens.get(token)
        if expiry is None:
            return "is not a token this server issued; log in to get one"
        if time.monotonic() >= expiry:
            return "has expired; log in again"
        return None

    def expire_tokens(self) -> int:
        """Make every issued token expired now; returns how many were still live."""
        now = time.monotonic()
        with self._lock:
            live = sum(1 for exp in self._tokens.values() if exp > now)
            self._tokens = dict.fromkeys(self._tokens, now)
        return live

    def live_tokens(self) -> int:
        now = time.monotonic()
        with self._lock:
            return sum(1 for exp in self._tokens.values() if exp > now)

    def tokens_forgotten(self) -> int:
        """Tokens let go since the last reset: an hour past their expiry, or the oldest past ``MAX_TOKENS``.
        One of them sent again is unknown (401), not expired."""
        with self._lock:
            return self._tokens_forgotten

    def reset(self) -> None:
        """Back to a fresh start: no records, no counts, no tokens, the fault plan replayed from its start."""
        self.recorder.reset()
        self.faults.restart()
        self.source_api.reset()
        with self._lock:
            self._tokens.clear()
            self._tokens_forgotten = 0

    def stats(self) -> dict[str, Any]:
        stats = self.recorder.stats()
        stats["faults"] = self.faults.counts()
        stats["faults_by_plan"] = self.faults.counts_by_plan()
        stats["source_api"] = self.source_api.stats()
        stats["live_tokens"] = self.live_tokens()
        stats["tokens_forgotten"] = self.tokens_forgotten()
        return stats
