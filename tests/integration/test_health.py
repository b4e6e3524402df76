"""/healthz and /readyz as a load balancer sees them."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.config_support import api_fixture, ok  # noqa: F401  # fixture
from tracker.config.live import LIVE_CONFIG
from tracker.eventstore import keys

Client = TestClient[Any, Any]


async def test_ready_until_the_configuration_tail_fails(api: Client) -> None:
    assert await ok(await api.get("/healthz")) == {"status": "ok"}
    assert await ok(await api.get("/readyz")) == {"status": "ready"}
    api.app[LIVE_CONFIG].failure = RuntimeError("fold bug")
    r = await api.get("/readyz")
    assert r.status == 503
    assert (await r.json())["error"]["code"] == "config_stale"
    assert (await api.get("/healthz")).status == 200


async def test_unknown_paths_and_methods_are_json_errors(api: Client) -> None:
    r = await api.get("/nope")
    assert (r.status, (await r.json())["error"]["code"]) == (404, "not_found")
    r = await api.delete("/healthz")
    assert (r.status, (await r.json())["error"]["code"]) == (405, "method_not_allowed")
    assert "GET" in r.headers["Allow"]


async def test_an_unknown_config_event_makes_the_process_unready(api: Client) -> None:
    store = api.app[LIVE_CONFIG].store
    raw = b'{"type": "from_a_newer_build", "event_id": "x"}'
    await store.client.xadd(keys.stream(keys.CONFIG), {"event": raw})
    for _ in range(100):
        if api.app[LIVE_CONFIG].failure is not None:
            break
        await asyncio.sleep(0.02)
    r = await api.get("/readyz")
    assert (r.status, (await r.json())["error"]["code"]) == (503, "config_stale")
