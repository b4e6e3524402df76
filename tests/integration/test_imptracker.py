"""Xandr /imptracker: the seed's examples field by field, errors in Xandr's envelope, scoping."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.config_support import api_fixture, make_token, ok  # noqa: F401  # fixture
from tracker.eventstore import keys
from tracker.eventstore.store import EventStore

Client = TestClient[Any, Any]
XANDR_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")

# From seed 002 (Xandr's Impression Tracker Service page), verbatim.
SEED_CREATE_REQUEST: dict[str, Any] = {
    "imptracker": {
        "name": "Test Impression Tracker",
        "publisher": {"id": 44449},
        "line_item": {"id": 74957},
    }
}
SEED_CREATE_RESPONSE = {
    "response": {
        "status": "OK",
        "count": 1,
        "id": 1425,
        "start_element": 0,
        "num_elements": 100,
        "imptracker": {
            "id": 1425,
            "member_id": 958,
            "advertiser_id": 37236,
            "name": "Test Impression Tracker",
            "code": None,
            "state": "active",
            "last_modified": "2012-01-10 16:02:15",
            "publisher": {"id": 44449, "name": "November Publisher"},
            "tag": None,
            "payment_rule": None,
            "line_item": {"id": 74957, "name": "Test Line Item"},
        },
    }
}
SEED_UPDATE_REQUEST = {"imptracker": {"tag": {"id": 474412}}}
SEED_UPDATE_RESPONSE = {
    "response": {
        "status": "OK",
        "count": 1,
        "id": "1425",
        "start_element": 0,
        "num_elements": 100,
        "imptracker": {
            "id": 1425,
            "member_id": 958,
            "advertiser_id": 37236,
            "name": "Test Impression Tracker",
            "code": None,
            "state": "active",
            "last_modified": "2012-01-10 16:10:12",
            "publisher": {"id": 44449, "name": "November Publisher"},
            "tag": {"id": 474412, "name": "[Demo Publisher] - Default"},
            "payment_rule": None,
            "line_item": {"id": 74957, "name": "Test Line Item"},
        },
    }
}
SEED_TRACKER_582 = {
    "id": 582,
    "member_id": 1066,
    "advertiser_id": 35081,
    "name": "Test Impression Tracker 1",
    "code": None,
    "state": "active",
    "last_modified": "2012-02-28 19:06:01",
    "publisher": {"id": 89287, "name": "Test Publisher 1"},
    "tag": None,
    "payment_rule": None,
    "line_item": {"id": 31189, "name": "Test Line Item 1"},
}
SEED_TRACKER_584 = {
    "id": 584,
    "member_id": 1066,
    "advertiser_id": 35081,
    "name": "Test Impression Tracker 2",
    "code": None,
    "state": "active",
    "last_modified": "2012-02-28 19:40:48",
    "publisher": {"id": 89288, "name": "Test Publisher 2"},
    "tag": None,
    "payment_rule": None,
    "line_item": {"id": 31190, "name": "Test Line Item 2"},
}
SEED_VIEW_RESPONSE = {
    "response": {
        "status": "OK",
        "count": 1,
        "start_element": 0,
        "num_elements": 100,
        "imptracker": SEED_TRACKER_582,
    }
}
SEED_LIST_RESPONSE = {
    "response": {
        "status": "OK",
        "count": 2,
        "start_element": 0,
        "num_elements": 100,
        "imptrackers": [SEED_TRACKER_582, SEED_TRACKER_584],
    }
}


def expect(seed: Any, ids: dict[int, int], actual: Any) -> Any:
    """The seed's document with its ids mapped to ours and last_modified taken from ``actual``
    (after checking it has Xandr's format): everything else must then be equal exactly."""
    if isinstance(seed, dict):
        out = {}
        for key, value in seed.items():
            if key == "last_modified":
                assert XANDR_TIME.fullmatch(actual[key]), actual[key]
                out[key] = actual[key]
            elif key in ("id", "advertiser_id") and isinstance(value, int):
                out[key] = ids[value]
            elif key == "id" and isinstance(value, str):
                out[key] = str(ids[int(value)])
            else:
                out[key] = expect(
                    value, ids, actual[key] if isinstance(actual, dict) and key in actual else None
                )
        return out
    if isinstance(seed, list):
        return [expect(s, ids, a) for s, a in zip(seed, actual, strict=True)]
    return seed


async def network(
    api: Client, h: dict[str, str], advertiser: str, items: list[tuple[str, str]]
) -> dict[str, int]:
    """Create an advertiser and (line item name, publisher name) pairs; return names -> ids."""
    ids: dict[str, int] = {}
    adv = await ok(await api.post("/advertisers", json={"name": advertiser}, headers=h), 201)
    ids[advertiser] = adv["id"]
    for line_item, publisher in items:
        li = await ok(
            await api.post(
                "/line-items", json={"name": line_item, "advertiser_id": adv["id"]}, headers=h
            ),
            201,
        )
        pub = await ok(await api.post("/publishers", json={"name": publisher}, headers=h), 201)
        ids[line_item], ids[publisher] = li["id"], pub["id"]
    return ids


async def test_seed_create_update_delete(api: Client, store: EventStore) -> None:
    h = await make_token(store, tenant="958")
    n = await network(api, h, "Adv", [("Test Line Item", "November Publisher")])
    placement = await ok(
        await api.post(
            "/placements",
            json={"name": "[Demo Publisher] - Default", "publisher_id": n["November Publisher"]},
            headers=h,
        ),
        201,
    )
    request = copy.deepcopy(SEED_CREATE_REQUEST)
    request["imptracker"]["publisher"]["id"] = n["November Publisher"]
    request["imptracker"]["line_item"]["id"] = n["Test Line Item"]
    created = await ok(
        await api.post(f"/imptracker?advertiser_id={n['Adv']}", json=request, headers=h)
    )
    tid = created["response"]["id"]
    ids = {
        1425: tid,
        37236: n["Adv"],
        44449: n["November Publisher"],
        74957: n["Test Line Item"],
        474412: placement["id"],
    }
    assert created == expect(SEED_CREATE_RESPONSE, ids, created)
    assert type(created["response"]["id"]) is int

    updated = await ok(
        await api.put(
            f"/imptracker?id={tid}",
            json={"imptracker": {"tag": {"id": placement["id"]}}},
            headers=h,
        )
    )
    assert updated == expect(SEED_UPDATE_RESPONSE, ids, updated)
    assert updated["response"]["id"] == str(tid)  # Xandr answers a PUT's id as a string

    viewed = await ok(await api.get(f"/imptracker?id={tid}", headers=h))
    assert viewed["response"]["imptracker"] == updated["response"]["imptracker"]
    assert "id" not in viewed["response"]

    deleted = await ok(await api.delete(f"/imptracker?id={tid}", headers=h))
    assert deleted == {
        "response": {"status": "OK", "count": 1, "id": tid, "start_element": 0, "num_elements": 100}
    }
    r = await api.get(f"/imptracker?id={tid}", headers=h)
    assert (r.status, (await r.json())["response"]["error_id"]) == (404, "NOTFOUND")


async def test_seed_view_one_several_and_list(api: Client, store: EventStore) -> None:
    h = await make_token(store, tenant="1066")
    n = await network(
        api,
        h,
        "A",
        [("Test Line Item 1", "Test Publisher 1"), ("Test Line Item 2", "Test Publisher 2")],
    )
    tids = []
    for i in (1, 2):
        body = {
            "imptracker": {
                "name": f"Test Impression Tracker {i}",
                "publisher": {"id": n[f"Test Publisher {i}"]},
                "line_item": {"id": n[f"Test Line Item {i}"]},
            }
        }
        created = await ok(
            await api.post(f"/imptracker?advertiser_id={n['A']}", json=body, headers=h)
        )
        tids.append(created["response"]["id"])
    ids = {
        582: tids[0],
        584: tids[1],
        35081: n["A"],
        89287: n["Test Publisher 1"],
        89288: n["Test Publisher 2"],
        31189: n["Test Line Item 1"],
        31190: n["Test Line Item 2"],
    }

    viewed = await ok(await api.get(f"/imptracker?id={tids[0]}", headers=h))
    assert viewed == expect(SEED_VIEW_RESPONSE, ids, viewed)

    listed = await ok(await api.get(f"/imptracker?advertiser_id={n['A']}", headers=h))
    assert listed == expect(SEED_LIST_RESPONSE, ids, listed)

    several = await ok(await api.get(f"/imptracker?id={tids[0]},{tids[1]}", headers=h))
    assert several == listed

    page = await ok(
        await api.get(
            f"/imptracker?advertiser_id={n['A']}&start_element=1&num_elements=500", headers=h
        )
    )
    assert (
        page["response"]["count"],
        page["response"]["start_element"],
        page["response"]["num_elements"],
    ) == (2, 1, 100)
    assert [t["id"] for t in page["response"]["imptrackers"]] == [tids[1]]


async def _trackers(api: Client, store: EventStore, count: int) -> tuple[dict[str, str], int]:
    """(admin headers, advertiser id) after creating ``count`` trackers of one advertiser."""
    h = await make_token(store, tenant="7")
    n = await network(api, h, "A", [("L", "P")])
    body = {"imptracker": {"name": "t", "publisher": {"id": n["P"]}, "line_item": {"id": n["L"]}}}
    for _ in range(count):
        await ok(await api.post(f"/imptracker?advertiser_id={n['A']}", json=body, headers=h))
    return h, n["A"]


async def test_list_pages_cap_at_100(api: Client, store: EventStore) -> None:
    h, advertiser = await _trackers(api, store, 103)
    first = (await ok(await api.get(f"/imptracker?advertiser_id={advertiser}", headers=h)))[
        "response"
    ]
    assert (first["count"], len(first["imptrackers"])) == (103, 100)
    rest = (
        await ok(
            await api.get(f"/imptracker?advertiser_id={advertiser}&start_element=100", headers=h)
        )
    )["response"]
    assert len(rest["imptrackers"]) == 3


@pytest.mark.parametrize(
    ("query", "body", "status", "error_id"),
    [
        (
            "",
            {"imptracker": {"name": "x", "publisher": {"id": "P"}, "line_item": {"id": "L"}}},
            400,
            "SYNTAX",
        ),
        (
            "?advertiser_id=A",
            {
                "imptracker": {
                    "name": "x",
                    "publisher": {"id": "P"},
                    "line_item": {"id": "L"},
                    "colour": "red",
                }
            },
            400,
            "SYNTAX",
        ),
        (
            "?advertiser_id=A",
            {
                "imptracker": {
                    "name": "x",
                    "publisher": {"id": "P"},
                    "line_item": {"id": "L"},
                    "state": "on",
                }
            },
            400,
            "SYNTAX",
        ),
        (
            "?advertiser_id=A",
            {"imptracker": {"name": 5, "publisher": {"id": "P"}, "line_item": {"id": "L"}}},
            400,
            "SYNTAX",
        ),
        (
            "?advertiser_id=A",
            {"imptracker": {"name": "x", "publisher": {"id": "P"}}},
            400,
            "SYNTAX",
        ),
        (
            "?advertiser_id=A",
            {"imptracker": {"name": "x", "line_item": {"id": "L"}}},
            400,
            "SYNTAX",
        ),
        ("?advertiser_id=A", {"tracker": {}}, 400, "SYNTAX"),
        (
            "?advertiser_id=A",
            {"imptracker": {"name": "x", "publisher": {"id": 987654}, "line_item": {"id": "L"}}},
            400,
            "INTEGRITY",
        ),
        (
            "?advertiser_id=A",
            {"imptracker": {"name": "x", "publisher": {"id": "P"}, "line_item": {"id": "OTHER_L"}}},
            400,
            "INTEGRITY",
        ),
        (
            "?advertiser_id=A",
            {
                "imptracker": {
                    "name": "x",
                    "publisher": {"id": "P"},
                    "line_item": {"id": "L"},
                    "tag": {"id": "OTHER_PL"},
                }
            },
            400,
            "INTEGRITY",
        ),
        (
            "?advertiser_id=A",
            {
                "imptracker": {
                    "name": "x",
                    "publisher": {"id": "P"},
                    "line_item": {"id": "L"},
                    "payment_rule": {"id": 987654},
                }
            },
            400,
            "INTEGRITY",
        ),
        (
            "?advertiser_id=987654",
            {"imptracker": {"name": "x", "publisher": {"id": "P"}, "line_item": {"id": "L"}}},
            404,
            "NOTFOUND",
        ),
    ],
)
async def test_bad_posts_write_nothing(
    api: Client, store: EventStore, query: str, body: dict[str, Any], status: int, error_id: str
) -> None:
    h = await make_token(store, tenant="958")
    n = await network(api, h, "A", [("L", "P")])
    other = await network(api, h, "B", [("OTHER_L", "OTHER_P")])
    pl = await ok(
        await api.post(
            "/placements", json={"name": "pl", "publisher_id": other["OTHER_P"]}, headers=h
        ),
        201,
    )
    names = {**n, **other, "OTHER_PL": pl["id"]}

    def fill(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: (names[v] if k == "id" and v in names else fill(v)) for k, v in value.items()
            }
        return value

    before = await store.length(keys.CONFIG)
    r = await api.post(
        "/imptracker" + query.replace("=A", f"={n['A']}"), json=fill(body), headers=h
    )
    response = (await r.json())["response"]
    assert (r.status, response["error_id"]) == (status, error_id), response
    assert set(response) == {"error_id", "error"}
    assert response["error"]
    assert await store.length(keys.CONFIG) == before


async def test_json_nested_too_deeply_is_a_400_on_every_json_endpoint(
    api: Client, store: EventStore
) -> None:
    """msgspec decodes nested values recursively: ~5,000 levels raise RecursionError, which was
    a 500 (the Xandr endpoint out of its envelope, too)."""
    h = {**await make_token(store, tenant="958"), "Content-Type": "application/json"}
    n = await network(api, h, "A", [("L", "P")])
    deep = "[" * 5000 + "]" * 5000
    before = await store.length(keys.CONFIG)
    r = await api.post(
        f"/imptracker?advertiser_id={n['A']}",
        data='{"imptracker": {"name": "x", "clicktracker": ' + deep + "}}",
        headers=h,
    )
    response = (await r.json())["response"]
    assert (r.status, response["error_id"]) == (400, "SYNTAX"), response
    # nested below the limit but deep enough that readers of the stored event might not decode it
    for clicktracker in ("[" * 9 + "]" * 9, '"' + "x" * 5000 + '"'):
        refs = f'"publisher": {{"id": {n["P"]}}}, "line_item": {{"id": {n["L"]}}}'
        r = await api.post(
            f"/imptracker?advertiser_id={n['A']}",
            data=f'{{"imptracker": {{"name": "x", {refs}, "clicktracker": {clicktracker}}}}}',
            headers=h,
        )
        response = (await r.json())["response"]
        assert (r.status, response["error_id"]) == (400, "SYNTAX"), response
    r = await api.post("/advertisers", data='{"name": ' + deep + "}", headers=h)
    assert (r.status, (await r.json())["error"]["code"]) == (422, "invalid_body")  # typed first
    r = await api.post(
        "/publisher.v1/impression/record", data='{"impressions": ' + deep + "}", headers=h
    )
    assert (r.status, (await r.json())["error"]["code"]) == (400, "invalid_json")
    assert await store.length(keys.CONFIG) == before


async def test_auth_tenants_and_roles(api: Client, store: EventStore) -> None:
    h = await make_token(store, tenant="958")
    n = await network(api, h, "A", [("L", "P")])
    body = {
        "imptracker": {
            "name": "x",
            "publisher": {"id": n["P"]},
            "line_item": {"id": n["L"]},
            "code": "abc",
        }
    }
    tid = (await ok(await api.post(f"/imptracker?advertiser_id={n['A']}", json=body, headers=h)))[
        "response"
    ]["id"]

    async def error(method: str, url: str, headers: dict[str, str], **kw: Any) -> tuple[int, str]:
        r = await getattr(api, method)(url, headers=headers, **kw)
        return r.status, (await r.json())["response"]["error_id"]

    assert await error("get", f"/imptracker?id={tid}", {}) == (401, "NOAUTH")
    other_tenant = await make_token(store, tenant="959")
    assert await error("get", f"/imptracker?id={tid}", other_tenant) == (404, "NOTFOUND")
    assert await error(
        "put", f"/imptracker?id={tid}", other_tenant, json={"imptracker": {"name": "y"}}
    ) == (404, "NOTFOUND")
    assert await error(
        "delete", f"/imptracker?id={tid}", await make_token(store, tenant="958", role="publisher:1")
    ) == (403, "UNAUTH")
    other_admin = await make_token(store, tenant="959", role="admin")
    assert await error("delete", f"/imptracker?id={tid}", other_admin) == (404, "NOTFOUND")
    assert (await ok(await api.get(f"/imptracker?advertiser_id={n['A']}", headers=other_admin)))[
        "response"
    ]["count"] == 0
    # scoped roles read their own trackers only
    own = await make_token(store, tenant="958", role=f"advertiser:{n['A']}")
    assert (await api.get(f"/imptracker?id={tid}", headers=own)).status == 200
    stranger = await make_token(store, tenant="958", role=f"publisher:{n['P'] + 1000}")
    assert await error("get", f"/imptracker?id={tid}", stranger) == (403, "UNAUTH")
    # a code is unique across every advertiser and tenant: /imptr?code= names neither
    assert await error("post", f"/imptracker?advertiser_id={n['A']}", h, json=body) == (
        409,
        "INTEGRITY",
    )
    m = await network(api, other_admin, "B", [("L", "P")])
    theirs = {
        "imptracker": {
            **body["imptracker"],
            "publisher": {"id": m["P"]},
            "line_item": {"id": m["L"]},
        }
    }
    assert await error("post", f"/imptracker?advertiser_id={m['B']}", other_admin, json=theirs) == (
        409,
        "INTEGRITY",
    )
    # a stale If-Match conflicts
    assert await error(
        "put", f"/imptracker?id={tid}", {**h, "If-Match": '"7"'}, json={"imptracker": {"name": "y"}}
    ) == (409, "INTEGRITY")


async def test_put_is_partial_and_round_trips(api: Client, store: EventStore) -> None:
    h = await make_token(store, tenant="958")
    n = await network(api, h, "A", [("L", "P"), ("L2", "P2")])
    body = {
        "imptracker": {
            "name": "x",
            "publisher": {"id": n["P"]},
            "line_item": {"id": n["L"]},
            "code": "c",
        }
    }
    created = (
        await ok(await api.post(f"/imptracker?advertiser_id={n['A']}", json=body, headers=h))
    )["response"]
    tid = created["id"]
    # a client may PUT back exactly what it read (read-only fields included)
    echoed = await ok(
        await api.put(
            f"/imptracker?id={tid}", json={"imptracker": created["imptracker"]}, headers=h
        )
    )
    assert {k: v for k, v in echoed["response"]["imptracker"].items() if k != "last_modified"} == {
        k: v for k, v in created["imptracker"].items() if k != "last_modified"
    }
    changed = await ok(
        await api.put(
            f"/imptracker?id={tid}",
            json={"imptracker": {"state": "inactive", "publisher": {"id": n["P2"]}, "code": None}},
            headers=h,
        )
    )
    t = changed["response"]["imptracker"]
    assert (t["state"], t["publisher"], t["code"], t["name"], t["line_item"]["id"]) == (
        "inactive",
        {"id": n["P2"], "name": "P2"},
        None,
        "x",
        n["L"],
    )
    # the freed code can be reused
    await ok(await api.post(f"/imptracker?advertiser_id={n['A']}", json=body, headers=h))


async def test_num_elements_zero_gives_the_count_alone(api: Client, store: EventStore) -> None:
    h, advertiser = await _trackers(api, store, 2)
    page = (
        await ok(await api.get(f"/imptracker?advertiser_id={advertiser}&num_elements=0", headers=h))
    )["response"]
    assert (page["count"], page["num_elements"], page["imptrackers"]) == (2, 0, [])


async def test_a_wrong_method_is_a_405_with_allow_in_xandrs_envelope(
    api: Client, store: EventStore
) -> None:
    h = await make_token(store, tenant="7")
    r = await api.patch("/imptracker?id=1", json={}, headers=h)
    assert r.status == 405
    assert {"GET", "POST", "PUT", "DELETE"} <= set(r.headers["Allow"].replace(" ", "").split(","))
    assert (await r.json())["response"]["error_id"] == "SYNTAX"


async def test_only_imptracker_paths_answer_in_xandrs_envelope(api: Client) -> None:
    near = await api.get("/imptrackerX")
    assert (near.status, (await near.json())["error"]["code"]) == (404, "not_found")
    under = await api.get("/imptracker/nope")
    assert (under.status, (await under.json())["response"]["error_id"]) == (404, "NOTFOUND")


async def test_a_tracker_whose_line_item_was_deleted_can_still_be_renamed(
    api: Client, store: EventStore
) -> None:
    h = await make_token(store, tenant="958")
    n = await network(api, h, "A", [("L", "P"), ("L2", "P2")])
    body = {"imptracker": {"name": "x", "publisher": {"id": n["P"]}, "line_item": {"id": n["L"]}}}
    created = await ok(await api.post(f"/imptracker?advertiser_id={n['A']}", json=body, headers=h))
    tid = created["response"]["id"]
    for line_item in (n["L"], n["L2"]):
        await ok(await api.delete(f"/line-items/{line_item}", headers={**h, "If-Match": "1"}))
    renamed = {"imptracker": {"name": "renamed"}}
    await ok(await api.put(f"/imptracker?id={tid}", json=renamed, headers=h))
    # a new link to a deleted object is still refused
    other = {"imptracker": {"line_item": {"id": n["L2"]}}}
    r = await api.put(f"/imptracker?id={tid}", json=other, headers=h)
    assert r.status == 400


async def test_a_code_taken_by_another_tenant_does_not_name_its_tracker(
    api: Client, store: EventStore
) -> None:
    mine, theirs = await make_token(store, tenant="958"), await make_token(store, tenant="959")
    ids = []
    for h in (mine, theirs):
        n = await network(api, h, "A", [("L", "P")])
        body = {
            "imptracker": {
                "name": "x",
                "code": "shared",
                "publisher": {"id": n["P"]},
                "line_item": {"id": n["L"]},
            }
        }
        r = await api.post(f"/imptracker?advertiser_id={n['A']}", json=body, headers=h)
        ids.append((r.status, await r.json()))
    (created, first), (refused, error) = ids
    assert (created, refused) == (200, 409)
    assert error["response"]["error"] == "already used by another tracker"
    assert str(first["response"]["id"]) not in error["response"]["error"]
