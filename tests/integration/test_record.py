"""POST /publisher.v1/impression/record over real HTTP on a real redis-server (seed 001)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import compression_utils
from aiohttp.test_utils import TestClient

from tests.integration.config_support import api_fixture, make_token, ok  # noqa: F401  # fixture
from tracker.config import auth
from tracker.config.live import LIVE_CONFIG, ConfigUnavailable
from tracker.events import ImpressionSeen
from tracker.eventstore.keys import key_route
from tracker.eventstore.store import EventStore
from tracker.http import record

Client = TestClient[Any, Any]
PATH = "/publisher.v1/impression/record"


async def logged(store: EventStore) -> list[ImpressionSeen]:
    out: list[ImpressionSeen] = []
    for part in store.partitions:
        out += [s.event for s in await store.read(part, count=10_000)]  # type: ignore[misc]
    return out


def item(i: int, **extra: Any) -> dict[str, Any]:
    return {"member_id": f"m_{i}", "creative_id": "dc_abc", "ad_unit_id": "au_abc123", **extra}


async def test_seed_example_records_both(api: Client, store: EventStore) -> None:
    admin = await make_token(store)
    publisher = await ok(await api.post("/publishers", json={"name": "P"}, headers=admin), 201)
    h = await make_token(store, role=f"publisher:{publisher['id']}")
    body = {
        "impressions": [
            {"member_id": "m_x1y2z3", "creative_id": "dc_abc", "ad_unit_id": "au_abc123"},
            {"member_id": "m_a4b5c6", "creative_id": "dc_def", "ad_unit_id": "au_abc123"},
        ]
    }
    assert await ok(await api.post(PATH, json=body, headers=h)) == {"recorded": 2, "skipped": 0}
    events = sorted(await logged(store), key=lambda e: e.member_id)
    assert [(e.member_id, e.creative_id, e.ad_unit_id) for e in events] == [
        ("m_a4b5c6", "dc_def", "au_abc123"),
        ("m_x1y2z3", "dc_abc", "au_abc123"),
    ]
    assert all(e.dialect == "batch" and e.verdict == "counted" for e in events)
    assert all(e.tenant == "958" and e.publisher_id == str(publisher["id"]) for e in events)


async def test_timestamp_is_kept_and_defaults_to_server_time(
    api: Client, store: EventStore
) -> None:
    h = await make_token(store)
    body = {"impressions": [item(1, timestamp="2024-01-15T10:30:00Z"), item(2)]}
    before = datetime.now(UTC)
    await ok(await api.post(PATH, json=body, headers=h))
    by_member = {e.member_id: e for e in await logged(store)}
    assert by_member["m_1"].occurred_at == datetime(2024, 1, 15, 10, 30, tzinfo=UTC)
    assert by_member["m_2"].occurred_at >= before
    assert by_member["m_1"].recorded_at >= before


async def test_idempotency_keys_skip_repeats_and_are_per_tenant(
    api: Client, store: EventStore
) -> None:
    h = await make_token(store)
    other = await make_token(store, tenant="other")
    keyed = {"impressions": [item(i, idempotency_key=f"019078a1-{i}") for i in range(50)]}
    assert await ok(await api.post(PATH, json=keyed, headers=h)) == {"recorded": 50, "skipped": 0}
    assert await ok(await api.post(PATH, json=keyed, headers=h)) == {"recorded": 0, "skipped": 50}
    assert await ok(await api.post(PATH, json=keyed, headers=other)) == {
        "recorded": 50,
        "skipped": 0,
    }
    unkeyed = {"impressions": [item(1), item(1)]}
    assert await ok(await api.post(PATH, json=unkeyed, headers=h)) == {"recorded": 2, "skipped": 0}
    assert len(await logged(store)) == 102


async def test_a_publishers_idempotency_keys_are_its_own(api: Client, store: EventStore) -> None:
    # Two publishers of one tenant cannot know each other's keys: the second one's impression
    # was skipped as a repeat of the first one's, silently
    seven = await make_token(store, role="publisher:7")
    eight = await make_token(store, role="publisher:8")
    admin = await make_token(store)
    n = store.partition_count
    # a key whose admin spelling below lands in its partition (keys are looked up per partition)
    k = next(
        k
        for k in (hashlib.sha1(b"%d" % i).hexdigest()[: 8 + i % 9] for i in range(1000))
        if key_route("958", k, n) == key_route("958", f"publisher:7:{k}", n)
    )
    first = {"impressions": [item(7, idempotency_key=k)]}
    second = {"impressions": [item(8, idempotency_key=k)]}

    async def send(body: dict[str, Any], headers: dict[str, str]) -> tuple[int, int]:
        answer = await ok(await api.post(PATH, json=body, headers=headers))
        return answer["recorded"], answer["skipped"]

    assert await send(first, seven) == (1, 0)
    assert await send(second, eight) == (1, 0)
    assert await send(first, seven) == (0, 1)  # its own retry is still a repeat
    assert await send(first, admin) == (1, 0)  # an admin's keys are the tenant's
    spelled = {"impressions": [item(9, idempotency_key=f"publisher:7:{k}")]}
    assert await send(spelled, admin) == (1, 0)  # no admin key spells a publisher's
    stored = sorted((e.publisher_id, e.member_id) for e in await logged(store))
    assert stored == [("", "m_7"), ("", "m_9"), ("7", "m_7"), ("8", "m_8")]


async def test_a_publishers_impressions_count_only_while_it_is_active(
    api: Client, store: EventStore
) -> None:
    # its token outlives it: the impressions are recorded, with why they are not counted
    admin = await make_token(store)
    made = [
        await ok(await api.post("/publishers", json={"name": n}, headers=admin), 201)
        for n in ("Live", "Paused", "Gone")
    ]
    live, paused, gone = (p["id"] for p in made)
    await ok(
        await api.patch(
            f"/publishers/{paused}", json={"state": "inactive", "version": 1}, headers=admin
        )
    )
    await ok(await api.delete(f"/publishers/{gone}", headers=admin))
    other = await make_token(store, tenant="other")
    theirs = await ok(await api.post("/publishers", json={"name": "Theirs"}, headers=other), 201)
    for i, publisher in enumerate((live, paused, gone, theirs["id"], 987654)):
        token = await make_token(store, role=f"publisher:{publisher}")
        await ok(await api.post(PATH, json={"impressions": [item(i)]}, headers=token))
    verdicts = {e.member_id: (e.verdict, e.reason) for e in await logged(store)}
    assert verdicts == {
        "m_0": ("counted", ""),
        "m_1": ("not_counted", "publisher_inactive"),
        "m_2": ("not_counted", "publisher_deleted"),
        "m_3": ("not_counted", "publisher_deleted"),  # another tenant's publisher
        "m_4": ("not_counted", "publisher_deleted"),  # none such
    }


async def test_a_publisher_batch_redis_cannot_answer_is_the_batch_apis_503(
    api: Client, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the publisher's state is read from a synced copy: its failure answers as the append's
    admin = await make_token(store)
    publisher = await ok(await api.post("/publishers", json={"name": "P"}, headers=admin), 201)
    h = await make_token(store, role=f"publisher:{publisher['id']}")
    live = api.app[LIVE_CONFIG]
    await live.sync()  # the token is known here

    async def unavailable(*_: Any) -> Any:
        raise ConfigUnavailable("Redis did not answer within 5 s")

    monkeypatch.setattr(live, "sync", unavailable)
    r = await api.post(PATH, json={"impressions": [item(1)]}, headers=h)
    assert (r.status, r.headers.get("Retry-After")) == (503, "1")
    assert (await r.json())["error"]["code"] == "unavailable"
    assert await logged(store) == []


async def test_a_token_check_redis_cannot_answer_gets_503_with_retry_after(
    api: Client, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unavailable(*_: Any) -> Any:
        raise ConfigUnavailable("Redis did not answer within 5 s")

    monkeypatch.setattr(api.app[LIVE_CONFIG], "sync", unavailable)
    bearer = auth.mint()[2]  # a token this process has not seen: it asks the log
    body = {"impressions": [item(1)]}
    r = await api.post(PATH, json=body, headers={"Authorization": f"Bearer {bearer}"})
    assert (r.status, r.headers.get("Retry-After")) == (503, "1")
    assert (await r.json())["error"]["code"] == "config_unavailable"


async def test_one_bad_item_rejects_all_with_every_path(api: Client, store: EventStore) -> None:
    h = await make_token(store)
    future = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    body = {
        "impressions": [
            item(0),
            {"creative_id": "c", "ad_unit_id": "a"},
            item(2, member_id=""),
            item(3, timestamp=future),
            item(4, timestamp="yesterday"),
        ]
    }
    r = await api.post(PATH, json=body, headers=h)
    assert r.status == 422
    error = (await r.json())["error"]
    assert error["code"] == "validation_failed"
    paths = sorted(e["path"] for e in error["errors"])
    assert paths == [
        "$.impressions[1].member_id",
        "$.impressions[2].member_id",
        "$.impressions[3].timestamp",
        "$.impressions[4].timestamp",
    ]
    assert await logged(store) == []


async def test_bad_requests_get_clear_4xx(api: Client, store: EventStore) -> None:
    h = await make_token(store)
    too_many = {"impressions": [item(i) for i in range(5001)]}
    cases = [
        (
            await api.post(
                PATH, data=b"{not json", headers={**h, "Content-Type": "application/json"}
            ),
            400,
            "invalid_json",
        ),
        (
            await api.post(
                PATH, data=b'{"impressions": []}', headers={**h, "Content-Type": "text/plain"}
            ),
            415,
            "unsupported_media_type",
        ),
        (
            await api.post(
                PATH,
                data=b'{"impressions": ["\xff"]}',
                headers={**h, "Content-Type": "application/json"},
            ),
            400,
            "invalid_json",
        ),
        (await api.post(PATH, json=too_many, headers=h), 422, "too_many_impressions"),
        (
            await api.post(
                PATH,
                data=io.BytesIO(b" " * (9 * 1024 * 1024)),
                headers={**h, "Content-Type": "application/json"},
            ),
            413,
            "payload_too_large",
        ),
    ]
    for response, status, code in cases:
        assert response.status == status, await response.text()
        assert (await response.json())["error"]["code"] == code
    assert await logged(store) == []


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd", "x-unknown"])
async def test_a_body_in_an_encoding_that_cannot_be_read_gets_a_json_4xx(
    api: Client, store: EventStore, encoding: str
) -> None:
    h = await make_token(store)
    headers = {**h, "Content-Type": "application/json", "Content-Encoding": encoding}
    response = await api.post(PATH, data=b'{"impressions": [not compressed]}', headers=headers)
    assert 400 <= response.status < 500, await response.text()
    assert response.content_type == "application/json"
    error = (await response.json())["error"]
    flags = {"br": "HAS_BROTLI", "zstd": "HAS_ZSTD"}
    readable = encoding in ("gzip", "deflate") or getattr(
        compression_utils, flags.get(encoding, ""), False
    )
    # one this install reads but the bytes are not: 400; one it cannot read: 415 (aiohttp's
    # parser refuses br / zstd without their packages before the handler runs: the same 415)
    expected = (400, "invalid_body") if readable else (415, "unsupported_content_encoding")
    assert (response.status, error["code"]) == expected
    if error["code"] == "unsupported_content_encoding":  # it offers only what can be read here
        offered = error["message"].split("; use ", 1)[1]
        for name, flag in (("br", "HAS_BROTLI"), ("zstd", "HAS_ZSTD")):
            assert (name in offered) == getattr(compression_utils, flag)
        assert encoding not in offered
    assert await logged(store) == []


async def test_an_unreadable_gzip_body_is_no_error_in_the_log(
    api: Client, store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    # any client can send one: aiohttp logged it at error with a traceback ("Unhandled
    # exception", while it drained the rest of the body), one per request
    h = await make_token(store)
    headers = {**h, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    # a gzip stream that breaks after its first bytes, with a long tail
    body = gzip.compress(b'{"impressions": []}' + b" " * 200_000)[:30] + b"garbage" * 20_000
    with caplog.at_level(logging.INFO):
        response = await api.post(PATH, data=body, headers=headers)
        assert response.status == 400
        await asyncio.sleep(0.1)  # the rest of the body is drained after the answer
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_batch_that_redis_does_not_answer_in_time_gets_503_and_its_retry_lands_once(
    api: Client, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(record, "BATCH_DEADLINE_S", 0.3)
    h = await make_token(store)
    body = {"impressions": [item(i, idempotency_key=f"slow-{i}") for i in range(20)]}
    await store.client.client_pause(1500, all=False)  # a stalled Redis: no error, no answer
    started = time.monotonic()
    stalled = await api.post(PATH, json=body, headers=h)
    assert time.monotonic() - started < 1.2
    assert (stalled.status, stalled.headers["Retry-After"]) == (503, "1")
    assert (await stalled.json())["error"]["code"] == "unavailable"
    await asyncio.sleep(1.5)  # the pause ends; the calls already sent run
    retried = await ok(await api.post(PATH, json=body, headers=h))
    assert retried["recorded"] + retried["skipped"] == 20
    assert len(await logged(store)) == 20


async def test_auth_and_roles(api: Client, store: EventStore) -> None:
    body = {"impressions": [item(1)]}
    assert (await api.post(PATH, json=body)).status == 401
    adv = await make_token(store, role="advertiser:1")
    assert (await api.post(PATH, json=body, headers=adv)).status == 403
    assert await logged(store) == []


async def test_five_thousand_items_in_one_request(api: Client, store: EventStore) -> None:
    h = await make_token(store)
    body = {"impressions": [item(i, idempotency_key=f"k{i}") for i in range(5000)]}
    assert await ok(await api.post(PATH, json=body, headers=h)) == {"recorded": 5000, "skipped": 0}
    assert len(await logged(store)) == 5000
