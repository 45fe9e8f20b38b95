"""A webhook body the runtime could not read is refused at the door with 400, never a 500 with a traceback,
and never acknowledged with 200 to be rejected afterwards where the sender cannot see it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from shipmap.connectors._redact import Redactor
from shipmap.connectors._serve import Inbox, SourceSettings
from shipmap.connectors._serve._app import build_app

from .app_support import app_state, post, shop_headers, shop_source


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"id": 1', "the body is not JSON: Expecting ',' delimiter: line 1 column 9 (char 8)"),
        (b'{"a": ' * 5000 + b"1" + b"}" * 5000, "the body is not JSON: arrays or objects nested too deeply"),
        (
            b'{"id": NaN}',
            "the body is not JSON: NaN is not a JSON number (strict JSON has only finite numbers)",
        ),
        (
            b'{"id": ' + b"9" * 5000 + b"}",
            "the body is not JSON: an integer of 5000 digits is longer than the 4,300 digits a number may have",
        ),
        (b'{"name": "caf\xe9"}', "the body is not UTF-8 text"),
    ],
    ids=["cut-off", "nested-too-deeply", "nan", "integer-too-long", "latin-1"],
)
def test_a_body_the_runtime_cannot_read_is_a_400(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, body: bytes, message: str
) -> None:
    inbox = Inbox(tmp_path / "inbox.db")
    app = build_app(app_state({"shop": shop_source()}, inbox), Redactor())

    with caplog.at_level(logging.INFO):
        answer = asyncio.run(post(app, body, shop_headers(body)))
    inbox.close()
    assert (answer.status_code, answer.json()) == (400, {"error": "not_json", "message": message})
    assert "Traceback" not in caplog.text


def test_a_bigcommerce_body_nested_too_deeply_is_a_400(tmp_path: Path) -> None:
    """BigCommerce's verification reads the body for its scope and hash: a body nested past Python's limit
    broke it with a RecursionError (500) before the body was checked."""
    source = SourceSettings(name="bc", type="bigcommerce", secrets=(b"secret",), header="X-Bc-Secret")
    inbox = Inbox(tmp_path / "inbox.db")
    app = build_app(app_state({"bc": source}, inbox), Redactor())
    body = b'{"a": ' * 5000 + b"1" + b"}" * 5000
    headers = {"Content-Type": "application/json", "X-Bc-Secret": "secret"}
    answer = asyncio.run(post(app, body, headers, "/hooks/bc"))
    inbox.close()
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "not_json",
        "message": "the body is not JSON: arrays or objects nested too deeply",
    }
