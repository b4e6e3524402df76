"""Helpers for configuration API tests: an app client on the real redis-server, and tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tracker.config import auth, model
from tracker.config.writer import ConfigWriter
from tracker.eventstore.store import EventStore
from tracker.http.app import create_app
from tracker.settings import Settings

SETTINGS = Settings(public_url="https://track.example.com")


async def make_token(store: EventStore, tenant: str = "958", role: str = "admin") -> dict[str, str]:
    """Authorization headers for a fresh token of ``role`` in ``tenant``."""
    role_name, scope = auth.parse_role(role)
    token_id, digest, bearer = auth.mint()
    token = model.Token(
        id=token_id,
        tenant=tenant,
        role=role_name,
        scope_id=scope,
        secret_sha256=digest,
        version=0,
    )
    await ConfigWriter(store.client).save(model.TOKEN, token)
    return {"Authorization": f"Bearer {bearer}"}


@pytest.fixture(name="api")
async def api_fixture(store: EventStore) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(store, SETTINGS))) as client:
        yield client


async def ok(response: Any, status: int = 200) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body
