"""The sections of ``shipmap serve`` in the config file, ``sources`` and ``serve``, as dataclasses.

As in ``_model``, a field is a key: its type, default, bounds and description are what the config's JSON
Schema says of it (``_schema``), and what the file spells differently (a source's ``secret``, an
enrichment's ``topics`` and ``fetch``) is written once there. ``_serve/_settings.py`` builds them from a
loaded config. A leaf module: the schema needs these classes without importing the service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .._config_key import NOT_A_KEY, about, duration_text
from .._key_pairs import KEEP_BODIES, RESWEEP, SERVE_PAIRS, in_use, refuse_out_of_order

SourceType = Literal["shopify", "woocommerce", "bigcommerce", "generic"]
Signature = Literal["hmac-sha256-hex", "hmac-sha256-base64", "standard-webhooks"]
SecretNormalization = Literal["none", "NFKD"]

DEFAULT_PORT = 8080
DEFAULT_MAX_BODY = 1024 * 1024
MAX_BODY_CAP = 64 * 1024 * 1024
DEFAULT_DRAIN = 20.0
DEFAULT_BODY_TIMEOUT = 30.0  # a webhook of a few KB arrives in milliseconds: 30 s is a stalled sender
DEFAULT_TOLERANCE = 300.0
DEFAULT_RESWEEP = 5.0  # first look again at parked work; doubled while it stays parked
DEFAULT_RESWEEP_CAP = 300.0
SHORTEST_RESWEEP = 0.05  # seconds
_RESWEEP_WHY = "a shorter wait would spin on parked work"
# The inbox remembers a processed webhook's id this long (a repeat is a duplicate), from when it arrived:
# serve.dedup_window's default, and its bounds.
DEDUP_WINDOW = 7 * 24 * 3600.0
SHORTEST_DEDUP_WINDOW = 3600.0
LONGEST_DEDUP_WINDOW = 90 * 24 * 3600.0
# serve.intake_deadline: how long a webhook waits for the inbox to store it. Under the shortest patience of a
# supported sender (Shopify: 5 s in all, 1 s of it to connect), less what the network and a proxy take, so the
# sender reads the 503 and retries rather than timing out and retrying blind.
DEFAULT_INTAKE_DEADLINE = 3.0
SHORTEST_INTAKE_DEADLINE = 0.1  # a healthy commit takes milliseconds; an fsync or a busy moment, tens
LONGEST_INTAKE_DEADLINE = 60.0  # the most patient supported sender (WooCommerce) waits 60 s
_INTAKE_DEADLINE_WHY = (
    "it sits between what a healthy commit takes (milliseconds) and how long a sender waits for its answer"
    " (Shopify 5s; the most patient, WooCommerce, 1m)"
)
DEFAULT_INTAKE_MAX_WAITING = 1024  # four group commits' worth (256 each); each holds its body meanwhile
MAX_INTAKE_MAX_WAITING = 65_536
DEFAULT_ENRICH_CONCURRENCY = 4  # webhooks of one source fetched at once (each its documents' GETs at once)
MAX_ENRICH_CONCURRENCY = 64  # each one held in memory with its documents until its turn comes


@dataclass(frozen=True, slots=True)
class RateLimit:
    per_second: float = field(metadata=about("Requests per second on average.", exclusiveMinimum=0))
    burst: int = field(
        metadata=about("Requests at once.", minimum=1, default_text="per_second, rounded (at least 1)")
    )


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """``/v2/orders/{payload.data.id}``: literal parts and compiled JMESPath placeholders, alternating."""

    text: str
    # str literals and compiled expressions: compiled from ``text``, which alone says whether two are the same
    parts: tuple[Any, ...] = field(compare=False)


@dataclass(frozen=True, slots=True)
class Enrichment:
    connection: str = field(metadata=about("The connection (base_url, auth, headers) the GETs go to."))
    topics: frozenset[str] = field(
        metadata=NOT_A_KEY
    )  # the file's topics: one, or a list; empty: every topic
    fetch: Mapping[str, PathTemplate] = field(metadata=NOT_A_KEY)  # the file's fetch: name -> path template
    concurrency: int = field(
        default=DEFAULT_ENRICH_CONCURRENCY,
        metadata=about(
            "shipmap serve: webhooks of this source whose documents are fetched at once. They are handed to"
            " delivery in the order they arrived all the same; a slow source API holds up this source's"
            " webhooks only, never another source's.",
            minimum=1,
            maximum=MAX_ENRICH_CONCURRENCY,
        ),
    )


@dataclass(frozen=True, slots=True)
class SourceSettings:
    name: str = field(metadata=NOT_A_KEY)  # the key of the sources mapping
    type: SourceType = field(
        metadata=about("How requests are verified, and where the topic and webhook id are.")
    )
    secrets: tuple[bytes, ...] = field(metadata=NOT_A_KEY)  # the file's secret: one, or two during a rotation
    header: str | None = field(
        default=None,
        metadata=about(
            "bigcommerce: the custom header carrying the secret; generic: the header carrying the HMAC.",
            minLength=1,
            default_text="generic: X-Signature",
        ),
    )
    signature: Signature = field(
        default="hmac-sha256-hex", metadata=about("generic only: how the body is signed.")
    )
    prefix: str = field(
        default="",
        metadata=about("generic HMAC: a prefix before the digest in the header, such as 'sha256='."),
    )
    secret_normalization: SecretNormalization = field(
        default="none",
        metadata=about(
            "The Unicode form the sender puts the secret in before signing with its UTF-8 bytes: NFKD as"
            " EasyPost does (an ASCII secret is the same either way)."
        ),
    )
    tolerance: float = field(
        default=DEFAULT_TOLERANCE,
        metadata=about(
            "standard-webhooks: how far webhook-timestamp may be from this server's clock. At most 1h.",
            duration=True,
            exclusiveMinimum=0,
            maximum=SHORTEST_DEDUP_WINDOW,
            why="a signed webhook older than the shortest serve.dedup_window could be replayed once its id"
            " is forgotten",
        ),
    )
    id_header: str | None = field(
        default=None,
        metadata=about(
            "generic HMAC: the header holding the webhook id (the duplicate key).",
            minLength=1,
            default_text="a SHA-256 of the body",
        ),
    )
    topic_header: str | None = field(
        default=None, metadata=about("generic: the header holding the topic.", minLength=1)
    )
    keep_headers: tuple[str, ...] = field(
        default=(),
        metadata=about("More request headers to keep with the event (never a credential).", minLength=1),
    )
    max_body: int = field(
        default=DEFAULT_MAX_BODY,
        metadata=about(
            "Largest body accepted, in bytes (413 above).",
            minimum=1,
            maximum=MAX_BODY_CAP,
            default_text="serve.max_body",
        ),
    )
    rate_limit: RateLimit | None = field(
        default=None,
        metadata=about(
            "Requests per second accepted from this source (429 above), with a burst, for the whole service."
        ),
    )
    intake_deadline: float | None = field(  # None: left out, serve.intake_deadline
        default=None,
        metadata=about(
            "serve.intake_deadline for this source's webhooks alone: a sender that waits longer for its answer"
            " (WooCommerce 1m, and it never retries a failed delivery) gets a longer one, a 503 being a lost"
            " webhook to it.",
            duration=True,
            minimum=SHORTEST_INTAKE_DEADLINE,
            maximum=LONGEST_INTAKE_DEADLINE,
            why=_INTAKE_DEADLINE_WHY,
            default_text="serve.intake_deadline",
        ),
    )
    enrich: Enrichment | None = None


@dataclass(frozen=True, slots=True)
class ServeSettings:
    inbox: Path | str = field(
        metadata=about(
            "SQLite file of accepted webhooks, relative to this config, or a postgresql:// URL that several"
            " serve processes share.",
            minLength=1,
            default_text="with a postgresql:// journal: the journal's database; else inbox.db beside the journal",
        )
    )
    sources: Mapping[str, SourceSettings] = field(metadata=NOT_A_KEY)  # the config's sources section
    host: str = field(default="127.0.0.1", metadata=about("The address to listen on.", minLength=1))
    port: int = field(default=DEFAULT_PORT, metadata=about("0 picks a free port.", minimum=0, maximum=65535))
    max_body: int = field(
        default=DEFAULT_MAX_BODY,
        metadata=about(
            "Largest body accepted, in bytes, unless a source says otherwise.",
            minimum=1,
            maximum=MAX_BODY_CAP,
        ),
    )
    drain_timeout: float = field(
        default=DEFAULT_DRAIN, metadata=about("How long SIGTERM may take.", duration=True)
    )
    body_timeout: float = field(
        default=DEFAULT_BODY_TIMEOUT,
        metadata=about(
            "How long a sender may take to send a webhook's body, from its headers (408 after): a stalled or"
            " slow sender does not hold a connection for good.",
            duration=True,
            exclusiveMinimum=0,
        ),
    )
    intake_deadline: float = field(
        default=DEFAULT_INTAKE_DEADLINE,
        metadata=about(
            "How long a webhook waits for the inbox to store it (a locked table, a slow database, an SQLite"
            " write lock held elsewhere): past it the sender gets 503 inbox_timeout with Retry-After, and"
            " retries. Keep it under the senders' own timeout (Shopify's is 5s).",
            duration=True,
            minimum=SHORTEST_INTAKE_DEADLINE,
            maximum=LONGEST_INTAKE_DEADLINE,
            why=_INTAKE_DEADLINE_WHY,
        ),
    )
    intake_max_waiting: int = field(
        default=DEFAULT_INTAKE_MAX_WAITING,
        metadata=about(
            "The most webhooks that wait for the inbox at once, each holding its body: past it a webhook is"
            " answered 503 inbox_busy at once.",
            minimum=1,
            maximum=MAX_INTAKE_MAX_WAITING,
        ),
    )
    resweep: float | None = field(  # None: left out, the default, at most resweep_cap
        default=None,
        metadata=about(
            "A running service looks again at work an outage left waiting (deliveries parked by an open"
            " breaker, webhooks whose enrichment found the source API down) this long after it was parked;"
            " doubled while the outage lasts.",
            duration=True,
            minimum=SHORTEST_RESWEEP,
            why=_RESWEEP_WHY,
            default_text=f"{duration_text(DEFAULT_RESWEEP)}, at most resweep_cap",
            schema_default=DEFAULT_RESWEEP,
        ),
    )
    resweep_cap: float = field(
        default=DEFAULT_RESWEEP_CAP,
        metadata=about(
            "The longest wait between two such looks.",
            duration=True,
            minimum=SHORTEST_RESWEEP,
            why=_RESWEEP_WHY,
        ),
    )
    dedup_window: float = field(
        default=DEDUP_WINDOW,
        metadata=about(
            "How long the inbox remembers a processed webhook's id, from when it arrived: a repeat of it is"
            " answered 200 duplicate until then, and is a new webhook after. The inbox's rows (id, headers)"
            " are kept that long, and a rejected webhook's body too, for `shipmap replay --rejected`. At"
            " least 1h, at most 90d.",
            duration=True,
            minimum=SHORTEST_DEDUP_WINDOW,
            maximum=LONGEST_DEDUP_WINDOW,
            why="it spans a sender's retries of one webhook, which end within days (Shopify's within 4"
            " hours), and the inbox looks for ids to forget hourly",
        ),
    )
    keep_bodies: float | None = field(
        default=None,
        metadata=about(
            "How long the inbox keeps the body of a webhook processed without rejection, from when it was"
            " processed (looked at hourly); its id is remembered for dedup_window all the same, and a rejected"
            " webhook keeps its body that long, for `shipmap replay --rejected`. At most dedup_window.",
            duration=True,
            default_text="serve.dedup_window",
        ),
    )

    def __post_init__(self) -> None:
        for pair in SERVE_PAIRS:
            refuse_out_of_order(self, pair)

    @property
    def first_resweep(self) -> float:
        """The first wait for parked work: ``resweep``, or left out its default, at most ``resweep_cap``."""
        return in_use(self, RESWEEP, DEFAULT_RESWEEP)

    @property
    def bodies_kept_for(self) -> float:
        """How long a processed webhook's body is kept: ``keep_bodies``, or left out the whole
        ``dedup_window``."""
        return in_use(self, KEEP_BODIES, self.dedup_window)
