"""Reading the impression lookup projection (projections/impressions.py); raw replies stop here.

By impression id it is one ``GET``: our ids carry their partition (``ids.route_of``). Every other
index -- (offer, external imp id), visitor, member, IP -- fans out: one read per partition in one
pipeline, merged here. That is the price of writing each entry under the *impression's* partition
tag: the projection then commits an impression's record and all its index entries in the same
single-slot script as its checkpoint, exactly once, with no cross-partition write. A global
index would need a second writer, a cross-slot transaction or a lag between the record and its
index. N reads in one round trip (one per shard on a Cluster) are cheap next to that, and N is
small (``TRACKER_PARTITIONS``, default 4).

Sorted sets are pruned only when written, so a reader passes ``since_ms`` (now - window) to skip
members that have outlived the window in a set nobody wrote to since.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as redis

from tracker.eventstore.store import as_str
from tracker.ids import route_of
from tracker.projections import impressions as imp
from tracker.projections.impressions import ImpressionRecord


def partition_of(partitions: Sequence[str], impression_id: str) -> str:
    return partitions[route_of(impression_id, len(partitions))]


async def get_record(
    client: redis.Redis, partitions: Sequence[str], impression_id: str
) -> ImpressionRecord | None:
    """The record of one impression, or None (unknown, or expired)."""
    key = imp.record_key(partition_of(partitions, impression_id), impression_id)
    raw: bytes | None = await client.get(key)  # type: ignore[assignment]  # bytes: no decoding
    return None if raw is None else imp.decode_record(raw, impression_id)


async def get_records(
    client: redis.Redis, partitions: Sequence[str], impression_ids: Sequence[str]
) -> dict[str, ImpressionRecord]:
    """The records of several impressions that exist, by id (one pipelined round trip)."""
    if not impression_ids:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for iid in impression_ids:
            pipe.get(imp.record_key(partition_of(partitions, iid), iid))
        replies: list[Any] = await pipe.execute()
    return {
        iid: imp.decode_record(raw, iid)
        for iid, raw in zip(impression_ids, replies, strict=True)
        if raw is not None
    }


async def find_by_external_imp_id(
    client: redis.Redis,
    partitions: Sequence[str],
    tenant: str,
    offer_id: str,
    external_imp_id: str,
) -> str | None:
    """Our impression id for an affiliate's ``imp_id`` on an offer, or None. For a Freshpaint
    ``imp_id``, ``offer_id`` is its destination's scope: ``"dest:" + dest_id``
    (``projections.impressions.external_scope``).

    Candidates: every impression that named it, counted or not, in every partition (the same
    imp_id may have reached us in several); one whose record still lives wins, counted before
    not counted, then the newest.
    """
    async with client.pipeline(transaction=False) as pipe:
        for part in partitions:
            pipe.zrange(imp.counted_key(part, tenant, offer_id, external_imp_id), 0, -1)
            pipe.zrange(imp.duplicates_key(part, tenant, offer_id, external_imp_id), 0, -1)
            pipe.get(imp.legacy_external_key(part, tenant, offer_id, external_imp_id))
        replies: list[Any] = await pipe.execute()
    found: dict[str, None] = {}  # in order, once each
    for reply in replies:
        if isinstance(reply, list):  # a sorted set's members
            found.update(dict.fromkeys(map(as_str, reply)))
        elif reply is not None:  # a pointer written until session 9
            found[as_str(reply)] = None
    records = await get_records(client, partitions, list(found))
    if not records:
        return None
    return max(records.values(), key=lambda r: (r.counted, r.occurred_at_ms)).impression_id


async def recent_by_visitor(
    client: redis.Redis,
    partitions: Sequence[str],
    tenant: str,
    visitor_id: str,
    *,
    since_ms: int = 0,
    limit: int = imp.DEFAULT_CAP,
) -> list[str]:
    """Our ids of a visitor's impressions at or after ``since_ms``, newest first."""
    return await _recent(client, partitions, imp.visitor_key, tenant, visitor_id, since_ms, limit)


async def recent_by_member(
    client: redis.Redis,
    partitions: Sequence[str],
    tenant: str,
    member_id: str,
    *,
    since_ms: int = 0,
    limit: int = imp.DEFAULT_CAP,
) -> list[str]:
    """Our ids of a member's impressions at or after ``since_ms``, newest first."""
    return await _recent(client, partitions, imp.member_key, tenant, member_id, since_ms, limit)


async def recent_by_ip(
    client: redis.Redis,
    partitions: Sequence[str],
    tenant: str,
    ip: str,
    *,
    since_ms: int = 0,
    limit: int = imp.DEFAULT_CAP,
) -> list[str]:
    """Our ids of impressions from an IP (as stored) at or after ``since_ms``, newest first."""
    return await _recent(client, partitions, imp.ip_key, tenant, ip, since_ms, limit)


async def _recent(
    client: redis.Redis,
    partitions: Sequence[str],
    key_of: Callable[[str, str, str], str],
    tenant: str,
    value: str,
    since_ms: int,
    limit: int,
) -> list[str]:
    if limit <= 0:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for part in partitions:
            pipe.zrevrangebyscore(
                key_of(part, tenant, value), "+inf", since_ms, start=0, num=limit, withscores=True
            )
        replies: list[Any] = await pipe.execute()
    merged = [(float(score), as_str(member)) for reply in replies for member, score in reply]
    merged.sort(reverse=True)  # newest first; ties by id (time-ordered), descending
    return [member for _, member in merged[:limit]]
