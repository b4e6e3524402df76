"""GET /eligibility over HTTP, and replaying the config stream into a fresh state."""

from __future__ import annotations

import itertools
from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.config_support import api_fixture, make_token, ok  # noqa: F401  # fixture
from tracker.config import model
from tracker.config.live import LIVE_CONFIG, LiveConfig
from tracker.eventstore.store import EventStore
from tracker.projections.config import ConfigState
from tracker.projections.eligibility import decide_offer, decide_tracker

Client = TestClient[Any, Any]


async def build_network(api: Client, h: dict[str, str]) -> dict[str, list[int]]:
    """Offers and affiliates in many states, plus trackers: every rule fires somewhere."""
    ids: dict[str, list[int]] = {"offer": [], "affiliate": [], "tracker": []}
    adv = await ok(await api.post("/advertisers", json={"name": "A"}, headers=h), 201)
    adv2 = await ok(await api.post("/advertisers", json={"name": "B"}, headers=h), 201)
    for status in ("active", "inactive", "suspended", "active", "active"):
        aff = await ok(
            await api.post("/affiliates", json={"name": "f", "status": status}, headers=h), 201
        )
        ids["affiliate"].append(aff["id"])
    gone = await ok(await api.post("/affiliates", json={"name": "gone"}, headers=h), 201)
    await ok(await api.delete(f"/affiliates/{gone['id']}", headers=h))
    ids["affiliate"].append(gone["id"])
    a = ids["affiliate"]
    for body in (
        {"advertiser_id": adv["id"], "allow_impressions": True},
        {"advertiser_id": adv["id"]},
        {"advertiser_id": adv["id"], "allow_impressions": True, "status": "paused"},
        {
            "advertiser_id": adv["id"],
            "allow_impressions": True,
            "privacy": "private",
            "enabled_affiliates": [a[3]],
        },
        {"advertiser_id": adv["id"], "allow_impressions": True, "disabled_affiliates": [a[4]]},
        {"advertiser_id": adv2["id"], "allow_impressions": True},
    ):
        offer = await ok(await api.post("/offers", json={"name": "o", **body}, headers=h), 201)
        ids["offer"].append(offer["id"])
    await ok(
        await api.patch(
            f"/advertisers/{adv2['id']}",
            json={"version": 1, "disabled_affiliates": [a[0]]},
            headers=h,
        )
    )
    await ok(await api.delete(f"/offers/{ids['offer'][1]}", headers=h))
    li = await ok(
        await api.post("/line-items", json={"name": "L", "advertiser_id": adv["id"]}, headers=h),
        201,
    )
    pub = await ok(await api.post("/publishers", json={"name": "P"}, headers=h), 201)
    for state in ("active", "inactive", "active"):
        body = {
            "imptracker": {
                "name": "t",
                "state": state,
                "publisher": {"id": pub["id"]},
                "line_item": {"id": li["id"]},
            }
        }
        created = await ok(
            await api.post(f"/imptracker?advertiser_id={adv['id']}", json=body, headers=h)
        )
        ids["tracker"].append(created["response"]["id"])
    await ok(await api.delete(f"/imptracker?id={ids['tracker'][2]}", headers=h))
    return ids


def decisions(state: ConfigState, ids: dict[str, list[int]]) -> list[tuple[Any, ...]]:
    offers = [
        (o, a, decide_offer(state, o, a))
        for o, a in itertools.product([*ids["offer"], 9999], [*ids["affiliate"], 9999])
    ]
    trackers = [(t, decide_tracker(state, t)) for t in [*ids["tracker"], 9999]]
    return [*offers, *trackers]


async def test_replay_gives_identical_eligibility(api: Client, store: EventStore) -> None:
    h = await make_token(store)
    ids = await build_network(api, h)
    live = api.app[LIVE_CONFIG]
    await live.sync()
    before = decisions(live.state, ids)
    reasons = {d.reason for *_, d in before}
    assert len(reasons) >= 10  # the network exercises most rules
    assert "" in reasons
    fresh = LiveConfig(store)
    await fresh.load()
    assert decisions(fresh.state, ids) == before
    assert fresh.state.position == live.state.position
    for kind in model.TYPES:
        if kind != model.TOKEN:
            assert fresh.state.objects[kind] == live.state.objects[kind], kind
    assert fresh.state.tokens == live.state.tokens


async def test_eligibility_explains(api: Client, store: EventStore) -> None:
    h = await make_token(store, tenant="t1")
    ids = await build_network(api, h)
    o, a = ids["offer"], ids["affiliate"]
    body = await ok(await api.get(f"/eligibility?offer_id={o[0]}&affiliate_id={a[0]}", headers=h))
    assert (body["eligible"], body["reason"], body["message"]) == (
        True,
        None,
        "eligible: impressions are counted",
    )
    assert body["config_position"]
    body = await ok(await api.get(f"/eligibility?offer_id={o[3]}&affiliate_id={a[0]}", headers=h))
    assert (body["eligible"], body["reason"]) == (False, "affiliate_not_enabled")
    body = await ok(await api.get(f"/eligibility?offer_id={o[0]}&affiliate_id={a[2]}", headers=h))
    assert body["reason"] == "affiliate_not_active"
    body = await ok(await api.get(f"/eligibility?tracker_id={ids['tracker'][1]}", headers=h))
    assert (body["eligible"], body["reason"]) == (False, "tracker_inactive")
    body = await ok(await api.get("/eligibility?tracker_id=9999", headers=h))
    assert body["reason"] == "unknown_tracker"
    assert (await api.get(f"/eligibility?offer_id={o[0]}", headers=h)).status == 400
    # another tenant: 404; an affiliate may ask only about itself; an advertiser about its offers
    other = await make_token(store, tenant="t2")
    assert (
        await api.get(f"/eligibility?offer_id={o[0]}&affiliate_id={a[0]}", headers=other)
    ).status == 404
    aff = await make_token(store, tenant="t1", role=f"affiliate:{a[0]}")
    assert (
        await api.get(f"/eligibility?offer_id={o[0]}&affiliate_id={a[0]}", headers=aff)
    ).status == 200
    assert (
        await api.get(f"/eligibility?offer_id={o[0]}&affiliate_id={a[3]}", headers=aff)
    ).status == 403
    # nor about a private offer it is not enabled on (it cannot read that offer either)
    assert (
        await api.get(f"/eligibility?offer_id={o[3]}&affiliate_id={a[0]}", headers=aff)
    ).status == 403
    assert (await api.get(f"/eligibility?offer_id={o[0]}&affiliate_id={a[0]}")).status == 401
