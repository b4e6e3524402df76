"""Building events for tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tracker.events import ConversionReceived, ImpressionSeen, TrackerConfigured
from tracker.eventstore.keys import key_route
from tracker.ids import ImpressionIds, new_event_id, new_uuid7_hex

IDS = ImpressionIds(b"test-key-0123456789abcdef")

T0 = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)


def impression(
    tenant: str = "t1",
    at: datetime = T0,
    key: str | None = None,
    partitions: int = 4,
    **fields: Any,
) -> ImpressionSeen:
    """An impression with a minted id; with ``key``, routed to that idempotency key's partition."""
    route = key_route(tenant, key, partitions) if key is not None else None
    fields.setdefault("impression_id", IDS.mint(route, partitions))
    fields.setdefault("dialect", "affise")
    return ImpressionSeen(
        event_id=new_event_id(), occurred_at=at, recorded_at=at, tenant=tenant, **fields
    )


def conversion(tenant: str = "t1", at: datetime = T0, **fields: Any) -> ConversionReceived:
    fields.setdefault("conversion_id", new_uuid7_hex())
    return ConversionReceived(
        event_id=new_event_id(), occurred_at=at, recorded_at=at, tenant=tenant, **fields
    )


def configured(tenant: str = "t1", at: datetime = T0, **fields: Any) -> TrackerConfigured:
    fields.setdefault("kind", "offer")
    fields.setdefault("object_id", "1")
    fields.setdefault("version", 1)
    fields.setdefault("snapshot", {"id": fields["object_id"]})
    return TrackerConfigured(
        event_id=new_event_id(), occurred_at=at, recorded_at=at, tenant=tenant, **fields
    )
