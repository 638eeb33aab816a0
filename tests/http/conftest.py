"""The HTTP suite: every test takes `server` (a Target, see tests/conftest.py) via `client`."""

from __future__ import annotations

import pytest
from http_checks import Client


@pytest.fixture
def client(server) -> Client:
    c = Client(server.base_url)
    yield c
    c.session.close()
