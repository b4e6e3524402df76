"""What a projection is: a name, the partitions it reads, and a pure fold from events to changes.

Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tracker.eventstore.store import Op, StoredEvent


class Projection(Protocol):
    """A pure fold from a batch of one partition's events to the Redis changes they imply.

    The runner applies the returned ops and advances the partition's checkpoint in one atomic
    step, so each event's changes are applied exactly once. Every op's key must carry the
    partition's hash tag (build it with ``keys.projection(part, ...)``).
    """

    name: str

    def parts(self, partitions: Sequence[str]) -> list[str]:
        """The streams it reads, given the event partitions (keys.CONFIG: the config one)."""
        ...

    def fold(self, part: str, batch: Sequence[StoredEvent]) -> list[Op]: ...
