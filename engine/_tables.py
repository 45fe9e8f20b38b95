"""Standard tables shipped with shipmap: ISO 3166-1 countries, ISO 4217 currencies (with their minor-unit
exponents) and carrier names. Each JSON file in ``engine/tables/`` states its source. The functions here are
the way mappings use them: ``country_name``, ``country_code``, ``from_minor`` and ``carrier_code``.

The tables are read once, on first use, into immutable dicts.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from ._arithmetic import from_minor as _scale
from ._errors import preview_value
from ._function_errors import FunctionError

__all__ = ["carrier_code", "country_code", "country_name", "currency_exponent", "from_minor", "table"]

_NOT_WORD = re.compile(r"[\W_]+")
_MIN_PREFIX = 3  # a carrier name is found by its start ("UPS Ground") only for names this long or longer


def _normal(text: str) -> str:
    """Case, accents aside, spaces and punctuation dropped: "Royal-Mail", "royal_mail", "ROYAL MAIL" match."""
    return _NOT_WORD.sub("", text.casefold())


@cache
def table(name: str) -> Mapping[str, Any]:
    """One shipped table as read from its file (``iso3166``, ``iso4217``, ``carriers``)."""
    text = resources.files(__package__).joinpath("tables", f"{name}.json").read_text(encoding="utf-8")
    loaded: Mapping[str, Any] = types.MappingProxyType(json.loads(text))
    return loaded


@cache
def _countries() -> tuple[Mapping[str, str], Mapping[str, str]]:
    names: dict[str, str] = {}
    codes: dict[str, str] = {}
    for entry in table("iso3166")["countries"]:
        names[entry["code"]] = entry["name"]
        for text in (entry["code"], entry["name"], *entry.get("aliases", ())):
            codes.setdefault(_normal(text), entry["code"])
    return types.MappingProxyType(names), types.MappingProxyType(codes)


@cache
def _exponents() -> Mapping[str, int]:
    return types.MappingProxyType(
        {entry["code"]: entry["exponent"] for entry in table("iso4217")["currencies"]}
    )


@cache
def _carriers() -> tuple[Mapping[str, str], tuple[tuple[str, str], ...]]:
    exact: dict[str, str] = {}
    for entry in table("carriers")["carriers"]:
        for text in (entry["code"], entry["name"], *entry.get("aliases", ())):
            exact.setdefault(_normal(text), entry["code"])
    # Longest first, so "dhlecommerce…" finds DHL eCommerce before DHL.
    prefixes = tuple(
        sorted(
            ((key, code) for key, code in exact.items() if len(key) >= _MIN_PREFIX),
            key=lambda kv: -len(kv[0]),
        )
    )
    return types.MappingProxyType(exact), prefixes


def _text(value: Any, function: str, expected: str) -> str:
    if not isinstance(value, str):
        raise FunctionError(f"{function}() expects {expected}, found {preview_value(value)}")
    return value


def country_name(code: Any) -> str | None:
    """The English short name of an ISO 3166-1 alpha-2 code ("us" or "US" -> "United States"); null for a
    code that is not assigned."""
    if code is None:
        return None
    text = _text(code, "country_name", 'a two-letter country code such as "US"').strip().upper()
    return _countries()[0].get(text)


def country_code(name: Any) -> str | None:
    """The ISO 3166-1 alpha-2 code of a country name, an official ISO form or a common alias ("United States
    of America", "USA", "UK"), or of a code itself; null when nothing matches."""
    if name is None:
        return None
    text = _text(name, "country_code", 'a country name such as "United States"')
    return _countries()[1].get(_normal(text))


def currency_exponent(currency: Any) -> int:
    """The ISO 4217 minor-unit exponent of a currency code: USD 2, JPY 0, KWD 3."""
    text = _text(currency, "from_minor", 'an ISO 4217 currency code such as "USD"').strip().upper()
    found = _exponents().get(text)
    if found is None:
        raise FunctionError(
            f'unknown currency {preview_value(currency)}; expected an ISO 4217 code such as "USD"'
        )
    return found


def from_minor(amount: Any, currency: Any) -> int | float | None:
    """An amount in minor units (cents) as the amount, by the currency's ISO 4217 exponent: 1999 USD -> 19.99,
    1999 JPY -> 1999, 1999 KWD -> 1.999. Exact (Decimal)."""
    if amount is None:
        return None
    return _scale(amount, currency_exponent(currency))


def carrier_code(name: Any) -> str | None:
    """shipmap's code of a carrier name or slug ("Royal Mail", "royal-mail" -> "royalmail"; "UPS Ground" ->
    "ups"); null when nothing matches."""
    if name is None:
        return None
    key = _normal(_text(name, "carrier_code", 'a carrier name such as "UPS"'))
    if not key:
        return None
    exact, prefixes = _carriers()
    found = exact.get(key)
    if found is not None:
        return found
    for prefix, code in prefixes:
        if key.startswith(prefix):
            return code
    return None
