"""Fault-test plumbing: own redis-server per test, actor subprocesses, projection readers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import redis.asyncio as redis

from tracker.eventstore import keys
from tracker.eventstore.store import EventStore, as_str
from tracker.projections.counts import NAME, counts_key, tally

ROOT = Path(__file__).resolve().parents[2]


def actor_process(
    url: str, *, batch_size: int = 20, log: Path | None = None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "REDIS_URL": url,
        "TRACKER_PARTITIONS": "4",
        "TRACKER_LOG_FORMAT": "json",
        "TRACKER_BATCH_SIZE": str(batch_size),
    }
    if log is None:
        return subprocess.Popen(
            [sys.executable, "-m", "tracker", "actor", "projector"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "tracker", "actor", "projector"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )


def kill9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


async def projected_total(client: redis.Redis, store: EventStore, tenant: str, hour: str) -> int:
    total = 0
    for part in [*store.partitions, keys.CONFIG]:
        raw = await client.hgetall(counts_key(part, tenant, hour))
        total += sum(int(v) for v in raw.values())
    return total


async def caught_up(store: EventStore) -> bool:
    for part in store.partitions:
        last = await store.last_id(part)
        if last != "0-0" and await store.checkpoint(part, NAME) != last:
            return False
    return True


async def wait_caught_up(store: EventStore, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await caught_up(store):
        if time.monotonic() > deadline:
            raise AssertionError("the projector did not catch up in time")
        await asyncio.sleep(0.1)


async def recount_up_to_checkpoints(store: EventStore) -> tuple[Counter[str], Counter[str]]:
    """(the log up to each checkpoint, the projection) as counts per tenant|hour|type."""
    from_log: Counter[str] = Counter()
    stored: Counter[str] = Counter()
    for part in store.partitions:
        ckpt = await store.checkpoint(part, NAME)
        after = "0-0"
        while ckpt:
            batch = [
                s
                for s in await store.read(part, after, 1000)
                if not keys.id_after(s.entry_id, ckpt)
            ]
            if not batch:
                break
            from_log.update({"|".join(k): n for k, n in tally(batch).items()})
            after = batch[-1].entry_id
        async for key in store.client.scan_iter(match=keys.projection(part, NAME, "*")):
            tenant, hour = as_str(key).split(":")[-2:]
            for etype, n in (await store.client.hgetall(key)).items():
                stored[f"{tenant}|{hour}|{as_str(etype)}"] += int(n)
    return from_log, stored
