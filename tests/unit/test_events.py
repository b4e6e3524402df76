"""Events: round trips, and the schema evolution rules written in tracker/events.py."""

from __future__ import annotations

import gc

import msgspec
import pytest

from tests.factories import configured, conversion, impression
from tracker import events
from tracker.events import AnyEvent


def test_every_event_type_round_trips() -> None:
    samples: list[AnyEvent] = [impression(subs={"sub1": "a"}), conversion(), configured()]
    for event in samples:
        assert events.decode(events.encode(event)) == event


def test_old_entry_decodes_after_a_field_is_added() -> None:
    # An entry written before `redirect` and `consent` existed: those fields take their defaults.
    old = impression(redirect="https://x.example/", consent="CO")
    raw = msgspec.json.decode(events.encode(old))
    del raw["redirect"], raw["consent"]
    decoded = events.decode(msgspec.json.encode(raw))
    assert isinstance(decoded, events.ImpressionSeen)
    assert decoded.redirect == ""
    assert decoded.consent == ""
    assert decoded == msgspec.structs.replace(old, redirect="", consent="")


def test_newer_fields_are_skipped_by_older_readers() -> None:
    raw = msgspec.json.decode(events.encode(conversion()))
    raw["field_from_the_future"] = 42
    assert isinstance(events.decode(msgspec.json.encode(raw)), events.ConversionReceived)


def test_unknown_event_type_is_reported_not_skipped() -> None:
    raw = msgspec.json.decode(events.encode(conversion()))
    raw["type"] = "refund_issued"
    with pytest.raises(events.UnknownEvent, match="unknown event type 'refund_issued'") as info:
        events.decode(msgspec.json.encode(raw), entry_id="5-1")
    assert info.value.entry_id == "5-1"


def test_garbage_is_reported_with_its_entry() -> None:
    with pytest.raises(events.UnknownEvent, match="entry 7-0"):
        events.decode(b"{not json", entry_id="7-0")


def test_an_event_nested_too_deeply_to_decode_is_reported_not_raised_as_recursion() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    data = (
        b'{"type":"tracker_configured","event_id":"e","occurred_at":"2026-01-15T10:00:00Z",'
        b'"recorded_at":"2026-01-15T10:00:00Z","tenant":"t","kind":"tracker","object_id":"1",'
        b'"version":1,"snapshot":{"clicktracker":' + deep + b"}}"
    )
    with pytest.raises(events.UnknownEvent, match="nested too deeply"):
        events.decode(data, "9-0")


def test_tags_are_the_stored_names() -> None:
    # Tags are stored forever: this list only ever grows.
    assert {"tracker_configured", "impression_seen", "conversion_received"} == events.TAGS


def test_events_are_frozen() -> None:
    event = impression()
    with pytest.raises(AttributeError):
        event.offer_id = "9"  # type: ignore[misc]


def test_defaults_are_not_written_but_read_back() -> None:
    event = impression(offer_id="7")
    raw = msgspec.json.decode(events.encode(event))
    assert "redirect" not in raw  # omitted: equal to its default
    assert "verdict" not in raw  # "counted" is the default verdict
    assert raw["offer_id"] == "7"
    assert events.decode(events.encode(event)) == event


def test_events_are_not_tracked_by_the_cyclic_collector() -> None:
    # gc=False (see the module docstring): a batch's thousands of events are never scanned.
    assert not gc.is_tracked(impression(subs={"sub1": "a"}))
    assert not gc.is_tracked(configured(snapshot={"id": "1", "tags": ["a"]}))
