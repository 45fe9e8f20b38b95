"""A webhook's origin: its name in the journal, and the way back from the journal to its inbox row.

The runtime records a webhook's rejection (``rejected.origin``) and its deliveries (``origin``) under it;
``shipmap dead-letters --resolve ORIGIN``, ``shipmap replay --rejected --key ORIGIN``, the requeue of a
rejected webhook and the inbox's retention (which keeps a rejected webhook's body) read it back. So an origin
names one webhook in its journal, whichever services write there:

- ``<source>#<row>`` (``bc#3``): row 3 of the only inbox whose webhooks the journal records: the SQLite inbox
  beside an SQLite journal (one service holds both), or the PostgreSQL inbox in the journal's database (one
  table that every service shares, so its ids are unique).
- ``<source>#<inbox>.<row>`` (``bc#kqzmvt.3``): row 3 of the SQLite inbox ``kqzmvt`` beside a PostgreSQL
  journal. Several services may share that journal, each with an inbox file of its own whose rows are numbered
  from 1; the inbox's id, six consonants drawn when the file is first opened for writing and kept in its ``meta``
  table, tells their rows apart.

An origin written beside a PostgreSQL journal before the inbox had an id (``bc#3``) is read as the first form:
a row of the inbox that the reading config names, as it always was.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

# Consonants: an id never spells a word. 20**6 is 64 million ids: for ten services on one journal, the
# chance that two inboxes draw the same one is under one in a million.
_INBOX_ID_LETTERS = "bcdfghjklmnpqrstvwxz"
_INBOX_ID_LENGTH = 6
_WEBHOOK_ORIGIN = re.compile(r"(?P<source>.+)#(?:(?P<inbox>[a-z]+)\.)?(?P<row>[0-9]+)")


@dataclass(frozen=True, slots=True)
class WebhookOrigin:
    """A webhook's origin read back: its source, its inbox row, and the inbox (None: the config's inbox)."""

    source: str
    row: int
    inbox: str | None = None

    def __str__(self) -> str:
        return webhook_origin(self.source, self.row, self.inbox)

    def of_inbox(self, inbox_id: str | None) -> bool:
        """Whether this origin may name a row of the inbox whose id is ``inbox_id`` (None: an inbox without
        one, the PostgreSQL inbox, or an SQLite file that no service has opened since ids were given)."""
        return self.inbox is None or self.inbox == inbox_id


def webhook_origin(source: str, row: int, inbox: str | None) -> str:
    """The origin of row ``row`` of ``source``; ``inbox``: the SQLite inbox's id beside a shared journal."""
    return f"{source}#{row}" if inbox is None else f"{source}#{inbox}.{row}"


def parse_webhook_origin(origin: str) -> WebhookOrigin | None:
    """The webhook an origin names, or None when it names none (a line of a ``shipmap run`` input)."""
    found = _WEBHOOK_ORIGIN.fullmatch(origin)
    if found is None:
        return None
    return WebhookOrigin(found["source"], int(found["row"]), found["inbox"])


def new_inbox_id() -> str:
    """An SQLite inbox's id: short, lowercase consonants only, so that ``bc#kqzmvt.3`` reads at a glance."""
    return "".join(secrets.choice(_INBOX_ID_LETTERS) for _ in range(_INBOX_ID_LENGTH))
