"""The ``sources:`` and ``serve:`` sections of a config, as typed settings.

The config's JSON Schema has already checked their shape (``load_config``); what is left here is what a schema
cannot say: an enrichment's connection must exist and its path templates must compile.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .._config import RuntimeConfig, compile_expression, parse_duration
from .._store._journal_pg import is_database_url

SourceType = Literal["shopify", "woocommerce", "bigcommerce", "generic"]
Signature = Literal["hmac-sha256-hex", "hmac-sha256-base64", "standard-webhooks"]

DEFAULT_PORT = 8080
DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_DRAIN = 20.0
DEFAULT_TOLERANCE = 300.0
DEFAULT_RESWEEP = 5.0  # first look again at parked work; doubled while it stays parked
DEFAULT_RESWEEP_CAP = 300.0
# The keys of the event serve hands the runtime; a fetched document may not take one of these names.
ENVELOPE_KEYS = frozenset({"id", "source", "topic", "received_at", "headers", "payload"})
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


@dataclass(frozen=True, slots=True)
class RateLimit:
    per_second: float
    burst: int


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """``/v2/orders/{payload.data.id}``: literal parts and compiled JMESPath placeholders, alternating."""

    text: str
    parts: tuple[Any, ...]  # str literals and compiled expressions


@dataclass(frozen=True, slots=True)
class Enrichment:
    connection: str
    topics: frozenset[str]  # empty: every topic
    fetch: Mapping[str, PathTemplate]


@dataclass(frozen=True, slots=True)
class SourceSettings:
    name: str
    type: SourceType
    secrets: tuple[bytes, ...]
    header: str | None = None
    signature: Signature = "hmac-sha256-hex"
    prefix: str = ""
    tolerance: float = DEFAULT_TOLERANCE
    id_header: str | None = None
    topic_header: str | None = None
    keep_headers: tuple[str, ...] = ()
    max_body: int = DEFAULT_MAX_BODY
    rate_limit: RateLimit | None = None
    enrich: Enrichment | None = None


@dataclass(frozen=True, slots=True)
class ServeSettings:
    host: str
    port: int
    inbox: Path | str  # an SQLite file, or a postgresql:// URL that many serve processes share
    max_body: int
    drain_timeout: float
    sources: Mapping[str, SourceSettings]
    resweep: float = DEFAULT_RESWEEP
    resweep_cap: float = DEFAULT_RESWEEP_CAP


def serve_settings(config: RuntimeConfig) -> ServeSettings:
    """The service's settings from a loaded config; a config without ``sources`` cannot be served."""
    raw = dict(config.serve)
    if not config.sources:
        raise config.error("shipmap serve needs a 'sources' section: the webhooks it accepts (docs/serve.md)")
    max_body = int(raw.get("max_body", DEFAULT_MAX_BODY))
    sources = {name: _source(config, name, item, max_body) for name, item in config.sources.items()}
    journal = config.journal.path
    inbox: Path | str
    if "inbox" in raw:
        given = str(raw["inbox"])
        inbox = given if is_database_url(given) else (config.base_dir / given).resolve()
    elif config.journal.url is not None:  # a shared journal: the services share their intake too
        inbox = config.journal.url
    elif journal is not None:
        inbox = journal.parent / "inbox.db"
    else:
        inbox = (config.base_dir / ".shipmap" / "inbox.db").resolve()
    return ServeSettings(
        host=str(raw.get("host", "127.0.0.1")),
        port=int(raw.get("port", DEFAULT_PORT)),
        inbox=inbox,
        max_body=max_body,
        drain_timeout=parse_duration(raw.get("drain_timeout", DEFAULT_DRAIN)),
        sources=sources,
        resweep=max(0.05, parse_duration(raw.get("resweep", DEFAULT_RESWEEP))),
        resweep_cap=max(0.05, parse_duration(raw.get("resweep_cap", DEFAULT_RESWEEP_CAP))),
    )


def enrichments(config: RuntimeConfig) -> dict[str, Enrichment]:
    """The declared enrichments by source name (``shipmap run`` uses them without serving)."""
    return {
        name: enrichment
        for name, item in config.sources.items()
        if (enrichment := _enrichment(config, name, item.get("enrich"))) is not None
    }


def _source(config: RuntimeConfig, name: str, item: Mapping[str, Any], max_body: int) -> SourceSettings:
    given = item.get("secret") or []
    secrets = tuple(s.encode("utf-8") for s in ([given] if isinstance(given, str) else given))
    limit = item.get("rate_limit")
    rate = None
    if limit is not None:
        per_second = float(limit["per_second"])
        rate = RateLimit(per_second, int(limit.get("burst", max(1, round(per_second)))))
    return SourceSettings(
        name=name,
        type=item["type"],
        secrets=secrets,
        header=item.get("header"),
        signature=item.get("signature", "hmac-sha256-hex"),
        prefix=item.get("prefix", ""),
        tolerance=parse_duration(item.get("tolerance", DEFAULT_TOLERANCE)),
        id_header=item.get("id_header"),
        topic_header=item.get("topic_header"),
        keep_headers=tuple(item.get("keep_headers", ())),
        max_body=int(item.get("max_body", max_body)),
        rate_limit=rate,
        enrich=_enrichment(config, name, item.get("enrich")),
    )


def _enrichment(config: RuntimeConfig, name: str, raw: Mapping[str, Any] | None) -> Enrichment | None:
    if raw is None:
        return None
    here = ("sources", name, "enrich")
    connection = raw["connection"]
    if connection not in {c.name for c in config.connections}:
        raise config.error(f"no connection named '{connection}' in connections", (*here, "connection"))
    topics = raw.get("topics", ())
    for document in raw["fetch"]:
        if document in ENVELOPE_KEYS:
            raise config.error(
                f"'{document}' is a key of the event itself; name the document otherwise",
                (*here, "fetch", document),
                key=True,
            )
    fetch = {
        document: _template(config, path, (*here, "fetch", document))
        for document, path in raw["fetch"].items()
    }
    return Enrichment(connection, frozenset([topics] if isinstance(topics, str) else topics), fetch)


def _template(config: RuntimeConfig, text: str, here: tuple[str, ...]) -> PathTemplate:
    parts: list[Any] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        parts.append(text[position : match.start()])
        parts.append(compile_expression(match.group(1), config, here))
        position = match.end()
    parts.append(text[position:])
    return PathTemplate(text, tuple(parts))
