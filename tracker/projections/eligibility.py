"""Eligibility: may an impression be counted for (offer, affiliate), or for a Xandr tracker?

Pure: no I/O, no clock, no logging. Each decision is a handful of dict lookups on the in-process
``ConfigState`` (about a microsecond), so the pixel path calls them per hit. A decision names the
FIRST failing rule, checked in the order of ``OFFER_REASONS`` / ``TRACKER_REASONS``; the reason
codes are stored on events forever, so they are never renamed.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from tracker.config.model import DELETED, Advertiser, Affiliate, Offer, Tracker
from tracker.projections.config import ConfigState

# Affise's rules (seed 000), plus unknown ids; in the order they are checked.
UNKNOWN_OFFER: Final = "unknown_offer"
OFFER_DELETED: Final = "offer_deleted"
OFFER_NOT_ACTIVE: Final = "offer_not_active"  # paused or stopped
IMPRESSIONS_NOT_ALLOWED: Final = "impressions_not_allowed"  # allow_impressions is off
ADVERTISER_DELETED: Final = "advertiser_deleted"
ADVERTISER_INACTIVE: Final = "advertiser_inactive"
UNKNOWN_AFFILIATE: Final = "unknown_affiliate"  # also: an affiliate of another tenant
AFFILIATE_DELETED: Final = "affiliate_deleted"
AFFILIATE_NOT_ACTIVE: Final = "affiliate_not_active"  # inactive or suspended
AFFILIATE_DISABLED: Final = "affiliate_disabled"  # disabled from the offer
AFFILIATE_NOT_ENABLED: Final = "affiliate_not_enabled"  # non-public offer, not enabled for it
ADVERTISER_DISABLED_AFFILIATE: Final = "advertiser_disabled_affiliate"

OFFER_REASONS: Final = (
    UNKNOWN_OFFER,
    OFFER_DELETED,
    OFFER_NOT_ACTIVE,
    IMPRESSIONS_NOT_ALLOWED,
    ADVERTISER_DELETED,
    ADVERTISER_INACTIVE,
    UNKNOWN_AFFILIATE,
    AFFILIATE_DELETED,
    AFFILIATE_NOT_ACTIVE,
    AFFILIATE_DISABLED,
    AFFILIATE_NOT_ENABLED,
    ADVERTISER_DISABLED_AFFILIATE,
)

UNKNOWN_TRACKER: Final = "unknown_tracker"
AMBIGUOUS_TRACKER_CODE: Final = "ambiguous_tracker_code"  # one code, several advertisers
TRACKER_DELETED: Final = "tracker_deleted"
TRACKER_INACTIVE: Final = "tracker_inactive"
LINE_ITEM_DELETED: Final = "line_item_deleted"  # also: missing
LINE_ITEM_INACTIVE: Final = "line_item_inactive"
PUBLISHER_DELETED: Final = "publisher_deleted"  # also: missing
PUBLISHER_INACTIVE: Final = "publisher_inactive"
PLACEMENT_DELETED: Final = "placement_deleted"
PLACEMENT_INACTIVE: Final = "placement_inactive"

TRACKER_REASONS: Final = (
    UNKNOWN_TRACKER,
    AMBIGUOUS_TRACKER_CODE,
    TRACKER_DELETED,
    TRACKER_INACTIVE,
    ADVERTISER_DELETED,
    ADVERTISER_INACTIVE,
    LINE_ITEM_DELETED,
    LINE_ITEM_INACTIVE,
    PUBLISHER_DELETED,
    PUBLISHER_INACTIVE,
    PLACEMENT_DELETED,
    PLACEMENT_INACTIVE,
)


class Decision(NamedTuple):
    """The outcome, and the objects it was decided on (for the event's ids and the forwarder)."""

    eligible: bool
    reason: str = ""  # "" when eligible, else one of OFFER_REASONS / TRACKER_REASONS
    tenant: str = ""  # the owning tenant, "" when the offer / tracker is unknown
    offer: Offer | None = None
    affiliate: Affiliate | None = None
    tracker: Tracker | None = None


def _refuse(
    reason: str,
    tenant: str = "",
    offer: Offer | None = None,
    affiliate: Affiliate | None = None,
    tracker: Tracker | None = None,
) -> Decision:
    return Decision(False, reason, tenant, offer, affiliate, tracker)


def _advertiser_reason(advertiser: Advertiser | None) -> str:
    if advertiser is None or advertiser.state == DELETED:
        return ADVERTISER_DELETED
    if advertiser.state != "active":
        return ADVERTISER_INACTIVE
    return ""


def decide_offer(state: ConfigState, offer_id: int, affiliate_id: int) -> Decision:
    """May an impression of ``affiliate_id`` on ``offer_id`` be counted? Ids as in the pixel URL."""
    offer: Offer | None = state.objects["offer"].get(offer_id)
    if offer is None:
        return _refuse(UNKNOWN_OFFER)
    tenant = offer.tenant
    if offer.status != "active":
        return _refuse(
            OFFER_DELETED if offer.status == DELETED else OFFER_NOT_ACTIVE, tenant, offer=offer
        )
    if not offer.allow_impressions:
        return _refuse(IMPRESSIONS_NOT_ALLOWED, tenant, offer=offer)
    advertiser: Advertiser | None = state.objects["advertiser"].get(offer.advertiser_id)
    reason = _advertiser_reason(advertiser)
    if reason:
        return _refuse(reason, tenant, offer=offer)
    affiliate: Affiliate | None = state.objects["affiliate"].get(affiliate_id)
    if affiliate is None or affiliate.tenant != tenant:
        return _refuse(UNKNOWN_AFFILIATE, tenant, offer=offer)
    if affiliate.status != "active":
        reason = AFFILIATE_DELETED if affiliate.status == DELETED else AFFILIATE_NOT_ACTIVE
        return _refuse(reason, tenant, offer=offer, affiliate=affiliate)
    if affiliate_id in offer.disabled_affiliates:
        return _refuse(AFFILIATE_DISABLED, tenant, offer=offer, affiliate=affiliate)
    if offer.privacy != "public" and affiliate_id not in offer.enabled_affiliates:
        return _refuse(AFFILIATE_NOT_ENABLED, tenant, offer=offer, affiliate=affiliate)
    if advertiser is not None and affiliate_id in advertiser.disabled_affiliates:
        return _refuse(ADVERTISER_DISABLED_AFFILIATE, tenant, offer=offer, affiliate=affiliate)
    return Decision(True, "", tenant, offer, affiliate)


def decide_tracker(state: ConfigState, tracker_id: int) -> Decision:
    """May an impression on Xandr tracker ``tracker_id`` (``/imptr?id=``) be counted?"""
    tracker: Tracker | None = state.objects["tracker"].get(tracker_id)
    if tracker is None:
        return _refuse(UNKNOWN_TRACKER)
    tenant = tracker.tenant
    if tracker.state != "active":
        reason = TRACKER_DELETED if tracker.state == DELETED else TRACKER_INACTIVE
        return _refuse(reason, tenant, tracker=tracker)
    reason = (
        _advertiser_reason(state.objects["advertiser"].get(tracker.advertiser_id))
        or _linked_reason(
            state, "line_item", tracker.line_item_id, LINE_ITEM_DELETED, LINE_ITEM_INACTIVE
        )
        or _linked_reason(
            state, "publisher", tracker.publisher_id, PUBLISHER_DELETED, PUBLISHER_INACTIVE
        )
    )
    if not reason and tracker.placement_id is not None:
        reason = _linked_reason(
            state, "placement", tracker.placement_id, PLACEMENT_DELETED, PLACEMENT_INACTIVE
        )
    if reason:
        return _refuse(reason, tenant, tracker=tracker)
    return Decision(True, "", tenant, tracker=tracker)


def decide_tracker_code(state: ConfigState, code: str) -> Decision:
    """As ``decide_tracker``, for ``/imptr?code=``: the tracker with that custom code."""
    ids = state.tracker_codes.get(code)
    if not ids:
        return _refuse(UNKNOWN_TRACKER)
    if len(ids) > 1:
        return _refuse(AMBIGUOUS_TRACKER_CODE)
    return decide_tracker(state, next(iter(ids)))


def publisher_reason(state: ConfigState, tenant: str, publisher_id: int) -> str:
    """Why a publisher's own impressions (the batch API, with its token) are not counted: ""
    when it is an active publisher of ``tenant``; a deleted, missing or other tenant's one is
    PUBLISHER_DELETED (its token outlived it), an inactive one PUBLISHER_INACTIVE."""
    publisher = state.objects["publisher"].get(publisher_id)
    if publisher is None or publisher.tenant != tenant:
        return PUBLISHER_DELETED
    return _linked_reason(state, "publisher", publisher_id, PUBLISHER_DELETED, PUBLISHER_INACTIVE)


def _linked_reason(
    state: ConfigState, kind: str, object_id: int, deleted: str, inactive: str
) -> str:
    obj = state.objects[kind].get(object_id)
    if obj is None or obj.state == DELETED:
        return deleted
    if obj.state != "active":
        return inactive
    return ""


MESSAGES: Final[dict[str, str]] = {
    "": "eligible: impressions are counted",
    UNKNOWN_OFFER: "no such offer",
    OFFER_DELETED: "the offer was deleted",
    OFFER_NOT_ACTIVE: "the offer is not active (paused or stopped)",
    IMPRESSIONS_NOT_ALLOWED: "the offer's allow_impressions is off",
    ADVERTISER_DELETED: "the advertiser was deleted",
    ADVERTISER_INACTIVE: "the advertiser is inactive",
    UNKNOWN_AFFILIATE: "no such affiliate in the offer's network",
    AFFILIATE_DELETED: "the affiliate was deleted",
    AFFILIATE_NOT_ACTIVE: "the affiliate is not active (inactive or suspended)",
    AFFILIATE_DISABLED: "the affiliate is disabled from the offer",
    AFFILIATE_NOT_ENABLED: "the offer is not public and the affiliate is not enabled for it",
    ADVERTISER_DISABLED_AFFILIATE: "the advertiser disabled this affiliate",
    UNKNOWN_TRACKER: "no such impression tracker",
    AMBIGUOUS_TRACKER_CODE: "several advertisers' trackers use this code: use the id",
    TRACKER_DELETED: "the impression tracker was deleted",
    TRACKER_INACTIVE: "the impression tracker is inactive",
    LINE_ITEM_DELETED: "the tracker's line item was deleted",
    LINE_ITEM_INACTIVE: "the tracker's line item is inactive",
    PUBLISHER_DELETED: "the tracker's publisher was deleted",
    PUBLISHER_INACTIVE: "the tracker's publisher is inactive",
    PLACEMENT_DELETED: "the tracker's placement was deleted",
    PLACEMENT_INACTIVE: "the tracker's placement is inactive",
}
