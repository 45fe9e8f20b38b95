"""``shipmap serve``: a webhook intake service that verifies, persists, enriches and delivers.

The package follows the stages: ``_verify`` (is it authentic, what are its id and topic), ``_inbox`` (the
durable store of accepted webhooks; ``_inbox_retention``, what it forgets and when; ``_inbox_floor``, where a
PostgreSQL inbox's claims start), ``_enrich`` (declared GETs that complete a skinny webhook), ``_feed`` (inbox
rows become runtime events), ``_app`` (the HTTP endpoints; ``_group_commit``, intake's way into the inbox,
within a deadline), ``_metrics``, ``_service`` (both sides in one event loop, SIGTERM drain) and ``_reload``
(SIGHUP: the config read again and compared). Delivery itself is the runtime's. See docs/serve.md.
"""

from ._enrich import Enricher
from ._enrich_batch import enrich_records
from ._enrich_errors import EnrichmentError
from ._inbox import Accepted, InboundRow, Inbox, InboxError, InboxStore
from ._inbox_pg import PostgresInbox
from ._reload import Reloaded
from ._service import Service
from ._settings import ServeSettings, SourceSettings, enrichments, serve_settings
from ._verify import Rejection, Verified, verify

__all__ = [
    "Accepted",
    "Enricher",
    "EnrichmentError",
    "InboundRow",
    "Inbox",
    "InboxError",
    "InboxStore",
    "PostgresInbox",
    "Rejection",
    "Reloaded",
    "ServeSettings",
    "Service",
    "SourceSettings",
    "Verified",
    "enrich_records",
    "enrichments",
    "serve_settings",
    "verify",
]
