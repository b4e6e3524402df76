"""Impression lookup on a real redis-server: runner, every index, cap/prune, replay, HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestClient

from tests.factories import IDS, impression
from tests.integration.config_support import (
    make_token,
    ok,
    pixel_api_fixture,  # noqa: F401  # fixture
)
from tracker import events
from tracker.actors.runner import ProjectionRunner
from tracker.events import ImpressionSeen
from tracker.eventstore import keys, lookup
from tracker.eventstore.connection import connect
from tracker.eventstore.store import EventStore, as_str
from tracker.http.ingest import IMPRESSION_IDS
from tracker.projections import impressions as imp
from tracker.projections.impressions import FUTURE_SKEW_MS, ImpressionLookup

Client = TestClient[Any, Any]


@pytest.fixture(name="api")
def api_fixture(pixel_api: TestClient[Any, Any]) -> TestClient[Any, Any]:
    """Every test here runs on the lean pixel path and behind aiohttp's router."""
    return pixel_api


def recent(at: timedelta = timedelta(0), **fields: Any) -> ImpressionSeen:
    """An impression that occurred ``at`` before now (inside the default window)."""
    return impression(at=datetime.now(UTC) - at, **fields)


async def catch_up(
    store: EventStore, projection: ImpressionLookup | None = None, batch_size: int = 7
) -> None:
    projection = projection or ImpressionLookup()
    for part in projection.parts(store.partitions):
        await ProjectionRunner(store, projection, part, batch_size=batch_size).run(
            until_caught_up=True
        )


async def test_every_index_after_catching_up(store: EventStore, client: redis.Redis) -> None:
    parts = store.partitions
    seen = [
        recent(
            timedelta(minutes=30 - i),
            offer_id="12",
            affiliate_id="7",
            external_imp_id=f"ext-{i}",
            visitor_id="v1" if i % 2 else "v2",
            member_id="m1",
            ip="203.0.113.0",
            subs={"sub1": str(i)},
        )
        for i in range(20)
    ]
    other_tenant = recent(tenant="t2", offer_id="12", external_imp_id="ext-1", visitor_id="v1")
    await store.append_many([*seen, other_tenant])
    await catch_up(store)

    for e in seen:
        record = await lookup.get_record(client, parts, e.impression_id)
        assert record == msgspec.structs.replace(imp.record_of(e), impression_id=e.impression_id)
    found = await lookup.get_records(client, parts, [e.impression_id for e in seen])
    assert set(found) == {e.impression_id for e in seen}
    assert await lookup.get_record(client, parts, IDS.mint()) is None

    assert await lookup.find_by_external_imp_id(client, parts, "t1", "12", "ext-3") == (
        seen[3].impression_id
    )
    assert await lookup.find_by_external_imp_id(client, parts, "t2", "12", "ext-1") == (
        other_tenant.impression_id
    )
    assert await lookup.find_by_external_imp_id(client, parts, "t1", "13", "ext-3") is None

    newest_first = [e.impression_id for e in reversed(seen)]
    assert await lookup.recent_by_member(client, parts, "t1", "m1") == newest_first
    assert await lookup.recent_by_ip(client, parts, "t1", "203.0.113.0") == newest_first
    assert await lookup.recent_by_visitor(client, parts, "t1", "v1") == newest_first[::2]
    assert (
        await lookup.recent_by_visitor(client, parts, "t1", "v2", limit=3)
        == (newest_first[1::2][:3])
    )
    assert await lookup.recent_by_visitor(client, parts, "t2", "v1") == [other_tenant.impression_id]
    since = imp.ms_of(seen[17])
    assert (
        await lookup.recent_by_member(client, parts, "t1", "m1", since_ms=since)
        == (newest_first[:3])
    )
    assert await lookup.recent_by_ip(client, parts, "t1", "198.51.100.1") == []


async def test_a_freshpaint_imp_id_is_found_within_its_destination(
    store: EventStore, client: redis.Redis
) -> None:
    parts = store.partitions
    fp: dict[str, Any] = {"dialect": "freshpaint", "env_id": "t1", "external_imp_id": "FP-1"}
    dsp, crm = recent(dest_id="dsp", **fp), recent(timedelta(seconds=-1), dest_id="crm", **fp)
    await store.append_many([dsp, crm])
    await catch_up(store)
    assert await lookup.find_by_external_imp_id(client, parts, "t1", "dest:dsp", "FP-1") == (
        dsp.impression_id  # not overwritten by the later hit for another destination
    )
    assert await lookup.find_by_external_imp_id(client, parts, "t1", "dest:crm", "FP-1") == (
        crm.impression_id
    )
    assert await lookup.find_by_external_imp_id(client, parts, "t1", "", "FP-1") is None
    records = await lookup.get_records(client, parts, [dsp.impression_id, crm.impression_id])
    assert [r.dest_id for r in records.values()] == ["dsp", "crm"]  # told apart


async def test_counted_impression_wins_the_external_id(
    store: EventStore, client: redis.Redis
) -> None:
    first = recent(timedelta(minutes=2), offer_id="1", external_imp_id="x")
    dup = recent(
        timedelta(minutes=1),
        offer_id="1",
        external_imp_id="x",
        verdict="not_counted",
        reason="duplicate_imp_id",
        impression_id=IDS.mint(int(first.impression_id[20:32], 16) % 4, 4),  # same partition
    )
    await store.append_many([first, dup])
    await catch_up(store)
    assert await lookup.find_by_external_imp_id(client, store.partitions, "t1", "1", "x") == (
        first.impression_id
    )


async def test_old_events_write_nothing(store: EventStore, client: redis.Redis) -> None:
    await store.append_many(
        [recent(timedelta(days=31), visitor_id="v", ip="1.2.3.4", external_imp_id="x")]
    )
    await catch_up(store)
    assert await client.keys("tracker:*:proj:imp:*") == []


async def test_cap_prune_and_deadlines(store: EventStore, client: redis.Redis) -> None:
    """Entry ids set by hand (the log's clock), so the window can pass without sleeping."""
    window_ms, cap = 10_000, 5
    projection = ImpressionLookup(window_ms=window_ms, cap=cap)
    stream = keys.stream("p0")
    sec, usec = await client.time()
    base = int(sec) * 1000 + int(usec) // 1000

    async def add(at_ms: int, entry_ms: int) -> ImpressionSeen:
        e = impression(
            at=datetime.fromtimestamp(at_ms / 1000, UTC),
            impression_id=IDS.mint(0, 4),
            visitor_id="v",
        )
        await client.xadd(stream, {"event": events.encode(e)}, id=f"{entry_ms}-0")
        return e

    first = [await add(base + i, base + i) for i in range(8)]
    await catch_up(store, projection)
    key = imp.visitor_key("p0", "t1", "v")
    assert await lookup.recent_by_visitor(client, store.partitions, "t1", "v") == [
        e.impression_id for e in reversed(first[-cap:])
    ]
    assert -1000 < await client.pttl(key) - (7 + window_ms + FUTURE_SKEW_MS) <= 0
    record_ttl = await client.pttl(imp.record_key("p0", first[0].impression_id))
    assert window_ms - 2000 < record_ttl <= window_ms

    # An impression dated earlier but appended later keeps the set's deadline moving forward.
    late = await add(base - 2000, base + 20)
    assert await client.pttl(key) > window_ms + FUTURE_SKEW_MS - 2000
    # The log's clock moves past the window: the next write prunes what has expired.
    last = await add(base + window_ms + 7, base + window_ms + 7)
    await catch_up(store, projection)
    assert late.impression_id not in await client.zrange(key, 0, -1)
    assert [as_str(m) for m in await client.zrange(key, 0, -1)] == [last.impression_id]


async def snapshot(client: redis.Redis) -> dict[str, tuple[Any, float]]:
    """Every lookup key: its value and its absolute deadline (server TIME + PTTL)."""
    out: dict[str, tuple[Any, float]] = {}
    for raw in await client.keys("tracker:*:proj:imp:*"):
        key = as_str(raw)
        async with client.pipeline(transaction=True) as pipe:
            pipe.type(key)
            pipe.time()
            pipe.pttl(key)
            kind, (sec, usec), pttl = await pipe.execute()
        if as_str(kind) == "zset":
            value: Any = await client.zrange(key, 0, -1, withscores=True)
        else:
            value = await client.get(key)
        out[key] = (value, sec * 1000 + usec / 1000 + pttl)
    return out


async def test_replay_into_a_fresh_db_is_identical(
    store: EventStore, client: redis.Redis, redis_url: str
) -> None:
    batch = [
        recent(
            timedelta(minutes=i % 7),
            offer_id=str(i % 3),
            external_imp_id=f"e{i % 40}" if i % 3 else "",
            visitor_id=f"v{i % 11}",
            member_id=f"m{i % 2}",
            ip=f"10.0.0.{i % 5}",
            verdict="counted" if i % 4 else "not_counted",
            reason="" if i % 4 else "bot",
        )
        for i in range(300)
    ]
    await store.append_many(batch)
    await catch_up(store, ImpressionLookup(cap=20), batch_size=7)
    live = await snapshot(client)
    assert len(live) > 300

    fresh = connect(redis_url.rsplit("/", 1)[0] + "/1")
    replay = EventStore(fresh, partitions=4)
    try:
        for part in store.partitions:
            await client.copy(keys.stream(part), keys.stream(part), destination_db="1")
        await catch_up(replay, ImpressionLookup(cap=20), batch_size=123)
        rebuilt = await snapshot(fresh)
    finally:
        replay.close()  # its append pipe, which the commits opened
        await fresh.aclose()
    assert rebuilt.keys() == live.keys()
    for key, (value, deadline) in live.items():
        assert rebuilt[key][0] == value, key
        assert abs(rebuilt[key][1] - deadline) < 50, key


async def test_get_impression_over_http(api: Client, store: EventStore) -> None:
    admin = await make_token(store, "958")
    ids = api.app[IMPRESSION_IDS]  # the server's key: ids it did not mint are refused
    e = recent(tenant="958", offer_id="12", visitor_id="v", ip="203.0.113.0", subs={"sub1": "a"})
    e = msgspec.structs.replace(e, impression_id=ids.mint())
    await store.append(e)
    await catch_up(store)
    url = f"/impressions/{e.impression_id}"

    body = await ok(await api.get(url, headers=admin))
    assert body["impression_id"] == e.impression_id
    assert (body["tenant"], body["verdict"], body["offer_id"], body["subs"]) == (
        "958",
        "counted",
        "12",
        {"sub1": "a"},
    )
    assert body["occurred_at_ms"] == imp.ms_of(e)
    assert (body["dest_id"], body["member_id"]) == ("", "")
    assert body["occurred_at"].endswith("Z")

    async def status(path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        r = await api.get(path, headers=headers or {})
        return r.status, (await r.json())["error"]["code"]

    assert await status(url, await make_token(store, "959")) == (404, "not_found")
    assert await status(url, await make_token(store, "958", "publisher:1")) == (403, "forbidden")
    assert await status(url) == (401, "unauthorized")
    assert await status(url, {"Authorization": "Bearer nope"}) == (401, "unauthorized")
    assert await status(f"/impressions/{ids.mint()}", admin) == (404, "not_found")
    for bad in ("xyz", e.impression_id.upper(), e.impression_id + "0", IDS.mint()):
        assert await status(f"/impressions/{bad}", admin) == (400, "invalid_impression_id")


async def test_a_batch_of_ten_thousand_hits_from_one_ip_commits(
    store: EventStore, client: redis.Redis
) -> None:
    """The largest TRACKER_BATCH_SIZE with one IP behind every event: the sorted set's ZADD is
    split so the commit script never unpacks more than Lua's C stack holds."""
    batch = [recent(timedelta(seconds=i % 600), ip="198.51.100.0") for i in range(10_000)]
    await store.append_many(batch)
    await catch_up(store, ImpressionLookup(cap=100), batch_size=10_000)
    tenant = batch[0].tenant
    for part in store.partitions:  # each partition's set: the newest 100 of its ~2,500
        assert await client.zcard(imp.ip_key(part, tenant, "198.51.100.0")) == 100
    newest = await lookup.recent_by_ip(client, store.partitions, tenant, "198.51.100.0")
    assert len(newest) == 100


async def redis_now_ms(client: redis.Redis) -> int:
    sec, usec = await client.time()
    return int(sec) * 1000 + int(usec) // 1000


async def add_aff_1(
    client: redis.Redis, at_ms: int, entry_ms: int | None = None, **fields: Any
) -> str:
    """An impression naming imp_id AFF-1 on offer 1, appended to p0 as entry ``entry_ms`` (by
    default ``at_ms``): the log's order and time set apart; our id."""
    e = impression(
        at=datetime.fromtimestamp(at_ms / 1000, UTC),
        impression_id=IDS.mint(0, 4),
        offer_id="1",
        external_imp_id="AFF-1",
        **fields,
    )
    entry = entry_ms if entry_ms is not None else at_ms
    await client.xadd(keys.stream("p0"), {"event": events.encode(e)}, id=f"{entry}-0")
    return e.impression_id


async def test_a_duplicate_outliving_the_first_stays_findable_and_replays_alike(
    store: EventStore, client: redis.Redis, redis_url: str
) -> None:
    # A counted impression and, 1.5 s later, its not-counted duplicate, in a 3 s window: after
    # the first's window the duplicate's record lives on, and so must its place under the
    # external id, in the live state and in a rebuild made then.
    window_ms = 3_000
    base = await redis_now_ms(client)
    stream = keys.stream("p0")
    first = await add_aff_1(client, base)
    dup = await add_aff_1(client, base + 1_500, verdict="not_counted", reason="duplicate_imp_id")
    await catch_up(store, ImpressionLookup(window_ms=window_ms))
    parts = store.partitions
    assert await lookup.find_by_external_imp_id(client, parts, "t1", "1", "AFF-1") == first

    await asyncio.sleep((base + window_ms + 300) / 1000 - datetime.now(UTC).timestamp())
    assert await lookup.get_record(client, parts, first) is None
    assert await lookup.find_by_external_imp_id(client, parts, "t1", "1", "AFF-1") == dup
    live = await snapshot(client)

    fresh = connect(redis_url.rsplit("/", 1)[0] + "/1")
    await fresh.flushdb()
    replay = EventStore(fresh, partitions=4)
    try:
        await client.copy(stream, stream, destination_db="1")
        await catch_up(replay, ImpressionLookup(window_ms=window_ms))
        assert await lookup.find_by_external_imp_id(fresh, parts, "t1", "1", "AFF-1") == dup
        rebuilt = await snapshot(fresh)
    finally:
        replay.close()
        await fresh.aclose()
    assert rebuilt.keys() == live.keys()


async def test_a_counted_impression_outlasts_a_hundred_duplicates(
    store: EventStore, client: redis.Redis
) -> None:
    # page reloads, or an affiliate's unexpanded macro as imp_id: the duplicates are capped, the
    # counted impression is not pushed out by them
    first = recent(timedelta(minutes=200), offer_id="1", external_imp_id="x")
    route = int(first.impression_id[20:32], 16) % 4
    dups = [
        recent(
            timedelta(minutes=199 - i),
            offer_id="1",
            external_imp_id="x",
            verdict="not_counted",
            reason="duplicate_imp_id",
            impression_id=IDS.mint(route, 4),  # same partition
        )
        for i in range(imp.DEFAULT_CAP + 1)
    ]
    await store.append_many([first, *dups])
    await catch_up(store)
    found = await lookup.find_by_external_imp_id(client, store.partitions, "t1", "1", "x")
    assert found == first.impression_id


async def test_the_newest_counted_impression_wins_whatever_the_log_order(
    store: EventStore, client: redis.Redis
) -> None:
    # the newer impression is in the log first; the older one (same imp_id: drained from a
    # crashed host's spool after the newer one's 24 h claim had expired) comes after it
    window_ms = 3_000
    base = await redis_now_ms(client)
    newer = await add_aff_1(client, base + 1_500)
    await add_aff_1(client, base, entry_ms=base + 1_600)
    await catch_up(store, ImpressionLookup(window_ms=window_ms))
    parts = store.partitions
    assert await lookup.find_by_external_imp_id(client, parts, "t1", "1", "AFF-1") == newer
    await asyncio.sleep((base + window_ms + 300) / 1000 - datetime.now(UTC).timestamp())
    assert await lookup.find_by_external_imp_id(client, parts, "t1", "1", "AFF-1") == newer


async def test_a_pointer_written_before_the_sorted_sets_is_still_read(
    store: EventStore, client: redis.Redis
) -> None:
    e = recent(offer_id="1")
    await store.append_many([e])
    await catch_up(store)
    part = lookup.partition_of(store.partitions, e.impression_id)
    await client.set(imp.legacy_external_key(part, "t1", "1", "old"), e.impression_id)
    found = await lookup.find_by_external_imp_id(client, store.partitions, "t1", "1", "old")
    assert found == e.impression_id
