"""The sandbox's fake store API as a rate-limited store: it remembers when each GET arrived
(``source_requests()``), and an injected 429 says when to come back as its platform does."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
from shipmap.connectors import Sandbox

from .harness import BC_API_TOKEN, SOURCE_DOCUMENTS


def _store(into: Path, orders: range, platform: str = "bigcommerce") -> Path:
    """The fixture store API under ``platform``, with orders past 101 as copies of 101 under their own ids."""
    shutil.copytree(SOURCE_DOCUMENTS / "bigcommerce", into / platform)
    folder = into / platform / "stores" / "abc123" / "v2" / "orders"
    for order in orders:
        if not (folder / f"{order}.json").exists():
            text = (folder / "101.json").read_text()
            (folder / f"{order}.json").write_text(
                text.replace('"id": 101', f'"id": {order}').replace("/101/", f"/{order}/")
            )
            shutil.copytree(folder / "101", folder / str(order))
    return into


def test_the_sandbox_store_api_remembers_each_get_and_answers_429_as_its_platform_does(
    tmp_path: Path,
) -> None:
    with Sandbox(
        source_documents=_store(tmp_path / "api", range(100, 101), "shopify"),
        source_token=BC_API_TOKEN,
        source_faults="retry-after=3,schedule=429,ok,429",
    ) as sandbox:
        _store(tmp_path / "api", range(100, 101))  # a bigcommerce platform too, beside it
        with httpx.Client(base_url=sandbox.url, headers={"X-Auth-Token": BC_API_TOKEN}) as client:
            shopify = client.get("/_source/shopify/stores/abc123/v2/orders/100")
            ok = client.get("/_source/shopify/stores/abc123/v2/orders/100")
            bigcommerce = client.get("/_source/bigcommerce/stores/abc123/v2/orders/100")
            listed = client.get("/_sandbox/source-requests").json()
        gets = sandbox.source_requests()
        sandbox.reset()
        after_reset = sandbox.source_requests()
    assert shopify.status_code == 429 and shopify.headers["Retry-After"] == "3"
    assert "X-Rate-Limit-Time-Reset-Ms" not in shopify.headers
    assert ok.status_code == 200 and ok.json()["id"] == 100
    assert bigcommerce.status_code == 429 and bigcommerce.headers["X-Rate-Limit-Time-Reset-Ms"] == "3000"
    assert "Retry-After" not in bigcommerce.headers
    assert [(get["path"], get["status"]) for get in gets] == [
        ("/_source/shopify/stores/abc123/v2/orders/100", 429),
        ("/_source/shopify/stores/abc123/v2/orders/100", 200),
        ("/_source/bigcommerce/stores/abc123/v2/orders/100", 429),
    ]
    assert gets[0]["at"] <= gets[1]["at"] <= gets[2]["at"]
    assert listed == {"count": 3, "requests": gets}
    assert after_reset == []
