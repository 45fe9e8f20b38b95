"""The mapping language's date-times: reading the forms platforms send, and writing ISO 8601 with an offset.

``datetime()``, ``datetime_in()``, ``date()`` and ``type: datetime``/``date`` all come through here; naive values
and epoch seconds are read in the mapping's zone (docs/functions.md, "Date-times").
"""

from __future__ import annotations

import datetime as _dt
import re
import zoneinfo
from typing import Any, Final

from ._errors import preview_value
from ._function_errors import FunctionError, fail

__all__ = ["Dates", "coerce_date", "coerce_datetime"]

_UTC: Final = _dt.UTC
_MAX_DATETIME_TEXT: Final = 64  # longer text is never a date; don't feed it to three parsers
_DATETIME_EXPECTED: Final = (
    'a date-time such as "2020-01-23T10:14:15-05:00" (accepted: ISO 8601 with offset, Z or no offset; '
    '"YYYY-MM-DD HH:MM:SS[.fff][ ±HH:MM]"; RFC 2822 such as "Mon, 20 Nov 2023 10:00:00 -0500"; '
    '"YYYY-MM-DD"; Unix epoch seconds as a number)'
)
# What fromisoformat refuses but platforms send: "UTC"/"GMT" suffixes, more than 6 fractional digits on older
# Pythons, and a space before the offset.
_LOOSE_ISO: Final = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)"
    r"(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d+))?)?"
    r"\s*(?:(Z|UTC|GMT)|([+-])(\d\d)(?::?(\d\d))?)?)?",
    re.ASCII | re.IGNORECASE,
)


def _parse_text(text: str) -> _dt.datetime:
    """A datetime from text; naive when the text has no offset."""
    stripped = text.strip()
    if len(stripped) <= _MAX_DATETIME_TEXT:
        try:
            return _dt.datetime.fromisoformat(stripped)
        except ValueError:
            pass
        match = _LOOSE_ISO.fullmatch(stripped)
        if match is not None:
            return _from_loose_iso(match, text)
        if stripped:
            import email.utils  # here: most dates are ISO, and email pulls in socket and more at start-up

            try:
                parsed = email.utils.parsedate_to_datetime(stripped)
            except (ValueError, TypeError, IndexError, OverflowError):
                pass
            else:
                if parsed.tzinfo is None and stripped.endswith("-0000"):
                    # RFC 5322: -0000 is UTC with the sender's zone unknown; Python returns it naive.
                    return parsed.replace(tzinfo=_UTC)
                return parsed
    raise fail(_DATETIME_EXPECTED, text)


def _from_loose_iso(match: re.Match[str], text: str) -> _dt.datetime:
    year, month, day, hour, minute, second, fraction, utc, sign, off_hours, off_minutes = match.groups()
    try:
        zone: _dt.tzinfo | None = None
        if utc:
            zone = _UTC
        elif sign:
            offset = _dt.timedelta(hours=int(off_hours), minutes=int(off_minutes or 0))
            zone = _dt.timezone(-offset if sign == "-" else offset)
        # Fractions beyond microseconds (ShipStation sends 7 digits) are truncated, never rounded up.
        micro = int(fraction[:6].ljust(6, "0")) if fraction else 0
        return _dt.datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            micro,
            tzinfo=zone,
        )
    except ValueError as error:
        raise FunctionError(f"{preview_value(text)} is not a valid date-time: {error}") from None


def _localize(naive: _dt.datetime, zone: _dt.tzinfo) -> _dt.datetime:
    """A naive wall time read in ``zone``. Ambiguous times (DST ends) take the first occurrence; times that a
    DST start skips are moved forward, so the offset shown is the one in force at that instant."""
    aware = naive.replace(tzinfo=zone)
    return aware.astimezone(_UTC).astimezone(zone)


def _aware(value: Any, zone: _dt.tzinfo) -> _dt.datetime:
    """Any accepted date-time value as an aware datetime; naive values and epochs are read in ``zone``."""
    if isinstance(value, str):
        parsed = _parse_text(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return _dt.datetime.fromtimestamp(value, zone)
        except (ValueError, OverflowError, OSError):
            raise FunctionError(
                f"epoch seconds {preview_value(value)} are out of range (divide milliseconds by 1000)"
            ) from None
    elif isinstance(value, _dt.datetime):
        parsed = value
    elif isinstance(value, _dt.date):
        parsed = _dt.datetime(value.year, value.month, value.day)
    else:
        raise fail(_DATETIME_EXPECTED, value)
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return _localize(parsed, zone)
    return parsed


def _render(moment: _dt.datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS±HH:MM``, with the fraction only when non-zero and without trailing zeros."""
    offset = moment.utcoffset()
    if offset is not None and offset.seconds % 60:
        # Historical local mean time (Kolkata 1905: +05:21:10) has no ±HH:MM form; the same instant in UTC has.
        moment = moment.astimezone(_dt.UTC)
    text = moment.isoformat()
    if not moment.microsecond:
        return text
    # isoformat writes "YYYY-MM-DDTHH:MM:SS.ffffff±HH:MM" at fixed positions (years are always 4 digits).
    return text[:20] + text[20:26].rstrip("0") + text[26:]


# Text already in the form _render writes (whole seconds, a ±HH:MM offset): most platforms send this.
_RENDERED: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:[0-5]\d", re.ASCII)


def _as_rendered(value: Any) -> str | None:
    """``value`` itself when ``_render(_aware(value, zone))`` would give it back unchanged, whatever the zone
    (it has an offset): text of the rendered form that is a real date-time. None when not known so."""
    if type(value) is not str or len(value) != 25 or _RENDERED.fullmatch(value) is None:
        return None
    if value.endswith("-00:00"):  # rendered as +00:00
        return None
    try:
        _dt.datetime.fromisoformat(value)  # a real date, hour and offset (under 24 hours)
    except ValueError:
        return None  # the full path words the error
    return value


def _zone_named(name: Any) -> zoneinfo.ZoneInfo:
    if not isinstance(name, str):
        raise fail('a time zone name such as "America/New_York"', name)
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise FunctionError(
            f'unknown time zone {preview_value(name)}; expected an IANA name such as "America/New_York"'
        ) from None


def coerce_datetime(value: Any, zone: _dt.tzinfo | str) -> str | None:
    """``type: datetime``: ``datetime(value)`` with naive values read in ``zone`` (a tzinfo or IANA name)."""
    if value is None:
        return None
    tz = _zone_named(zone) if isinstance(zone, str) else zone
    rendered = _as_rendered(value)
    return rendered if rendered is not None else _render(_aware(value, tz))


def coerce_date(value: Any, zone: _dt.tzinfo | str) -> str | None:
    """``type: date``: like ``date(value)`` with naive values read in ``zone`` (a tzinfo or IANA name)."""
    if value is None:
        return None
    return _aware(value, _zone_named(zone) if isinstance(zone, str) else zone).date().isoformat()


_ZONE_CACHE_LIMIT: Final = 256  # zone names may come from source data; don't let them grow the cache forever


class Dates:
    """The date-time builtins of one mapping: ``datetime``, ``datetime_in`` and ``date``, which read naive values
    in the mapping's zone. Read-only apart from the zone cache, whose worst race is two threads building the
    same ZoneInfo (which ZoneInfo caches itself)."""

    __slots__ = ("_default_zone", "_zones")

    def __init__(self, default_zone: zoneinfo.ZoneInfo) -> None:
        self._default_zone: _dt.tzinfo = default_zone
        self._zones: dict[str, zoneinfo.ZoneInfo] = {}
        if default_zone.key:  # None for a zone read with ZoneInfo.from_file
            self._zones[default_zone.key] = default_zone

    def _zone(self, name: Any) -> zoneinfo.ZoneInfo:
        if isinstance(name, str):
            found = self._zones.get(name)
            if found is not None:
                return found
        found = _zone_named(name)
        if len(self._zones) < _ZONE_CACHE_LIMIT:
            self._zones[name] = found
        return found

    def datetime(self, value: Any, zone: Any = None) -> str | None:
        tz = self._default_zone if zone is None else self._zone(zone)
        if value is None:
            return None
        rendered = _as_rendered(value)
        return rendered if rendered is not None else _render(_aware(value, tz))

    def datetime_in(self, value: Any, zone: Any) -> str | None:
        tz = self._zone(zone)
        if value is None:
            return None
        return _render(_aware(value, self._default_zone).astimezone(tz))

    def date(self, value: Any, zone: Any = None) -> str | None:
        tz = self._default_zone if zone is None else self._zone(zone)
        if value is None:
            return None
        return _aware(value, tz).date().isoformat()
