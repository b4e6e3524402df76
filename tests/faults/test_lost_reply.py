"""A reply lost after Redis ran the append: the client's retry must not append twice."""

from __future__ import annotations

import asyncio

import msgspec
from structlog.testing import capture_logs

from tests.factories import impression
from tests.faults.proxy import proxied_store
from tracker.events import ImpressionSeen
from tracker.eventstore.connection import connect
from tracker.eventstore.embedded import EmbeddedRedis
from tracker.eventstore.store import Claim, EventStore


async def test_retried_group_append_is_not_duplicated(any_server: EmbeddedRedis) -> None:
    async with proxied_store(any_server.port, drops=3) as (proxy, store):
        events = [impression() for _ in range(40)]  # ~36 KB: each write reaches Redis whole
        with capture_logs() as logs:
            results = await asyncio.gather(*(store.append(e) for e in events))
        # the append connection pipelines: the calls sent together ran and lost their replies
        # together, and each retry found its token and replayed the original reply
        assert proxy.dropped >= 1
        assert sum(1 for entry in logs if entry["event"] == "append_replayed") >= 1
        assert all(not r.duplicate for r in results)
        for part in store.partitions:
            stored = await store.read(part, count=10_000)
            mine = [e for e in events if store.partition_of(e) == part]
            assert [s.event for s in stored] == mine  # each once, in order
            by_result = sorted(r.entry_id for r in results if r.partition == part)
            assert sorted(s.entry_id for s in stored) == by_result


async def test_retried_keyed_append_reports_the_right_duplicates(any_server: EmbeddedRedis) -> None:
    direct = connect(any_server.url)
    first = EventStore(direct, partitions=4)
    await first.append(impression(key="seen"), idempotency_key="seen")
    first.close()
    await direct.aclose()
    async with proxied_store(any_server.port, drops=1) as (proxy, store):
        items = [(impression(key=k), k) for k in ("seen", "new-1", "new-2")]
        first_part = store.partition_of(items[0][0])
        same_part = [(e, k) for e, k in items if store.partition_of(e) == first_part]
        results = await store.append_many(same_part)
        assert proxy.dropped == 1
        assert results[0].duplicate
        assert [r.duplicate for r in results[1:]] == [False] * (len(results) - 1)
        assert await store.length(results[0].partition) == len(results)


async def test_retried_claims_report_the_alternates(any_server: EmbeddedRedis) -> None:
    def hit() -> tuple[ImpressionSeen, Claim]:
        event = impression(key="o1:i1", external_imp_id="i1")
        dup = msgspec.structs.replace(event, verdict="not_counted", reason="duplicate_imp_id")
        return event, Claim("o1:i1", 60, dup)

    async with proxied_store(any_server.port, drops=1) as (proxy, store):
        calls = [hit() for _ in range(3)]
        results = await asyncio.gather(*(store.append(e, claim=c) for e, c in calls))
        assert proxy.dropped == 1
        assert [r.alternate for r in results] == [False, True, True]
        stored = await store.read(results[0].partition)
        assert [s.entry_id for s in stored] == [r.entry_id for r in results]
