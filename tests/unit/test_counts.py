"""The hourly counts projection: events per tenant, hour occurred and type."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.factories import conversion, impression
from tracker.eventstore.store import Op, StoredEvent
from tracker.projections import counts

P = "p0"


def stored(*events: object) -> list[StoredEvent]:
    return [StoredEvent(P, f"{1_700_000_000_000 + i}-0", e) for i, e in enumerate(events)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 1, 15, 0, 0, tzinfo=UTC),
        datetime(2026, 1, 15, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2024, 2, 29, 7, 5, 1, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 0, tzinfo=UTC),
    ],
)
def test_hour_of_is_the_hour_the_event_occurred(at: datetime) -> None:
    assert counts.hour_of(impression(at=at)) == at.strftime("%Y-%m-%dT%H")


def test_hour_of_pads_early_years_to_four_digits() -> None:
    """The batch API accepts any past timestamp; the bucket keeps its fixed width (sortable)."""
    at = datetime(1, 1, 1, 0, 0, tzinfo=UTC)
    assert counts.hour_of(impression(at=at)) == "0001-01-01T00"


def test_hour_of_stays_right_when_its_cache_starts_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counts, "_HOURS_KEPT", 3)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    hours = [start + timedelta(hours=h) for h in range(10)] * 2
    assert [counts.hour_of(impression(at=at)) for at in hours] == [
        at.strftime("%Y-%m-%dT%H") for at in hours
    ]
    assert len(counts._hours) <= 3


def test_fold_counts_per_tenant_hour_and_type() -> None:
    t = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)
    batch = stored(
        impression(at=t),
        impression(at=t + timedelta(minutes=20)),
        impression(at=t + timedelta(minutes=40)),
        impression(tenant="t2", at=t),
        conversion(at=t),
    )
    ops = counts.HourlyCounts().fold(P, batch)
    key = counts.counts_key
    assert sorted(ops, key=lambda o: (o.key, o.args)) == [
        Op("HINCRBY", key(P, "t1", "2026-01-15T10"), ("conversion_received", 1)),
        Op("HINCRBY", key(P, "t1", "2026-01-15T10"), ("impression_seen", 2)),
        Op("HINCRBY", key(P, "t1", "2026-01-15T11"), ("impression_seen", 1)),
        Op("HINCRBY", key(P, "t2", "2026-01-15T10"), ("impression_seen", 1)),
    ]
