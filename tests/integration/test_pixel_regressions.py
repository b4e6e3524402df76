"""Pixel regressions (issue 4), over real HTTP on a real redis-server: a Xandr hit's ids reach
the impression lookup, the duplicate imp_id claim lasts a day, ``/imptr?code=`` names its
tracker, ``t=1`` always gets a script; and routed impression ids stay unique and ordered."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestClient

from tests.integration.config_support import (
    make_token,
    ok,
    pixel_api_fixture,  # noqa: F401  # fixture
)
from tests.integration.test_impression_lookup import catch_up
from tests.integration.test_pixels import (
    BROWSER,
    api_fixture,  # noqa: F401  # fixture
    logged,
    offer_setup,
    only,
    tracker_setup,
)
from tracker.eventstore import keys, lookup
from tracker.eventstore.store import EventStore, as_str
from tracker.http.ingest import DUPLICATE_IMP_ID
from tracker.http.pixel import JS_BODY, JS_CONTENT_TYPE
from tracker.http.query import MALFORMED
from tracker.ids import ImpressionIds, route_of, stable_hash
from tracker.projections.eligibility import TRACKER_INACTIVE, UNKNOWN_TRACKER

Client = TestClient[Any, Any]
DAY_S = 86_400


async def created(api: Client, h: dict[str, str], path: str, body: dict[str, Any], n: int) -> Any:
    """``n`` objects made at ``path``; the last one's id."""
    ids = [(await ok(await api.post(path, json=body, headers=h), 201))["id"] for _ in range(n)]
    return ids[-1]


def cpm(publisher: Any) -> dict[str, Any]:
    return {"publisher_id": publisher, "pricing_type": "cpm", "value": "2.5"}


async def test_a_xandr_hit_keeps_its_ids_in_the_impression_lookup(
    api: Client, store: EventStore, client: redis.Redis
) -> None:
    h = await make_token(store)
    # throwaway objects first, so that every id checked below differs from the others: a field
    # filled from its neighbour (a publisher id as the placement's, ...) cannot pass
    adv = await created(api, h, "/advertisers", {"name": "A0"}, 1)
    await created(api, h, "/publishers", {"name": "P0"}, 2)
    await created(api, h, "/line-items", {"name": "L0", "advertiser_id": adv}, 3)
    t = await tracker_setup(api, store)
    await created(api, h, "/placements", {"name": "pl0", "publisher_id": t["pub"]}, 4)
    await created(api, h, "/payment-rules", {"name": "R0", **cpm(t["pub"])}, 5)
    placement = await ok(
        await api.post("/placements", json={"name": "pl", "publisher_id": t["pub"]}, headers=h),
        201,
    )
    rule = await ok(
        await api.post(
            "/payment-rules",
            json={"name": "R", **cpm(t["pub"])},
            headers=h,
        ),
        201,
    )
    body = {"imptracker": {"tag": {"id": placement["id"]}, "payment_rule": {"id": rule["id"]}}}
    await ok(await api.put(f"/imptracker?id={t['id']}", json=body, headers=h))
    r = await api.get(f"/imptr?id={t['id']}&ancost=0.75", headers=BROWSER)
    assert r.status == 200
    iid = r.headers["X-Impression-Id"]
    expected = {
        "tracker_id": str(t["id"]),
        "advertiser_id": str(t["adv"]),
        "line_item_id": str(t["line"]),
        "publisher_id": str(t["pub"]),
        "placement_id": str(placement["id"]),
        "payment_rule_id": str(rule["id"]),
        "media_cost": "0.75",
    }
    assert len({expected[name] for name in expected if name != "media_cost"}) == 6

    event = await only(store)
    assert (event.impression_id, event.verdict, event.dialect) == (iid, "counted", "xandr")
    assert {name: getattr(event, name) for name in expected} == expected

    await catch_up(store)
    record = await lookup.get_record(client, store.partitions, iid)
    assert record is not None
    assert (record.tenant, record.verdict) == ("958", "counted")
    assert {name: getattr(record, name) for name in expected} == expected
    found = await ok(await api.get(f"/impressions/{iid}", headers=h))
    assert found["impression_id"] == iid
    assert {name: found[name] for name in expected} == expected


async def test_the_duplicate_imp_id_claim_lasts_a_day(
    api: Client, store: EventStore, client: redis.Redis
) -> None:
    s = await offer_setup(api, store)
    url = f"/imp?aid={s['aff']}&oid={s['offer']}&imp_id=X-24h"
    first = await api.get(url, headers=BROWSER)
    assert first.status == 200
    name = f"imp:958:{s['offer']}:X-24h"  # tenant:offer:imp_id, in the name's partition
    claim = keys.claim(f"p{stable_hash(name) % store.partition_count}", name)
    assert [as_str(k) for k in await client.keys(keys.claim("*", "*"))] == [claim]
    ttl = await client.ttl(claim)
    assert DAY_S - 5 <= ttl <= DAY_S
    second = await api.get(url, headers=BROWSER)
    by_id = {e.impression_id: e for e in await logged(store)}
    counted = by_id[first.headers["X-Impression-Id"]]
    duplicate = by_id[second.headers["X-Impression-Id"]]
    assert (counted.verdict, counted.reason) == ("counted", "")
    assert (duplicate.verdict, duplicate.reason) == ("not_counted", DUPLICATE_IMP_ID)
    assert await client.ttl(claim) <= ttl  # the duplicate did not extend the window


async def test_hits_with_an_unfilled_imp_id_macro_are_all_counted(
    api: Client, store: EventStore, client: redis.Redis
) -> None:
    s = await offer_setup(api, store)
    url = f"/imp?aid={s['aff']}&oid={s['offer']}&imp_id={{your_affiliate_imp_id}}"
    for _ in range(3):
        assert (await api.get(url, headers=BROWSER)).status == 200
    hits = await logged(store)
    assert [(e.verdict, e.external_imp_id) for e in hits] == [("counted", "")] * 3
    assert await client.keys(keys.claim("*", "*")) == []


async def test_a_tracker_is_found_by_its_code(api: Client, store: EventStore) -> None:
    t = await tracker_setup(api, store, code="spring-sale")
    known = await api.get("/imptr?code=spring-sale", headers=BROWSER)
    unknown = await api.get("/imptr?code=no-such-code", headers=BROWSER)
    assert known.status == unknown.status == 200
    by_id = {e.impression_id: e for e in await logged(store)}
    hit = by_id[known.headers["X-Impression-Id"]]
    assert (hit.verdict, hit.reason, hit.tenant) == ("counted", "", "958")
    assert (hit.tracker_id, hit.line_item_id, hit.publisher_id, hit.advertiser_id) == (
        str(t["id"]),
        str(t["line"]),
        str(t["pub"]),
        str(t["adv"]),
    )
    miss = by_id[unknown.headers["X-Impression-Id"]]
    assert (miss.verdict, miss.reason, miss.tenant) == ("not_counted", UNKNOWN_TRACKER, "-")
    assert miss.reason == "unknown_tracker"  # the reason code reports and exports show
    assert miss.tracker_id == "no-such-code"  # what it was asked for, for the record


async def test_t1_always_gets_the_script(api: Client, store: EventStore) -> None:
    active = await tracker_setup(api, store)
    inactive = await tracker_setup(api, store, state="inactive")
    hits = [
        ("", f"id={active['id']}&t=1"),
        (UNKNOWN_TRACKER, "id=987654&t=1"),
        (MALFORMED, f"id={active['id']}&id={active['id']}&t=1"),  # a repeated id
        (MALFORMED, "t=1&cachebuster=5"),  # no id at all
        (TRACKER_INACTIVE, f"id={inactive['id']}&t=1"),
    ]
    answers = []
    for reason, query in hits:
        r = await api.get(f"/imptr?{query}", headers=BROWSER)
        assert r.status == 200, query
        assert r.headers["Content-Type"] == JS_CONTENT_TYPE, query
        assert await r.read() == JS_BODY, query
        answers.append((reason, query, r.headers["X-Impression-Id"]))
    by_id = {e.impression_id: e for e in await logged(store)}
    assert len(by_id) == len(hits)  # every hit recorded
    for reason, query, iid in answers:
        event = by_id[iid]
        assert (event.reason, event.dialect) == (reason, "xandr"), query
        assert event.verdict == ("not_counted" if reason else "counted"), query


@pytest.mark.parametrize("partitions", [3, 4, 6])
def test_routed_impression_ids_stay_unique_and_ordered(partitions: int) -> None:
    """The pixel path routes each id to its claim's partition (``mint(route, n)``): every id
    must still be distinct, in the partition asked for, and sort after those minted before it."""
    ids = ImpressionIds(b"0123456789abcdef-routing-key")
    for route in sorted({0, partitions // 2, partitions - 1}):
        minted = [ids.mint(route, partitions) for _ in range(20_000)]
        assert len(set(minted)) == len(minted), route
        assert {route_of(i, partitions) for i in minted} == {route}
        assert all(ids.verify(i) for i in minted)
        prefixes = [i[:12] for i in minted]  # the uuid7 millisecond timestamp
        assert prefixes == sorted(prefixes), route
        time.sleep(0.002)
        later = [ids.mint(route, partitions) for _ in range(100)]
        assert min(later) > max(minted), route
        assert len(set(minted) | set(later)) == len(minted) + len(later)
