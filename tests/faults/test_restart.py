"""Redis restarts under a running actor process; SIGTERM in the middle of a batch."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

from tests.factories import impression
from tests.faults.support import (
    actor_process,
    projected_total,
    recount_up_to_checkpoints,
    wait_caught_up,
)
from tracker.eventstore.connection import connect
from tracker.eventstore.embedded import EmbeddedRedis
from tracker.eventstore.store import EventStore


async def _append(store: EventStore, n: int) -> None:
    for start in range(0, n, 200):
        await store.append_many([impression() for _ in range(min(200, n - start))])


async def test_actor_survives_redis_restart(any_server: EmbeddedRedis, tmp_path: Path) -> None:
    log = tmp_path / "actor.log"
    client = connect(any_server.url)
    store = EventStore(client, partitions=4)
    await store.check_partitions()
    proc = actor_process(any_server.url, batch_size=50, log=log)
    try:
        await _append(store, 1000)
        await wait_caught_up(store)
        store.close()
        await client.aclose()
        any_server.stop()  # the actor's reads now fail: it must back off, not crash
        await asyncio.sleep(1.5)
        assert proc.poll() is None
        any_server.start()
        client = connect(any_server.url)
        store = EventStore(client, partitions=4)
        await _append(store, 1000)
        await wait_caught_up(store, timeout_s=30)
        assert proc.poll() is None  # resumed by itself: the same process throughout
        assert await projected_total(client, store, "t1", "2026-01-15T10") == 2000
        assert "redis_unavailable" in log.read_text()
    finally:
        proc.kill()
        proc.wait()
        store.close()
        await client.aclose()


async def test_sigterm_mid_batch_leaves_checkpoint_and_projection_agreeing(
    one_server: EmbeddedRedis, one_store: EventStore, tmp_path: Path
) -> None:
    await _append(one_store, 20_000)
    for attempt in range(3):
        log = tmp_path / f"actor-{attempt}.log"
        proc = actor_process(one_server.url, batch_size=10, log=log)
        deadline = time.monotonic() + 15
        while "batch_applied" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "the actor never applied a batch"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05 * attempt)  # mid-backlog: thousands of batches still to go
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("the actor did not stop within 5 s of SIGTERM") from None
        assert time.monotonic() - started < 5
        assert code == 0
        from_log, stored = await recount_up_to_checkpoints(one_store)
        assert stored == from_log
    assert 0 < sum(stored.values()) < 20_000  # it really stopped part-way through the backlog
