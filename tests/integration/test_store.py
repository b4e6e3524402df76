"""EventStore against a real redis-server: idempotent, group-committed appends and reads."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
import redis.asyncio as redis
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.factories import configured, conversion, impression
from tracker.events import ImpressionSeen, UnknownEvent, encode
from tracker.eventstore import keys
from tracker.eventstore.connection import connect
from tracker.eventstore.embedded import free_port
from tracker.eventstore.store import (
    FENCE,
    AppendUncertain,
    Claim,
    EventStore,
    PartitionMismatch,
    as_str,
)


async def test_append_then_read_back(store: EventStore) -> None:
    event = impression(offer_id="7")
    result = await store.append(event)
    assert not result.duplicate
    assert result.partition == store.partition_of(event)
    stored = await store.read(result.partition)
    assert [(s.entry_id, s.event) for s in stored] == [(result.entry_id, event)]


async def test_duplicate_key_returns_original_entry(store: EventStore) -> None:
    first = await store.append(impression(key="k1"), idempotency_key="k1")
    again = await store.append(impression(key="k1"), idempotency_key="k1")
    assert again.duplicate
    assert again.entry_id == first.entry_id
    assert await store.length(first.partition) == 1


async def test_same_key_twice_in_one_group_appends_once(store: EventStore) -> None:
    event = impression(impression_id="b" * 32)
    a, b = await asyncio.gather(
        store.append(event, idempotency_key="same"), store.append(event, idempotency_key="same")
    )
    assert (a.duplicate, b.duplicate) == (False, True)
    assert a.entry_id == b.entry_id
    assert await store.length(a.partition) == 1


async def test_concurrent_appends_share_one_round_trip(
    store: EventStore, client: redis.Redis
) -> None:
    before = int((await client.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0))
    events = [impression(impression_id=f"{i:032x}") for i in range(200)]
    results = await asyncio.gather(*(store.append(e) for e in events))
    stats = await client.info("commandstats")
    calls = int(stats["cmdstat_evalsha"]["calls"]) - before
    # one script call per partition for the whole tick (4 partitions)
    assert calls <= store.partition_count
    assert len({(r.partition, r.entry_id) for r in results}) == 200
    total = sum([await store.length(p) for p in store.partitions])
    assert total == 200


async def test_each_caller_gets_its_own_entry(store: EventStore) -> None:
    events = [impression(impression_id=f"{i:032x}") for i in range(50)]
    results = await asyncio.gather(*(store.append(e) for e in events))
    for event, result in zip(events, results, strict=True):
        [stored] = await store.read_range(result.partition, result.entry_id, result.entry_id)
        assert stored.event == event


async def test_failure_fails_only_its_callers(store: EventStore, client: redis.Redis) -> None:
    events = [impression(key="poison")] + [impression() for i in range(39)]
    victim = store.partition_of(events[0])
    # A key bucket of the wrong type makes the victim partition's script call fail on a read
    # before it writes anything (the bucket of this period; the previous one after a rollover).
    ttl = store.idempotency_ttl_s
    await client.set(f"{keys.idempotency(victim)}:{ttl}:{int(time.time()) // ttl}", "x")
    calls = [
        store.append(e, idempotency_key="poison" if i == 0 else None) for i, e in enumerate(events)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    for event, result in zip(events, results, strict=True):
        if store.partition_of(event) == victim:
            assert isinstance(result, redis.ResponseError)
        else:
            assert not isinstance(result, BaseException)
    assert await store.length(victim) == 0  # the failed group wrote nothing
    others = sum([await store.length(p) for p in store.partitions if p != victim])
    assert others == sum(store.partition_of(e) != victim for e in events)


@pytest.mark.parametrize("path", ["pipe", "redis-py"])
async def test_groups_with_and_without_keys_append_alike(
    store: EventStore, client: redis.Redis, path: str
) -> None:
    """A group with no key or claim (a pixel's) goes through APPEND_PLAIN, one with a key through
    APPEND: each caller gets its own entry, in order, whichever script and connection."""
    if path == "redis-py":
        store._pipe = None  # as for rediss:// URLs
    plain = [impression(key="k-0") for _ in range(12)]  # all routed to the key's partition
    keyed = [impression(key="k-0") for _ in range(3)]
    part = store.partition_of(plain[0])
    assert {store.partition_of(e) for e in plain + keyed} == {part}
    first = await asyncio.gather(*(store.append(e) for e in plain))
    mixed = await asyncio.gather(
        store.append(keyed[0], idempotency_key="k-0"),
        store.append(keyed[1]),
        store.append(keyed[2], idempotency_key="k-0"),
    )
    assert [r.duplicate for r in mixed] == [False, False, True]
    stored = await store.read(part, count=100)
    assert [s.event for s in stored] == plain + keyed[:2]
    assert [s.entry_id for s in stored] == [r.entry_id for r in [*first, *mixed[:2]]]
    assert mixed[2].entry_id == mixed[0].entry_id


async def test_a_plain_group_on_a_wrong_type_fails_and_writes_nothing(
    store: EventStore, client: redis.Redis
) -> None:
    events = [impression(key="one-partition") for _ in range(5)]
    part = store.partition_of(events[0])
    await client.set(keys.stream(part), "x")  # the stream's key holds a string
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        await asyncio.gather(*(store.append(e) for e in events))
    assert await client.get(keys.stream(part)) == b"x"
    assert await client.keys(keys.group_token(part, "*")) == []  # no token: the call wrote nothing


async def test_partition_of_follows_the_documented_rules(store: EventStore) -> None:
    imp = impression(impression_id="c" * 32)
    assert store.partition_of(configured()) == keys.CONFIG
    named = conversion(aimp_id=imp.impression_id)
    assert store.partition_of(named) == store.partition_of(imp)
    plain = conversion(conversion_id="x1")
    assert store.partition_of(plain) == store.partition_of(conversion(conversion_id="x1"))


async def test_stream_ids_compare_as_numbers(store: EventStore) -> None:
    assert keys.id_after("10-0", "9-5")
    assert not keys.id_after("9-10", "10-0")
    assert keys.id_after("5-10", "5-9")


async def test_partition_count_is_fixed_once_used(client: redis.Redis) -> None:
    await EventStore(client, partitions=4).check_partitions()
    with pytest.raises(PartitionMismatch, match="created with 4"):
        await EventStore(client, partitions=8).check_partitions()


async def test_append_many_mixes_keys_and_no_keys(store: EventStore) -> None:
    events = [impression(key=f"key-{i % 5}") for i in range(10)]
    items = [(e, f"key-{i % 5}") for i, e in enumerate(events)]
    results = await store.append_many(items)
    assert sum(r.duplicate for r in results) == 5
    again = await store.append_many(items)
    assert all(r.duplicate for r in again)
    assert [r.entry_id for r in again] == [results[i % 5].entry_id for i in range(10)]


async def test_a_key_is_remembered_for_one_to_two_ttls(client: redis.Redis) -> None:
    """Keys live in per-period buckets (scripts.APPEND): a repeat within the ttl is a duplicate,
    also across a period boundary; once two periods have passed the key is forgotten."""
    store = EventStore(client, partitions=1, idempotency_ttl_s=1)
    try:
        first = await store.append(impression(), "k")
        await asyncio.sleep(1.0 - time.time() % 1.0 + 0.05)  # into the next period (Redis's clock)
        again = await store.append(impression(), "k")
        assert again.duplicate
        assert again.entry_id == first.entry_id
        buckets = [k async for k in client.scan_iter(f"{keys.idempotency('p0')}:*")]
        assert buckets
        assert all(0 < ttl <= 2 for ttl in [await client.ttl(b) for b in buckets])
        await asyncio.sleep(2.1)
        later = await store.append(impression(), "k")
        assert not later.duplicate
        assert later.entry_id != first.entry_id
    finally:
        await store.drain()
        store.close()


async def test_read_after_position_is_exclusive(store: EventStore) -> None:
    imp = impression(impression_id="d" * 32)
    part = store.partition_of(imp)
    ids = [(await store.append(impression(impression_id="d" * 32))).entry_id for _ in range(3)]
    after = await store.read(part, after=ids[0])
    assert [s.entry_id for s in after] == ids[1:]


async def test_claim_appends_the_alternative_after_the_first(store: EventStore) -> None:
    def hit(verdict: str = "counted") -> ImpressionSeen:
        return impression(key="offer7:imp-1", verdict=verdict, external_imp_id="imp-1")

    def claimed() -> Claim:
        dup = hit("not_counted")
        return Claim("offer7:imp-1", 86400, msgspec.structs.replace(dup, reason="duplicate_imp_id"))

    first = await store.append(hit(), claim=claimed())
    second, third = await asyncio.gather(
        store.append(hit(), claim=claimed()), store.append(hit(), claim=claimed())
    )
    assert (first.alternate, second.alternate, third.alternate) == (False, True, True)
    stored = await store.read(first.partition)
    assert [(s.event.verdict, s.event.reason) for s in stored] == [  # type: ignore[union-attr]
        ("counted", ""),
        ("not_counted", "duplicate_imp_id"),
        ("not_counted", "duplicate_imp_id"),
    ]


async def test_claim_alternative_must_share_the_partition(store: EventStore) -> None:
    a = impression(key="x")
    other = next(
        e
        for e in (impression() for _ in range(100))
        if store.partition_of(e) != store.partition_of(a)
    )
    with pytest.raises(ValueError, match="same partition"):
        await store.append(a, claim=Claim("x", 10, other))


async def test_unreachable_redis_makes_the_append_uncertain() -> None:
    client = connect(f"redis://127.0.0.1:{free_port()}/0")
    try:
        store = EventStore(client, partitions=4)
        with pytest.raises(AppendUncertain) as info:
            await store.append(impression())
        assert info.value.group_token.startswith("tracker:{p")
    finally:
        await client.aclose()


async def test_group_ran_tells_whether_a_call_landed(store: EventStore) -> None:
    await store.append(impression())
    tokens = [k async for k in store.client.scan_iter(match="tracker:*:gtok:*")]
    assert len(tokens) == 1
    assert await store.group_ran(as_str(tokens[0]))
    assert not await store.group_ran("tracker:{p0}:gtok:never")
    fenced = "tracker:{p0}:gtok:fenced-by-a-drain"
    await store.client.set(fenced, FENCE)
    assert not await store.group_ran(fenced)


async def test_a_redis_stall_queues_appends_instead_of_failing_them(
    store: EventStore, client: redis.Redis
) -> None:
    await client.client_pause(300, all=False)  # writes wait 300 ms
    calls = []
    for _ in range(40):  # 400 appends arriving over 40 ticks while Redis is paused
        calls += [asyncio.ensure_future(store.append(impression())) for _ in range(10)]
        await asyncio.sleep(0.005)
    results = await asyncio.gather(*calls)
    # Every one lands: unbounded concurrent script calls would exhaust the 64-connection pool.
    assert len({(r.partition, r.entry_id) for r in results}) == 400


async def test_append_many_bounds_its_calls_in_flight(redis_url: str) -> None:
    """Without the append pipe every script call holds a pooled connection: a big batch, or
    several at once, must queue for MAX_INFLIGHT calls per partition, not exhaust the pool."""
    client = redis.Redis.from_url(redis_url, max_connections=8)
    store = EventStore(client, partitions=4, max_group=50)
    store._pipe = None  # as for rediss:// URLs
    try:
        batches = [[(impression(), f"bound-{b}-{i}") for i in range(1_000)] for b in range(3)]
        results = await asyncio.gather(*(store.append_many(batch) for batch in batches))
        assert [len(r) for r in results] == [1_000] * 3
        assert not any(r.duplicate for batch in results for r in batch)
    finally:
        await client.aclose()


async def test_an_empty_idempotency_key_is_refused(store: EventStore) -> None:
    with pytest.raises(ValueError, match="empty"):
        await store.append(impression(), "")
    with pytest.raises(ValueError, match="empty"):
        await store.append_many([(impression(), "")])


@pytest.mark.parametrize("path", ["pipe", "redis-py"])
async def test_read_takes_the_event_field_wherever_it_is_and_names_an_entry_without_one(
    store: EventStore, client: redis.Redis, path: str
) -> None:
    if path == "redis-py":
        store._pipe = None  # as for rediss:// URLs
    event = impression(offer_id="9")
    part = store.partition_of(event)
    payload = encode(event)
    # Entries written by hand (an operator's XADD, a future layout): extra fields before 'event'.
    first = await client.xadd(keys.stream(part), {"note": "x", "event": payload})
    stored = await store.read(part)
    assert [(s.entry_id, s.event) for s in stored] == [(as_str(first), event)]
    foreign = as_str(await client.xadd(keys.stream(part), {"other": "1"}))
    with pytest.raises(UnknownEvent, match=foreign):
        await store.read(part)


async def test_a_submit_past_its_deadline_fails_with_its_calls_token(
    store: EventStore, client: redis.Redis
) -> None:
    await client.client_pause(1000, all=False)  # writes wait 1 s: the call is in flight
    started = time.monotonic()
    future = store.submit(impression(), deadline_s=0.2)
    with pytest.raises(AppendUncertain) as info:
        await future
    assert time.monotonic() - started < 0.9  # did not wait for Redis
    await store.drain()  # the call itself still runs once the pause ends
    assert await store.group_ran(info.value.group_token)
    queued = [store.submit(impression(), deadline_s=5) for _ in range(3)]
    assert all(not r.duplicate for r in await asyncio.gather(*queued))  # others are unaffected


async def test_a_queued_submit_past_its_deadline_is_taken_out_and_never_sent(
    store: EventStore, client: redis.Redis
) -> None:
    await client.client_pause(1000, all=False)
    first = [store.submit(impression(key="k"), deadline_s=5)]
    await asyncio.sleep(0.01)  # the next tick: a second call, the last slot of the partition
    first.append(store.submit(impression(key="k"), deadline_s=5))
    await asyncio.sleep(0.01)
    waiting = impression(key="k")  # both call slots are taken: it waits in the queue
    with pytest.raises(RedisTimeoutError):
        await store.submit(waiting, deadline_s=0.2)
    await asyncio.gather(*first)
    await store.drain()
    part = store.partition_of(waiting)
    assert waiting.impression_id not in {s.event.impression_id for s in await store.read(part)}  # type: ignore[union-attr]
    assert await store.length(part) == 2
