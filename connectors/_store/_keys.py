"""Keys and canonical text: what a delivery's key and its source digest are derived from.

A delivery key is a hash of the mapping name, the target name and the digest of the source document's
canonical JSON, so the same document mapped by the same mapping always lands on the same journal row. Journals
written by every shipmap version hang on these bytes: they never change.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from shipmap.engine import _jsontext


def canonical_json(value: Any, *, plain: bool = False) -> str:
    """The canonical text of a JSON value: sorted keys, no spaces, UTF-8 kept. Equal documents, equal text.
    (Values of no JSON type, from library callers, are written as their ``str``; NaN and infinities raise
    ValueError: the journal holds strict JSON only.) Digests hang on this text: it never changes, whichever
    encoder writes it (``engine._jsontext``; ``plain``: the caller knows ``value`` holds JSON's own types
    only, numbers finite, as a document of the strict reader does)."""
    data = _jsontext.dumps(value, sort_keys=True, plain=plain)
    if data is not None:
        return data.decode("utf-8")
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str
    )


def digest_of(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def source_hash(document: Any) -> str:
    return digest_of(canonical_json(document))


def delivery_key(mapping: str, target: str, source_digest: str) -> str:
    """The stable key of one target of one event (32 hex digits, 128 bits)."""
    text = f"{mapping}\x1f{target}\x1f{source_digest}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
