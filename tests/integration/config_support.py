"""Helpers for configuration API tests: an app client on the real redis-server, and tokens."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tracker.config import auth, model
from tracker.config.writer import ConfigWriter
from tracker.eventstore.store import EventStore
from tracker.http.access_log import AccessLog
from tracker.http.app import create_app
from tracker.http.front import FrontRunner
from tracker.settings import Settings

# a data dir of the test run's own: the app's spool lives there, never in the checkout
SETTINGS = Settings(
    public_url="https://track.example.com", data_dir=Path(tempfile.mkdtemp(prefix="tracker-test-"))
)


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


class FrontTestServer(TestServer):
    """The app behind the production socket: ``FrontRunner`` (lean pixel path, aiohttp for the
    rest), as ``tracker web`` serves it."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return FrontRunner(self.app, AccessLog("info", "json"), **kwargs)


@pytest.fixture(name="api")
async def api_fixture(store: EventStore) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(FrontTestServer(create_app(store, SETTINGS))) as client:
        yield client


async def ok(response: Any, status: int = 200) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


@pytest.fixture(name="pixel_api", params=["lean", "aiohttp"])
async def pixel_api_fixture(
    request: pytest.FixtureRequest, store: EventStore
) -> AsyncIterator[TestClient[Any, Any]]:
    """Pixel tests run twice: "lean", one connection per request, so every pixel hit takes the
    lean path of ``tracker.http.front`` (as a browser's does); "aiohttp", behind aiohttp's router
    (where a pixel lands on a connection that was handed over)."""
    if request.param == "lean":
        server: TestServer = FrontTestServer(create_app(store, SETTINGS))
        connector = aiohttp.TCPConnector(force_close=True)
        async with TestClient(server, connector=connector) as client:
            yield client
    else:
        async with TestClient(TestServer(create_app(store, SETTINGS))) as client:
            yield client
