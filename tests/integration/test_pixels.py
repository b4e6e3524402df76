"""GET /imp and /imptr over real HTTP on a real redis-server: verdicts, responses, cookies."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from redis.exceptions import ConnectionError as RedisConnectionError
from yarl import URL

from tests.integration.config_support import (
    make_token,
    ok,
    pixel_api_fixture,  # noqa: F401  # fixture
)
from tests.unit.test_privacy import DENIED, GRANTED
from tracker import events
from tracker.config.live import LIVE_CONFIG
from tracker.events import ImpressionSeen
from tracker.eventstore import keys
from tracker.eventstore.spool import spool_dir, spool_files
from tracker.eventstore.store import FENCE, AppendUncertain, EventStore
from tracker.http.app_keys import SETTINGS
from tracker.http.ingest import IMPRESSION_IDS, PIXELS
from tracker.http.pixel import JS_BODY, NO_CACHE_HEADERS, TRANSPARENT_GIF

Client = TestClient[Any, Any]
BROWSER = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36"
}


@pytest.fixture(name="api")
def api_fixture(pixel_api: TestClient[Any, Any]) -> TestClient[Any, Any]:
    """Every test here runs on the lean pixel path and behind aiohttp's router."""
    return pixel_api


async def logged(store: EventStore) -> list[ImpressionSeen]:
    out = []
    for part in store.partitions:
        out += [s.event for s in await store.read(part, count=10_000)]
    found = [e for e in out if isinstance(e, ImpressionSeen)]
    return sorted(found, key=lambda e: e.impression_id)


async def only(store: EventStore) -> ImpressionSeen:
    [event] = await logged(store)
    return event


async def offer_setup(api: Client, store: EventStore, **offer: Any) -> dict[str, Any]:
    h = await make_token(store)
    adv = await ok(await api.post("/advertisers", json={"name": "Adv"}, headers=h), 201)
    aff = await ok(await api.post("/affiliates", json={"name": "Aff"}, headers=h), 201)
    body = {"name": "Offer", "advertiser_id": adv["id"], "allow_impressions": True, **offer}
    created = await ok(await api.post("/offers", json=body, headers=h), 201)
    return {"h": h, "adv": adv["id"], "aff": aff["id"], "offer": created["id"]}


async def tracker_setup(api: Client, store: EventStore, **extra: Any) -> dict[str, Any]:
    h = await make_token(store)
    adv = await ok(await api.post("/advertisers", json={"name": "Adv"}, headers=h), 201)
    line = await ok(
        await api.post("/line-items", json={"name": "L", "advertiser_id": adv["id"]}, headers=h),
        201,
    )
    pub = await ok(await api.post("/publishers", json={"name": "P"}, headers=h), 201)
    body = {
        "imptracker": {
            "name": "T",
            "publisher": {"id": pub["id"]},
            "line_item": {"id": line["id"]},
            **extra,
        }
    }
    created = await ok(
        await api.post(f"/imptracker?advertiser_id={adv['id']}", json=body, headers=h)
    )
    return {"id": created["response"]["id"], "adv": adv["id"], "line": line["id"], "pub": pub["id"]}


async def test_eligible_affise_hit_is_counted_and_answered(api: Client, store: EventStore) -> None:
    s = await offer_setup(api, store)
    r = await api.get(
        f"/imp?aid={s['aff']}&oid={s['offer']}&sub1=abc&sub3=x%20y&imp_id=ext-1",
        headers={**BROWSER, "Referer": "https://pub.example/page"},
    )
    assert r.status == 200
    assert await r.read() == TRANSPARENT_GIF
    assert r.headers["Content-Type"] == "image/gif"
    assert r.headers["Cache-Control"] == "no-store, no-cache, must-revalidate, max-age=0"
    assert (r.headers["Pragma"], r.headers["Expires"]) == ("no-cache", "0")
    iid = r.headers["X-Impression-Id"]
    assert api.app[IMPRESSION_IDS].verify(iid)
    cookie = r.headers["Set-Cookie"]
    assert "tracker_vid=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    event = await only(store)
    assert (event.impression_id, event.verdict, event.reason) == (iid, "counted", "")
    assert (event.offer_id, event.affiliate_id, event.advertiser_id) == (
        str(s["offer"]),
        str(s["aff"]),
        str(s["adv"]),
    )
    assert event.subs == {"sub1": "abc", "sub3": "x y"}
    assert event.external_imp_id == "ext-1"
    assert event.referer == "https://pub.example/page"
    assert event.tenant == "958"
    assert event.visitor_id
    assert event.visitor_id in cookie
    assert event.ip == "127.0.0.1"


async def test_visitor_cookie_is_kept(api: Client, store: EventStore) -> None:
    s = await offer_setup(api, store)
    url = f"/imp?aid={s['aff']}&oid={s['offer']}"
    first = await api.get(url, headers=BROWSER)
    second = await api.get(url, headers=BROWSER)  # the client jar sends the cookie back
    assert first.status == second.status == 200
    a, b = await logged(store)
    assert a.visitor_id == b.visitor_id != ""


async def test_ineligible_and_invalid_hits_are_recorded_not_counted(
    api: Client, store: EventStore
) -> None:
    s = await offer_setup(api, store, allow_impressions=False)
    base = f"/imp?aid={s['aff']}&oid={s['offer']}"
    answers = [
        await api.get(base, headers=BROWSER),
        await api.get(f"/imp?aid={s['aff']}&oid=999999", headers=BROWSER),
        await api.get(
            base, headers={"User-Agent": "Googlebot/2.1 (+http://www.google.com/bot.html)"}
        ),
        await api.get(f"/imp?aid={s['aff']}", headers=BROWSER),
    ]
    for r in answers:
        assert r.status == 200
        assert await r.read() == TRANSPARENT_GIF
    by_id = {e.impression_id: e for e in await logged(store)}
    reasons = [by_id[r.headers["X-Impression-Id"]].reason for r in answers]
    assert reasons == [
        "impressions_not_allowed",
        "unknown_offer",
        "impressions_not_allowed",  # the first failing rule: eligibility before traffic
        "malformed_parameters",
    ]
    assert all(e.verdict == "not_counted" for e in by_id.values())
    assert by_id[answers[1].headers["X-Impression-Id"]].tenant == "-"


async def test_bot_traffic_is_not_counted(api: Client, store: EventStore) -> None:
    s = await offer_setup(api, store)
    bots = ["Googlebot/2.1 (+http://www.google.com/bot.html)", ""]
    for ua in bots:
        r = await api.get(f"/imp?aid={s['aff']}&oid={s['offer']}", headers={"User-Agent": ua})
        assert r.status == 200
    prefetch = await api.get(
        f"/imp?aid={s['aff']}&oid={s['offer']}", headers={**BROWSER, "Sec-Purpose": "prefetch"}
    )
    assert prefetch.status == 200
    reasons = sorted(e.reason for e in await logged(store))
    assert reasons == ["invalid_traffic_bot", "invalid_traffic_bot", "invalid_traffic_prefetch"]


async def test_a_head_request_is_recorded_and_not_counted(api: Client, store: EventStore) -> None:
    s = await offer_setup(api, store)
    r = await api.head(f"/imp?aid={s['aff']}&oid={s['offer']}", headers=BROWSER)
    assert r.status == 200
    assert r.headers["Content-Type"] == "image/gif"
    event = await only(store)
    assert (event.verdict, event.reason) == ("not_counted", "invalid_traffic_head_request")
    assert event.impression_id == r.headers["X-Impression-Id"]


async def test_header_bytes_that_are_not_utf8_still_get_the_image_and_are_recorded(
    api: Client, store: EventStore
) -> None:
    s = await offer_setup(api, store)
    reader, writer = await asyncio.open_connection(api.server.host, api.server.port)
    writer.write(
        f"GET /imp?aid={s['aff']}&oid={s['offer']} HTTP/1.1\r\nHost: x\r\n".encode()
        + b"User-Agent: Mozilla\xff/5.0 (X11; Linux x86_64) Chrome/126.0\r\n"
        + b"Referer: https://news.example/caf\xe9.html\r\nConnection: close\r\n\r\n"
    )
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(TRANSPARENT_GIF)
    event = await only(store)
    assert event.verdict == "counted"
    assert event.user_agent == "Mozilla\ufffd/5.0 (X11; Linux x86_64) Chrome/126.0"
    assert event.referer == "https://news.example/caf\ufffd.html"


async def test_duplicate_imp_id_within_a_day_is_not_counted(api: Client, store: EventStore) -> None:
    s = await offer_setup(api, store)
    url = f"/imp?aid={s['aff']}&oid={s['offer']}&imp_id=dup-1"
    ids = [(await api.get(url, headers=BROWSER)).headers["X-Impression-Id"] for _ in range(3)]
    other = await api.get(f"/imp?aid={s['aff']}&oid={s['offer']}&imp_id=dup-2", headers=BROWSER)
    by_id = {e.impression_id: e for e in await logged(store)}
    assert [(by_id[i].verdict, by_id[i].reason) for i in ids] == [
        ("counted", ""),
        ("not_counted", "duplicate_imp_id"),
        ("not_counted", "duplicate_imp_id"),
    ]
    assert by_id[other.headers["X-Impression-Id"]].verdict == "counted"


async def test_leading_zeros_name_the_same_offer_and_affiliate(
    api: Client, store: EventStore
) -> None:
    s = await offer_setup(api, store)
    first = await api.get(f"/imp?aid={s['aff']}&oid={s['offer']}&imp_id=z-1", headers=BROWSER)
    padded = await api.get(f"/imp?aid=0{s['aff']}&oid=00{s['offer']}&imp_id=z-1", headers=BROWSER)
    by_id = {e.impression_id: e for e in await logged(store)}
    event = by_id[padded.headers["X-Impression-Id"]]
    assert (event.offer_id, event.affiliate_id) == (str(s["offer"]), str(s["aff"]))
    assert (event.verdict, event.reason) == ("not_counted", "duplicate_imp_id")
    assert by_id[first.headers["X-Impression-Id"]].verdict == "counted"


async def test_duplicate_imp_id_is_caught_for_hits_spooled_while_redis_fails(
    api: Client, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = await offer_setup(api, store)
    url = f"/imp?aid={s['aff']}&oid={s['offer']}&imp_id=dup-9"
    live = await api.get(url, headers=BROWSER)  # appended: it takes the claim
    real_submit = store.submit

    def unavailable(*args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(RedisConnectionError("Connection refused"))
        return failed

    monkeypatch.setattr(store, "submit", unavailable)
    spooled = [await api.get(url, headers=BROWSER) for _ in range(2)]
    assert [r.status for r in spooled] == [200, 200]  # fsynced to the spool, then answered
    monkeypatch.setattr(store, "submit", real_submit)
    directory = spool_dir(api.app[SETTINGS].data_dir)
    deadline = asyncio.get_running_loop().time() + 10
    while spool_files(directory):  # the web process's drainer re-appends them (every 1 s)
        assert asyncio.get_running_loop().time() < deadline, "the spool was not drained"
        await asyncio.sleep(0.1)
    by_id = {e.impression_id: e for e in await logged(store)}
    assert by_id[live.headers["X-Impression-Id"]].verdict == "counted"
    for r in spooled:  # the claim was taken when the spool drained
        event = by_id[r.headers["X-Impression-Id"]]
        assert (event.verdict, event.reason) == ("not_counted", "duplicate_imp_id")


async def test_a_hit_neither_redis_nor_the_spool_took_is_a_503_pixel_without_id_or_cookie(
    api: Client, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = await tracker_setup(api, store)

    def unavailable(*args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(RedisConnectionError("Connection refused"))
        return failed

    async def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "submit", unavailable)
    monkeypatch.setattr(api.app[PIXELS].spool, "write_many", disk_full)
    r = await api.get(f"/imptr?id={n['id']}&t=1", headers=BROWSER)
    assert r.status == 503
    assert r.headers["Retry-After"] == "1"
    assert r.headers["Content-Type"].startswith("application/javascript")
    assert await r.read() == JS_BODY  # the page's script tag still gets a script
    for name, value in NO_CACHE_HEADERS.items():
        assert r.headers[name] == value
    assert "Set-Cookie" not in r.headers  # nothing was stored: no id, no visitor
    assert "X-Impression-Id" not in r.headers


@pytest.mark.parametrize("ran", [True, False, None])
async def test_an_uncertain_append_the_spool_could_not_take_is_settled_before_answering(
    api: Client, store: EventStore, monkeypatch: pytest.MonkeyPatch, ran: bool | None
) -> None:
    """Redis took the call but its answer was lost, and the disk is full: a 503 says "nothing
    stored", so the call is fenced first. Had it run, the hit is in the log: 200. When Redis
    cannot say (None), 503: the outcome is unknown, and logged."""
    s = await offer_setup(api, store)
    calls: list[tuple[str, str, bytes]] = []

    def uncertain(event: ImpressionSeen, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        part = store.partition_of(event)
        token = keys.group_token(part, f"lost-reply-{len(calls)}")
        calls.append((part, token, events.encode(event)))
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(AppendUncertain(RedisConnectionError("reset"), part, token))
        return failed

    async def disk_full(*args: Any, **kwargs: Any) -> None:
        if ran:  # the call reaches Redis while the pixel tries its spool
            part, token, payload = calls[-1]
            await store._append_call(part, [(payload, None, None)], token)
        raise OSError(28, "No space left on device")

    async def no_answer(token: str) -> bool:
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(store, "submit", uncertain)
    monkeypatch.setattr(api.app[PIXELS].spool, "write_many", disk_full)
    if ran is None:
        monkeypatch.setattr(store, "fence_group", no_answer)
    r = await api.get(f"/imp?aid={s['aff']}&oid={s['offer']}", headers=BROWSER)
    part, token, payload = calls[-1]
    if ran is None:
        assert r.status == 503
        assert await store.client.get(token) is None
        return
    if ran:
        assert r.status == 200
        assert [e.impression_id for e in await logged(store)] == [r.headers["X-Impression-Id"]]
        return
    assert r.status == 503
    assert await store.client.get(token) == FENCE.encode()
    with pytest.raises(AppendUncertain):  # the call, at last: it finds the fence
        await store._append_call(part, [(payload, None, None)], token)
    assert await logged(store) == []


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("gdpr=1", {}),
        ("gdpr=1&gdpr_consent=" + DENIED, {}),
        ("gdpr=0&gdpr=1", {}),  # an unclear signal: read as applying
        ("gdpr=true", {}),
        ("", {"DNT": "1"}),
        ("", {"Sec-GPC": "1"}),
        ("", {"Cookie": "a=b", "cookie": "tracker_optout=1"}),  # the opt-out in a second line
    ],
)
async def test_a_hit_without_consent_sets_no_cookie_and_truncates_ip(
    api: Client, store: EventStore, query: str, headers: dict[str, str]
) -> None:
    s = await offer_setup(api, store)
    url = f"/imp?aid={s['aff']}&oid={s['offer']}&{query}"
    r = await api.get(url, headers=CIMultiDict({**BROWSER}, **headers))
    assert r.status == 200
    assert not [c for c in r.headers.getall("Set-Cookie", []) if "Max-Age=0" not in c]
    event = await only(store)
    assert (event.visitor_id, event.ip) == ("", "127.0.0.0")
    assert event.consent == (DENIED if DENIED in query else "")


async def test_a_hit_with_consent_gets_its_visitor_cookie_and_its_consent_stored(
    api: Client, store: EventStore
) -> None:
    s = await offer_setup(api, store)
    url = f"/imp?aid={s['aff']}&oid={s['offer']}&gdpr=1&gdpr_consent={GRANTED}"
    r = await api.get(url, headers=BROWSER)
    [cookie] = r.headers.getall("Set-Cookie")
    assert cookie.startswith("tracker_vid=")
    assert "SameSite=Lax" in cookie
    event = await only(store)
    assert (event.ip, event.consent) == ("127.0.0.1", GRANTED)
    assert event.visitor_id
    assert event.visitor_id in cookie
    # behind a TLS proxy the cookie must survive a cross-site page: SameSite=None; Secure
    secure = await api.get(url, headers={**BROWSER, "X-Forwarded-Proto": "https"})
    assert "SameSite=None; Secure" in secure.headers["Set-Cookie"]


async def test_freshpaint_dialect(api: Client, store: EventStore) -> None:
    await make_token(store, tenant="env-42")
    await api.app[LIVE_CONFIG].sync()  # pixels decide on the process's copy, a moment behind
    r = await api.get("/imp?env_id=env-42&dest_id=dsp-7&imp_id=fp-1", headers=BROWSER)
    unknown = await api.get("/imp?env_id=nobody&dest_id=d&imp_id=x", headers=BROWSER)
    assert r.status == unknown.status == 200
    by_id = {e.impression_id: e for e in await logged(store)}
    fp = by_id[r.headers["X-Impression-Id"]]
    assert (fp.dialect, fp.tenant, fp.env_id, fp.dest_id, fp.external_imp_id, fp.verdict) == (
        "freshpaint",
        "env-42",
        "env-42",
        "dsp-7",
        "fp-1",
        "counted",
    )
    assert by_id[unknown.headers["X-Impression-Id"]].reason == "unknown_environment"


async def test_a_freshpaint_imp_id_repeated_on_its_destination_is_a_duplicate(
    api: Client, store: EventStore
) -> None:
    await make_token(store, tenant="env-42")
    await api.app[LIVE_CONFIG].sync()
    urls = [
        "/imp?env_id=env-42&dest_id=dsp-7&imp_id=fp-1",
        "/imp?env_id=env-42&dest_id=dsp-7&imp_id=fp-1",  # again: a duplicate
        "/imp?env_id=env-42&dest_id=dsp-8&imp_id=fp-1",  # another destination's own fp-1
    ]
    answers = [await api.get(url, headers=BROWSER) for url in urls]
    by_id = {e.impression_id: e for e in await logged(store)}
    assert [
        (by_id[r.headers["X-Impression-Id"]].verdict, by_id[r.headers["X-Impression-Id"]].reason)
        for r in answers
    ] == [("counted", ""), ("not_counted", "duplicate_imp_id"), ("counted", "")]
    # ids with a colon: destination "a:b" with imp_id "c" is not destination "a" with "b:c"
    for url in (
        "/imp?env_id=env-42&dest_id=a:b&imp_id=c",
        "/imp?env_id=env-42&dest_id=a&imp_id=b:c",
    ):
        r = await api.get(url, headers=BROWSER)
        assert (await only_by_id(store, r.headers["X-Impression-Id"])).verdict == "counted"


async def test_xandr_tracker_image_js_and_ancost(api: Client, store: EventStore) -> None:
    t = await tracker_setup(api, store)
    image = await api.get(f"/imptr?id={t['id']}&cachebuster=123&ancost=1.25", headers=BROWSER)
    js = await api.get(f"/imptr?id={t['id']}&t=1", headers=BROWSER)
    assert image.status == js.status == 200
    assert await image.read() == TRANSPARENT_GIF
    assert js.headers["Content-Type"].startswith("application/javascript")
    # Xandr's own JavaScript tag has no t: a browser loading it as a script gets a script
    # (an image would be refused by strict MIME checking); an explicit t=2 stays an image
    script = {**BROWSER, "Sec-Fetch-Dest": "script"}
    untyped = await api.get(f"/imptr?id={t['id']}&cachebuster=1&ancost=.5", headers=script)
    assert (untyped.status, await untyped.read()) == (200, JS_BODY)
    typed = await api.get(f"/imptr?id={t['id']}&t=2", headers=script)
    assert await typed.read() == TRANSPARENT_GIF
    untyped_event = await only_by_id(store, untyped.headers["X-Impression-Id"])
    assert (untyped_event.verdict, untyped_event.media_cost) == ("counted", "0.5")
    by_id = {e.impression_id: e for e in await logged(store)}
    first = by_id[image.headers["X-Impression-Id"]]
    assert (first.dialect, first.verdict, first.media_cost) == ("xandr", "counted", "1.25")
    assert (first.tracker_id, first.line_item_id, first.publisher_id, first.advertiser_id) == (
        str(t["id"]),
        str(t["line"]),
        str(t["pub"]),
        str(t["adv"]),
    )


async def test_ancost_is_the_cost_beside_the_trackers_payment_rule(
    api: Client, store: EventStore
) -> None:
    t = await tracker_setup(api, store)
    h = await make_token(store)
    rule = await ok(
        await api.post(
            "/payment-rules",
            json={"name": "R", "publisher_id": t["pub"], "pricing_type": "cpm", "value": "2.5"},
            headers=h,
        ),
        201,
    )
    body = {"imptracker": {"payment_rule": {"id": rule["id"]}}}
    await ok(await api.put(f"/imptracker?id={t['id']}", json=body, headers=h))
    by_rule = await api.get(f"/imptr?id={t['id']}", headers=BROWSER)
    own_cost = await api.get(f"/imptr?id={t['id']}&ancost=0.004", headers=BROWSER)
    by_id = {e.impression_id: e for e in await logged(store)}
    ruled = by_id[by_rule.headers["X-Impression-Id"]]
    assert (ruled.payment_rule_id, ruled.media_cost) == (str(rule["id"]), "")
    overridden = by_id[own_cost.headers["X-Impression-Id"]]  # media_cost set: it is the cost
    assert (overridden.payment_rule_id, overridden.media_cost) == (str(rule["id"]), "0.004")


async def with_redir(api: Client, tracker_id: Any, target: str) -> Any:
    """A Xandr tracker hit whose ``redir`` is ``target`` (as it stands in the URL)."""
    url = f"/imptr?id={tracker_id}&redir={target}"
    return await api.get(url, headers=BROWSER, allow_redirects=False)


async def test_xandr_redirect_only_to_allowed_hosts(api: Client, store: EventStore) -> None:
    t = await tracker_setup(api, store, redirect_hosts=[".shop.example"])
    allowed = await with_redir(
        api, t["id"], "https://www.shop.example/land?a=1&imp={impression_id}"
    )
    assert allowed.status == 302
    iid = allowed.headers["X-Impression-Id"]
    assert allowed.headers["Location"] == f"https://www.shop.example/land?a=1&imp={iid}"
    refused = await with_redir(api, t["id"], "https://evil.example/")
    assert refused.status == 200
    assert await refused.read() == TRANSPARENT_GIF
    by_id = {e.impression_id: e for e in await logged(store)}
    assert by_id[iid].redirect == "https://www.shop.example/land?a=1&imp=%7Bimpression_id%7D"
    bad = by_id[refused.headers["X-Impression-Id"]]
    assert (bad.redirect_refused, bad.verdict) == ("redirect_not_allowed", "counted")


@pytest.mark.parametrize(
    "target", ["https://[::1]@", "https://[]@", "https%3A%2F%2F%5B%3A%3A1%5D%40", "https://x@"]
)
async def test_a_target_with_no_host_gets_the_image_and_counts(
    api: Client, store: EventStore, target: str
) -> None:
    """A page can put anything in ``redir``: yarl's IndexError on an empty bracketed host was a
    500 and a lost impression."""
    t = await tracker_setup(api, store, redirect_hosts=[".shop.example"])
    url = URL(f"/imptr?id={t['id']}&redir={target}", encoded=True)  # as a browser sends it
    r = await api.get(url, headers=BROWSER, allow_redirects=False)
    assert (r.status, await r.read()) == (200, TRANSPARENT_GIF)
    event = (await logged(store))[-1]
    assert (event.verdict, event.redirect_refused) == ("counted", "redirect_not_allowed")


async def test_xandr_unknown_and_inactive_trackers(api: Client, store: EventStore) -> None:
    t = await tracker_setup(api, store, state="inactive")
    inactive = await api.get(f"/imptr?id={t['id']}", headers=BROWSER)
    unknown = await api.get("/imptr?id=987654", headers=BROWSER)
    by_id = {e.impression_id: e for e in await logged(store)}
    assert by_id[inactive.headers["X-Impression-Id"]].reason == "tracker_inactive"
    assert by_id[unknown.headers["X-Impression-Id"]].reason == "unknown_tracker"


async def test_an_encoded_target_with_spaces_redirects_and_a_bad_one_still_counts(
    api: Client, store: EventStore
) -> None:
    t = await tracker_setup(api, store, redirect_hosts=[".shop.example"])
    good = await with_redir(api, t["id"], "https%3A%2F%2Fwww.shop.example%2Fa%20b%2Fcaf%C3%A9")
    assert good.status == 302
    assert good.headers["Location"] == "https://www.shop.example/a%20b/caf%C3%A9"
    bad = await with_redir(api, t["id"], "javascript:alert(1)")
    assert (bad.status, bad.headers["Content-Type"]) == (200, "image/gif")
    by_id = {e.impression_id: e for e in await logged(store)}
    assert by_id[good.headers["X-Impression-Id"]].verdict == "counted"
    refused = by_id[bad.headers["X-Impression-Id"]]
    assert (refused.verdict, refused.redirect_refused) == ("counted", "redirect_malformed")


async def test_signed_redirect_is_followed_off_the_allow_list(
    api: Client, store: EventStore
) -> None:
    t = await tracker_setup(api, store)
    h = await make_token(store)
    target = "https://partner.example/landing?x=1"
    signed = await ok(await api.get("/redirect-signature", params={"url": target}, headers=h))
    r = await api.get(
        f"/imptr?id={t['id']}&{signed['query']}", headers=BROWSER, allow_redirects=False
    )
    assert (r.status, r.headers["Location"]) == (302, target)
    forged = await api.get(
        f"/imptr?id={t['id']}&sig={'0' * 32}&redir={target}", headers=BROWSER, allow_redirects=False
    )
    assert forged.status == 200
    # another tenant's admin signs for its own trackers only, and no tracker id that does not
    # exist redirects: a signature is no open redirect on someone else's domain
    stranger = await make_token(store, tenant="other")
    theirs = await ok(
        await api.get("/redirect-signature", params={"url": target}, headers=stranger)
    )
    for query in (f"id={t['id']}&{theirs['query']}", f"id=987654&{signed['query']}"):
        refused = await api.get(f"/imptr?{query}", headers=BROWSER, allow_redirects=False)
        assert refused.status == 200
        event = next(
            e for e in await logged(store) if e.impression_id == refused.headers["X-Impression-Id"]
        )
        assert event.redirect_refused == "redirect_not_allowed"
    publisher = await make_token(store, role="publisher:1")
    denied = await api.get("/redirect-signature", params={"url": target}, headers=publisher)
    assert denied.status == 403
    bad = await api.get("/redirect-signature", params={"url": "javascript:alert(1)"}, headers=h)
    assert bad.status == 422


@pytest.mark.parametrize(
    "redir",
    [
        "https://partner.example/l?i={impression_id}&q=a%7Cb",  # as typed
        "https://partner.example/l?i=%7Bimpression_id%7D&q=a|b",  # braces escaped
        "https%3A%2F%2Fpartner.example%2Fl%3Fi%3D%7Bimpression_id%7D%26q%3Da%7Cb",  # wholly
        "https://partner.example/l?i=%7bimpression%5Fid%7d&q=a|b",  # any letter escaped
    ],
)
async def test_a_signed_target_with_a_macro_redirects_however_the_ad_server_encodes_it(
    api: Client, store: EventStore, redir: str
) -> None:
    t = await tracker_setup(api, store)
    h = await make_token(store)
    target = "https://partner.example/l?i={impression_id}&q=a|b"
    signed = await ok(await api.get("/redirect-signature", params={"url": target}, headers=h))
    url = URL(f"/imptr?id={t['id']}&sig={signed['sig']}&redir={redir}", encoded=True)
    r = await api.get(url, headers=BROWSER, allow_redirects=False)
    assert r.status == 302, (await only(store)).redirect_refused
    impression_id = r.headers["X-Impression-Id"]
    assert r.headers["Location"].startswith(f"https://partner.example/l?i={impression_id}&q=a")


async def test_non_ascii_digits_are_unknown_not_a_crash(api: Client, store: EventStore) -> None:
    tracker = await api.get("/imptr?id=%C2%B2", headers=BROWSER)
    offer = await api.get("/imp?aid=1&oid=%C2%B2", headers=BROWSER)
    assert tracker.status == offer.status == 200
    assert await tracker.read() == TRANSPARENT_GIF
    reasons = sorted(e.reason for e in await logged(store))
    assert reasons == ["unknown_offer", "unknown_tracker"]


async def test_optout_stops_the_visitor_cookie_and_optin_undoes_it(
    api: Client, store: EventStore
) -> None:
    s = await offer_setup(api, store)
    url = f"/imp?aid={s['aff']}&oid={s['offer']}"
    first = await api.get(url, headers=BROWSER)
    vid = first.cookies["tracker_vid"].value
    out = await api.get("/optout")
    assert out.status == 200
    assert await out.json() == {"opted_out": True}
    assert out.headers["Cache-Control"].startswith("no-store")
    set_cookies = out.headers.getall("Set-Cookie")
    assert any(c.startswith("tracker_optout=1; Max-Age=157680000") for c in set_cookies)
    assert any(c.startswith("tracker_vid=; Max-Age=0") for c in set_cookies)
    cookie = {"Cookie": f"tracker_optout=1; tracker_vid={vid}"}
    after = await api.get(url, headers={**BROWSER, **cookie})
    assert after.status == 200
    assert "tracker_vid=;" in after.headers["Set-Cookie"]  # expired, not renewed
    back = await api.get("/optin")
    assert await back.json() == {"opted_out": False}
    assert back.headers["Set-Cookie"].startswith("tracker_optout=; Max-Age=0")
    by_id = {e.impression_id: e for e in await logged(store)}
    assert by_id[first.headers["X-Impression-Id"]].visitor_id == vid
    opted_out = by_id[after.headers["X-Impression-Id"]]
    assert (opted_out.visitor_id, opted_out.verdict) == ("", "counted")


async def test_optin_embedded_in_a_page_is_refused(api: Client) -> None:
    embedded = await api.get("/optin", headers={"Sec-Fetch-Mode": "no-cors"})
    assert embedded.status == 403
    assert (await embedded.json())["error"]["code"] == "navigation_required"
    assert "Set-Cookie" not in embedded.headers
    visited = await api.get("/optin", headers={"Sec-Fetch-Mode": "navigate"})
    assert visited.status == 200


async def test_every_x_forwarded_for_line_counts(api: Client, store: EventStore) -> None:
    """A proxy that adds its own X-Forwarded-For line rather than appending to the client's:
    the client's line must not pass for the proxy's."""
    s = await offer_setup(api, store)
    pixels = api.app[PIXELS]
    pixels.settings = msgspec.structs.replace(pixels.settings, trust_forwarded=1)
    reader, writer = await asyncio.open_connection(api.server.host, api.server.port)
    writer.write(
        f"GET /imp?aid={s['aff']}&oid={s['offer']} HTTP/1.1\r\nHost: x\r\n".encode()
        + f"User-Agent: {BROWSER['User-Agent']}\r\n".encode()
        + b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 203.0.113.77\r\n"
        + b"Connection: close\r\n\r\n"
    )
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    event = await only(store)
    assert event.ip == "203.0.113.77"  # the proxy's line, not the client's 6.6.6.6


async def test_a_forwarded_address_with_a_port_keeps_its_ip(api: Client, store: EventStore) -> None:
    s = await offer_setup(api, store)
    pixels = api.app[PIXELS]
    pixels.settings = msgspec.structs.replace(pixels.settings, trust_forwarded=1)
    url = f"/imp?aid={s['aff']}&oid={s['offer']}"
    for forwarded in ("203.0.113.7:51234", "6.6.6.6, [2001:db8:1:2::7]:443", "2001:db8::9"):
        r = await api.get(url, headers={**BROWSER, "X-Forwarded-For": forwarded})
        assert r.status == 200
    assert [e.ip for e in await logged(store)] == ["203.0.113.7", "2001:db8:1:2::7", "2001:db8::9"]


async def test_an_opt_out_cookie_in_a_second_cookie_line_counts(
    api: Client, store: EventStore
) -> None:
    """HTTP/2 clients send a cookie per line; a proxy may pass them on as several lines. On the
    lean path and behind aiohttp (the connection handed over by an API request first) alike."""
    s = await offer_setup(api, store)
    pixel = (
        f"GET /imp?aid={s['aff']}&oid={s['offer']} HTTP/1.1\r\nHost: x\r\n"
        f"User-Agent: {BROWSER['User-Agent']}\r\n"
        "Cookie: a=b\r\nCookie: tracker_optout=1\r\n"
    ).encode()
    for first in (b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"):
        reader, writer = await asyncio.open_connection(api.server.host, api.server.port)
        writer.write(first + pixel + b"Connection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.count(b"HTTP/1.1 200 ") == (2 if first else 1)
        assert b"Set-Cookie" not in answer  # no visitor cookie for an opted-out browser
    events = await logged(store)
    assert len(events) == 2
    assert all((e.visitor_id, e.ip) == ("", "127.0.0.0") for e in events)


async def test_a_non_numeric_aid_on_a_real_offer_is_that_offers_unknown_affiliate(
    api: Client, store: EventStore
) -> None:
    s = await offer_setup(api, store)
    for aid in ("%2B1", "-1", "1.0", "abc"):
        r = await api.get(f"/imp?aid={aid}&oid={s['offer']}", headers=BROWSER)
        assert r.status == 200
    events = await logged(store)
    assert len(events) == 4
    tenants = {e.tenant for e in events}
    assert tenants == {"958"}  # the offer owner's (make_token's tenant), who sees the hits
    assert {(e.verdict, e.reason) for e in events} == {("not_counted", "unknown_affiliate")}


async def only_by_id(store: EventStore, impression_id: str) -> ImpressionSeen:
    [event] = [e for e in await logged(store) if e.impression_id == impression_id]
    return event
