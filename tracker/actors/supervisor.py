"""Actor registry and supervision: which projections each actor runs, and running them to a stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Final

import structlog

from tracker.actors.runner import ProjectionRunner
from tracker.eventstore.store import EventStore
from tracker.projections.base import Projection
from tracker.projections.counts import HourlyCounts
from tracker.projections.impressions import DAY_MS, ImpressionLookup
from tracker.settings import Settings

logger = structlog.get_logger()

STOP_TIMEOUT_S: Final = 5.0

# Each actor's short name is its Procfile entry, its log field and its `tracker actor NAME`.
ACTORS: Final[dict[str, Callable[[Settings], Sequence[Projection]]]] = {
    "projector": lambda s: [
        HourlyCounts(),
        ImpressionLookup(window_ms=s.lookup_window_days * DAY_MS),
    ],
}


def runners_for(
    actor: str,
    store: EventStore,
    stopping: asyncio.Event,
    batch_size: int = 500,
    settings: Settings | None = None,
) -> list[ProjectionRunner]:
    return [
        ProjectionRunner(
            store, projection, part, batch_size=batch_size, stopping=stopping, actor=actor
        )
        for projection in ACTORS[actor](settings or Settings())
        for part in projection.parts(store.partitions)
    ]


async def run_actor(
    actor: str,
    store: EventStore,
    stopping: asyncio.Event,
    *,
    batch_size: int = 500,
    settings: Settings | None = None,
) -> None:
    """Run every runner of ``actor`` until ``stopping`` is set; then wait (bounded) for them.

    Each runner finishes or abandons its current read and never leaves a commit half-done (commits
    are single atomic scripts), so a stop leaves every checkpoint agreeing with its projection.
    """
    runners = runners_for(actor, store, stopping, batch_size, settings)
    tasks = [
        asyncio.create_task(r.run(), name=f"{actor}:{r.projection.name}:{r.part}") for r in runners
    ]
    logger.info("actor_started", actor=actor, runners=len(runners))
    stop_wait = asyncio.create_task(stopping.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stop_wait and not task.cancelled() and task.exception() is not None:
                stopping.set()  # a runner crashed (a bug): stop the others, then re-raise
        await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
    finally:
        stop_wait.cancel()
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]  # checked just above
    logger.info("actor_stopped", actor=actor, applied=sum(r.applied for r in runners))
