"""Fault injection: which injected failure, if any, the next API request gets.

A :class:`FaultPlan` is an immutable description (parsed from a compact spec or built in Python); a
:class:`FaultInjector` plays it. A rate-drawn fault is a function of the seed, the request's identity (its
``Idempotency-Key``, else its method, path and body) and how many times that identity came before, so a seed
gives the same faults to the same requests whatever order concurrent clients send them in. Two servers never
share state.
"""

from __future__ import annotations

import email.utils
import hashlib
import math
import secrets
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

DEFAULT_ERROR_STATUSES: tuple[int, ...] = (500, 502, 503)
DEFAULT_SLOW_DELAY = 2.0
_BOOL_WORDS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def _valid_step(step: str) -> bool:
    if step in ("ok", "drop", "slow", "expire"):
        return True
    if step.startswith("slow:"):
        return _is_delay(step[5:])
    status, colon, wait = step.partition(":")
    if colon and not (wait.isascii() and wait.isdigit() and int(wait) <= _MAX_RETRY_AFTER):
        return False
    return status.isascii() and status.isdigit() and (status == "429" or 500 <= int(status) <= 599)


def _is_delay(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and 0 <= value <= _MAX_DELAY  # 1e308 is finite, and not a delay


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What to inject into API requests. The default plan injects nothing.

    Rates are probabilities per request (their sum at most 1). ``schedule`` lists one outcome per request
    (``ok``, a 5xx code, ``429``, ``drop``, ``slow`` or ``slow:SECONDS``, ``expire``); it is played first,
    then the rates apply, unless ``repeat`` loops it forever. A status step may say its ``Retry-After``
    (``503:2``); a 429 always sends one (``retry_after`` unless its step says), a 5xx only when its step
    says. ``retry_after_date`` sends them as HTTP dates instead of seconds.
    """

    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = DEFAULT_ERROR_STATUSES
    rate_limit_rate: float = 0.0
    retry_after: int = 1
    retry_after_date: bool = False
    drop_rate: float = 0.0
    slow_rate: float = 0.0
    slow_delay: float = DEFAULT_SLOW_DELAY
    expire_every: int = 0
    schedule: tuple[str, ...] = ()
    repeat: bool = False
    include_login: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        # Accept lists and ints from Python callers (schedule=[500, "ok"]); store the canonical form.
        object.__setattr__(self, "schedule", tuple(str(step).strip().lower() for step in self.schedule))
        if any(isinstance(code, bool) or not isinstance(code, int) for code in self.error_statuses):
            raise ValueError(f"error_statuses must be 5xx codes, got {list(self.error_statuses)}")
        object.__setattr__(self, "error_statuses", tuple(self.error_statuses))
        rates = {
            "error_rate": self.error_rate,
            "rate_limit_rate": self.rate_limit_rate,
            "drop_rate": self.drop_rate,
            "slow_rate": self.slow_rate,
        }
        for name, rate in rates.items():
            if not (isinstance(rate, int | float) and 0.0 <= rate <= 1.0):
                raise ValueError(f"{name} must be a probability between 0 and 1, got {rate!r}")
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to more than 1 ({sum(rates.values()):g})")
        if not self.error_statuses or any(not 500 <= code <= 599 for code in self.error_statuses):
            raise ValueError(f"error_statuses must be 5xx codes, got {list(self.error_statuses)}")
        for name in ("retry_after", "expire_every"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a whole number, got {getattr(self, name)!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise ValueError(f"seed must be a whole number, got {self.seed!r}")
        if not all(
            isinstance(flag, bool) for flag in (self.repeat, self.include_login, self.retry_after_date)
        ):
            raise ValueError("repeat, include_login and retry_after_date must be true or false")
        if (
            not 0 <= self.retry_after <= _MAX_RETRY_AFTER
        ):  # the spec's bound holds for a plan built in code too
            raise ValueError(f"retry_after must be 0 to {_MAX_RETRY_AFTER} seconds, got {self.retry_after}")
        if not (isinstance(self.slow_delay, int | float) and _is_delay(str(self.slow_delay))):
            raise ValueError(f"slow_delay must be 0 to {_MAX_DELAY:g} seconds, got {self.slow_delay}")
        if self.expire_every < 0:
            raise ValueError(f"expire_every must be 0 (off) or a positive count, got {self.expire_every}")
        for step in self.schedule:
            if not _valid_step(step):
                raise ValueError(
                    f"unknown schedule step {step!r}; use ok, 5xx codes and 429 (each with an optional"
                    f" :RETRY_AFTER of 0 to {_MAX_RETRY_AFTER} seconds), drop, slow[:SECONDS], expire"
                )
        if self.repeat and not self.schedule:
            raise ValueError("repeat needs a schedule")

    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        """Read the compact spec, e.g. ``5xx=0.05,429=0.02,drop=0.01,slow=0.01:2.5,expire-every=500,seed=7``.

        ``schedule=ok,500,429,ok`` takes every following bare word as a further step. An empty spec or
        ``none`` is the plan that injects nothing. Raises ``ValueError`` naming the bad part.
        """
        values: dict[str, Any] = {}
        schedule: list[str] = []
        in_schedule = False
        if len(spec) > _MAX_SPEC_CHARS:
            raise ValueError(f"fault spec is longer than {_MAX_SPEC_CHARS} characters")
        text = spec.strip()
        if text.lower() in ("", "none", "off"):
            return cls()
        for raw in text.split(","):
            token = raw.strip()
            if not token:
                continue
            if "=" not in token:
                if not in_schedule:
                    raise ValueError(f"fault spec part {token!r} is not KEY=VALUE")
                schedule.append(token.lower())
                continue
            key, _, value = (part.strip() for part in token.partition("="))
            key = key.lower()
            in_schedule = key == "schedule"
            try:
                _parse_pair(key, value, values, schedule)
            except ValueError as error:
                raise ValueError(f"fault spec part {token!r}: {error}") from None
        if schedule:
            values["schedule"] = tuple(schedule)
        return cls(**values)

    def spec(self) -> str:
        """The compact spec of this plan; ``FaultPlan.parse(plan.spec()) == plan``."""
        parts: list[str] = []
        if self.error_rate:
            codes = (
                ""
                if self.error_statuses == DEFAULT_ERROR_STATUSES
                else ":" + "/".join(map(str, self.error_statuses))
            )
            parts.append(f"5xx={self.error_rate:g}{codes}")
        elif self.error_statuses != DEFAULT_ERROR_STATUSES:
            parts.append("5xx=0:" + "/".join(map(str, self.error_statuses)))
        if self.rate_limit_rate:
            parts.append(f"429={self.rate_limit_rate:g}")
        if self.drop_rate:
            parts.append(f"drop={self.drop_rate:g}")
        if self.slow_rate or self.slow_delay != DEFAULT_SLOW_DELAY:
            parts.append(f"slow={self.slow_rate:g}:{self.slow_delay:g}")
        if self.expire_every:
            parts.append(f"expire-every={self.expire_every}")
        if self.retry_after != 1:
            parts.append(f"retry-after={self.retry_after}")
        if self.retry_after_date:
            parts.append("retry-after-date=true")
        if self.include_login:
            parts.append("login=true")
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        if self.repeat:
            parts.append("repeat=true")
        if self.schedule:
            parts.append("schedule=" + ",".join(self.schedule))
        return ",".join(parts) or "none"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["error_statuses"] = list(self.error_statuses)
        data["schedule"] = list(self.schedule)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultPlan:
        """Build a plan from its ``to_dict`` form (unknown keys are refused, missing ones take defaults)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown fault plan field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values = dict(data)
        for name in ("error_statuses", "schedule"):
            if name in values:
                if not isinstance(values[name], list | tuple):
                    raise ValueError(f"{name} must be a list")
                values[name] = tuple(values[name])
        try:
            return cls(**values)
        except TypeError as error:
            raise ValueError(str(error)) from None


def _parse_pair(key: str, value: str, values: dict[str, Any], schedule: list[str]) -> None:
    if key == "5xx":
        rate, _, codes = value.partition(":")
        values["error_rate"] = _rate(rate)
        if codes:
            values["error_statuses"] = tuple(
                _bounded_int(code, -(10**9), 10**9, "a status") for code in codes.split("/")
            )
    elif key in ("429", "drop"):
        values["rate_limit_rate" if key == "429" else "drop_rate"] = _rate(value)
    elif key == "slow":
        rate, _, delay = value.partition(":")
        values["slow_rate"] = _rate(rate)
        if delay:
            values["slow_delay"] = _seconds(delay)
    elif key == "expire-every":
        values["expire_every"] = _bounded_int(value, -(10**9), 10**9, "a count of requests")
    elif key == "retry-after":
        values["retry_after"] = _bounded_int(value, -(10**9), _MAX_RETRY_AFTER, "seconds")
    elif key == "seed":
        values["seed"] = _bounded_int(value, 0, 2**64, "a seed")
    elif key in _FLAGS:
        if value.lower() not in _BOOL_WORDS:
            raise ValueError("expected true or false")
        values[_FLAGS[key]] = _BOOL_WORDS[value.lower()]
    elif key == "schedule":
        if value:
            schedule.append(value.lower())
    else:
        raise ValueError(
            "unknown key; use 5xx, 429, drop, slow, expire-every, retry-after, retry-after-date, seed, login,"
            " repeat, schedule"
        )


_FLAGS = {"login": "include_login", "repeat": "repeat", "retry-after-date": "retry_after_date"}
_MAX_SPEC_CHARS = 4096
_MAX_RETRY_AFTER = 3600
_MAX_DELAY = 600.0  # a slow answer is held at most this long: the sandbox's own waits are bounded too


def _bounded_int(text: str, low: int, high: int, what: str) -> int:
    if not text.strip().isascii() or not text.strip().lstrip("-").isdigit() or len(text.strip()) > 20:
        raise ValueError(f"{text!r} is not an integer")
    number = int(text)
    if not low <= number <= high:
        raise ValueError(f"{number} is out of range for {what} ({low} to {high})")
    return number


def _seconds(text: str) -> float:
    seconds = float(text)
    if not 0.0 <= seconds <= _MAX_DELAY:  # NaN and infinities fail this too
        raise ValueError(f"{text} is not a delay between 0 and {_MAX_DELAY:g} seconds")
    return seconds


def _rate(text: str) -> float:
    rate = float(text)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{text} is not a probability between 0 and 1")
    return rate


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected outcome. ``status`` is set for 5xx and 429, ``retry_after`` for 429 and a 5xx step that
    says one (``503:2``), ``delay`` for slow."""

    name: str
    status: int | None = None
    delay: float = 0.0
    retry_after: int | None = None
    retry_after_date: bool = False  # send retry_after as an HTTP date, not as seconds

    def retry_after_header(self) -> str | None:
        """The ``Retry-After`` value to send, or None. An HTTP date has whole seconds: it is the first
        whole second at least ``retry_after`` from now, so a client that honours it waits that long at least."""
        if self.retry_after is None:
            return None
        if not self.retry_after_date:
            return str(self.retry_after)
        return email.utils.formatdate(math.ceil(time.time() + self.retry_after), usegmt=True)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the injector decided for one request: a fault or none, and whether to expire tokens first."""

    fault: Fault | None = None
    expire_tokens: bool = False


_NO_FAULT = Decision()


# Attempts remembered per request identity; past this many identities the least recently seen is forgotten
# (bounded memory on a long soak; a forgotten identity that comes back starts over at attempt 1). A plan turning
# identities over holds ~260 bytes each at its peak (tracemalloc: the dict, its resizes and the keys), so 50,000
# is ~13 MB a plan, ~52 MB for the four a sandbox can have (both APIs, Fenix's, DG's, the source API's).
DEFAULT_FAULT_IDENTITIES = 50_000


def request_identity(method: str, path: str, body: bytes, idempotency_key: str | None = None) -> bytes:
    """What makes two requests "the same request" for fault decisions: a client's retry of one delivery
    carries the same ``Idempotency-Key`` (or, without one, the same method, path and body)."""
    if idempotency_key:
        material = b"key\0" + idempotency_key.encode("utf-8", "replace")
    else:
        material = b"\0".join((b"request", method.upper().encode(), path.encode("utf-8", "replace"), body))
    return hashlib.blake2b(material, digest_size=16).digest()


def fault_rolls(seed: int, identity: bytes, attempt: int) -> tuple[float, int]:
    """The uniform draw in [0, 1) that picks the fault of this identity's ``attempt``-th request, and a
    number that picks its 5xx code. Pure: the same three inputs give the same draw on any machine."""
    digest = hashlib.blake2b(
        f"{seed}:{attempt}:".encode() + identity, digest_size=16, person=b"shipmap-faults"
    ).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64, int.from_bytes(digest[8:], "big")


@dataclass
class _Play:
    plan: FaultPlan
    seed: int
    max_identities: int = DEFAULT_FAULT_IDENTITIES
    step: int = 0
    token_requests: int = 0
    attempts: dict[bytes, int] = field(default_factory=dict)
    identities_forgotten: int = 0
    injected: Counter[str] = field(default_factory=Counter)

    def attempt(self, identity: bytes) -> int:
        """Count one more request of this identity and return its number (1 for the first)."""
        number = self.attempts.pop(identity, 0) + 1
        if len(self.attempts) >= self.max_identities:
            del self.attempts[next(iter(self.attempts))]
            self.identities_forgotten += 1
        self.attempts[identity] = number  # re-inserted: the dict's order is least recently seen first
        return number


class FaultInjector:
    """Plays a plan. Thread-safe: decisions run on the server's loop, reconfiguration comes from tests."""

    def __init__(self, plan: FaultPlan | None = None, identities: int = DEFAULT_FAULT_IDENTITIES) -> None:
        """``identities``: how many request identities the rate draws remember attempts of, the most recent."""
        self._lock = threading.Lock()
        self._identities = identities
        self._play = self._start(plan or FaultPlan())

    def _start(self, plan: FaultPlan) -> _Play:
        # Without a seed a fresh one is drawn and reported by snapshot(), so a failing run can be replayed.
        seed = plan.seed if plan.seed is not None else secrets.randbits(32)
        return _Play(plan=plan, seed=seed, max_identities=self._identities)

    @property
    def identities(self) -> int:
        """The cap on remembered request identities this injector was made with."""
        return self._identities

    @property
    def plan(self) -> FaultPlan:
        with self._lock:
            return self._play.plan

    def configure(self, plan: FaultPlan) -> None:
        """Replace the plan and start it over: schedule from its first step, attempt counts from zero."""
        with self._lock:
            self._play = self._start(plan)

    def restart(self) -> None:
        with self._lock:
            self._play = self._start(self._play.plan)

    def decide(self, *, login: bool = False, uses_token: bool = False, identity: bytes = b"") -> Decision:
        """The outcome for the next eligible request (``login`` ones only when the plan includes login).

        ``identity`` (see :func:`request_identity`) keys the rate draws: the n-th request of one identity
        gets the same draw whenever it arrives. Requests without one share a single identity, so their
        faults follow arrival order. Schedules and ``expire_every`` always follow arrival order."""
        with self._lock:
            play = self._play
            plan = play.plan
            if login and not plan.include_login:
                return _NO_FAULT
            expire = False
            if uses_token and plan.expire_every:
                play.token_requests += 1
                expire = play.token_requests % plan.expire_every == 0
            fault: Fault | None
            if plan.schedule and (plan.repeat or play.step < len(plan.schedule)):
                step = plan.schedule[play.step % len(plan.schedule)]
                play.step += 1
                if step == "expire":
                    expire, fault = True, None
                else:
                    fault = self._from_step(step, plan)
            else:
                fault = self._draw(play, identity)
            if expire:
                play.injected["expire"] += 1
            if fault is not None:
                play.injected[fault.name] += 1
            return Decision(fault=fault, expire_tokens=expire) if fault or expire else _NO_FAULT

    @staticmethod
    def _from_step(step: str, plan: FaultPlan) -> Fault | None:
        if step == "ok":
            return None
        if step == "drop":
            return Fault("drop")
        if step == "slow":
            return Fault("slow", delay=plan.slow_delay)
        if step.startswith("slow:"):
            return Fault("slow", delay=float(step[5:]))
        status, _, wait = step.partition(":")
        retry_after = int(wait) if wait else plan.retry_after if status == "429" else None
        return Fault(
            status, status=int(status), retry_after=retry_after, retry_after_date=plan.retry_after_date
        )

    @staticmethod
    def _draw(play: _Play, identity: bytes) -> Fault | None:
        plan = play.plan
        if not (plan.error_rate or plan.rate_limit_rate or plan.drop_rate or plan.slow_rate):
            return None
        roll, pick = fault_rolls(play.seed, identity, play.attempt(identity))
        edge = plan.error_rate
        if roll < edge:
            status = plan.error_statuses[pick % len(plan.error_statuses)]
            return Fault(str(status), status=status)
        edge += plan.rate_limit_rate
        if roll < edge:
            return Fault(
                "429", status=429, retry_after=plan.retry_after, retry_after_date=plan.retry_after_date
            )
        edge += plan.drop_rate
        if roll < edge:
            return Fault("drop")
        edge += plan.slow_rate
        if roll < edge:
            return Fault("slow", delay=plan.slow_delay)
        return None

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._play.injected.items()))

    def snapshot(self) -> dict[str, Any]:
        """The plan, its spec, the seed in use, the schedule position and what was injected so far."""
        with self._lock:
            play = self._play
            return {
                "spec": play.plan.spec(),
                "plan": play.plan.to_dict(),
                "seed": play.seed,
                "schedule_position": play.step,
                "injected": dict(sorted(play.injected.items())),
                "identities": len(play.attempts),
                "identities_forgotten": play.identities_forgotten,
            }
