"""Redis goes away under pixel and batch load and comes back: every acknowledged impression is in
the log exactly once (pixels through the fsynced spool; the batch API through 503 + retries)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from tests.factories import impression
from tests.integration.config_support import FrontTestServer, make_token, ok
from tracker.config.live import SYNC_TIMEOUT_S
from tracker.events import ImpressionSeen
from tracker.eventstore.embedded import EmbeddedRedis
from tracker.eventstore.spool import spool_dir, spool_files
from tracker.eventstore.store import EventStore
from tracker.http import ingest
from tracker.http.app import READY_TIMEOUT_S, create_app
from tracker.http.impressions import LOOKUP_TIMEOUT_S
from tracker.http.ingest import DRAIN_INTERVAL_S, PIXEL_DEADLINE_S
from tracker.service import open_store
from tracker.settings import Settings

BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36"}


async def _logged_ids(store: EventStore) -> Counter[str]:
    ids: Counter[str] = Counter()
    for part in store.partitions:
        after = "0-0"
        while batch := await store.read(part, after, 5000):
            ids.update(s.event.impression_id for s in batch if isinstance(s.event, ImpressionSeen))
            after = batch[-1].entry_id
    return ids


async def _setup(api: TestClient[Any, Any], store: EventStore) -> str:
    h = await make_token(store)
    adv = await ok(await api.post("/advertisers", json={"name": "A"}, headers=h), 201)
    aff = await ok(await api.post("/affiliates", json={"name": "F"}, headers=h), 201)
    body = {"name": "O", "advertiser_id": adv["id"], "allow_impressions": True}
    offer = await ok(await api.post("/offers", json=body, headers=h), 201)
    return f"/imp?aid={aff['id']}&oid={offer['id']}"


class _Browsers:
    """16 visitors asking for a pixel over pixel-only connections (the lean path) until a time:
    the ids answered 200, the other statuses, and the slowest answer."""

    def __init__(self) -> None:
        self.acked: list[str] = []
        self.failures: Counter[int] = Counter()
        self.slowest = 0.0

    async def run(self, session: aiohttp.ClientSession, url: Any, seconds: float) -> None:
        stop_at = time.monotonic() + seconds

        async def visitor() -> None:
            while time.monotonic() < stop_at:
                started = time.monotonic()
                async with session.get(url, headers=BROWSER) as r:
                    await r.read()
                    assert r.headers["Server"] == "tracker"
                self.slowest = max(self.slowest, time.monotonic() - started)
                if r.status == 200:
                    self.acked.append(r.headers["X-Impression-Id"])
                else:
                    self.failures[r.status] += 1

        await asyncio.gather(*(visitor() for _ in range(16)))


async def _until_drained(settings: Settings) -> None:
    deadline = time.monotonic() + 30
    while spool_files(spool_dir(settings.data_dir)):
        assert time.monotonic() < deadline, "the spool was not drained"
        await asyncio.sleep(0.2)


async def _assert_each_logged_once(store: EventStore, acked: list[str]) -> None:
    logged = await _logged_ids(store)
    missing = [i for i in acked if i not in logged]
    twice = [i for i, n in logged.items() if n > 1]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged impressions lost"
    assert not twice, f"{len(twice)} impressions logged more than once"


async def test_pixels_spool_while_redis_is_down_and_drain_exactly_once(
    any_server: EmbeddedRedis, any_store: EventStore, tmp_path: Path
) -> None:
    store = any_store
    settings = Settings(data_dir=tmp_path / "var")
    browsers = _Browsers()
    async with (
        TestClient(FrontTestServer(create_app(store, settings))) as api,
        aiohttp.ClientSession() as session,
    ):
        load = asyncio.ensure_future(
            browsers.run(session, api.make_url(await _setup(api, store)), 5.0)
        )
        await asyncio.sleep(1.5)
        before_outage = len(browsers.acked)
        any_server.kill()  # SIGKILL under load
        await asyncio.sleep(1.5)
        during_outage = len(browsers.acked) - before_outage
        any_server.start()
        await load
        await _until_drained(settings)
    assert not browsers.failures, browsers.failures
    assert during_outage > 0  # pixels kept answering while Redis was down (spooled)
    await _assert_each_logged_once(store, browsers.acked)


async def test_batch_answers_503_while_down_and_retries_land_once(
    any_server: EmbeddedRedis, any_store: EventStore, tmp_path: Path
) -> None:
    store = any_store
    path = "/publisher.v1/impression/record"
    async with TestClient(TestServer(create_app(store, Settings(data_dir=tmp_path)))) as api:
        h = await make_token(store, role="publisher:1")
        batches = [
            {
                "impressions": [
                    {
                        "member_id": f"m{b}-{i}",
                        "creative_id": "c",
                        "ad_unit_id": "a",
                        "idempotency_key": f"b{b}-{i}",
                    }
                    for i in range(200)
                ]
            }
            for b in range(20)
        ]
        statuses: Counter[int] = Counter()

        async def publisher(body: dict[str, Any]) -> None:
            while True:  # a well-behaved client: retry on 503 with the same keys
                r = await api.post(path, json=body, headers=h)
                statuses[r.status] += 1
                if r.status == 200:
                    return
                assert r.status == 503
                assert r.headers["Retry-After"] == "1"
                await asyncio.sleep(0.2)

        first = asyncio.gather(*(publisher(b) for b in batches[:10]))
        await first
        any_server.kill()
        late = asyncio.gather(*(publisher(b) for b in batches[10:]))
        await asyncio.sleep(1.5)
        any_server.start()
        await asyncio.wait_for(late, 60)
        await asyncio.gather(*(publisher(b) for b in batches[:3]))  # a client's repeat
    assert statuses[503] > 0
    logged = await _logged_ids(store)
    assert len(logged) == 20 * 200
    assert max(logged.values()) == 1


async def test_pixels_answer_within_the_deadline_while_redis_hangs_and_land_once(
    any_server: EmbeddedRedis, any_store: EventStore, tmp_path: Path
) -> None:
    """A hung Redis (SIGSTOP: no error, no answer) must not hold pixels for the socket timeout:
    past PIXEL_DEADLINE_S each hit goes to the spool and is answered. Calls already sent run
    when Redis wakes up, or are fenced by the drainer first: either way each hit lands once."""
    store = any_store
    settings = Settings(data_dir=tmp_path / "var")
    browsers = _Browsers()
    assert any_server.process is not None
    async with (
        TestClient(FrontTestServer(create_app(store, settings))) as api,
        aiohttp.ClientSession() as session,
    ):
        load = asyncio.ensure_future(
            browsers.run(session, api.make_url(await _setup(api, store)), 9.0)
        )
        await asyncio.sleep(1.5)
        any_server.process.send_signal(signal.SIGSTOP)
        try:
            before = len(browsers.acked)
            await asyncio.sleep(6.0)  # longer than the deadline, shorter than the 10 s timeout
            during_hang = len(browsers.acked) - before
        finally:
            any_server.process.send_signal(signal.SIGCONT)
        await load
        await _until_drained(settings)
    assert not browsers.failures, browsers.failures
    assert during_hang > 0  # answered while Redis hung (spooled)
    assert browsers.slowest < PIXEL_DEADLINE_S + 2.0, f"a pixel waited {browsers.slowest:.1f} s"
    await _assert_each_logged_once(store, browsers.acked)


async def test_readiness_and_lookups_answer_503_while_redis_hangs(
    one_server: EmbeddedRedis, one_store: EventStore, tmp_path: Path
) -> None:
    """A hung Redis must make /readyz say 503 within its own deadline (a probe gives up after a
    few seconds), and an impression lookup answer 503 instead of holding the request ~40 s."""
    store = one_store
    assert one_server.process is not None
    async with TestClient(TestServer(create_app(store, Settings(data_dir=tmp_path)))) as api:
        h = await make_token(store)
        pixel = await api.get(await _setup(api, store), headers=BROWSER)
        impression_id = pixel.headers["X-Impression-Id"]
        assert (await api.get("/readyz")).status == 200
        one_server.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            ready = await api.get("/readyz")
            ready_s = time.monotonic() - started
            ready_body = await ready.json()
            started = time.monotonic()
            found = await api.get(f"/impressions/{impression_id}", headers=h)
            lookup_s = time.monotonic() - started
            found_body = await found.json()
            # a token this process has not seen makes it read the config stream's end first
            started = time.monotonic()
            stranger = await api.get(
                f"/impressions/{impression_id}",
                headers={"Authorization": "Bearer trk_" + "0" * 16 + "_" + "s" * 43},
            )
            stranger_s = time.monotonic() - started
            stranger_body = await stranger.json()
        finally:
            one_server.process.send_signal(signal.SIGCONT)
        assert (ready.status, ready_body["error"]["code"]) == (503, "redis_unavailable")
        assert ready_s < READY_TIMEOUT_S + 1.0
        assert (found.status, found_body["error"]["code"]) == (503, "unavailable")
        assert found.headers["Retry-After"] == "1"
        assert lookup_s < LOOKUP_TIMEOUT_S + 1.0
        assert (stranger.status, stranger_body["error"]["code"]) == (503, "config_unavailable")
        assert stranger_s < SYNC_TIMEOUT_S + 1.0
        assert (await api.get("/readyz")).status == 200  # and ready again once Redis answers


async def test_shutdown_does_not_wait_for_a_hung_redis(
    one_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """An append in flight when Redis hangs must not hold the process's shutdown for the
    call's timeouts and retries (minutes): the store's drain gives up after its deadline."""
    settings = Settings(data_dir=tmp_path / "var")
    assert one_server.process is not None
    try:
        async with open_store(settings, one_server.url, drain_timeout_s=1.0) as store:
            await store.append(impression())
            one_server.process.send_signal(signal.SIGSTOP)
            appending = asyncio.ensure_future(store.append(impression()))
            await asyncio.sleep(0.3)
            started = time.monotonic()
        closed_s = time.monotonic() - started
    finally:
        one_server.process.send_signal(signal.SIGCONT)
    assert closed_s < 3.0, f"shutdown waited {closed_s:.1f} s"
    assert appending.done()


async def test_a_drain_pass_stuck_on_a_hung_redis_does_not_hold_the_shutdown(
    one_server: EmbeddedRedis, one_store: EventStore, tmp_path: Path, monkeypatch: Any
) -> None:
    """Pixels spooled while Redis hangs, then the web stops: the drain pass that is waiting on
    Redis is cut short after DRAIN_STOP_S, and its file stays for the next drain."""
    monkeypatch.setattr(ingest, "DRAIN_STOP_S", 1.0)
    settings = Settings(data_dir=tmp_path / "var")
    assert one_server.process is not None
    try:
        async with TestClient(FrontTestServer(create_app(one_store, settings))) as api:
            url = await _setup(api, one_store)
            one_server.process.send_signal(signal.SIGSTOP)
            pixel = await api.get(url, headers=BROWSER)  # spooled past the deadline
            assert pixel.status == 200
            await asyncio.sleep(2 * DRAIN_INTERVAL_S)  # a drain pass starts and waits on Redis
            started = time.monotonic()
        closed_s = time.monotonic() - started
        assert spool_files(spool_dir(settings.data_dir))
    finally:
        one_server.process.send_signal(signal.SIGCONT)
    assert closed_s < 4.0, f"shutdown waited {closed_s:.1f} s"
