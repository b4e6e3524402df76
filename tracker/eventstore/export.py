"""Reading the whole log in order for `events export` / `events tail`: merged across partitions."""

from __future__ import annotations

import heapq
import re
from collections.abc import AsyncIterator
from datetime import datetime

from tracker.eventstore import keys
from tracker.eventstore.store import EventStore, StoredEvent

PAGE = 1000
_STREAM_ID = re.compile(r"[0-9]+(?:-[0-9]+)?")


def time_bound(value: str, *, upper: bool) -> str:
    """An export bound, as the first id it names: a stream id, or an ISO 8601 time turned into
    ``<ms>-0`` (a time before 1970 is the log's start); ValueError for anything else. ``export``
    makes the upper one exclusive."""
    if value in ("-", "+"):
        return value
    if _STREAM_ID.fullmatch(value):
        keys.checked_id(value)  # in range
        # "<ms>" alone: Redis reads an end without a sequence as <ms>-(2^64-1), so the exclusive
        # bound would keep that millisecond; it means <ms>-0 here, as a time does
        return value + "-0" if upper and "-" not in value else value
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{value!r}: expected a stream id (1700000000000-0) or an ISO 8601 time "
            "(2026-01-01T00:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{value!r}: give a time zone (e.g. 2026-01-01T00:00:00Z)")
    return f"{max(int(moment.timestamp() * 1000), 0)}-0"


async def _partition(store: EventStore, part: str, lo: str, hi: str) -> AsyncIterator[StoredEvent]:
    while True:
        batch = await store.read_range(part, lo, hi, count=PAGE)
        for stored in batch:
            yield stored
        if len(batch) < PAGE:
            return
        lo = "(" + batch[-1].entry_id


async def export(
    store: EventStore, parts: list[str], since: str = "-", until: str = "+"
) -> AsyncIterator[StoredEvent]:
    """Every event in [since, until) of the given streams, merged in entry-id (time) order."""
    lo = time_bound(since, upper=False)
    hi = time_bound(until, upper=True)
    if lo == "+" or hi == "-":
        return  # nothing is after the end, or before the start
    if hi != "+":
        if keys.parse_id(hi) == (0, 0):
            return  # nothing is before the first id (Redis refuses an exclusive "(0-0")
        hi = "(" + hi  # the end is exclusive
    iterators = [_sorted(_partition(store, p, lo, hi)) for p in parts]
    async for stored in _merge(iterators):
        yield stored


async def _sorted(
    it: AsyncIterator[StoredEvent],
) -> AsyncIterator[tuple[tuple[int, int], StoredEvent]]:
    async for stored in it:
        yield keys.parse_id(stored.entry_id), stored


async def _merge(
    iterators: list[AsyncIterator[tuple[tuple[int, int], StoredEvent]]],
) -> AsyncIterator[StoredEvent]:
    heap: list[tuple[tuple[int, int], int, StoredEvent]] = []
    for index, it in enumerate(iterators):
        first = await anext(it, None)
        if first is not None:
            heapq.heappush(heap, (first[0], index, first[1]))
    while heap:
        _, index, stored = heapq.heappop(heap)
        yield stored
        following = await anext(iterators[index], None)
        if following is not None:
            heapq.heappush(heap, (following[0], index, following[1]))
