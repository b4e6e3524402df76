"""ProjectionRunner: batches, atomic checkpoint-with-changes, restarts, replays."""

from __future__ import annotations

import asyncio
from collections import Counter

import redis.asyncio as redis

from tests.factories import T0, configured, conversion, impression
from tracker.actors.runner import ProjectionRunner
from tracker.actors.supervisor import run_actor
from tracker.eventstore import keys
from tracker.eventstore.store import EventStore, as_str
from tracker.projections.counts import NAME, HourlyCounts, counts_key


async def totals(client: redis.Redis, parts: list[str], tenant: str, hour: str) -> Counter[str]:
    total: Counter[str] = Counter()
    for part in parts:
        raw = await client.hgetall(counts_key(part, tenant, hour))
        total.update({as_str(k): int(v) for k, v in raw.items()})
    return total


async def catch_up(store: EventStore, batch_size: int = 7) -> list[ProjectionRunner]:
    runners = [
        ProjectionRunner(store, HourlyCounts(), part, batch_size=batch_size)
        for part in HourlyCounts().parts(store.partitions)
    ]
    for runner in runners:
        await runner.run(until_caught_up=True)
    return runners


async def test_counts_per_type_tenant_hour(store: EventStore, client: redis.Redis) -> None:
    later = T0.replace(hour=11)
    await store.append_many(
        [impression() for _ in range(30)]
        + [conversion() for _ in range(5)]
        + [impression(at=later) for _ in range(4)]
        + [impression(tenant="t2") for _ in range(2)]
        + [configured()]
    )
    await catch_up(store)
    parts = [*store.partitions, keys.CONFIG]
    assert await totals(client, parts, "t1", "2026-01-15T10") == {
        "impression_seen": 30,
        "conversion_received": 5,
        "tracker_configured": 1,
    }
    assert await totals(client, parts, "t1", "2026-01-15T11") == {"impression_seen": 4}
    assert await totals(client, parts, "t2", "2026-01-15T10") == {"impression_seen": 2}


async def test_restart_resumes_without_double_counting(
    store: EventStore, client: redis.Redis
) -> None:
    await store.append_many([impression() for _ in range(20)])
    await catch_up(store)
    await store.append_many([impression() for _ in range(15)])
    await catch_up(store)  # fresh runners: they load the stored checkpoints
    await catch_up(store)
    parts = [*store.partitions, keys.CONFIG]
    assert (await totals(client, parts, "t1", "2026-01-15T10"))["impression_seen"] == 35
    for part in store.partitions:
        assert await store.checkpoint(part, NAME) in ("", await store.last_id(part))


async def test_stale_checkpoint_commit_changes_nothing(
    store: EventStore, client: redis.Redis
) -> None:
    imp = impression()
    result = await store.append(imp)
    part = result.partition
    ops = HourlyCounts().fold(part, await store.read(part))
    assert await store.commit(part, NAME, "", result.entry_id, ops) == (True, result.entry_id)
    # A re-sent commit (same expected position) is refused and applies nothing twice.
    assert await store.commit(part, NAME, "", result.entry_id, ops) == (False, result.entry_id)
    assert await totals(client, [part], "t1", "2026-01-15T10") == {"impression_seen": 1}


async def test_two_runners_on_one_partition_never_double_apply(
    store: EventStore, client: redis.Redis
) -> None:
    await store.append_many([impression(key=f"k{i}") for i in range(300)])
    runners = [
        ProjectionRunner(store, HourlyCounts(), part, batch_size=5)
        for part in store.partitions
        for _ in range(2)
    ]
    await asyncio.gather(*(r.run(until_caught_up=True) for r in runners))
    total = await totals(client, store.partitions, "t1", "2026-01-15T10")
    assert total["impression_seen"] == 300


async def test_actor_stops_promptly_on_signal(store: EventStore) -> None:
    stopping = asyncio.Event()
    task = asyncio.create_task(run_actor("projector", store, stopping))
    await store.append_many([impression() for _ in range(10)])
    await asyncio.sleep(0.3)
    stopping.set()
    await asyncio.wait_for(task, timeout=5)
    for part in store.partitions:
        assert await store.checkpoint(part, NAME) in ("", await store.last_id(part))
