"""The web socket's front end over raw TCP: pixels on the lean path, everything else handed to
aiohttp with the bytes it already sent, pipelining, HTTP/1.0, HEAD, malformed requests."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator

import pytest

from tests.integration.config_support import SETTINGS, FrontTestServer
from tracker.events import ImpressionSeen
from tracker.eventstore.store import EventStore
from tracker.http import front
from tracker.http.app import create_app
from tracker.http.front import MAX_LINE, parse_head
from tracker.http.pixel import TRANSPARENT_GIF

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0"


@pytest.fixture
async def port(store: EventStore) -> AsyncIterator[int]:
    server = FrontTestServer(create_app(store, SETTINGS))
    await server.start_server()
    assert server.port is not None
    yield server.port
    await server.close()


def get(path: str, *extra: str, version: str = "1.1") -> bytes:
    lines = [f"GET {path} HTTP/{version}", "Host: t.example", f"User-Agent: {UA}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
    status_line, *lines = head.rstrip("\r\n").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), 5) if length else b""
    return int(status_line.split(" ")[1]), headers, body


async def impressions(store: EventStore) -> list[ImpressionSeen]:
    found = []
    for part in store.partitions:
        found += [s.event for s in await store.read(part, count=100_000)]
    return [e for e in found if isinstance(e, ImpressionSeen)]


async def test_pixel_is_answered_on_the_lean_path_and_recorded(
    port: int, store: EventStore
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/imptr?id=77&cachebuster=1", "Referer: https://pub.example/"))
    status, headers, body = await read_response(reader)
    writer.close()
    assert (status, body) == (200, TRANSPARENT_GIF)
    assert headers["server"] == "tracker"  # not aiohttp's
    assert headers["content-type"] == "image/gif"
    assert headers["cache-control"] == "no-store, no-cache, must-revalidate, max-age=0"
    assert "date" in headers
    [event] = await impressions(store)
    assert event.impression_id == headers["x-impression-id"]
    assert (event.dialect, event.reason, event.referer) == (
        "xandr",
        "unknown_tracker",
        "https://pub.example/",
    )
    assert event.user_agent == UA


async def test_pipelined_pixels_are_answered_in_order(port: int, store: EventStore) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(get(f"/imptr?id={i}") for i in range(5)))  # one write, five requests
    ids = []
    for _ in range(5):
        status, headers, _ = await read_response(reader)
        assert status == 200
        ids.append(headers["x-impression-id"])
    writer.close()
    by_id = {e.impression_id: e.tracker_id for e in await impressions(store)}
    assert [by_id[i] for i in ids] == [str(i) for i in range(5)]


async def test_api_request_after_a_pixel_is_handed_to_aiohttp_with_its_bytes(
    port: int, store: EventStore
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # a pixel, then an API call and another pixel pipelined behind it in the same write
    writer.write(get("/imptr?id=1") + get("/healthz") + get("/imptr?id=2"))
    first = await read_response(reader)
    second = await read_response(reader)
    third = await read_response(reader)
    writer.close()
    assert (first[0], first[1]["server"]) == (200, "tracker")
    assert (second[0], second[2]) == (200, b'{"status": "ok"}')
    assert "aiohttp" in second[1]["server"]  # the connection now belongs to aiohttp
    assert (third[0], third[2]) == (200, TRANSPARENT_GIF)  # aiohttp's pixel route
    assert len(await impressions(store)) == 2


async def test_a_post_is_handed_over_at_once(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b'{"impressions": []}'
    writer.write(
        b"POST /publisher.v1/impression/record HTTP/1.1\r\nHost: t\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    status, _, answer = await read_response(reader)
    writer.close()
    assert status == 401  # aiohttp's route and auth answered, with its JSON error
    assert b'"unauthorized"' in answer


async def test_http10_without_keep_alive_is_closed_after_the_answer(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/imptr?id=3", version="1.0"))
    status, headers, body = await read_response(reader)
    assert (status, headers["connection"], body) == (200, "close", TRANSPARENT_GIF)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    writer.close()


async def test_http10_keep_alive_is_honoured(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/imptr?id=3", "Connection: keep-alive", version="1.0"))
    _, headers, _ = await read_response(reader)
    assert headers["connection"] == "keep-alive"
    writer.write(get("/imptr?id=4", "Connection: keep-alive", version="1.0"))
    status, _, _ = await read_response(reader)
    assert status == 200
    writer.close()


async def test_head_answers_headers_only_and_records_the_hit(port: int, store: EventStore) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/imptr?id=5").replace(b"GET ", b"HEAD ", 1) + get("/imptr?id=6"))
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
    assert "Content-Length: 43" in head  # the GIF's length, without the GIF
    status, _, body = await read_response(reader)  # the next response follows directly
    assert (status, body) == (200, TRANSPARENT_GIF)
    writer.close()
    assert len(await impressions(store)) == 2


async def test_a_request_split_across_writes_is_assembled(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    raw = get("/imptr?id=8")
    for i in range(0, len(raw), 7):
        writer.write(raw[i : i + 7])
        await writer.drain()
        await asyncio.sleep(0.001)
    status, headers, _ = await read_response(reader)
    writer.close()
    assert (status, headers["server"]) == (200, "tracker")


async def test_a_malformed_header_gets_aiohttps_400_as_json(
    port: int, store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
        writer.write(b"GET /imptr?id=1 HTTP/1.1\r\nHost: t\r\nNo colon on this line\r\n\r\n")
        status, headers, body = await read_response(reader)
    writer.close()
    assert (status, headers["content-type"]) == (400, "application/json; charset=utf-8")
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert await impressions(store) == []
    # the client's mistake is no server error: no plain-text traceback from aiohttp
    assert [r for r in caplog.records if r.name == "aiohttp.server"] == []


async def test_a_request_line_without_a_version_is_refused_at_once(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /imp?aid=1&oid=1\r\n")  # HTTP/0.9 style: no headers will follow
    status, _, body = await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    assert (status, json.loads(body)["error"]["code"]) == (400, "bad_request")


@pytest.mark.parametrize("api_requests", [1, 3, 40])  # 40: past aiohttp's queue of 32
async def test_half_close_after_a_pixel_and_api_requests_closes_after_all(
    port: int, api_requests: int
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/imptr?id=1") + get("/healthz") * api_requests)
    writer.write_eof()
    assert (await read_response(reader))[0] == 200  # the pixel, on the lean path
    for _ in range(api_requests):  # handed to aiohttp: every one answered
        assert (await read_response(reader))[0] == 200
    assert await asyncio.wait_for(reader.read(), 5) == b""  # then closed, not held open
    writer.close()


async def test_an_api_request_then_a_half_close_is_answered(port: int) -> None:
    """The connection went to aiohttp before the EOF came: aiohttp alone would close at once."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/healthz"))
    writer.write_eof()
    assert (await read_response(reader))[0] == 200
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_an_idle_connection_aiohttp_answered_closes_like_a_pixel_one(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aiohttp's own default held it for an hour (3,630 s), the lean path's for 75 s
    monkeypatch.setattr(front, "KEEPALIVE_S", 0.5)
    server = FrontTestServer(create_app(store, SETTINGS))
    await server.start_server()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(get("/healthz"))
        status, headers, _ = await read_response(reader)
        assert (status, "aiohttp" in headers["server"]) == (200, True)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        writer.close()
    finally:
        await server.close()


async def test_a_trickle_of_bytes_does_not_hold_a_connection(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(front, "KEEPALIVE_S", 0.5)
    monkeypatch.setattr(front, "SWEEP_S", 0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/imptr?id=1"))
    await read_response(reader)
    closed = False
    for _ in range(20):  # an empty line every 0.2 s, for 4 s: closed meanwhile
        try:
            closed = await asyncio.wait_for(reader.read(1), 0.2) == b""
        except TimeoutError:
            writer.write(b"\r\n")
        if closed:
            break
    writer.close()
    assert closed


async def test_half_close_after_a_pixel_and_part_of_a_request_closes(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        get("/imptr?id=1") + b"POST /publisher.v1/impression/record HTTP/1.1\r\nHost: t\r\n"
    )
    writer.write_eof()  # the rest of that head will never come
    assert (await read_response(reader))[0] == 200
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


@pytest.mark.parametrize("pause_s", [0.0, 0.2])
async def test_empty_lines_before_a_request_line_are_skipped(
    port: int, store: EventStore, pause_s: float
) -> None:
    """RFC 9112 2.2: a server ignores empty lines before a request line (a client that ends a
    request with an extra CRLF), also when they arrive on their own."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/imptr?id=1") + b"\r\n")
    assert (await read_response(reader))[0] == 200
    writer.write(b"\r\n\r\n")
    await asyncio.sleep(pause_s)
    writer.write(get("/imptr?id=2"))
    assert (await read_response(reader))[0] == 200
    writer.close()
    assert len(await impressions(store)) == 2


async def test_a_long_pixel_url_within_the_parameter_limits_gets_its_image(
    port: int, store: EventStore
) -> None:
    consent = "C" * 4096  # the longest consent string accepted, and 8 subs of 512 characters
    subs = "&".join(f"sub{i}={'%41' * 512}" for i in range(1, 9))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        get(f"/imp?aid=1&oid=2&{subs}&gdpr=1&gdpr_consent={consent}", f"Cookie: {'c' * 9000}")
    )
    status, _, body = await read_response(reader)
    writer.close()
    assert (status, body) == (200, TRANSPARENT_GIF)
    [event] = await impressions(store)
    assert event.subs["sub8"] == "A" * 512


async def test_raw_utf8_in_a_pixel_query_still_gets_the_image_and_is_recorded(
    port: int, store: EventStore
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/imp?aid=1&oid=2&sub1=café&sub2=東京"))
    status, _, body = await read_response(reader)
    writer.close()
    assert (status, body) == (200, TRANSPARENT_GIF)
    [event] = await impressions(store)
    assert event.subs == {"sub1": "café", "sub2": "東京"}


async def test_bytes_not_utf8_in_a_pixel_query_still_get_the_image_and_are_recorded(
    port: int, store: EventStore
) -> None:
    # a client writing Latin-1 into the URL (aiohttp's parser would answer 400): the hit is
    # read with those bytes percent-encoded, recorded malformed, and answered its image
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/imp?aid=1&oid=2&sub1=café&x=\xe9").replace(b"caf\xc3\xa9", b"caf\xe9"))
    status, _, body = await read_response(reader)
    writer.close()
    assert (status, body) == (200, TRANSPARENT_GIF)
    [event] = await impressions(store)
    assert (event.verdict, event.reason) == ("not_counted", "malformed_parameters")
    assert (event.affiliate_id, event.offer_id, event.subs) == ("1", "2", {})


async def test_a_request_line_over_the_limit_gets_a_json_4xx(port: int, store: EventStore) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/imp?aid=1&oid=2&sub1=" + "x" * (MAX_LINE + 10)))
    status, headers, body = await read_response(reader)
    writer.close()
    assert 400 <= status < 500
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"]["code"] in ("bad_request", "request_header_fields_too_large")
    assert await impressions(store) == []


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /imp?aid=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 5",  # a body
        b"GET /imp?aid=1 HTTP/1.1\r\nTransfer-Encoding: chunked",
        b"GET /imp?aid=1 HTTP/1.1\r\nUpgrade: websocket",
        b"POST /imp?aid=1 HTTP/1.1\r\nHost: t",
        b"GET /healthz HTTP/1.1\r\nHost: t",
        b"GET /imp/x HTTP/1.1\r\nHost: t",
        b"GET /imp HTTP/2.0\r\nHost: t",
        b"GET /imp?aid=1 HTTP/1.1\r\n folded: x",
        b"GET /imp?aid=1 HTTP/1.1\r\nHost : t",
        b"GET /im\xffp?a HTTP/1.1\r\nHost: t",  # not UTF-8 outside the query
        b"GET /imp?a HTTP/1.1\r\nHost: t\r\nUser-Agent: \xff",
        b"GET /imp?a\xffb HTTP/1.1 x\r\nHost: t",
        b"GET /imp?a=\xc2\x85&b=\xff HTTP/1.1\r\nHost: t",  # a control character (NEL) too
        b"GET /imp?a=\xe2\x80\xa8&b=\xff HTTP/1.1\r\nHost: t",  # U+2028
        # within MAX_LINE as sent, over it percent-encoded as a browser would send it
        b"GET /imp?a=" + b"\xe9" * (MAX_LINE // 3 + 10) + b" HTTP/1.1\r\nHost: t",
        b"GET /imp?aid=1 HTTP/1.1 extra\r\nHost: t",
        b"GET /imp?q=1 HTTP/1.1\r\nHost: t\r\nX: y\nContent-Length: 34",  # a bare LF
        b"GET /imp?q=1 HTTP/1.1\r\nHost: t\r\nX: y\rContent-Length: 34",  # a bare CR
        b"GET /imp?q=1 HTTP/1.1\r\nHost: t\r\nX: a\x00b",
        b"GET /imp?q=1 HTTP/1.1\r\nHost: t\r\nX: a\tb",  # legal, but rare: aiohttp reads it
        b"GET /imp?q=1 HTTP/1.1\r\nHost: t\r\nX Y: z",  # a name that is not a token
        b"GET /imp?q=1 HTTP/1.1\r\nUser-Agent: x",  # HTTP/1.1 without Host
        b"GET /imp?q=1 HTTP/1.1\r\nHost: a\r\nHost: b",
        b"GET /imp?q=1 HTTP/1.1\r\nHost: t\r\nReferer: " + b"x" * (MAX_LINE + 1),
    ],
)
def test_parse_head_leaves_anything_unusual_to_aiohttp(raw: bytes) -> None:
    assert parse_head(raw) is None


def test_parse_head_reads_bytes_not_utf8_in_the_query_percent_encoded() -> None:
    head = parse_head(b"GET /imp?a=\xff&b=caf\xc3\xa9\xe9 HTTP/1.1\r\nHost: t\r\nX: \xc3\xa9")
    assert head is not None
    assert (head.path, head.raw_query) == ("/imp", "a=%FF&b=caf%C3%A9%E9")
    assert head.headers == {"host": "t", "x": "é"}


def test_parse_head_reads_a_pixel_request() -> None:
    head = parse_head(
        b"GET /imp?aid=1&oid=2 HTTP/1.1\r\nHost: t\r\nuser-agent: UA\r\nContent-Length: 0"
    )
    assert head is not None
    assert (head.method, head.path, head.raw_query) == ("GET", "/imp", "aid=1&oid=2")
    assert (head.keep_alive, head.http10) == (True, False)
    assert head.headers["user-agent"] == "UA"  # by lowercase name, as the pixel path asks
    closing = parse_head(b"GET /imptr HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, Close")
    assert closing is not None
    assert not closing.keep_alive
    repeated = parse_head(
        b"GET /imptr HTTP/1.1\r\nHost: t\r\nConnection: close\r\nConnection: keep-alive"
    )
    assert repeated is not None
    assert not repeated.keep_alive  # every Connection header counts, as in aiohttp
    old = parse_head(b"GET /imptr HTTP/1.0\r\nConnection: Keep-Alive")  # 1.0 needs no Host
    assert old is not None
    assert old.keep_alive


async def test_a_smuggled_second_request_is_not_recorded(port: int, store: EventStore) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    hidden = get("/imptr?id=2")
    writer.write(
        b"GET /imptr?id=1 HTTP/1.1\r\nHost: t\r\nX: y\nContent-Length: %d\r\n\r\n" % len(hidden)
        + hidden
    )
    status, _, _ = await read_response(reader)
    writer.close()
    assert status == 400  # aiohttp refused the bare LF; neither request was recorded
    assert await impressions(store) == []


async def test_half_close_gets_its_answers_then_the_connection_closes(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/imptr?id=1") + get("/imptr?id=2"))
    writer.write_eof()  # the client is done sending
    for _ in range(2):
        status, _, _ = await read_response(reader)
        assert status == 200
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, not held open
    writer.close()


async def test_a_client_that_does_not_read_stops_the_pipeline(port: int, store: EventStore) -> None:
    n = 20_000
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    request = get("/imptr?id=9")
    writer.write(request * n)  # and read nothing for a while
    await asyncio.sleep(1.0)
    recorded_while_stalled = len(await impressions(store))
    assert recorded_while_stalled < n  # the server stopped taking requests it cannot answer
    for _ in range(n):
        status, _, _ = await read_response(reader)
        assert status == 200
    writer.close()
    assert len(await impressions(store)) == n
