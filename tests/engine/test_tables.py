"""The standard tables shipped in engine/tables/: each states its source, and the data hold together."""

from __future__ import annotations

import re

import pytest
from shipmap.engine._tables import _normal, carrier_code, country_code, country_name, currency_exponent, table


@pytest.mark.parametrize("name", ["iso3166", "iso4217", "carriers"])
def test_each_table_states_its_source(name: str) -> None:
    assert len(table(name)["source"]) > 80


def test_every_assigned_country_code_is_there_once_and_reads_back() -> None:
    countries = table("iso3166")["countries"]
    codes = [entry["code"] for entry in countries]
    assert len(codes) == len(set(codes)) == 250  # the 249 ISO 3166-1 codes and XK
    for entry in countries:
        assert re.fullmatch(r"[A-Z]{2}", entry["code"])
        assert country_name(entry["code"].lower()) == entry["name"]
        assert country_code(entry["name"]) == entry["code"]  # a name always finds its own code
        for alias in entry.get("aliases", ()):
            assert country_code(alias) == entry["code"], alias


def test_currency_exponents_are_the_iso_minor_units() -> None:
    currencies = table("iso4217")["currencies"]
    codes = [entry["code"] for entry in currencies]
    assert len(codes) == len(set(codes)) > 150
    assert {code: currency_exponent(code) for code in ("USD", "EUR", "JPY", "KRW", "KWD", "BHD", "CLF")} == {
        "USD": 2, "EUR": 2, "JPY": 0, "KRW": 0, "KWD": 3, "BHD": 3, "CLF": 4,
    }  # fmt: skip


def test_every_carrier_name_and_alias_finds_its_own_code() -> None:
    seen: dict[str, str] = {}
    for entry in table("carriers")["carriers"]:
        assert re.fullmatch(r"[a-z]+", entry["code"])
        for text in (entry["code"], entry["name"], *entry.get("aliases", ())):
            assert seen.setdefault(_normal(text), entry["code"]) == entry["code"], f"{text} is claimed twice"
            assert carrier_code(text) == entry["code"], text
