"""LiveConfig: a web process's in-process ConfigState, loaded whole at start and kept current by
tailing the config stream (a blocking XREAD), so the pixel path decides without touching Redis.

Management requests wait (``sync``) until the copy has applied everything in the stream at the
moment they asked, so a reader always sees its own writes, whichever web process took them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Final

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from tracker.actors.runner import backoff_s
from tracker.config import model
from tracker.eventstore import keys
from tracker.eventstore.store import EventStore, StoredEvent
from tracker.http.app_keys import SETTINGS
from tracker.projections import config as config_projection
from tracker.projections.config import ConfigState

logger = structlog.get_logger()

BLOCK_MS: Final = 1000
READ_COUNT: Final = 1000
SYNC_TIMEOUT_S: Final = 5.0


class ConfigUnavailable(Exception):
    """The in-process copy could not catch up (Redis down, or the tail stopped on a bug)."""


class LiveConfig:
    """Owns ``state``; ``run()`` is the only writer. Read ``state`` freely between awaits."""

    def __init__(self, store: EventStore, *, block_ms: int = BLOCK_MS) -> None:
        self.store = store
        self.state = ConfigState()
        self.block_ms = block_ms
        self.failure: BaseException | None = None
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()

    def _apply_batch(self, batch: list[StoredEvent]) -> None:
        for stored in batch:
            config_projection.apply(self.state, stored.event, stored.entry_id)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def load(self) -> None:
        """Read the whole config stream (start-up); then ``run()`` tails from there."""
        started = time.perf_counter()
        while batch := await self.store.read(
            keys.CONFIG, after=self.state.position or "0-0", count=READ_COUNT
        ):
            self._apply_batch(list(batch))
        logger.info(
            "config_loaded",
            events=self.state.events,
            position=self.state.position,
            took_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    async def run(self) -> None:
        """Tail until ``stop()``; Redis outages are waited out with capped backoff."""
        failures = 0
        while not self._stopping.is_set():
            try:
                batch = await self.store.tail(
                    {keys.CONFIG: self.state.position or "0-0"},
                    block_ms=self.block_ms,
                    count=READ_COUNT,
                )
                failures = 0
            except (RedisError, OSError) as exc:
                failures += 1
                logger.warning("config_tail_failed", error=str(exc), failures=failures)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff_s(failures))
                continue
            except Exception as exc:  # an undecodable entry (e.g. a newer build's event type)
                self._fail(exc)
                raise
            if batch:
                try:
                    self._apply_batch(list(batch))
                except Exception as exc:  # a fold error is a bug: stop here, loudly
                    self._fail(exc)
                    raise

    def _fail(self, exc: Exception) -> None:
        """Stop deciding silently on stale configuration: /readyz and management calls see it."""
        self.failure = exc
        self._changed.set()
        logger.error("config_tail_stopped", position=self.state.position, exc_info=exc)

    def stop(self) -> None:
        self._stopping.set()

    async def wait_for(self, position: str, timeout_s: float = SYNC_TIMEOUT_S) -> None:
        """Return once the state has applied the config stream up to ``position``."""
        deadline = time.monotonic() + timeout_s
        while keys.id_after(position, self.state.position or "0-0"):
            if self.failure is not None:
                raise ConfigUnavailable("the configuration tail stopped") from self.failure
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConfigUnavailable(f"configuration not caught up with {position}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def sync(self, timeout_s: float = SYNC_TIMEOUT_S) -> ConfigState:
        """Wait until everything in the config stream right now is applied; return the state.
        Within ``timeout_s`` in all, reading the stream's end included: a hung Redis (no error,
        no answer) would otherwise hold the caller for the socket timeout times the retries."""
        deadline = time.monotonic() + timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                last = await self.store.last_id(keys.CONFIG)
        except TimeoutError:
            message = f"Redis did not answer within {timeout_s:g} s"
            raise ConfigUnavailable(message) from None
        await self.wait_for(last, max(0.0, deadline - time.monotonic()))
        return self.state


LIVE_CONFIG = web.AppKey("live_config", LiveConfig)


def _warn_of_long_windows(state: ConfigState, lookup_days: int) -> None:
    """Offers whose attribution window outlasts the impression lookup (TRACKER_LOOKUP_WINDOW_DAYS
    was lowered after they were made): their late conversions will not find the impression."""
    offers = sorted(
        offer_id
        for offer_id, offer in state.objects[model.OFFER].items()
        if not offer.deleted and offer.attribution_window_days > lookup_days
    )
    if offers:
        logger.warning(
            "attribution_windows_outlast_lookup",
            offers=offers[:100],
            count=len(offers),
            lookup_window_days=lookup_days,
            fix="raise TRACKER_LOOKUP_WINDOW_DAYS or shorten these offers' windows",
        )


async def live_config_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: load the configuration before serving, tail it while the app runs."""
    live = app[LIVE_CONFIG]
    await live.load()
    _warn_of_long_windows(live.state, app[SETTINGS].lookup_window_days)
    task = asyncio.create_task(live.run(), name="config-tail")
    yield
    live.stop()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
