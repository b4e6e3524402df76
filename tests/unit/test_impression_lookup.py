"""The impression lookup fold: plain data, no Redis."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta

import fakeredis
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.factories import T0, configured, conversion, impression
from tracker.events import AnyEvent
from tracker.eventstore.store import Op, StoredEvent
from tracker.projections import impressions as imp
from tracker.projections.impressions import (
    DAY_MS,
    FUTURE_SKEW_MS,
    ImpressionLookup,
    ImpressionRecord,
    decode_record,
    encode_record,
)
from tracker.settings import Settings, SettingsError

P = "p1"
T0_MS = int(T0.timestamp() * 1000)
WINDOW_MS = 30 * DAY_MS
FOLD = ImpressionLookup(window_ms=WINDOW_MS)


def stored(events: list[AnyEvent], entry_ms: int = T0_MS) -> list[StoredEvent]:
    """Events as appended at ``entry_ms`` (one entry id per event, same millisecond)."""
    return [StoredEvent(P, f"{entry_ms}-{i}", e) for i, e in enumerate(events)]


def test_record_and_indexes_with_deadlines() -> None:
    e = impression(
        tenant="958",
        offer_id="12",
        affiliate_id="7",
        advertiser_id="3",
        external_imp_id="ext-1",
        visitor_id="v1",
        member_id="m1",
        ip="203.0.113.0",
        subs={"sub1": "a"},
        media_cost="0.25",
    )
    iid = e.impression_id
    deadline = T0_MS + WINDOW_MS
    set_deadline = T0_MS + WINDOW_MS + FUTURE_SKEW_MS
    rec, *zsets = FOLD.fold(P, stored([e]))
    assert rec == Op("SET", f"tracker:{{p1}}:proj:imp:i:{iid}", (rec.args[0], "PXAT", deadline))
    assert decode_record(bytes(rec.args[0]), iid) == ImpressionRecord(  # type: ignore[arg-type]
        impression_id=iid,
        occurred_at_ms=T0_MS,
        tenant="958",
        counted=True,
        offer_id="12",
        affiliate_id="7",
        advertiser_id="3",
        external_imp_id="ext-1",
        visitor_id="v1",
        member_id="m1",
        ip="203.0.113.0",
        subs={"sub1": "a"},
        media_cost="0.25",
    )
    for key in (
        "tracker:{p1}:proj:imp:xc:958:12:ext-1",
        "tracker:{p1}:proj:imp:v:958:v1",
        "tracker:{p1}:proj:imp:m:958:m1",
        "tracker:{p1}:proj:imp:ip:958:203.0.113.0",
    ):
        assert zsets[:4] == [
            Op("ZADD", key, (T0_MS, iid)),
            Op("ZREMRANGEBYSCORE", key, ("-inf", T0_MS - WINDOW_MS)),
            Op("ZREMRANGEBYRANK", key, (0, -101)),
            Op("PEXPIREAT", key, (set_deadline,)),
        ]
        zsets = zsets[4:]
    assert zsets == []


def test_only_what_is_given_is_indexed() -> None:
    e = impression(offer_id="12")
    assert [op.cmd for op in FOLD.fold(P, stored([e]))] == ["SET"]


def test_a_duplicate_is_listed_apart_from_the_counted_impressions() -> None:
    # Both stay findable for their own window: a not-counted impression used to take the
    # pointer only when empty, so the duplicate's later window was lost once the first expired
    # (and a rebuild then differed); in one capped set, duplicates would push the first out.
    first = impression(offer_id="12", external_imp_id="x")
    dup = impression(
        at=T0 + timedelta(hours=20),
        offer_id="12",
        external_imp_id="x",
        verdict="not_counted",
        reason="duplicate_imp_id",
    )
    counted, duplicates = (
        imp.counted_key(P, "t1", "12", "x"),
        imp.duplicates_key(P, "t1", "12", "x"),
    )
    ops = FOLD.fold(P, stored([first, dup]))
    assert next(op for op in ops if op.key == counted) == Op(
        "ZADD", counted, (T0_MS, first.impression_id)
    )
    dup_at = T0_MS + 20 * 3_600_000
    assert next(op for op in ops if op.key == duplicates) == Op(
        "ZADD", duplicates, (dup_at, dup.impression_id)
    )
    record = decode_record(bytes(ops[1].args[0]), dup.impression_id)  # type: ignore[arg-type]
    assert (record.verdict, record.reason) == ("not_counted", "duplicate_imp_id")


def test_events_outside_the_window_write_nothing() -> None:
    old = impression(at=T0 - timedelta(days=30), visitor_id="v", external_imp_id="x")
    barely = impression(at=T0 - timedelta(days=30) + timedelta(milliseconds=1), visitor_id="v")
    ops = FOLD.fold(P, stored([old, barely]))
    assert old.impression_id not in {a for op in ops for a in op.args}
    assert ops[0] == Op(
        "SET", imp.record_key(P, barely.impression_id), (ops[0].args[0], "PXAT", T0_MS + 1)
    )
    assert ops[1].args == (T0_MS - WINDOW_MS + 1, barely.impression_id)


def test_window_comes_from_the_constructor() -> None:
    fold = ImpressionLookup(window_ms=DAY_MS, cap=5)
    assert fold.fold(P, stored([impression(at=T0 - timedelta(days=2))])) == []
    e = impression(visitor_id="v")
    ops = fold.fold(P, stored([e]))
    assert ops[0].args[1:] == ("PXAT", T0_MS + DAY_MS)
    assert ops[3] == Op("ZREMRANGEBYRANK", imp.visitor_key(P, "t1", "v"), (0, -6))


def test_other_events_are_ignored() -> None:
    assert FOLD.fold(P, stored([configured(), conversion(visitor_id="v", ip="1.2.3.4")])) == []


def test_sorted_sets_get_one_update_per_batch_with_monotonic_deadline() -> None:
    # Out of order (batch API timestamps): the set's deadline follows the log, not occurred_at.
    newer = impression(visitor_id="v")
    older = impression(at=T0 - timedelta(days=3), visitor_id="v")
    batch = [StoredEvent(P, f"{T0_MS}-0", newer), StoredEvent(P, f"{T0_MS + 5}-0", older)]
    key = imp.visitor_key(P, "t1", "v")
    zset_ops = [op for op in FOLD.fold(P, batch) if op.key == key]
    assert zset_ops == [
        Op("ZADD", key, (T0_MS, newer.impression_id, T0_MS - 3 * DAY_MS, older.impression_id)),
        Op("ZREMRANGEBYSCORE", key, ("-inf", T0_MS + 5 - WINDOW_MS)),
        Op("ZREMRANGEBYRANK", key, (0, -101)),
        Op("PEXPIREAT", key, (T0_MS + 5 + WINDOW_MS + FUTURE_SKEW_MS,)),
    ]


def test_fold_is_pure_and_deterministic() -> None:
    batch = stored([impression(visitor_id="v", ip="1.2.3.4") for _ in range(5)])
    assert FOLD.fold(P, batch) == FOLD.fold(P, batch)
    assert FOLD.parts(["p0", "p1"]) == ["p0", "p1"]  # not the config stream


def test_keys_cannot_run_into_each_other() -> None:
    assert imp.counted_key(P, "t", "1:2", "3") != imp.counted_key(P, "t", "1", "2:3")
    assert imp.ip_key(P, "t", "2001:db8::") == "tracker:{p1}:proj:imp:ip:t:2001:db8::"


def test_a_batch_impressions_creative_and_ad_unit_are_in_its_record() -> None:
    e = impression(dialect="batch", member_id="m_x1", creative_id="dc_abc", ad_unit_id="au_1")
    [rec, *_] = FOLD.fold(P, stored([e]))
    record = decode_record(bytes(rec.args[0]), e.impression_id)  # type: ignore[arg-type]
    assert (record.member_id, record.creative_id, record.ad_unit_id) == ("m_x1", "dc_abc", "au_1")


def test_a_record_stored_before_creative_and_ad_unit_existed_still_decodes() -> None:
    older = msgspec.msgpack.encode([T0_MS, "958", True, "", "12"])  # written before the new fields
    assert decode_record(older, "id") == ImpressionRecord(
        occurred_at_ms=T0_MS, tenant="958", counted=True, offer_id="12", impression_id="id"
    )


def test_record_encoding_is_compact_and_round_trips() -> None:
    record = ImpressionRecord(occurred_at_ms=T0_MS, tenant="958", counted=False)
    data = encode_record(record)
    assert len(data) == 15  # fixarray(3) + uint64 + "958" + false: trailing defaults are cut
    assert decode_record(data, "id") == ImpressionRecord(
        occurred_at_ms=T0_MS, tenant="958", counted=False, impression_id="id"
    )


@pytest.mark.parametrize("bad", ["0", "366", "x"])
def test_window_setting_is_validated(bad: str) -> None:
    assert Settings.from_env({}).lookup_window_days == 30
    assert Settings.from_env({"TRACKER_LOOKUP_WINDOW_DAYS": "90"}).lookup_window_days == 90
    with pytest.raises(SettingsError, match="TRACKER_LOOKUP_WINDOW_DAYS"):
        Settings.from_env({"TRACKER_LOOKUP_WINDOW_DAYS": bad})


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="positive"):
        ImpressionLookup(window_ms=0)


def test_a_batch_with_thousands_of_hits_on_one_key_splits_its_zadd() -> None:
    """TRACKER_BATCH_SIZE goes up to 10,000: one IP behind a NAT can be every event of a batch,
    and the commit script cannot unpack 20,000 arguments for one command."""
    batch = stored([impression(ip="203.0.113.0", at=T0) for _ in range(2_500)])
    ops = ImpressionLookup(cap=100).fold(P, batch)
    zadds = [op for op in ops if op.cmd == "ZADD"]
    assert [len(op.args) for op in zadds] == [2_000, 2_000, 1_000]
    members = [a for op in zadds for a in op.args[1::2]]
    assert sorted(members) == sorted(s.event.impression_id for s in batch)  # type: ignore[union-attr]


# -- batch boundaries do not matter (hypothesis; fakeredis applies the ops) ------------------------

_SPLIT_WINDOW_MS = 60_000  # small window and cap, so pruning and capping happen
_SPLIT_CAP = 3


def _apply(r: fakeredis.FakeRedis, ops: list[Op]) -> None:
    for op in ops:
        r.execute_command(op.cmd, op.key, *op.args)  # type: ignore[no-untyped-call]


def _snapshot(r: fakeredis.FakeRedis) -> dict[str, object]:
    state: dict[str, object] = {}
    for raw in r.keys("*"):
        key = raw.decode() if isinstance(raw, bytes) else raw
        value = r.zrange(key, 0, -1, withscores=True) if r.type(key) == b"zset" else r.get(key)
        state[key] = (value, r.pexpiretime(key))
    return state


@given(
    hits=st.lists(
        st.tuples(
            st.integers(0, 300_000),  # entry time, ms after the start (sorted below)
            st.integers(-120_000, 120_000),  # occurred_at relative to it (batch timestamps)
            st.sampled_from(["t1", "t2"]),
            st.sampled_from(["", "v1", "v2"]),  # visitor
            st.sampled_from(["", "m1"]),  # member
            st.sampled_from(["", "203.0.113.0", "198.51.100.7"]),
            st.sampled_from(["", "x1", "x2"]),  # external imp id
            st.sampled_from(["counted", "not_counted"]),
        ),
        min_size=1,
        max_size=30,
    ),
    cuts=st.sets(st.integers(1, 29)),
)
def test_any_split_into_batches_leaves_the_state_of_one_batch(
    hits: list[tuple[int, int, str, str, str, str, str, str]], cuts: set[int]
) -> None:
    """The runner folds however many events a read returns, and a replay reads other batches
    than the live run did: the lookup must end the same either way."""
    fold = ImpressionLookup(window_ms=_SPLIT_WINDOW_MS, cap=_SPLIT_CAP)
    start_ms = int(time.time() * 1000) + 3_600_000  # deadlines stay ahead of fakeredis's clock
    batch = []
    for i, (entry, offset, tenant, vid, member, ip, ext, verdict) in enumerate(sorted(hits)):
        at = datetime.fromtimestamp((start_ms + entry + offset) / 1000, UTC)
        event = impression(
            tenant=tenant,
            at=at,
            visitor_id=vid,
            member_id=member,
            ip=ip,
            external_imp_id=ext,
            verdict=verdict,
            offer_id="1",
            reason="" if verdict == "counted" else "duplicate_imp_id",
        )
        batch.append(StoredEvent(P, f"{start_ms + entry}-{i}", event))
    whole, split = fakeredis.FakeRedis(), fakeredis.FakeRedis()
    _apply(whole, fold.fold(P, batch))
    bounds = [0, *sorted(c for c in cuts if c < len(batch)), len(batch)]
    for lo, hi in itertools.pairwise(bounds):
        _apply(split, fold.fold(P, batch[lo:hi]))
    assert _snapshot(split) == _snapshot(whole)
