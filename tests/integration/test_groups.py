"""Consumer groups on every available Redis version: claims, own-pending, dead letters, NOGROUP."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.factories import impression
from tracker.eventstore import keys
from tracker.eventstore.groups import GroupReader
from tracker.eventstore.store import EventStore


async def _fill(store: EventStore, n: int) -> tuple[str, list[str]]:
    part = "p0"
    ids: list[str] = []
    for i in range(n):
        event = impression(key=f"g{i}", partitions=2)
        while store.partition_of(event) != part:
            event = impression(key=f"g{i}-{len(ids)}", partitions=2)
        ids.append((await store.append(event)).entry_id)
    return part, ids


def reader(store: EventStore, part: str, consumer: str, **kw: Any) -> GroupReader:
    return GroupReader(store, part, "fwd", consumer, **kw)


async def test_idle_entries_of_a_dead_consumer_are_claimed(vstore: EventStore) -> None:
    part, ids = await _fill(vstore, 5)
    dead = reader(vstore, part, "a", claim_idle_ms=50)
    await dead.ensure_group()
    got = await dead.next_batch(count=10, block_ms=100)
    assert [s.entry_id for s in got] == ids  # delivered, never acked: "a" dies here
    alive = reader(vstore, part, "b", claim_idle_ms=50)
    assert await alive.next_batch(count=10, block_ms=10) == []  # not idle long enough yet
    await asyncio.sleep(0.1)
    claimed = await alive.next_batch(count=10, block_ms=10)
    assert [s.entry_id for s in claimed] == ids
    await alive.ack(*ids)
    assert await alive.pending_count() == 0


async def test_restarted_consumer_drains_its_own_pending_first(vstore: EventStore) -> None:
    part, ids = await _fill(vstore, 4)
    first = reader(vstore, part, "a")
    await first.ensure_group()
    assert len(await first.next_batch(count=2, block_ms=10)) == 2  # then crash, no ack
    again = reader(vstore, part, "a")  # same consumer name after a restart
    own = await again.next_batch(count=10, block_ms=10)
    assert [s.entry_id for s in own] == ids[:2]
    await again.ack(*ids[:2])
    rest = await again.next_batch(count=10, block_ms=10)
    assert [s.entry_id for s in rest] == ids[2:]


async def test_poison_entry_goes_to_dead_letter(vstore: EventStore) -> None:
    part, ids = await _fill(vstore, 1)
    for attempt in range(4):
        r = reader(vstore, part, f"c{attempt}", claim_idle_ms=0, max_deliveries=2)
        await r.ensure_group()
        await asyncio.sleep(0.01)
        got = await r.next_batch(count=10, block_ms=10)
        if not got:
            break
    dead: Any = await vstore.client.xrange(keys.dead_letter(part, "fwd"))
    assert len(dead) == 1
    assert dead[0][1][b"entry_id"].decode() == ids[0]
    assert await r.pending_count() == 0


async def test_deleted_entry_does_not_loop(vstore: EventStore) -> None:
    part, ids = await _fill(vstore, 3)
    first = reader(vstore, part, "a", claim_idle_ms=0)
    await first.ensure_group()
    await first.next_batch(count=10, block_ms=10)
    await vstore.client.xdel(keys.stream(part), ids[1])  # body gone while pending
    other = reader(vstore, part, "b", claim_idle_ms=0)
    await asyncio.sleep(0.01)
    claimed = await other.next_batch(count=10, block_ms=10)
    assert [s.entry_id for s in claimed] == [ids[0], ids[2]]
    await other.ack(ids[0], ids[2])
    assert await other.pending_count() == 0
    assert await other.next_batch(count=10, block_ms=10) == []


async def test_group_is_recreated_after_nogroup(vstore: EventStore) -> None:
    part, ids = await _fill(vstore, 2)
    r = reader(vstore, part, "a")
    await r.ensure_group()
    await vstore.client.xgroup_destroy(keys.stream(part), "fwd")  # as after a Redis restart
    got = await r.next_batch(count=10, block_ms=10)
    assert [s.entry_id for s in got] == ids
