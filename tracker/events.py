"""Every event type: frozen msgspec Structs in one tagged union, and how they are (de)coded.

Schema evolution rules (tested in tests/unit/test_events.py):

1. A tag (`type` field value) is stored forever: never renamed, never reused.
2. Fields are only ever *added*, at the end, with a default; old entries decode with it.
3. A field never changes type or meaning. A breaking change is a new type with a new tag
   (``"impression_seen.v2"``); the old class stays in ``LegacyEvent`` and ``upgrade()`` converts it.
4. Decoding never forbids unknown fields, so an older reader skips fields added after it.
5. An entry whose tag this code does not know is reported (``UnknownEvent``), never skipped.
6. Fields equal to their default are not written (``omit_defaults``: an impression's JSON is about
   half as long), so a default is part of the schema too: it never changes.

Events are values: nothing they hold refers back to an event, so they cannot be part of a
reference cycle, and they are built with ``gc=False``: the cyclic collector never scans them,
which takes about a quarter off building a 5,000-impression batch in one process
(docs/architecture.md, Performance).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]

Verdict = Literal["counted", "not_counted"]


class Event(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True, gc=False
):
    """Envelope shared by every event."""

    event_id: str  # UUIDv7: time-ordered, unique
    occurred_at: datetime  # aware UTC: when it happened (client time where the API allows it)
    recorded_at: datetime  # aware UTC: when the server accepted it
    tenant: Id  # the network / Xandr member that owns it


class TrackerConfigured(Event, frozen=True, tag="tracker_configured"):
    """One configuration object's full new state (``state == "deleted"`` for deletes)."""

    kind: str  # tracker, offer, affiliate, advertiser, publisher, line_item, placement, ...
    object_id: Id
    version: int  # 1 on create, +1 on every change
    snapshot: dict[str, Any]  # the full object after the change
    actor: str = ""  # who changed it (token id), for the audit trail


class ImpressionSeen(Event, frozen=True, tag="impression_seen"):
    """One impression hit or batch item, with the verdict decided at ingestion."""

    impression_id: str  # ours: time-ordered, HMAC-tagged (tracker.ids)
    dialect: str  # affise | freshpaint | xandr | batch
    verdict: Verdict = "counted"
    reason: str = ""  # stable machine code when not counted
    external_imp_id: str = ""  # the affiliate's / partner's own imp_id
    tracker_id: str = ""
    offer_id: str = ""
    affiliate_id: str = ""
    advertiser_id: str = ""
    line_item_id: str = ""
    publisher_id: str = ""
    placement_id: str = ""
    payment_rule_id: str = ""
    creative_id: str = ""
    ad_unit_id: str = ""
    member_id: str = ""
    env_id: str = ""
    dest_id: str = ""
    subs: dict[str, str] = {}  # sub1..sub8 as given
    # ancost, as a decimal string (never a float). When set, it is the impression's cost and
    # overrides the payment rule (Xandr: "will override any payment rules"); payment_rule_id
    # still names the tracker's rule at the time of the hit.
    media_cost: str = ""
    visitor_id: str = ""
    ip: str = ""  # as stored under the privacy policy (maybe truncated)
    user_agent: str = ""
    referer: str = ""
    consent: str = ""  # the gdpr_consent string as given
    redirect: str = ""  # the redir target, when one was asked for
    redirect_refused: str = ""  # why the redirect was not followed (the pixel answered instead)


class ConversionReceived(Event, frozen=True, tag="conversion_received"):
    """A conversion postback or API call, as received (attribution decides later)."""

    conversion_id: str
    offer_id: str = ""
    aimp_id: str = ""  # our impression id, when the advertiser passed it back
    imp_id: str = ""  # the external impression id
    click_id: str = ""
    goal: str = ""
    sum: str = ""  # decimal string
    status: str = ""
    visitor_id: str = ""
    ip: str = ""
    member_id: str = ""
    params: dict[str, str] = {}  # the raw query / body parameters


AnyEvent = TrackerConfigured | ImpressionSeen | ConversionReceived
LegacyEvent = msgspec.UnsetType  # no legacy types yet; see rule 3 above

EVENT_TYPES: Final[tuple[type[Event], ...]] = (
    TrackerConfigured,
    ImpressionSeen,
    ConversionReceived,
)
TAGS: Final[frozenset[str]] = frozenset(str(t.__struct_config__.tag) for t in EVENT_TYPES)


class UnknownEvent(Exception):
    """An entry whose type this code does not know, or that does not decode."""

    def __init__(self, entry_id: str, detail: str) -> None:
        super().__init__(f"entry {entry_id}: {detail}")
        self.entry_id = entry_id
        self.detail = detail


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(AnyEvent)


class _TagOnly(msgspec.Struct):
    type: str = ""


_tag_decoder: Final = msgspec.json.Decoder(_TagOnly)


def encode(event: AnyEvent) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes, entry_id: str = "?") -> AnyEvent:
    """Decode one stored event; raise UnknownEvent naming the entry when that is impossible."""
    try:
        return upgrade(_decoder.decode(data))
    except RecursionError as exc:  # nested deeper than this stack can decode (msgspec recurses)
        raise UnknownEvent(entry_id, "undecodable event: nested too deeply") from exc
    except msgspec.DecodeError as exc:
        try:
            tag = _tag_decoder.decode(data).type
        except msgspec.DecodeError:
            tag = ""
        if tag and tag not in TAGS:
            raise UnknownEvent(entry_id, f"unknown event type {tag!r}") from exc
        raise UnknownEvent(entry_id, f"undecodable event: {exc}") from exc


def upgrade(event: AnyEvent) -> AnyEvent:
    """Convert legacy event types to their current form (none exist yet)."""
    return event


def type_of(event: AnyEvent) -> str:
    return str(event.__struct_config__.tag)
