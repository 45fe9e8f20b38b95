"""Rules that span two keys of one section, which the schema's bounds (each key alone) cannot say: a value that
must stay below another (:class:`Pair`: a fenix_session's ``refresh_margin`` below its ``token_ttl``, a backoff
base, a breaker's cooldown and ``serve.resweep`` at most their caps, ``serve.keep_bodies`` at most
``dedup_window``), and a key that one value of another alone reads (:class:`OnlyWith`, :data:`SCHEME_ONLY`:
``login_path``, ``token_ttl`` and ``refresh_margin`` with the scheme ``fenix_session``, ``header`` and
``prefix`` with ``api_key``; under any other scheme they would be ignored in silence).

A rule holds when its key is given (a pair's lower key). Left out, that key is None and its default adapts
to the other (the auth refreshes at most half a short token's life early; the first backoff, cooldown and
resweep are at most their caps; bodies are kept for the whole dedup window), or is the scheme's own
(``AuthSettings.in_use``), so that a value given, even one equal to the default, is told from one left out in
code as in a file. Each record that holds a rule checks it when it is built (:func:`refuse_out_of_order`,
:func:`refuse_ignored`, from its ``__post_init__``): in code, by ``dataclasses.replace`` too. A file's pairs
are checked before its records are built (``_config/_pairs.py``), so that the error is located at the key the
file wrote later. A file's key that its scheme ignores is refused by the config schema, which
``_config/_schema.py`` generates from :data:`SCHEME_ONLY` (so an editor flags it too), located at that key.

The schema gives a lower key the numeric ``default`` that editors insert only where writing it runs as leaving
it out does, or is refused, never silently different: ``backoff_base``, ``cooldown`` and ``resweep`` (under a
cap at least that long it is the value in use either way; under a shorter one, written, it is refused).
``refresh_margin`` and ``keep_bodies`` have their Default: text alone: a 5m margin written on an 8m token is
used as given where left out it is 4m, and 7d of bodies written under a 30d dedup_window drops them sooner
than left out, which keeps them for the whole window.

A leaf module, as ``_config_key`` is: the breaker's settings hold a pair too, and the fenix session holds its
margin to ``REFRESH`` (:meth:`Pair.refuse`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ._config_key import duration_text
from ._errors import ConfigError


@dataclass(frozen=True, slots=True)
class Pair:
    lower: str  # the key that must stay below ``upper`` (its value None: left out)
    upper: str
    strict: bool  # below, or at most
    why: str  # what goes wrong otherwise, for the message

    def holds(self, low: float, high: float) -> bool:
        return low < high if self.strict else low <= high

    @property
    def relation(self) -> str:
        """What ``lower`` must be to ``upper``: ``less than``, ``at most``."""
        return "less than" if self.strict else "at most"

    @property
    def inverse(self) -> str:
        """What ``upper`` must be to ``lower``: ``more than``, ``at least``."""
        return "more than" if self.strict else "at least"

    def refuse(self, owner: str, low: float | None, high: float) -> None:
        """ConfigError (exit 2) when ``low``, given, is out of order with ``high``, naming both keys with
        their values (durations, never secrets) after ``owner``, the class that holds them, as what is built
        in code has no file to point at: ``RetryPolicy: backoff_base (2s) must be at most backoff_cap (1s):
        ...``."""
        if low is None or self.holds(low, high):
            return
        raise ConfigError(
            f"{owner}: {self.lower} ({duration_text(low)}) must be {self.relation} {self.upper}"
            f" ({duration_text(high)}): {self.why}"
        )


@dataclass(frozen=True, slots=True)
class OnlyWith:
    """``key``, given, applies only where ``selector`` is ``value``: with any other it would be ignored."""

    key: str
    selector: str
    value: str
    section: str  # what the value selects, for the message: "auth"
    why: str  # why the others ignore it, for the message

    def misplaced(self, selected: object) -> str | None:
        """The message (after the key's name) when ``key`` is given where ``selector`` is ``selected``;
        None where it applies."""
        if selected == self.value:
            return None
        return (
            f"applies only to {self.value} {self.section}, and the {self.selector} is {selected}: {self.why}"
        )


REFRESH = Pair(
    "refresh_margin",
    "token_ttl",
    strict=True,
    why="the token would be renewed before every request, or never used",
)
BACKOFF = Pair("backoff_base", "backoff_cap", strict=False, why="the cap would lower every backoff to itself")
COOLDOWN = Pair(
    "cooldown", "cooldown_cap", strict=False, why="the first wait between probes would be longer than the cap"
)
RESWEEP = Pair(
    "resweep",
    "resweep_cap",
    strict=False,
    why="the first wait for parked work would be longer than the longest",
)
KEEP_BODIES = Pair(
    "keep_bodies",
    "dedup_window",
    strict=False,
    why="the inbox forgets a webhook, its id and its body, that long after it arrived",
)
SERVE_PAIRS = (RESWEEP, KEEP_BODIES)  # ServeSettings holds two
# The auth keys that one scheme alone reads: under any other they were ignored in silence. The schema says so
# for a file (generated from these), and AuthSettings when it is built.
SCHEME_ONLY = (
    OnlyWith("login_path", "scheme", "fenix_session", section="auth", why="no other scheme logs in"),
    OnlyWith(
        "token_ttl",
        "scheme",
        "fenix_session",
        section="auth",
        why="no other scheme logs in for a token that expires",
    ),
    OnlyWith(
        "refresh_margin",
        "scheme",
        "fenix_session",
        section="auth",
        why="no other scheme logs in for a token to renew",
    ),
    OnlyWith(
        "header",
        "scheme",
        "api_key",
        section="auth",
        why="no other scheme sends its credentials in a header named here",
    ),
    OnlyWith(
        "prefix",
        "scheme",
        "api_key",
        section="auth",
        why="no other scheme writes text before its credentials",
    ),
)


def in_use(record: object, pair: Pair, default: float) -> float:
    """The lower key of ``pair`` that ``record`` runs with: the value given, or left out its ``default``, at
    most the upper key (a default adapts; a value given is in order, or the record was refused)."""
    low, high = getattr(record, pair.lower), getattr(record, pair.upper)
    return float(low) if low is not None else min(default, float(high))


def refuse_out_of_order(record: object, pair: Pair) -> None:
    """:meth:`Pair.refuse` on ``record``'s two keys of ``pair``, named after its class."""
    pair.refuse(type(record).__name__, getattr(record, pair.lower), getattr(record, pair.upper))


def refuse_ignored(record: object, rules: Iterable[OnlyWith]) -> None:
    """ConfigError (exit 2) at the first of ``rules`` whose key ``record`` gives (not None) where its selector
    makes it ignored, naming the key, the selector's value and the record's class: ``AuthSettings:
    refresh_margin applies only to fenix_session auth, and the scheme is basic: ...``."""
    for rule in rules:
        if getattr(record, rule.key) is None:
            continue
        message = rule.misplaced(getattr(record, rule.selector))
        if message is not None:
            raise ConfigError(f"{type(record).__name__}: {rule.key} {message}")


__all__ = [
    "BACKOFF",
    "COOLDOWN",
    "KEEP_BODIES",
    "REFRESH",
    "RESWEEP",
    "SCHEME_ONLY",
    "SERVE_PAIRS",
    "OnlyWith",
    "Pair",
    "in_use",
    "refuse_ignored",
    "refuse_out_of_order",
]
