"""ProjectionRunner: read a partition in batches, fold, commit changes + checkpoint atomically."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Final

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tracker.eventstore import keys
from tracker.eventstore.store import EventStore
from tracker.projections.base import Projection

logger = structlog.get_logger()

BLOCK_MS: Final = 1000  # keeps stops prompt, and stays far below the socket timeout
BACKOFF_BASE_S: Final = 0.1
BACKOFF_CAP_S: Final = 5.0
LAG_LOG_INTERVAL_S: Final = 10.0
RETRYABLE: Final = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def backoff_s(failures: int) -> float:
    """Capped, jittered exponential backoff [redis-py backoff.py]."""
    return float(min(BACKOFF_CAP_S, random.random() * BACKOFF_BASE_S * 2.0**failures))


def _entry_ms(entry_id: str) -> int:
    return keys.parse_id(entry_id)[0] if entry_id else 0


class ProjectionRunner:
    """Runs one projection over one partition; one per (projection, partition) in a process."""

    def __init__(
        self,
        store: EventStore,
        projection: Projection,
        part: str,
        *,
        batch_size: int = 500,
        stopping: asyncio.Event | None = None,
        actor: str = "projector",
    ) -> None:
        self.store = store
        self.projection = projection
        self.part = part
        self.batch_size = batch_size
        self.stopping = stopping or asyncio.Event()
        self.checkpoint = ""  # '' = nothing applied yet
        self.applied = 0  # events applied by this runner since it started
        self.lag_ms = 0
        self.log = logger.bind(actor=actor, projection=projection.name, partition=part)

    async def run(self, *, until_caught_up: bool = False) -> None:
        """Fold until stopped (or, with ``until_caught_up``, until the partition is exhausted).

        Redis outages are survived: the loop backs off (capped) and carries on from the stored
        checkpoint once Redis answers again. A fold error is a bug: it propagates, nothing of that
        batch is saved, and the process exits so that it resumes there once fixed.
        """
        failures = 0
        loaded = False
        next_lag_log = 0.0
        while not self.stopping.is_set():
            try:
                if not loaded:
                    self.checkpoint = await self.store.checkpoint(self.part, self.projection.name)
                    loaded = True
                more = await self.step(block=not until_caught_up)
                failures = 0
                if not more and until_caught_up:
                    return
                if time.monotonic() >= next_lag_log:
                    next_lag_log = time.monotonic() + LAG_LOG_INTERVAL_S
                    await self._log_lag()
            except RETRYABLE as exc:
                failures += 1
                delay = backoff_s(failures)
                self.log.warning("redis_unavailable", error=str(exc), retry_in_s=round(delay, 3))
                loaded = False  # the checkpoint may have moved (a commit whose reply was lost)
                await self._sleep(delay)
            except ResponseError as exc:
                if "LOADING" not in str(exc):
                    raise
                failures += 1
                await self._sleep(backoff_s(failures))

    async def step(self, *, block: bool) -> bool:
        """Read, fold and commit one batch. Returns False when there was nothing to read."""
        position = self.checkpoint or "0-0"
        # What is there already comes without blocking (over the append pipe: the cheaper read);
        # only a runner that has caught up waits, in XREAD BLOCK on a connection of its own.
        batch = await self.store.read(self.part, after=position, count=self.batch_size)
        if not batch and block:
            batch = await self.store.tail(
                {self.part: position}, block_ms=BLOCK_MS, count=self.batch_size
            )
        if not batch:
            self.lag_ms = 0
            return False
        started = time.perf_counter()
        ops = self.projection.fold(self.part, batch)
        new = batch[-1].entry_id
        # Shielded: a stop never abandons a commit half-sent; the script is atomic in Redis anyway.
        ok, found = await asyncio.shield(
            self.store.commit(self.part, self.projection.name, self.checkpoint, new, ops)
        )
        if not ok:
            # Someone else moved the checkpoint (a second runner, or our own re-sent commit):
            # nothing was applied; carry on from what is stored.
            self.log.warning("checkpoint_moved", expected=self.checkpoint, found=found)
            self.checkpoint = found
            return True
        self.checkpoint = new
        self.applied += len(batch)
        self.lag_ms = max(0, int(time.time() * 1000) - _entry_ms(new))
        self.log.info(
            "batch_applied",
            events=len(batch),
            ops=len(ops),
            position=new,
            lag_ms=self.lag_ms,
            took_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return True

    async def _log_lag(self) -> None:
        last = await self.store.last_id(self.part)
        behind = keys.id_after(last, self.checkpoint or "0-0")
        lag = max(0, _entry_ms(last) - _entry_ms(self.checkpoint)) if behind else 0
        self.log.info("actor_lag", position=self.checkpoint, last=last, lag_ms=lag)

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=delay)
