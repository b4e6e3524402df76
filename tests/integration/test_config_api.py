"""JSON configuration CRUD over HTTP, tokens and roles: real redis-server, real aiohttp server."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from tests.integration.config_support import (  # noqa: F401  # fixture
    SETTINGS,
    api_fixture,
    make_token,
    ok,
)
from tracker.config.live import LIVE_CONFIG
from tracker.config.writer import CONFIG_WRITER
from tracker.eventstore import keys
from tracker.eventstore.store import EventStore
from tracker.http.app import create_app
from tracker.settings import SettingsError

Client = TestClient[Any, Any]


async def seed(api: Client, h: dict[str, str]) -> dict[str, Any]:
    """An advertiser, an affiliate and an offer of that advertiser; their bodies by name."""
    adv = await ok(await api.post("/advertisers", json={"name": "Adv"}, headers=h), 201)
    aff = await ok(await api.post("/affiliates", json={"name": "Aff"}, headers=h), 201)
    offer = await ok(
        await api.post(
            "/offers",
            json={"name": "Offer", "advertiser_id": adv["id"], "allow_impressions": True},
            headers=h,
        ),
        201,
    )
    return {"adv": adv, "aff": aff, "offer": offer}


async def test_offer_defaults_and_round_trip(api: Client, store: EventStore) -> None:
    h = await make_token(store)
    objs = await seed(api, h)
    offer = objs["offer"]
    assert offer["version"] == 1
    assert {
        k: offer[k] for k in ("status", "privacy", "attribution_window_days", "payout_cpm")
    } == {
        "status": "active",
        "privacy": "public",
        "attribution_window_days": 30,
        "payout_cpm": "0",
    }
    bare = await ok(
        await api.post(
            "/offers", json={"name": "B", "advertiser_id": objs["adv"]["id"]}, headers=h
        ),
        201,
    )
    assert bare["allow_impressions"] is False
    got = await ok(await api.get(f"/offers/{offer['id']}", headers=h))
    assert got == offer


async def test_update_needs_current_version(api: Client, store: EventStore) -> None:
    h = await make_token(store)
    offer = (await seed(api, h))["offer"]
    url = f"/offers/{offer['id']}"
    r = await api.patch(url, json={"status": "paused"}, headers=h)
    assert r.status == 428
    paused = await ok(
        await api.patch(url, json={"status": "paused"}, headers={**h, "If-Match": '"1"'})
    )
    assert (paused["status"], paused["version"], paused["name"]) == ("paused", 2, "Offer")
    # a second admin still on version 1 gets a conflict and nothing is written
    before = await store.length(keys.CONFIG)
    r = await api.patch(url, json={"name": "mine", "version": 1}, headers=h)
    body = await r.json()
    assert (r.status, body["error"]["code"], body["error"]["current_version"]) == (
        409,
        "version_conflict",
        2,
    )
    assert await store.length(keys.CONFIG) == before
    replaced = await ok(
        await api.put(
            url,
            json={"name": "New", "advertiser_id": offer["advertiser_id"], "version": 2},
            headers=h,
        )
    )
    assert (replaced["status"], replaced["name"], replaced["version"]) == ("active", "New", 3)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "x", "advertiser_id": "ADV", "surprise": 1}, "invalid_body"),
        ({"name": "x", "advertiser_id": "1"}, "invalid_body"),
        ({"name": "x"}, "missing_field"),
        ({"name": "x", "advertiser_id": 999}, "invalid_reference"),
        ({"name": "x", "ADV": 1, "status": "nope"}, "invalid_body"),
        ({"name": "x", "ADV": 1, "impressions_url": "ftp://a.example/x"}, "invalid_field"),
        ({"name": "x", "ADV": 1, "impressions_url": "/relative"}, "invalid_field"),
        ({"name": "x", "ADV": 1, "payout_cpm": "1.5x"}, "invalid_field"),
        ({"name": "x", "ADV": 1, "revenue_cpm": "-1"}, "invalid_field"),
        # stored as given, so only a plain decimal every reader can parse
        ({"name": "x", "ADV": 1, "payout_cpm": "\u0661\u0662"}, "invalid_field"),
        ({"name": "x", "ADV": 1, "revenue_cpm": "\t1_0\n"}, "invalid_field"),
        ({"name": "x", "ADV": 1, "payout_cpm": "1e3"}, "invalid_field"),
        ({"name": "x", "ADV": 1, "payout_cpm": "-0"}, "invalid_field"),
        ({"name": "x", "ADV": 1, "goals": [{"value": "1", "payout_cpm": " 1"}]}, "invalid_field"),
        ({"name": "x", "ADV": 1, "attribution_window_days": 0}, "invalid_field"),
        # longer than the impression lookup keeps impressions (TRACKER_LOOKUP_WINDOW_DAYS=30)
        ({"name": "x", "ADV": 1, "attribution_window_days": 31}, "invalid_field"),
        (
            {
                "name": "x",
                "ADV": 1,
                "impressions_urls": [{"url": "https://a.example", "weight": 0}],
            },
            "invalid_field",
        ),
        ({"name": "x", "ADV": 1, "enabled_affiliates": [424242]}, "invalid_reference"),
        ({"name": "x", "ADV": 1, "goals": [{"value": "1"}, {"value": "1"}]}, "invalid_field"),
        ({"name": "x", "ADV": 1, "status": "deleted"}, "invalid_field"),
    ],
)
async def test_invalid_offer_writes_nothing(
    api: Client, store: EventStore, body: dict[str, Any], code: str
) -> None:
    h = await make_token(store)
    adv = await ok(await api.post("/advertisers", json={"name": "Adv"}, headers=h), 201)
    if "ADV" in body:
        body = {**{k: v for k, v in body.items() if k != "ADV"}, "advertiser_id": adv["id"]}
    before = await store.length(keys.CONFIG)
    r = await api.post("/offers", json=body, headers=h)
    error = (await r.json())["error"]
    assert (r.status, error["code"]) == (422, code), error
    assert await store.length(keys.CONFIG) == before


async def test_an_offer_outlasting_a_shortened_lookup_window_is_reported_and_still_editable(
    api: Client, store: EventStore
) -> None:
    h = await make_token(store)
    adv = await ok(await api.post("/advertisers", json={"name": "Adv"}, headers=h), 201)
    body = {"name": "Long", "advertiser_id": adv["id"], "attribution_window_days": 30}
    offer = await ok(await api.post("/offers", json=body, headers=h), 201)
    # the service restarted with TRACKER_LOOKUP_WINDOW_DAYS=7
    shorter = msgspec.structs.replace(SETTINGS, lookup_window_days=7)
    with capture_logs() as logs:
        client = TestClient(TestServer(create_app(store, shorter)))
        await client.start_server()
    try:
        warning = next(e for e in logs if e["event"] == "attribution_windows_outlast_lookup")
        assert (warning["offers"], warning["lookup_window_days"]) == ([offer["id"]], 7)
        url = f"/offers/{offer['id']}"
        paused = await client.patch(url, json={"status": "paused", "version": 1}, headers=h)
        assert (await ok(paused))["attribution_window_days"] == 30
        change = {"attribution_window_days": 20, "version": 2}
        longer = await client.patch(url, json=change, headers=h)
        assert (await longer.json())["error"]["field"] == "attribution_window_days"
        assert longer.status == 422
        change = {"attribution_window_days": 7, "version": 2}
        await ok(await client.patch(url, json=change, headers=h))
    finally:
        await client.close()


async def test_a_change_naming_a_version_that_landed_after_it_read_conflicts(
    api: Client, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PATCH naming version 2 is applied to the version-1 snapshot its process read; version 2
    # (another admin's change) lands between that read and its save. The compare-and-set alone
    # (expects 2, finds 2) let it through and undid version 2's change.
    h = await make_token(store)
    adv = await ok(await api.post("/advertisers", json={"name": "Adv"}, headers=h), 201)
    body = {"name": "O", "advertiser_id": adv["id"], "payout_cpm": "1"}
    offer = await ok(await api.post("/offers", json=body, headers=h), 201)
    url = f"/offers/{offer['id']}"
    writer = api.app[CONFIG_WRITER]
    save = writer.save

    async def another_change_lands_first(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(writer, "save", save)
        await ok(await api.patch(url, json={"payout_cpm": "2"}, headers={**h, "If-Match": "1"}))
        return await save(*args, **kwargs)

    monkeypatch.setattr(writer, "save", another_change_lands_first)
    late = await api.patch(url, json={"revenue_cpm": "5"}, headers={**h, "If-Match": "2"})
    assert (late.status, (await late.json())["error"]["code"]) == (409, "version_conflict")
    monkeypatch.setattr(writer, "save", save)
    assert (await ok(await api.get(url, headers=h)))["version"] == 1  # nothing was undone


async def test_a_saved_change_this_process_is_slow_to_apply_is_answered_as_saved(
    api: Client, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The create is in the log, but this process's copy does not catch up in time. A 503 here
    # had the client retry the create, and the retry made a second advertiser.
    h = await make_token(store)
    live = api.app[LIVE_CONFIG]
    await live.sync()  # the token is known here before the tail stops applying
    apply, wait_for = live._apply_batch, live.wait_for
    held: list[Any] = []
    monkeypatch.setattr(live, "_apply_batch", held.append)  # the tail reads, applies nothing
    monkeypatch.setattr(live, "wait_for", lambda position, _=0.0: wait_for(position, 0.2))
    before = await store.length(keys.CONFIG)
    with capture_logs() as logs:
        created = await ok(await api.post("/advertisers", json={"name": "Adv"}, headers=h), 201)
    assert (created["name"], created["version"]) == ("Adv", 1)
    assert await store.length(keys.CONFIG) == before + 1
    assert [e["object_id"] for e in logs if e["event"] == "config_change_not_applied_here"] == [
        created["id"]
    ]
    monkeypatch.setattr(live, "_apply_batch", apply)
    monkeypatch.setattr(live, "wait_for", wait_for)
    for batch in held:
        apply(batch)
    assert await ok(await api.get(f"/advertisers/{created['id']}", headers=h)) == created


@pytest.mark.parametrize(
    "request_line",
    [
        "GET /offers?offset=NUM",
        "GET /offers?limit=NUM",
        "GET /offers/NUM",
        "GET /imptracker?id=NUM",
        "GET /imptracker?id=1,NUM",
        "GET /imptracker?start_element=NUM",
        "GET /imptracker/tags?id=NUM",
        "GET /eligibility?offer_id=NUM&affiliate_id=1",
        "GET /offers/1/impression-pixel?affiliate_id=NUM",
    ],
)
async def test_a_number_of_thousands_of_digits_is_a_client_error(
    api: Client, store: EventStore, request_line: str
) -> None:
    h = await make_token(store)
    method, target = request_line.replace("NUM", "9" * 5000).split(" ")
    r = await api.request(method, target, headers=h)
    assert r.status in (400, 404), await r.text()


async def test_an_offer_listing_a_deleted_affiliate_can_still_be_paused(
    api: Client, store: EventStore
) -> None:
    h = await make_token(store)
    objs = await seed(api, h)
    aff, url = objs["aff"], f"/offers/{objs['offer']['id']}"
    await ok(
        await api.patch(url, json={"enabled_affiliates": [aff["id"]], "version": 1}, headers=h)
    )
    await ok(await api.delete(f"/affiliates/{aff['id']}", headers=h))
    paused = await ok(await api.patch(url, json={"status": "paused", "version": 2}, headers=h))
    assert (paused["status"], paused["enabled_affiliates"]) == ("paused", [aff["id"]])
    # a new link to the deleted affiliate is still refused
    other = await ok(await api.post("/affiliates", json={"name": "B"}, headers=h), 201)
    await ok(await api.delete(f"/affiliates/{other['id']}", headers=h))
    change = {"disabled_affiliates": [other["id"]], "version": 3}
    r = await api.patch(url, json=change, headers=h)
    assert (r.status, (await r.json())["error"]["code"]) == (422, "invalid_reference")
    # and so is moving the deleted one to the other list (disabled is not enabled)
    change = {"enabled_affiliates": [], "disabled_affiliates": [aff["id"]], "version": 3}
    r = await api.patch(url, json=change, headers=h)
    assert (r.status, (await r.json())["error"]["code"]) == (422, "invalid_reference")


async def test_offer_with_everything(api: Client, store: EventStore) -> None:
    h = await make_token(store)
    objs = await seed(api, h)
    body = {
        "name": "Full",
        "advertiser_id": objs["adv"]["id"],
        "allow_impressions": True,
        "impressions_url": "https://adv.example/imp?id={aimp_id}",
        "impressions_urls": [{"url": "http://b.example/i", "weight": 3}],
        "payout_cpm": "1.25",
        "revenue_cpm": "2.00",
        "attribution_window_days": 7,
        "goals": [{"value": "1", "name": "install"}, {"value": "2", "payout_cpm": "0.5"}],
        "privacy": "private",
        "enabled_affiliates": [objs["aff"]["id"]],
    }
    offer = await ok(await api.post("/offers", json=body, headers=h), 201)
    assert {k: offer[k] for k in body if k not in ("impressions_urls", "goals")} == {
        k: v for k, v in body.items() if k not in ("impressions_urls", "goals")
    }
    assert offer["impressions_urls"] == [{"url": "http://b.example/i", "weight": 3}]
    assert offer["goals"] == [
        {"value": "1", "name": "install", "payout_cpm": ""},
        {"value": "2", "name": "", "payout_cpm": "0.5"},
    ]


async def test_every_resource_crud(api: Client, store: EventStore) -> None:
    h = await make_token(store)
    adv = await ok(await api.post("/advertisers", json={"name": "A"}, headers=h), 201)
    pub = await ok(await api.post("/publishers", json={"name": "P"}, headers=h), 201)
    created = {
        "/line-items": {"name": "L", "advertiser_id": adv["id"]},
        "/placements": {"name": "Pl", "publisher_id": pub["id"]},
        "/payment-rules": {
            "name": "R",
            "publisher_id": pub["id"],
            "pricing_type": "revshare",
            "value": "40",
        },
        "/affiliates": {"name": "F"},
    }
    for path, body in created.items():
        obj = await ok(await api.post(path, json=body, headers=h), 201)
        url = f"{path}/{obj['id']}"
        assert await ok(await api.get(url, headers=h)) == obj
        listed = await ok(await api.get(path, headers=h))
        assert listed["items"] == [obj]
        changed = await ok(await api.patch(url, json={"name": "renamed", "version": 1}, headers=h))
        assert changed["name"] == "renamed"
        deleted = await ok(await api.delete(url, headers=h))
        assert deleted["version"] == 3
        assert (await api.get(url, headers=h)).status == 404
        assert (await ok(await api.get(path, headers=h)))["items"] == []
        assert len((await ok(await api.get(path + "?include_deleted=1", headers=h)))["items"]) == 1
    r = await api.post(
        "/payment-rules", json={**created["/payment-rules"], "value": "140"}, headers=h
    )
    assert r.status == 422
    line = await ok(
        await api.post("/line-items", json={"name": "L", "advertiser_id": adv["id"]}, headers=h),
        201,
    )
    other = await ok(await api.post("/advertisers", json={"name": "B"}, headers=h), 201)
    r = await api.patch(
        f"/line-items/{line['id']}", json={"version": 1, "advertiser_id": other["id"]}, headers=h
    )
    assert (r.status, (await r.json())["error"]["code"]) == (422, "immutable_field")


async def test_listing_filters_and_pages(api: Client, store: EventStore) -> None:
    h = await make_token(store)
    a1 = await ok(await api.post("/advertisers", json={"name": "A1"}, headers=h), 201)
    a2 = await ok(await api.post("/advertisers", json={"name": "A2"}, headers=h), 201)
    for i in range(5):
        adv = a1 if i % 2 == 0 else a2
        await ok(
            await api.post(
                "/line-items", json={"name": f"L{i}", "advertiser_id": adv["id"]}, headers=h
            ),
            201,
        )
    mine = await ok(await api.get(f"/line-items?advertiser_id={a1['id']}", headers=h))
    assert [x["name"] for x in mine["items"]] == ["L0", "L2", "L4"]
    page = await ok(await api.get("/line-items?offset=1&limit=2", headers=h))
    assert (page["count"], [x["name"] for x in page["items"]]) == (5, ["L1", "L2"])


# -- authentication, tenants, roles ---------------------------------------------------------------


async def test_missing_or_bad_token_is_401(api: Client, store: EventStore) -> None:
    h = await make_token(store)
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": h["Authorization"][:-2] + "xx"},
    ):
        r = await api.get("/offers", headers=headers)
        assert (r.status, (await r.json())["error"]["code"]) == (401, "unauthorized")
        assert r.headers["WWW-Authenticate"].startswith('Bearer realm="tracker"')
    # a token that is there but malformed is invalid (RFC 6750), not missing
    token = h["Authorization"].split(" ", 1)[1]
    for malformed in (
        "Bearer garbage",
        "bearer\ttk_1",
        f"Bearer {token} extra",
    ):
        r = await api.get("/offers", headers={"Authorization": malformed})
        error = (await r.json())["error"]
        assert (r.status, error["code"]) == (401, "unauthorized")
        assert "malformed" in error["message"], malformed
        assert r.headers["WWW-Authenticate"].endswith('error="invalid_token"')
    r = await api.get("/offers", headers={"Authorization": f"Bearer\xa0{token}"})  # no blank
    assert r.status == 401
    r = await api.get("/offers", headers={"Authorization": "Bearer"})  # no token: no error code
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="tracker"'
    assert "required" in (await r.json())["error"]["message"]
    xandr = await api.get("/imptracker?id=1", headers={"Authorization": "Basic abc"})
    assert (xandr.status, xandr.headers["WWW-Authenticate"]) == (401, 'Bearer realm="tracker"')


async def test_the_bearer_scheme_is_case_insensitive(api: Client, store: EventStore) -> None:
    token = (await make_token(store))["Authorization"].split(" ", 1)[1]
    for scheme in ("bearer", "BEARER", "Bearer"):
        r = await api.get("/offers", headers={"Authorization": f"{scheme} {token}"})
        assert r.status == 200


async def test_revoked_token_is_401(api: Client, store: EventStore) -> None:
    import msgspec

    from tracker.config import model
    from tracker.config.writer import ConfigWriter

    h = await make_token(store)
    assert (await api.get("/offers", headers=h)).status == 200
    token_id = h["Authorization"].split("_")[1]
    live_token = (await store.read(keys.CONFIG))[-1].event.snapshot  # type: ignore[union-attr]
    token = model.from_snapshot(model.TOKEN, live_token)
    assert token.id == token_id
    await ConfigWriter(store.client).save(
        model.TOKEN, msgspec.structs.replace(token, state="revoked")
    )
    r = await api.get("/advertisers", headers=h)  # reads sync first, so it sees the revocation
    assert r.status == 401


async def test_other_tenant_is_404_and_tenant_comes_from_token(
    api: Client, store: EventStore
) -> None:
    h1 = await make_token(store, tenant="t1")
    h2 = await make_token(store, tenant="t2")
    offer = (await seed(api, h1))["offer"]
    url = f"/offers/{offer['id']}"
    for method in ("get", "patch", "put", "delete"):
        r = await getattr(api, method)(url, json={"name": "x", "version": 1}, headers=h2)
        assert (r.status, (await r.json())["error"]["code"]) == (404, "not_found"), method
    assert (await ok(await api.get("/offers", headers=h2)))["items"] == []
    # links into another tenant look missing
    r = await api.post(
        "/offers", json={"name": "x", "advertiser_id": offer["advertiser_id"]}, headers=h2
    )
    assert (r.status, (await r.json())["error"]["code"]) == (422, "invalid_reference")
    assert (await api.get(url, headers=h1)).status == 200


async def test_roles_are_scoped(api: Client, store: EventStore) -> None:
    admin = await make_token(store, tenant="t1")
    objs = await seed(api, admin)
    adv_id, aff_id, offer_id = objs["adv"]["id"], objs["aff"]["id"], objs["offer"]["id"]
    other_adv = await ok(await api.post("/advertisers", json={"name": "Other"}, headers=admin), 201)
    advertiser = await make_token(store, tenant="t1", role=f"advertiser:{adv_id}")
    affiliate = await make_token(store, tenant="t1", role=f"affiliate:{aff_id}")
    publisher = await make_token(store, tenant="t1", role="publisher:999")
    # reads inside the scope
    assert (await api.get(f"/offers/{offer_id}", headers=advertiser)).status == 200
    assert (await api.get(f"/advertisers/{adv_id}", headers=advertiser)).status == 200
    assert (await api.get(f"/offers/{offer_id}", headers=affiliate)).status == 200
    assert (await api.get(f"/affiliates/{aff_id}", headers=affiliate)).status == 200
    # outside it: 403, and listings only show what is in scope
    for headers, url in (
        (advertiser, f"/advertisers/{other_adv['id']}"),
        (advertiser, f"/affiliates/{aff_id}"),
        (publisher, f"/offers/{offer_id}"),
        (affiliate, f"/advertisers/{adv_id}"),
    ):
        r = await api.get(url, headers=headers)
        assert (r.status, (await r.json())["error"]["code"]) == (403, "forbidden"), url
    assert [
        a["id"] for a in (await ok(await api.get("/advertisers", headers=advertiser)))["items"]
    ] == [adv_id]
    # only admins write
    for headers in (advertiser, affiliate, publisher):
        r = await api.post("/advertisers", json={"name": "x"}, headers=headers)
        assert r.status == 403
        r = await api.patch(
            f"/offers/{offer_id}", json={"version": 1, "name": "x"}, headers=headers
        )
        assert r.status == 403
    # an affiliate no longer sees an offer it was disabled from
    await ok(
        await api.patch(
            f"/offers/{offer_id}",
            json={"version": 1, "disabled_affiliates": [aff_id]},
            headers=admin,
        )
    )
    assert (await api.get(f"/offers/{offer_id}", headers=affiliate)).status == 403


async def test_token_cli_create_list_revoke(
    api: Client, store: EventStore, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from tracker.config import token_cli

    admin = await make_token(store, tenant="t9")
    publisher = await ok(await api.post("/publishers", json={"name": "P"}, headers=admin), 201)
    role = f"publisher:{publisher['id']}"
    await token_cli.run(
        store, argparse.Namespace(token_command="create", tenant="t9", role=role, name="ci")
    )
    bearer = capsys.readouterr().out.strip().splitlines()[-1]  # after any log line
    assert bearer.startswith("trk_")
    assert bearer not in str(await store.read(keys.CONFIG))  # only the hash is stored
    h = {"Authorization": f"Bearer {bearer}"}
    assert (await api.get("/publishers", headers=h)).status == 200
    await token_cli.run(store, argparse.Namespace(token_command="list", tenant="t9"))
    [line] = [ln for ln in capsys.readouterr().out.splitlines() if f"  t9  {role}  " in ln]
    token_id = line.split()[0]
    assert line.split()[1:5] == ["t9", role, "active", line.split()[4]]
    for scope in (f"publisher:{publisher['id'] + 1000}", "advertiser:1"):  # none such in t9
        with pytest.raises(SettingsError, match="has no"):
            await token_cli.run(
                store, argparse.Namespace(token_command="create", tenant="t9", role=scope, name="")
            )
    assert bearer.startswith(f"trk_{token_id}_")
    await token_cli.run(store, argparse.Namespace(token_command="revoke", id=token_id))
    assert (await api.get("/publishers", headers=h)).status == 401


async def test_read_your_writes_across_processes(store: EventStore) -> None:
    """A write through one web process is visible at once to a read through another."""
    from aiohttp.test_utils import TestServer

    from tests.integration.config_support import SETTINGS
    from tracker.http.app import create_app

    h = await make_token(store)
    async with (
        TestClient(TestServer(create_app(store, SETTINGS))) as a,
        TestClient(TestServer(create_app(store, SETTINGS))) as b,
    ):
        for i in range(20):
            created = await ok(await a.post("/affiliates", json={"name": f"f{i}"}, headers=h), 201)
            assert await ok(await b.get(f"/affiliates/{created['id']}", headers=h)) == created
            changed = await ok(
                await b.patch(
                    f"/affiliates/{created['id']}",
                    json={"version": 1, "status": "inactive"},
                    headers=h,
                )
            )
            assert await ok(await a.get(f"/affiliates/{created['id']}", headers=h)) == changed


def test_token_cli_end_to_end(redis_url: str) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "REDIS_URL": redis_url, "TRACKER_LOG_LEVEL": "warning"}
    cmd = [sys.executable, "-m", "tracker", "token"]
    made = subprocess.run(
        [*cmd, "create", "--tenant", "cli-t", "--role", "admin"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    bearer = made.stdout.strip()
    assert bearer.startswith("trk_")
    token_id = bearer.split("_")[1]
    listed = subprocess.run(
        [*cmd, "list", "--tenant", "cli-t"], env=env, capture_output=True, text=True, check=True
    )
    assert f"{token_id}  cli-t  admin  active" in listed.stdout
    assert bearer not in listed.stdout
    revoked = subprocess.run(
        [*cmd, "revoke", token_id], env=env, capture_output=True, text=True, check=True
    )
    assert "revoked" in revoked.stdout
    bad = subprocess.run(
        [*cmd, "create", "--tenant", "t", "--role", "root"], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "--role" in bad.stderr
    missing = subprocess.run(
        [*cmd, "revoke", "feedfeedfeedfeed"], env=env, capture_output=True, text=True
    )
    assert missing.returncode == 2
    nobody = subprocess.run(
        [*cmd, "create", "--tenant", "cli-t", "--role", "advertiser:3"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert (nobody.returncode, nobody.stdout) == (2, "")  # no token printed
    assert "has no advertiser 3" in nobody.stderr
