"""A configuration write while Redis hangs (SIGSTOP: no error, no answer): the writer gives up
within its deadline and says the outcome is unknown; once Redis answers, a retry based on the
same version is refused if the write did land, so it is never applied twice."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.integration.config_support import make_token, ok
from tracker.config import model, writer
from tracker.config.writer import CONFIG_WRITER, ConfigWriter, VersionConflict, WriteUncertain
from tracker.eventstore import keys
from tracker.eventstore.embedded import EmbeddedRedis
from tracker.eventstore.store import EventStore
from tracker.http.app import create_app
from tracker.settings import Settings

pytestmark = pytest.mark.fault


async def test_a_write_to_a_hung_redis_is_uncertain_then_never_applied_twice(
    one_server: EmbeddedRedis, one_store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "WRITE_TIMEOUT_S", 1.0)
    w = ConfigWriter(one_store.client)
    oid = await w.next_id(model.OFFER)
    _, v1 = await w.save(model.OFFER, model.Offer(id=oid, tenant="t1", advertiser_id=1, version=0))
    assert one_server.process is not None
    one_server.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(WriteUncertain):
            await w.save(model.OFFER, msgspec.structs.replace(v1, status="paused"))
        took = time.monotonic() - started
    finally:
        one_server.process.send_signal(signal.SIGCONT)
    assert took < 1.0 + 1.0
    await one_store.client.ping()  # Redis is past what it had buffered while stopped
    landed = await one_store.client.get(keys.config_version(model.OFFER, str(oid))) == b"2"
    # the retry a careful client makes: the same change, based on the same version
    retry = msgspec.structs.replace(v1, status="paused")
    if landed:
        with pytest.raises(VersionConflict):
            await w.save(model.OFFER, retry)
    else:
        assert (await w.save(model.OFFER, retry))[1].version == 2
    config = await one_store.client.xrange(keys.stream(keys.CONFIG))
    assert len(config or []) == 2  # created, paused: once


async def test_an_uncertain_write_is_a_503_naming_the_object(
    one_store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with TestClient(TestServer(create_app(one_store, Settings(data_dir=tmp_path)))) as api:
        h = await make_token(one_store)
        adv = await ok(await api.post("/advertisers", json={"name": "A"}, headers=h), 201)

        async def hung(*args: object, **kwargs: object) -> None:
            raise WriteUncertain("Redis did not answer within 10 s")

        monkeypatch.setattr(api.app[CONFIG_WRITER], "save", hung)
        r = await api.patch(
            f"/advertisers/{adv['id']}", json={"name": "B"}, headers={**h, "If-Match": "1"}
        )
        body = await r.json()
        created = await api.post("/advertisers", json={"name": "C"}, headers=h)
        created_body = await created.json()
    assert r.status == 503
    assert body["error"]["code"] == "write_uncertain"
    assert f"read advertiser {adv['id']} before retrying" in body["error"]["message"]
    # a create retried would be a second object: the answer names the id to look for
    assert (created.status, created_body["error"]["code"]) == (503, "write_uncertain")
    assert f"advertiser {adv['id'] + 1} may have been created" in created_body["error"]["message"]
