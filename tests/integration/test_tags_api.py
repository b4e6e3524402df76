"""Tag export endpoints: /imptracker/tags and /offers/{id}/impression-pixel."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.config_support import api_fixture, make_token, ok  # noqa: F401  # fixture
from tracker.eventstore.store import EventStore

Client = TestClient[Any, Any]


async def test_tracker_tags(api: Client, store: EventStore) -> None:
    h = await make_token(store)
    adv = await ok(await api.post("/advertisers", json={"name": "A"}, headers=h), 201)
    li = await ok(
        await api.post("/line-items", json={"name": "L", "advertiser_id": adv["id"]}, headers=h),
        201,
    )
    pub = await ok(await api.post("/publishers", json={"name": "P"}, headers=h), 201)
    body = {
        "imptracker": {
            "name": "Test",
            "publisher": {"id": pub["id"]},
            "line_item": {"id": li["id"]},
        }
    }
    tid = (
        await ok(await api.post(f"/imptracker?advertiser_id={adv['id']}", json=body, headers=h))
    )["response"]["id"]
    r = await api.get(
        f"/imptracker/tags?id={tid}&format=secure&macros=CACHEBUSTER,ANCOST,REDIRECT_URL", headers=h
    )
    assert (r.status, r.content_type) == (200, "text/html")
    assert await r.text() == (
        "<!-- Imp Tracker - Test - DO NOT MODIFY --> "
        f'<img src="https://track.example.com/imptr?id={tid}'
        "&cachebuster=[CACHEBUSTER]&ancost=[ANCOST]&t=2&redir=[REDIRECT_URL]"
        '" width="1" height="1" /> <!-- End of Imp Tracker -->\n'
    )
    r = await api.get(f"/imptracker/tags?id={tid},{tid}&format=js&macros=", headers=h)
    lines = (await r.text()).splitlines()
    assert len(lines) == 2
    assert f'src="https://track.example.com/imptr?id={tid}&t=1"' in lines[0]
    for query, status, error_id in (
        (f"id={tid}&format=flash", 400, "SYNTAX"),
        (f"id={tid}&macros=NOPE", 400, "SYNTAX"),
        ("id=9999", 404, "NOTFOUND"),
        ("id=x", 400, "SYNTAX"),
    ):
        r = await api.get(f"/imptracker/tags?{query}", headers=h)
        assert (r.status, (await r.json())["response"]["error_id"]) == (status, error_id), query
    other = await make_token(store, tenant="other")
    r = await api.get(f"/imptracker/tags?id={tid}", headers=other)
    assert (r.status, (await r.json())["response"]["error_id"]) == (404, "NOTFOUND")


async def test_offer_pixel(api: Client, store: EventStore) -> None:
    h = await make_token(store)
    adv = await ok(await api.post("/advertisers", json={"name": "A"}, headers=h), 201)
    aff = await ok(await api.post("/affiliates", json={"name": "F"}, headers=h), 201)
    offer = await ok(
        await api.post("/offers", json={"name": "O", "advertiser_id": adv["id"]}, headers=h), 201
    )
    url = f"/offers/{offer['id']}/impression-pixel?affiliate_id={aff['id']}"
    r = await api.get(url, headers=h)
    assert (r.status, (await r.json())["error"]["code"]) == (409, "impressions_not_allowed")
    await ok(
        await api.patch(
            f"/offers/{offer['id']}", json={"version": 1, "allow_impressions": True}, headers=h
        )
    )
    body = await ok(await api.get(url, headers=h))
    link = (
        f"https://track.example.com/imp?aid={aff['id']}&oid={offer['id']}"
        "&sub1={your_affiliate_macro1}&sub2={your_affiliate_macro2}&sub3={your_affiliate_macro3}"
    )
    assert body == {
        "offer_id": offer["id"],
        "affiliate_id": aff["id"],
        "pixel": f'<img src="{link}" height="1" width="1" alt="">',
        "link": link,
    }
    # an affiliate gets its own pixel without naming itself, and never another's
    mine = await make_token(store, role=f"affiliate:{aff['id']}")
    assert (await ok(await api.get(f"/offers/{offer['id']}/impression-pixel", headers=mine)))[
        "link"
    ] == link
    assert (
        await api.get(f"/offers/{offer['id']}/impression-pixel?affiliate_id=9999", headers=mine)
    ).status == 403
    assert (
        await api.get(f"/offers/{offer['id']}/impression-pixel?affiliate_id=9999", headers=h)
    ).status == 404
