"""The configuration write path and the live in-process copy, against a real redis-server."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
import redis.asyncio as redis

from tracker.config import model
from tracker.config.live import LiveConfig
from tracker.config.writer import ConfigWriter, NameTaken, VersionConflict
from tracker.eventstore import keys
from tracker.eventstore.store import EventStore
from tracker.projections.eligibility import decide_offer


async def test_create_update_conflict(store: EventStore, client: redis.Redis) -> None:
    writer = ConfigWriter(client)
    oid = await writer.next_id(model.OFFER)
    assert await writer.next_id(model.OFFER) == oid + 1
    offer = model.Offer(id=oid, tenant="t1", advertiser_id=1, version=0)
    _, v1 = await writer.save(model.OFFER, offer)
    assert v1.version == 1
    _, v2 = await writer.save(model.OFFER, msgspec.structs.replace(v1, status="paused"))
    assert v2.version == 2
    # a second admin still holding v1 is refused, and nothing is appended
    with pytest.raises(VersionConflict) as info:
        await writer.save(model.OFFER, msgspec.structs.replace(v1, name="stale"))
    assert info.value.current == 2
    with pytest.raises(VersionConflict):
        await writer.save(model.OFFER, offer)  # create again
    stored = await store.read(keys.CONFIG)
    assert [s.event.version for s in stored] == [1, 2]  # type: ignore[union-attr]


async def test_concurrent_writers_exactly_one_wins(client: redis.Redis) -> None:
    writers = [ConfigWriter(client), ConfigWriter(client)]
    base = model.Affiliate(id=5, tenant="t1", version=0)
    results = await asyncio.gather(
        *(
            w.save(model.AFFILIATE, msgspec.structs.replace(base, name=str(i)))
            for i, w in enumerate(writers)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, VersionConflict) for r in results) == 1
    assert await client.xlen(keys.stream(keys.CONFIG)) == 1


async def test_resent_call_appends_once(client: redis.Redis) -> None:
    """A call redis-py re-sends after a lost reply carries the same request token."""
    writer = ConfigWriter(client)
    token = keys.config_request("fixed")
    script_keys = [keys.stream(keys.CONFIG), token, keys.config_version("offer", "1")]
    args: list[bytes | str | int] = [300, 0, b'{"x":1}', 0, "1"]
    first = await writer._write(keys=script_keys, args=args)
    again = await writer._write(keys=script_keys, args=args)
    assert first == again
    assert await client.xlen(keys.stream(keys.CONFIG)) == 1


async def test_unique_claims(client: redis.Redis) -> None:
    writer = ConfigWriter(client)
    claim = keys.config_claim("t1", "tracker_code:1:abc")
    a = model.Tracker(id=1, tenant="t1", advertiser_id=1, line_item_id=1, publisher_id=1, version=0)
    b = msgspec.structs.replace(a, id=2)
    _, a1 = await writer.save(model.TRACKER, a, claims=[claim])
    with pytest.raises(NameTaken):
        await writer.save(model.TRACKER, b, claims=[claim])
    await writer.save(model.TRACKER, a1, claims=[claim])  # the owner may keep it
    assert await client.xlen(keys.stream(keys.CONFIG)) == 2
    _, a2 = await writer.save(
        model.TRACKER, msgspec.structs.replace(a1, version=2), releases=[claim]
    )
    assert a2.version == 3
    await writer.save(model.TRACKER, b, claims=[claim])


async def test_live_config_tails_and_syncs(store: EventStore, client: redis.Redis) -> None:
    writer = ConfigWriter(client)
    await writer.save(model.ADVERTISER, model.Advertiser(id=1, tenant="t1", version=0))
    live = LiveConfig(store, block_ms=200)
    await live.load()
    assert live.state.get(model.ADVERTISER, 1) is not None
    task = asyncio.create_task(live.run())
    try:
        offer = model.Offer(id=2, tenant="t1", advertiser_id=1, allow_impressions=True, version=0)
        position, _ = await writer.save(model.OFFER, offer)
        await writer.save(model.AFFILIATE, model.Affiliate(id=3, tenant="t1", version=0))
        state = await live.sync()
        assert not keys.id_after(position, state.position)
        assert decide_offer(state, 2, 3).eligible
    finally:
        live.stop()
        await task
