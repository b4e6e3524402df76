"""Consumer groups for work-sharing actors (the forwarder): at-least-once delivery with claims.

A GroupReader creates its group on start and again on NOGROUP (a Redis restart without persistence
loses groups), drains its own pending entries first, claims entries other consumers left idle past
``claim_idle_ms`` (XAUTOCLAIM), and moves an entry delivered ``max_deliveries`` times to the
partition's dead-letter stream. Entries whose body is gone are acknowledged and reported, so they
never loop: Redis 6.2's XAUTOCLAIM returns them as empty pairs and keeps them pending.
"""

from __future__ import annotations

from typing import Any, Final

import structlog
from redis.exceptions import ResponseError

from tracker import events
from tracker.eventstore import keys
from tracker.eventstore.store import EventStore, StoredEvent, as_str

logger = structlog.get_logger()

DEFAULT_CLAIM_IDLE_MS: Final = 60_000
DEFAULT_MAX_DELIVERIES: Final = 10


class GroupReader:
    def __init__(
        self,
        store: EventStore,
        part: str,
        group: str,
        consumer: str,
        *,
        claim_idle_ms: int = DEFAULT_CLAIM_IDLE_MS,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        start_id: str = "0",
    ) -> None:
        self.store = store
        self.client = store.client
        self.part = part
        self.stream = keys.stream(part)
        self.dead = keys.dead_letter(part, group)
        self.group = group
        self.consumer = consumer
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.start_id = start_id
        self._own_cursor = "0"  # walks this consumer's own pending entries once, after a restart
        self._own_drained = False
        self._claim_cursor = "0-0"
        self.log = logger.bind(group=group, consumer=consumer, partition=part)

    async def ensure_group(self) -> None:
        try:
            await self.client.xgroup_create(
                self.stream, self.group, id=self.start_id, mkstream=True
            )
            self.log.info("group_created", start_id=self.start_id)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def next_batch(self, *, count: int = 100, block_ms: int = 1000) -> list[StoredEvent]:
        """The next entries for this consumer: own pending, then claimed idle ones, then new."""
        try:
            return await self._next_batch(count, block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.log.warning("group_missing", message="recreating the consumer group")
            await self.ensure_group()
            self._own_cursor, self._own_drained = "0", False
            return await self._next_batch(count, block_ms)

    async def _next_batch(self, count: int, block_ms: int) -> list[StoredEvent]:
        if not self._own_drained:
            reply = await self._readgroup(self._own_cursor, count, None)
            if reply:
                self._own_cursor = as_str(reply[-1][0])
                return await self._screen(reply)
            self._own_drained = True
        claimed = await self._claim(count)
        if claimed:
            return claimed
        reply = await self._readgroup(">", count, block_ms)
        return self._decode(reply)

    async def _readgroup(self, start: str, count: int, block_ms: int | None) -> list[Any]:
        reply: Any = await self.client.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=count, block=block_ms
        )
        return list(reply[0][1]) if reply else []

    async def _claim(self, count: int) -> list[StoredEvent]:
        start = self._claim_cursor
        reply: Any = await self.client.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=self.claim_idle_ms,
            start_id=start,
            count=count,
        )
        self._claim_cursor = as_str(reply[0])
        entries = [e for e in reply[1] if e[0] is not None]
        if len(reply) > 2 and reply[2]:  # Redis 7: ids whose body was deleted (already unpended)
            self.log.warning("entries_deleted", ids=[as_str(i) for i in reply[2]])
        if len(entries) < len(reply[1]):  # Redis 6.2: deleted entries come back as bare nils
            await self._ack_bodiless(start, self._claim_cursor, {as_str(e[0]) for e in entries})
        return await self._screen(entries)

    async def _ack_bodiless(self, start: str, end: str, with_body: set[str]) -> None:
        """Find and acknowledge own pending entries in [start, end) whose body no longer exists."""
        hi = "+" if end == "0-0" else "(" + end
        rows: Any = await self.client.xpending_range(
            self.stream, self.group, min=start, max=hi, count=1000, consumername=self.consumer
        )
        gone = []
        for row in rows:
            entry_id = as_str(row["message_id"])
            if entry_id not in with_body and not await self.client.xrange(
                self.stream, min=entry_id, max=entry_id
            ):
                gone.append(entry_id)
        if gone:
            await self.client.xack(self.stream, self.group, *gone)
            self.log.warning("entries_deleted", ids=gone)

    async def _screen(self, entries: list[Any]) -> list[StoredEvent]:
        """Drop bodiless entries (ack them), dead-letter over-delivered ones, decode the rest."""
        gone = [as_str(e[0]) for e in entries if not e[1]]
        if gone:  # Redis 6.2 returns deleted entries as [id, nil] and keeps them pending
            await self.client.xack(self.stream, self.group, *gone)
            self.log.warning("entries_deleted", ids=gone)
        live = [e for e in entries if e[1]]
        if not live:
            return []
        counts = await self._delivery_counts([as_str(e[0]) for e in live])
        keep = []
        for raw_id, fields in live:
            entry_id = as_str(raw_id)
            if counts.get(entry_id, 0) > self.max_deliveries:
                await self._dead_letter(entry_id, fields, counts[entry_id])
            else:
                keep.append((raw_id, fields))
        return self._decode(keep)

    async def _delivery_counts(self, ids: list[str]) -> dict[str, int]:
        lo = min(ids, key=keys.parse_id)
        hi = max(ids, key=keys.parse_id)
        rows: Any = await self.client.xpending_range(
            self.stream,
            self.group,
            min=lo,
            max=hi,
            count=len(ids) + 100,
            consumername=self.consumer,
        )
        return {as_str(r["message_id"]): int(r["times_delivered"]) for r in rows}

    async def _dead_letter(
        self, entry_id: str, fields: dict[bytes, bytes], deliveries: int
    ) -> None:
        payload = fields.get(b"event", b"")
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(
            self.dead,
            {"event": payload, "entry_id": entry_id, "group": self.group, "deliveries": deliveries},
        )
        pipe.xack(self.stream, self.group, entry_id)
        await pipe.execute()
        self.log.error("entry_dead_lettered", entry_id=entry_id, deliveries=deliveries)

    def _decode(self, entries: list[Any]) -> list[StoredEvent]:
        out = []
        for raw_id, fields in entries:
            entry_id = as_str(raw_id)
            out.append(StoredEvent(self.part, entry_id, events.decode(fields[b"event"], entry_id)))
        return out

    async def ack(self, *entry_ids: str) -> None:
        if entry_ids:
            await self.client.xack(self.stream, self.group, *entry_ids)

    async def pending_count(self) -> int:
        info: Any = await self.client.xpending(self.stream, self.group)
        return int(info["pending"])
