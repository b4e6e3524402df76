"""Impression lookup: what attribution needs to find an impression again, for one window.

Pure: no I/O, no clock, no logging. Time comes only from the events: ``occurred_at`` and the
stream entry id (the log's own clock, the same on every replay of the same stream).

Per ``ImpressionSeen``, under the impression's partition tag (``tracker:{pN}:proj:imp:...``):

- ``i:<impression id>`` -> the compact record (msgpack array, ``ImpressionRecord``), ``PXAT
  occurred_at + window``. The id itself is not stored in the value: it is in the key.
- ``xc:<tenant>:<offer>:<external imp id>``, ``xd:...`` (the same segments),
  ``v:<tenant>:<visitor>``, ``m:<tenant>:<member>``, ``ip:<tenant>:<ip>`` -> sorted sets of our
  ids scored by ``occurred_at`` ms; pruned to the window and capped to the newest ``cap``.
  ``xc:`` lists the *counted* impressions that named an external imp id, ``xd:`` the
  *not-counted* ones (its duplicates): each is found while its record lives, in whatever order
  the log holds them, and however many duplicates come they never push a counted one out (the
  duplicate claim leaves at most one counted impression a day). The reader takes a counted one
  first, then the newest. Until session 9 one pointer ``x:...`` held the id: a not-counted
  impression only took it when empty, so once the first impression's window ended a later
  duplicate could no longer be found, and a rebuild made then differed from the live state. The
  reader still reads ``x:`` pointers; they expire within one window.

Expiry is deterministic under replay: every deadline is an absolute time taken from the log. A
sorted set is shared by many impressions, some of them out of order (batch API timestamps), so
its deadline cannot be ``occurred_at + window`` of the event that touched it last: that would
shorten the life of newer members. It is ``entry time + window + FUTURE_SKEW_MS`` instead, where
the entry time is the stream entry id's milliseconds: monotonic within a partition, so the
deadline only ever moves later. Members themselves are pruned by score (``occurred_at``).

An event already older than the window when it was appended (``occurred_at + window <= entry
time``) writes nothing. Replayed long after, every deadline is in the past and Redis drops the
keys at once: the rebuilt state is the live state at that time, i.e. empty.

Every impression is indexed, counted or not: the record carries the verdict, and attribution
decides what a not-counted match means.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from tracker.events import ImpressionSeen
from tracker.eventstore import keys
from tracker.eventstore.store import Op, StoredEvent

NAME: Final = "imp"
DAY_MS: Final = 86_400_000
DEFAULT_WINDOW_DAYS: Final = 30
DEFAULT_CAP: Final = 100  # newest ids kept per visitor / member / IP and partition
# The batch API accepts timestamps up to 5 minutes ahead of the server: a sorted set outlives its
# newest member's score + window even when that member was dated in the future.
FUTURE_SKEW_MS: Final = 5 * 60 * 1000
MAX_ZADD_ARGS: Final = 2_000  # score, member, ...: one ZADD per 1,000 members of a batch


class ImpressionRecord(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """The compact record attribution needs; stored as a msgpack array, trailing defaults cut
    (msgspec's ``omit_defaults`` does not apply to arrays; the decoder fills them back in).

    Field order is storage order: append new fields at the end with a default, never reorder.
    ``impression_id`` is stored empty (the key holds it); readers fill it in. The batch API's
    ``creative_id`` and ``ad_unit_id`` came later (the seed matches on them "precisely"), after it,
    then Freshpaint's ``dest_id``.
    """

    occurred_at_ms: int
    tenant: str
    counted: bool  # verdict == "counted"
    reason: str = ""  # the not-counted reason code
    offer_id: str = ""
    affiliate_id: str = ""
    advertiser_id: str = ""
    visitor_id: str = ""
    ip: str = ""  # as stored under the privacy policy
    subs: dict[str, str] = {}
    external_imp_id: str = ""
    payment_rule_id: str = ""
    tracker_id: str = ""
    line_item_id: str = ""
    publisher_id: str = ""
    placement_id: str = ""
    media_cost: str = ""  # decimal string
    member_id: str = ""
    impression_id: str = ""
    creative_id: str = ""
    ad_unit_id: str = ""
    # a Freshpaint hit's destination: its imp_id is unique within it (external_scope), so two
    # destinations' hits with one imp_id are told apart by it (session 9)
    dest_id: str = ""

    @property
    def verdict(self) -> str:
        return "counted" if self.counted else "not_counted"


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(ImpressionRecord)


_EMPTY: Final[tuple[str, dict[str, str]]] = ("", {})


def encode_record(record: ImpressionRecord) -> bytes:
    fields = msgspec.structs.astuple(record)
    end = len(fields)
    while end and fields[end - 1] in _EMPTY:
        end -= 1
    return _encoder.encode(fields[:end])


def decode_record(data: bytes, impression_id: str) -> ImpressionRecord:
    return msgspec.structs.replace(_decoder.decode(data), impression_id=impression_id)


def record_of(event: ImpressionSeen) -> ImpressionRecord:
    return ImpressionRecord(
        occurred_at_ms=ms_of(event),
        tenant=event.tenant,
        counted=event.verdict == "counted",
        reason=event.reason,
        offer_id=event.offer_id,
        affiliate_id=event.affiliate_id,
        advertiser_id=event.advertiser_id,
        visitor_id=event.visitor_id,
        ip=event.ip,
        subs=event.subs,
        external_imp_id=event.external_imp_id,
        payment_rule_id=event.payment_rule_id,
        tracker_id=event.tracker_id,
        line_item_id=event.line_item_id,
        publisher_id=event.publisher_id,
        placement_id=event.placement_id,
        media_cost=event.media_cost,
        member_id=event.member_id,
        creative_id=event.creative_id,
        ad_unit_id=event.ad_unit_id,
        dest_id=event.dest_id,
    )


def ms_of(event: ImpressionSeen) -> int:
    return int(event.occurred_at.timestamp() * 1000)


# -- keys (all under the impression's partition tag) ---------------------------------------------


def _seg(value: str) -> str:
    """A key segment that cannot run into the next one: ``%`` and ``:`` escaped."""
    return value.replace("%", "%25").replace(":", "%3A")


FRESHPAINT_SCOPE: Final = "dest:"  # external_scope of a Freshpaint hit: "dest:" + its dest_id


def record_key(part: str, impression_id: str) -> str:
    return keys.projection(part, NAME, "i", impression_id)


def counted_key(part: str, tenant: str, offer_id: str, external_imp_id: str) -> str:
    """The counted impressions that named the external imp id (a sorted set)."""
    return keys.projection(part, NAME, "xc", _seg(tenant), _seg(offer_id), external_imp_id)


def duplicates_key(part: str, tenant: str, offer_id: str, external_imp_id: str) -> str:
    """The not-counted impressions that named the external imp id (a sorted set)."""
    return keys.projection(part, NAME, "xd", _seg(tenant), _seg(offer_id), external_imp_id)


def legacy_external_key(part: str, tenant: str, offer_id: str, external_imp_id: str) -> str:
    """The one pointer written until session 9 (a string; gone one window after)."""
    return keys.projection(part, NAME, "x", _seg(tenant), _seg(offer_id), external_imp_id)


def external_scope(event: ImpressionSeen) -> str:
    """What an external imp id is unique within: the offer (Affise), else the destination a
    Freshpaint pixel names (``dest:<dest_id>``: its ``imp_id`` is namespaced to that partner), so
    two destinations' equal ``imp_id`` values are two entries, not one overwriting the other."""
    if event.offer_id or not event.dest_id:
        return event.offer_id
    return FRESHPAINT_SCOPE + event.dest_id


def visitor_key(part: str, tenant: str, visitor_id: str) -> str:
    return keys.projection(part, NAME, "v", _seg(tenant), visitor_id)


def member_key(part: str, tenant: str, member_id: str) -> str:
    return keys.projection(part, NAME, "m", _seg(tenant), member_id)


def ip_key(part: str, tenant: str, ip: str) -> str:
    return keys.projection(part, NAME, "ip", _seg(tenant), ip)


def index_keys(part: str, event: ImpressionSeen) -> list[str]:
    """The sorted sets (external imp id, visitor, member, IP) an impression is listed in."""
    tenant = event.tenant
    out = []
    if event.external_imp_id:
        key_of = counted_key if event.verdict == "counted" else duplicates_key
        out.append(key_of(part, tenant, external_scope(event), event.external_imp_id))
    if event.visitor_id:
        out.append(visitor_key(part, tenant, event.visitor_id))
    if event.member_id:
        out.append(member_key(part, tenant, event.member_id))
    if event.ip:
        out.append(ip_key(part, tenant, event.ip))
    return out


# -- the fold ------------------------------------------------------------------------------------


class _Recent:
    """One sorted set's changes in a batch: members to add, and the last entry time seen."""

    __slots__ = ("last_entry_ms", "members")

    def __init__(self) -> None:
        self.members: list[str | int] = []  # score, member, score, member, ...
        self.last_entry_ms = 0


class ImpressionLookup:
    """Impression id -> record; (offer, external imp id) / visitor / member / IP -> ids."""

    name = NAME

    def __init__(
        self, *, window_ms: int = DEFAULT_WINDOW_DAYS * DAY_MS, cap: int = DEFAULT_CAP
    ) -> None:
        if window_ms <= 0 or cap <= 0:
            raise ValueError("window_ms and cap must be positive")
        self.window_ms = window_ms
        self.cap = cap

    def parts(self, partitions: Sequence[str]) -> list[str]:
        return list(partitions)

    def fold(self, part: str, batch: Sequence[StoredEvent]) -> list[Op]:
        """Records and pointers per event, then one update per touched sorted set.

        Sorted-set changes are grouped per batch (one ZADD, prune, cap and deadline per key): the
        final state equals applying them event by event, since prune thresholds and deadlines
        only grow and capping keeps the top scores, so batch boundaries do not matter.
        """
        ops: list[Op] = []
        recent: dict[str, _Recent] = {}
        for stored in batch:
            event = stored.event
            if not isinstance(event, ImpressionSeen):
                continue
            entry_ms = keys.parse_id(stored.entry_id)[0]
            at_ms = ms_of(event)
            deadline = at_ms + self.window_ms
            if deadline <= entry_ms:
                continue  # already outside the window when it was appended
            iid = event.impression_id
            ops.append(
                Op(
                    "SET",
                    record_key(part, iid),
                    (encode_record(record_of(event)), "PXAT", deadline),
                )
            )
            for key in index_keys(part, event):
                changes = recent.setdefault(key, _Recent())
                changes.members += [at_ms, iid]
                changes.last_entry_ms = entry_ms
        for key, changes in recent.items():
            members = changes.members
            ops += [  # the commit script unpacks an op's arguments on Lua's C stack (8,000 max)
                Op("ZADD", key, tuple(members[at : at + MAX_ZADD_ARGS]))
                for at in range(0, len(members), MAX_ZADD_ARGS)
            ]
            ops += [
                Op("ZREMRANGEBYSCORE", key, ("-inf", changes.last_entry_ms - self.window_ms)),
                Op("ZREMRANGEBYRANK", key, (0, -self.cap - 1)),
                Op("PEXPIREAT", key, (changes.last_entry_ms + self.window_ms + FUTURE_SKEW_MS,)),
            ]
        return ops
