from __future__ import annotations

from collections.abc import Iterator

import pytest
from shipmap.connectors import Sandbox

from .harness import BC_API_TOKEN, SOURCE_DOCUMENTS


@pytest.fixture
def source_sandbox() -> Iterator[Sandbox]:
    """A sandbox of its own that also serves the fake BigCommerce store API."""
    with Sandbox(source_documents=SOURCE_DOCUMENTS, source_token=BC_API_TOKEN) as server:
        yield server
