"""The redaction module every output path shares: values, header names, JSON, log records."""

from __future__ import annotations

import logging

import pytest
from shipmap.connectors import RedactingFilter, Redactor
from shipmap.connectors._redact import SLOT_KEEP, get_logger, is_sensitive_name


def test_secrets_are_masked_in_their_raw_json_and_url_forms() -> None:
    redactor = Redactor(['p@ss/w"rd'])
    assert redactor.redact('password is p@ss/w"rd') == "password is ***"
    assert redactor.redact('{"password": "p@ss/w\\"rd"}') == '{"password": "***"}'
    assert redactor.redact("login?pw=p%40ss%2Fw%22rd") == "login?pw=***"


def test_a_longer_secret_containing_a_shorter_one_is_masked_whole() -> None:
    redactor = Redactor(["abcd", "abcdefgh"])
    assert redactor.redact("x abcdefgh y abcd") == "x *** y ***"


def test_a_slot_masks_its_newest_values_and_a_secret_without_one_stays() -> None:
    """A login's token goes into a slot: months of logins (or one per probe while a token is refused) must
    not grow the set of values masked, and matched, without end. A configured secret stays for good."""
    redactor = Redactor(["configured-api-key"])
    tokens = [f"token-{n:04d}-of-a-login" for n in range(50)]
    for token in tokens:
        redactor.add(token, slot="fenix authToken")
        redactor.add("identity-same-each-time", slot="fenix x-identity")
    kept = tokens[-SLOT_KEEP:]
    assert redactor.redact(" ".join(kept)) == " ".join(["***"] * SLOT_KEEP)
    assert redactor.redact(tokens[0]) == tokens[0]  # expired long ago: no longer a credential
    assert redactor.redact("configured-api-key identity-same-each-time") == "*** ***"
    assert tokens[0] not in redactor and kept[0] in redactor


def test_too_short_values_are_not_treated_as_secrets() -> None:
    redactor = Redactor(["", "ab", None])  # type: ignore[list-item]
    assert redactor.redact("ab cd") == "ab cd"


def test_headers_are_masked_by_name_and_by_value() -> None:
    redactor = Redactor(["sekret-value"])
    shown = redactor.redact_headers(
        {
            "Authorization": "Basic ZGVtbzpkZW1v",
            "authToken": "whatever",
            "x-api-key": "k",
            "x-identity": "i",
            "Idempotency-Key": "sm-123",
            "X-Note": "has sekret-value inside",
        }
    )
    assert shown == {
        "Authorization": "Basic ***",
        "authToken": "***",
        "x-api-key": "***",
        "x-identity": "***",
        "Idempotency-Key": "sm-123",
        "X-Note": "has *** inside",
    }


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("password", True),
        ("x-api-key", True),
        ("authToken", True),
        ("Idempotency-Key", False),
        ("store_name", False),
    ],
)
def test_sensitive_names(name: str, sensitive: bool) -> None:
    assert is_sensitive_name(name) is sensitive


def test_redact_json_masks_values_but_keeps_the_shape() -> None:
    redactor = Redactor(["tok-123456"])
    body = {"checkout_token": "abc", "note": ["tok-123456"], "n": 3}
    assert redactor.redact_json(body) == {"checkout_token": "abc", "note": ["***"], "n": 3}


def test_excerpt_redacts_before_truncating() -> None:
    redactor = Redactor(["0123456789"])
    assert redactor.excerpt("ab0123456789cd", 6) == "ab***…"


def test_filter_redacts_formatted_messages_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    redactor = Redactor(["hunter22"])
    logger = logging.getLogger("shipmap.connectors.test_filter")
    handler_filter = RedactingFilter(redactor)
    caplog.handler.addFilter(handler_filter)
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            logger.info("password=%s", "hunter22")
            try:
                raise ValueError("boom hunter22")
            except ValueError:
                logger.exception("failed")
    finally:
        caplog.handler.removeFilter(handler_filter)
    assert "hunter22" not in caplog.text
    assert "password=***" in caplog.text and "boom ***" in caplog.text


def test_runtime_loggers_redact_before_any_handler(caplog: pytest.LogCaptureFixture) -> None:
    redactor = Redactor()
    log = get_logger("test", redactor)
    redactor.add("token-added-late")
    with caplog.at_level(logging.INFO, logger="shipmap.connectors.test"):
        log.info("got %s", "token-added-late")
    assert caplog.records[0].name == "shipmap.connectors.test"
    assert caplog.records[0].getMessage() == "got ***"
