"""The ConfigState fold and every eligibility rule, in order and in combination: plain data."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import pytest

from tests.factories import configured
from tracker.config import model
from tracker.config.model import (
    Advertiser,
    Affiliate,
    LineItem,
    Offer,
    Placement,
    Publisher,
    Tracker,
)
from tracker.projections import eligibility as el
from tracker.projections.config import ConfigState, apply
from tracker.projections.eligibility import decide_offer, decide_tracker, decide_tracker_code

KINDS: dict[type[Any], str] = {
    Advertiser: model.ADVERTISER,
    Affiliate: model.AFFILIATE,
    Offer: model.OFFER,
    LineItem: model.LINE_ITEM,
    Publisher: model.PUBLISHER,
    Placement: model.PLACEMENT,
    Tracker: model.TRACKER,
}


def event(obj: Any) -> Any:
    return configured(
        tenant=obj.tenant,
        kind=KINDS[type(obj)],
        object_id=str(obj.id),
        version=obj.version,
        snapshot=model.to_snapshot(obj),
    )


def state_of(*objs: Any) -> ConfigState:
    state = ConfigState()
    for i, obj in enumerate(objs):
        apply(state, event(obj), f"1-{i}")
    return state


def bump(obj: Any, **changes: Any) -> Any:
    return msgspec.structs.replace(obj, version=obj.version + 1, **changes)


ADV = Advertiser(id=1, tenant="t1", name="A")
OFFER = Offer(id=10, tenant="t1", advertiser_id=1, allow_impressions=True)
AFF = Affiliate(id=20, tenant="t1")


def offer_reason(*objs: Any, offer_id: int = 10, affiliate_id: int = 20) -> str:
    decision = decide_offer(state_of(*objs), offer_id, affiliate_id)
    assert decision.eligible == (decision.reason == "")
    return decision.reason


def test_eligible_offer_affiliate_carries_objects() -> None:
    decision = decide_offer(state_of(ADV, OFFER, AFF), 10, 20)
    assert decision == el.Decision(True, "", "t1", OFFER, AFF, None)


@pytest.mark.parametrize(
    ("objs", "reason"),
    [
        ((ADV, AFF), el.UNKNOWN_OFFER),
        ((ADV, bump(OFFER, status="deleted"), AFF), el.OFFER_DELETED),
        ((ADV, bump(OFFER, status="paused"), AFF), el.OFFER_NOT_ACTIVE),
        ((ADV, bump(OFFER, status="stopped"), AFF), el.OFFER_NOT_ACTIVE),
        ((ADV, bump(OFFER, allow_impressions=False), AFF), el.IMPRESSIONS_NOT_ALLOWED),
        ((OFFER, AFF), el.ADVERTISER_DELETED),
        ((bump(ADV, state="deleted"), OFFER, AFF), el.ADVERTISER_DELETED),
        ((bump(ADV, state="inactive"), OFFER, AFF), el.ADVERTISER_INACTIVE),
        ((ADV, OFFER), el.UNKNOWN_AFFILIATE),
        ((ADV, OFFER, Affiliate(id=20, tenant="t2")), el.UNKNOWN_AFFILIATE),
        ((ADV, OFFER, bump(AFF, status="deleted")), el.AFFILIATE_DELETED),
        ((ADV, OFFER, bump(AFF, status="inactive")), el.AFFILIATE_NOT_ACTIVE),
        ((ADV, OFFER, bump(AFF, status="suspended")), el.AFFILIATE_NOT_ACTIVE),
        ((ADV, bump(OFFER, disabled_affiliates=(20,)), AFF), el.AFFILIATE_DISABLED),
        ((ADV, bump(OFFER, privacy="private"), AFF), el.AFFILIATE_NOT_ENABLED),
        ((ADV, bump(OFFER, privacy="premoderation"), AFF), el.AFFILIATE_NOT_ENABLED),
        ((bump(ADV, disabled_affiliates=(20,)), OFFER, AFF), el.ADVERTISER_DISABLED_AFFILIATE),
    ],
)
def test_each_offer_rule(objs: tuple[Any, ...], reason: str) -> None:
    assert offer_reason(*objs) == reason


def test_private_offer_open_to_enabled_affiliate_only() -> None:
    private = bump(OFFER, privacy="private", enabled_affiliates=(20,))
    other = Affiliate(id=21, tenant="t1")
    assert offer_reason(ADV, private, AFF, other) == ""
    assert offer_reason(ADV, private, AFF, other, affiliate_id=21) == el.AFFILIATE_NOT_ENABLED


def test_disabled_wins_over_enabled() -> None:
    both = bump(OFFER, privacy="private", enabled_affiliates=(20,), disabled_affiliates=(20,))
    assert offer_reason(ADV, both, AFF) == el.AFFILIATE_DISABLED


def test_advertiser_disabling_other_affiliate_does_not_matter() -> None:
    assert offer_reason(bump(ADV, disabled_affiliates=(99,)), OFFER, AFF) == ""


# Every failing rule, as a change that breaks exactly it; combinations must report the earliest.
BREAKERS: dict[str, tuple[str, dict[str, Any]]] = {
    el.OFFER_NOT_ACTIVE: ("offer", {"status": "paused"}),
    el.IMPRESSIONS_NOT_ALLOWED: ("offer", {"allow_impressions": False}),
    el.ADVERTISER_INACTIVE: ("adv", {"state": "inactive"}),
    el.AFFILIATE_NOT_ACTIVE: ("aff", {"status": "suspended"}),
    el.AFFILIATE_DISABLED: ("offer", {"disabled_affiliates": (20,)}),
    el.AFFILIATE_NOT_ENABLED: ("offer", {"privacy": "private"}),
    el.ADVERTISER_DISABLED_AFFILIATE: ("adv", {"disabled_affiliates": (20,)}),
}


@pytest.mark.parametrize("combo", [*itertools.combinations(BREAKERS, 2), tuple(BREAKERS)])
def test_combinations_report_first_rule_in_order(combo: tuple[str, ...]) -> None:
    objs = {"adv": ADV, "offer": OFFER, "aff": AFF}
    changes: dict[str, dict[str, Any]] = {"adv": {}, "offer": {}, "aff": {}}
    for reason in combo:
        target, change = BREAKERS[reason]
        changes[target].update(change)
    built = [
        bump(objs[k], **changes[k]) if changes[k] else objs[k] for k in ("adv", "offer", "aff")
    ]
    expected = min(combo, key=el.OFFER_REASONS.index)
    assert offer_reason(*built) == expected


def test_deleted_offer_reported_before_affiliate_problems() -> None:
    assert offer_reason(ADV, bump(OFFER, status="deleted"), bump(AFF, status="deleted")) == (
        el.OFFER_DELETED
    )


# -- trackers -------------------------------------------------------------------------------------

LI = LineItem(id=30, tenant="t1", advertiser_id=1, name="Test Line Item")
PUB = Publisher(id=40, tenant="t1", name="November Publisher")
PLC = Placement(id=50, tenant="t1", publisher_id=40)
TRK = Tracker(id=60, tenant="t1", advertiser_id=1, line_item_id=30, publisher_id=40, code="c1")


def tracker_reason(*objs: Any, tracker_id: int = 60) -> str:
    return decide_tracker(state_of(*objs), tracker_id).reason


def test_eligible_tracker() -> None:
    decision = decide_tracker(state_of(ADV, LI, PUB, TRK), 60)
    assert decision == el.Decision(True, "", "t1", None, None, TRK)


@pytest.mark.parametrize(
    ("objs", "reason"),
    [
        ((ADV, LI, PUB), el.UNKNOWN_TRACKER),
        ((ADV, LI, PUB, bump(TRK, state="deleted")), el.TRACKER_DELETED),
        ((ADV, LI, PUB, bump(TRK, state="inactive")), el.TRACKER_INACTIVE),
        ((bump(ADV, state="deleted"), LI, PUB, TRK), el.ADVERTISER_DELETED),
        ((bump(ADV, state="inactive"), LI, PUB, TRK), el.ADVERTISER_INACTIVE),
        ((ADV, bump(LI, state="deleted"), PUB, TRK), el.LINE_ITEM_DELETED),
        ((ADV, PUB, TRK), el.LINE_ITEM_DELETED),
        ((ADV, bump(LI, state="inactive"), PUB, TRK), el.LINE_ITEM_INACTIVE),
        ((ADV, LI, bump(PUB, state="deleted"), TRK), el.PUBLISHER_DELETED),
        ((ADV, LI, bump(PUB, state="inactive"), TRK), el.PUBLISHER_INACTIVE),
        ((ADV, LI, PUB, bump(TRK, placement_id=50)), el.PLACEMENT_DELETED),
        (
            (ADV, LI, PUB, bump(PLC, state="inactive"), bump(TRK, placement_id=50)),
            el.PLACEMENT_INACTIVE,
        ),
        ((ADV, LI, PUB, PLC, bump(TRK, placement_id=50)), ""),
    ],
)
def test_each_tracker_rule(objs: tuple[Any, ...], reason: str) -> None:
    assert tracker_reason(*objs) == reason


def test_tracker_rules_in_order() -> None:
    objs = (
        bump(ADV, state="inactive"),
        bump(LI, state="inactive"),
        bump(PUB, state="deleted"),
        bump(TRK, state="inactive"),
    )
    assert tracker_reason(*objs) == el.TRACKER_INACTIVE
    assert tracker_reason(*objs[:3], TRK) == el.ADVERTISER_INACTIVE
    assert tracker_reason(ADV, *objs[1:3], TRK) == el.LINE_ITEM_INACTIVE
    assert tracker_reason(ADV, LI, objs[2], TRK) == el.PUBLISHER_DELETED


def test_tracker_by_code() -> None:
    state = state_of(ADV, LI, PUB, TRK)
    assert decide_tracker_code(state, "c1").tracker == TRK
    assert decide_tracker_code(state, "nope").reason == el.UNKNOWN_TRACKER
    other = Tracker(id=61, tenant="t2", advertiser_id=2, line_item_id=3, publisher_id=4, code="c1")
    apply(state, event(other), "2-0")
    assert decide_tracker_code(state, "c1").reason == el.AMBIGUOUS_TRACKER_CODE
    apply(state, event(bump(other, code="c2")), "2-1")
    assert decide_tracker_code(state, "c1").tracker == TRK
    apply(state, event(bump(TRK, state="deleted")), "2-2")
    assert decide_tracker_code(state, "c1").reason == el.UNKNOWN_TRACKER


# -- the fold -------------------------------------------------------------------------------------


def test_fold_keeps_newest_version_and_position() -> None:
    v2 = bump(OFFER, status="paused")
    state = state_of(OFFER, v2, OFFER)  # a repeated v1 after v2 changes nothing
    assert state.get(model.OFFER, 10) == v2
    assert state.of_tenant("t1", model.OFFER) == {10: v2}
    assert state.of_tenant("t2", model.OFFER) == {}
    assert state.position == "1-2"
    assert state.events == 3


def test_fold_tokens() -> None:
    token = model.Token(id="ab", tenant="t1", role="admin", secret_sha256="00")
    state = ConfigState()
    snapshot = model.to_snapshot(token)
    apply(state, configured(kind=model.TOKEN, object_id="ab", snapshot=snapshot), "1-0")
    assert state.tokens == {"ab": token}
    assert state.objects[model.OFFER] == {}
