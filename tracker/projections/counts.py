"""Event counts per type per tenant per hour: the spine's first projection, later part of stats.

Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Final

from tracker import events
from tracker.eventstore import keys
from tracker.eventstore.store import Op, StoredEvent

NAME = "counts"


_HOURS_KEPT: Final = 10_000  # more than a year of hours; the cache starts over past it
_hours: dict[tuple[int, int, int, int], str] = {}


def hour_of(event: events.AnyEvent) -> str:
    """The UTC hour bucket of an event, ``YYYY-MM-DDTHH``, from when it occurred.

    Formatted once per hour seen (``strftime`` per event was a tenth of the projector's time).
    """
    at = event.occurred_at
    key = (at.year, at.month, at.day, at.hour)
    hour = _hours.get(key)
    if hour is None:
        if len(_hours) >= _HOURS_KEPT:
            _hours.clear()
        # not strftime: %Y does not pad years before 1000 to four digits on every platform
        hour = _hours[key] = f"{at.year:04d}-{at.month:02d}-{at.day:02d}T{at.hour:02d}"
    return hour


def counts_key(part: str, tenant: str, hour: str) -> str:
    return keys.projection(part, NAME, tenant, hour)


def tally(batch: Sequence[StoredEvent]) -> Counter[tuple[str, str, str]]:
    """(tenant, hour, event type) -> how many events of the batch."""
    return Counter((s.event.tenant, hour_of(s.event), events.type_of(s.event)) for s in batch)


class HourlyCounts:
    name = NAME

    def parts(self, partitions: Sequence[str]) -> list[str]:
        return [*partitions, keys.CONFIG]

    def fold(self, part: str, batch: Sequence[StoredEvent]) -> list[Op]:
        return [
            Op("HINCRBY", counts_key(part, tenant, hour), (etype, n))
            for (tenant, hour, etype), n in sorted(tally(batch).items())
        ]
