"""How a message says a count: ``1 dead letter``, ``2 dead letters``, ``1 delivery``, ``0 deliveries``."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, in the plural unless ``count`` is 1. The plural is ``plural`` when given, else
    ``noun`` + ``s`` (``y`` after a consonant becomes ``ies``)."""
    if count == 1:
        return f"{count} {noun}"
    if plural is None:
        plural = noun[:-1] + "ies" if noun.endswith("y") and noun[-2:-1] not in "aeiou" else noun + "s"
    return f"{count} {plural}"
