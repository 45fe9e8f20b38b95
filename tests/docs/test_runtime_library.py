"""docs/runtime.md's library-use snippets run as written, against a real sandbox: the config built from
objects delivers an order, and the auth scheme used on its own with httpx is accepted. Only the page's
placeholders are given (credentials, events, the vendors' hosts pointed at the sandbox)."""

from __future__ import annotations

import asyncio
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from shipmap.connectors import Sandbox
from shipmap.engine import load_mapping

ROOT = Path(__file__).parents[2]
PAGE = (ROOT / "docs" / "runtime.md").read_text(encoding="utf-8")
ORDER = json.loads((ROOT / "tests/fixtures/real/shopify/order_rest_get_with_fulfillment.json").read_text())


def _block(containing: str) -> str:
    (found,) = [b for b in re.findall(r"```python\n(.*?)```", PAGE, re.S) if containing in b]
    return found


@pytest.fixture
def placeholders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)  # the snippet's journal.db
    with Sandbox() as sandbox:
        yield (
            sandbox,
            {
                "u": "demo-user",
                "p": "demo-pass",
                "k": "demo-api-key",
                "s": "demo-store",
                "key": "demo-key",
                "secret": "demo-secret",
                "events": [{"topic": "orders/create", "payload": ORDER}],
                "base": sandbox.url,
                "order_id": "450789469",
                "payload": load_mapping("shopify/order").transform(ORDER)["order"],
            },
        )


def _at(sandbox: Sandbox, code: str) -> str:
    hosts = ("https://fenix.example.com", "https://flow-server.eu.dgdeepai.com")
    for host in hosts:
        assert host in code or "{base}" in code
        code = code.replace(host, sandbox.url)
    return code


def test_the_config_built_from_objects_delivers(placeholders: Any) -> None:
    sandbox, names = placeholders
    code = _at(sandbox, _block("RuntimeConfig(")).replace('store_name="acme"', 'store_name="demo-store"')
    exec(compile(code, "docs/runtime.md", "exec"), names)
    assert names["summary"].delivered == 1 and names["summary"].ok
    assert [r.path for r in sandbox.requests(endpoint="fenix.orders")] == ["/api/v1/orders/450789469/created"]


def test_the_auth_scheme_serves_an_httpx_client(placeholders: Any) -> None:
    sandbox, names = placeholders
    code = _block("FenixSessionAuth(login_url")
    # Its top-level await runs in a coroutine, as in the caller's own async code.
    wrapped = "async def snippet():\n" + textwrap.indent(code, "    ")
    exec(compile(wrapped, "docs/runtime.md", "exec"), names)
    asyncio.run(names["snippet"]())
    assert [r.path for r in sandbox.requests(endpoint="fenix.orders")] == ["/api/v1/orders/450789469/created"]
    assert not sandbox.stats()["rejected"]
