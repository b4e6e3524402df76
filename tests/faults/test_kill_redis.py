"""kill -9 redis-server at ~70 % of an append load (AOF everysec): acknowledged appends survive."""

from __future__ import annotations

import asyncio

from redis.exceptions import RedisError

from tests.factories import impression
from tracker.eventstore.connection import connect
from tracker.eventstore.embedded import EmbeddedRedis
from tracker.eventstore.store import AppendUncertain, EventStore

PLANNED = 20_000
WRITERS = 64


async def test_acknowledged_appends_survive_kill9(
    any_server: EmbeddedRedis, any_store: EventStore
) -> None:
    acked: list[tuple[str, str, str]] = []  # (partition, entry id, impression id)
    failed = 0
    killed = asyncio.Event()

    async def writer(n: int) -> None:
        nonlocal failed
        for _ in range(n):
            event = impression()
            try:
                result = await any_store.append(event)
            except (AppendUncertain, RedisError, OSError):
                failed += 1
                return
            acked.append((result.partition, result.entry_id, event.impression_id))
            if len(acked) >= PLANNED * 0.7 and not killed.is_set():
                killed.set()
                any_server.kill()  # SIGKILL: no AOF rewrite, no goodbye

    await asyncio.gather(*(writer(PLANNED // WRITERS) for _ in range(WRITERS)))
    assert killed.is_set()
    assert failed > 0  # the load was really cut off mid-flight

    any_server.start()  # same data dir and port: loads the AOF
    client = connect(any_server.url)
    store = EventStore(client, partitions=4)
    try:
        found: dict[str, set[tuple[str, str]]] = {}
        for part in store.partitions:
            after = "0-0"
            while batch := await store.read(part, after, 2000):
                for s in batch:
                    found.setdefault(s.event.impression_id, set()).add((part, s.entry_id))  # type: ignore[union-attr]
                after = batch[-1].entry_id
        missing = [a for a in acked if (a[0], a[1]) not in found.get(a[2], set())]
        entry_ids = {entry for places in found.values() for entry in places}
        misattributed = [a for a in missing if (a[0], a[1]) in entry_ids]
        assert not missing, (
            f"{len(missing)} acknowledged appends lost of {len(acked)} "
            f"({len(misattributed)} of them under an entry id holding another event)"
        )
        assert all(len(v) == 1 for v in found.values())  # and none twice
    finally:
        store.close()
        await client.aclose()
