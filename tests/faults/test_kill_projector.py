"""kill -9 the projector at random instants while events flow: counts end exact, nothing pending."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from tests.factories import impression
from tests.faults.support import actor_process, kill9, projected_total, wait_caught_up
from tracker.eventstore.embedded import EmbeddedRedis
from tracker.eventstore.store import EventStore

EVENTS = 5000
KILLS = 20


async def test_kill9_projector_repeatedly(
    one_server: EmbeddedRedis, one_store: EventStore, tmp_path: Path
) -> None:
    rng = random.Random(20261123)
    log = tmp_path / "actor.log"
    produced = 0

    async def produce() -> None:
        nonlocal produced
        while produced < EVENTS:  # ~5,000 events over ~12 s, in small concurrent bursts
            burst = min(25, EVENTS - produced)
            await one_store.append_many([impression() for _ in range(burst)])
            produced += burst
            await asyncio.sleep(0.06)

    producer = asyncio.create_task(produce())
    kills = 0
    proc = actor_process(one_server.url, batch_size=15, log=log)
    try:
        while kills < KILLS or not producer.done():
            await asyncio.sleep(rng.uniform(0.35, 0.9))  # start-up takes ~0.3 s: land mid-work
            kill9(proc)
            kills += 1
            proc = actor_process(one_server.url, batch_size=15, log=log)
        await producer
        await wait_caught_up(one_store)
    finally:
        kill9(proc)
    assert kills >= KILLS
    assert "batch_applied" in log.read_text()
    assert await projected_total(one_store.client, one_store, "t1", "2026-01-15T10") == EVENTS
