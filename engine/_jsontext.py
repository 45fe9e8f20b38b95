"""JSON text at orjson's speed, byte for byte as the standard library's ``json`` writes and reads it.

orjson writes and reads several times faster than ``json``, but not always the same: it writes a float of
exponent -5 to -9 its own way (``0.00001``, ``1.5e-7`` where json writes ``1e-05``, ``1.5e-07``), writes NaN and
the infinities as ``null`` (json, strict, refuses them), reads an integer past 64 bits as a float, and
refuses some of what json takes (integers past 64 bits, lone surrogates, keys that are not strings, nesting
past 255 levels). Source digests and idempotency keys hang on the exact text, so orjson's result is used only
where it is provably json's, and json does the rest:

- :func:`dumps` gives orjson's bytes unless they hold such a float, or orjson refused the value, or the value
  holds a type orjson writes its own way (dataclasses, dates, subclasses, enums, NaN as ``null``: unless the
  caller knows the value is plain JSON, the bytes are read back and must equal it): then None, and the
  caller asks json;
- :func:`loads` gives orjson's value unless the text holds a run of 19 digits (an integer that may not fit
  in 64 bits) or orjson refuses it: then :data:`UNREAD`, and the caller asks json, which words the error.

tests/engine/test_jsontext.py compares both with json over generated documents and texts.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

UNREAD: Final = object()  # loads(): orjson's value is not known to be json's; read the text with json

_PLAIN = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS
_SORTED = _PLAIN | orjson.OPT_SORT_KEYS
_DIGITS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))  # digits to "0", the rest " "
_LONG_NUMBER = b"0" * 19  # 19 digits in a row: past 2**63 for a negative integer
_DIGIT_BYTES = frozenset(b"0123456789")


def _refuse(value: Any) -> Any:
    raise TypeError  # a type orjson would write its own way, or not at all: json decides


def dumps(value: Any, *, sort_keys: bool = False, plain: bool = False) -> bytes | None:
    """``json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False,
    allow_nan=False)`` encoded as UTF-8, or None where orjson's text might not be exactly that (or json
    would refuse the value, or write it with a ``default``): the caller then asks json. ``plain``: the
    caller knows ``value`` holds JSON's own types only, numbers finite (the strict reader made it, or the
    kind's checked code passed it), so the bytes need no reading back."""
    try:
        data = orjson.dumps(value, default=_refuse, option=_SORTED if sort_keys else _PLAIN)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return None
    # rfind, not find or `in`: CPython's reverse search skips through JSON text about twice as fast (its
    # letters and digits stall the forward search's skip table); the scans are most of what dumps costs.
    if data.rfind(b"0.0000") >= 0 or _negative_exponent(data):
        return None
    if not plain and orjson.loads(data) != value:  # NaN written as null, an enum as its value, ...
        return None
    return data


def _negative_exponent(data: bytes) -> bool:
    """Whether ``data`` holds a digit followed by ``e-`` (a float of negative exponent, or text like it)."""
    at = data.rfind(b"e-")  # from the end (see dumps); JSON text never starts with "e-"
    while at > 0:
        if data[at - 1] in _DIGIT_BYTES:
            return True
        at = data.rfind(b"e-", 0, at)
    return False


def loads(text: str) -> Any:
    """``json.loads(text)`` where orjson's value is exactly json's; :data:`UNREAD` where it might not be or
    orjson refuses the text (read it with json then: it gives the value, or the error as json words it)."""
    data = text.encode("utf-8", "surrogatepass")
    if data.translate(_DIGITS).rfind(_LONG_NUMBER) >= 0:  # rfind: as in dumps
        return UNREAD
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return UNREAD
