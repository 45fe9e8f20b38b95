"""The ``sources:`` and ``serve:`` sections of a config, built into their settings (``_config/_serve_model``).

The config's JSON Schema, generated from those dataclasses, has already checked their shape (``load_config``);
what is left here is what a schema cannot say: an enrichment's connection must exist and its path templates
must compile, and the defaults that come from other keys (a source's ``max_body``, the inbox's place).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._config import RuntimeConfig, build_section, compile_expression
from .._config._serve_model import (
    DEFAULT_MAX_BODY,
    Enrichment,
    PathTemplate,
    RateLimit,
    ServeSettings,
    SourceSettings,
)
from .._store._journal_pg import is_database_url

# The keys of the event serve hands the runtime; a fetched document may not take one of these names.
ENVELOPE_KEYS = frozenset({"id", "source", "topic", "received_at", "headers", "payload"})
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


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
    return build_section(ServeSettings, raw, inbox=inbox, sources=sources)


def enrichments(config: RuntimeConfig) -> dict[str, Enrichment]:
    """The declared enrichments by source name (``shipmap run`` uses them without serving)."""
    return {
        name: enrichment
        for name, item in config.sources.items()
        if (enrichment := _enrichment(config, name, item.get("enrich"))) is not None
    }


def _source(config: RuntimeConfig, name: str, item: Mapping[str, Any], max_body: int) -> SourceSettings:
    given = item.get("secret") or []
    return build_section(
        SourceSettings,
        item,
        {"keep_headers": tuple, "rate_limit": _rate_limit},
        name=name,
        secrets=tuple(
            _secret_bytes(s, item.get("secret_normalization", "none"))
            for s in ([given] if isinstance(given, str) else given)
        ),
        max_body=int(item.get("max_body", max_body)),
        enrich=_enrichment(config, name, item.get("enrich")),
    )


def _secret_bytes(secret: str, normalization: str) -> bytes:
    """The bytes a sender signs with: the secret as written, or in the Unicode form it normalises it to."""
    if normalization == "NFKD":
        secret = unicodedata.normalize("NFKD", secret)
    return secret.encode("utf-8")


def _rate_limit(raw: Mapping[str, Any]) -> RateLimit:
    return build_section(RateLimit, raw, burst=int(raw.get("burst", max(1, round(raw["per_second"])))))


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
    return build_section(
        Enrichment, raw, topics=frozenset([topics] if isinstance(topics, str) else topics), fetch=fetch
    )


def _template(config: RuntimeConfig, text: str, here: tuple[str, ...]) -> PathTemplate:
    parts: list[Any] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        parts.append(text[position : match.start()])
        parts.append(compile_expression(match.group(1), config, here))
        position = match.end()
    parts.append(text[position:])
    return PathTemplate(text, tuple(parts))


__all__ = [  # re-exported: the settings classes live in _config/_serve_model, where the schema comes from
    "ENVELOPE_KEYS",
    "Enrichment",
    "PathTemplate",
    "RateLimit",
    "ServeSettings",
    "SourceSettings",
    "enrichments",
    "serve_settings",
]
