"""Pixel responses: a valid 1x1 transparent GIF of 43 bytes, no-cache headers, safe redirects."""

from __future__ import annotations

import struct

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tracker.http.pixel import (
    JS_BODY,
    NO_CACHE_HEADERS,
    TRANSPARENT_GIF,
    gif_answer,
    is_safe_location,
    js_answer,
    pixel_answer,
    redirect_answer,
    web_response,
)


def _lzw_codes(data: bytes, min_code_size: int) -> list[int]:
    """The first codes of a GIF LZW stream (fixed width is enough for a 1-pixel image)."""
    width = min_code_size + 1
    bits = int.from_bytes(data, "little")
    return [(bits >> (i * width)) & ((1 << width) - 1) for i in range(len(data) * 8 // width)]


def test_gif_is_43_bytes() -> None:
    assert len(TRANSPARENT_GIF) == 43


def test_gif_is_a_valid_transparent_gif89a_of_one_pixel() -> None:
    gif = TRANSPARENT_GIF
    assert gif[:6] == b"GIF89a"
    width, height, flags, _bg, _aspect = struct.unpack("<HHBBB", gif[6:13])
    assert (width, height) == (1, 1)
    assert flags & 0x80  # global colour table present
    table_size = 3 * 2 ** ((flags & 0x07) + 1)
    pos = 13 + table_size
    # graphic control extension with the transparency flag
    assert gif[pos : pos + 3] == b"\x21\xf9\x04"
    packed, _delay, transparent_index, terminator = struct.unpack("<BHBB", gif[pos + 3 : pos + 8])
    assert packed & 0x01
    assert terminator == 0
    pos += 8
    assert gif[pos] == 0x2C  # image descriptor
    left, top, w, h, local = struct.unpack("<HHHHB", gif[pos + 1 : pos + 10])
    assert (left, top, w, h, local & 0x80) == (0, 0, 1, 1, 0)
    pos += 10
    min_code_size = gif[pos]
    block_len = gif[pos + 1]
    block = gif[pos + 2 : pos + 2 + block_len]
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    assert _lzw_codes(block, min_code_size)[:3] == [clear, transparent_index, end]
    pos += 2 + block_len
    assert gif[pos] == 0  # block terminator
    assert gif[pos + 1 :] == b"\x3b"  # trailer, nothing after it


def test_gif_answer_has_type_body_and_no_cache_headers() -> None:
    answer = gif_answer({"X-Impression-Id": "abc"})
    assert answer.status == 200
    assert answer.body == TRANSPARENT_GIF
    headers = dict(answer.headers)
    assert headers["Content-Type"] == "image/gif"
    assert headers["Cache-Control"] == "no-store, no-cache, must-revalidate, max-age=0"
    assert headers["Pragma"] == "no-cache"
    assert headers["Expires"] == "0"
    assert headers["X-Impression-Id"] == "abc"


def test_js_answer_is_javascript_without_caching() -> None:
    answer = js_answer()
    assert answer.body == JS_BODY
    headers = dict(answer.headers)
    assert headers["Content-Type"] == "application/javascript; charset=utf-8"
    for name, value in NO_CACHE_HEADERS.items():
        assert headers[name] == value


def test_pixel_answer_picks_js_only_when_asked() -> None:
    assert pixel_answer(javascript=True).body == JS_BODY
    assert pixel_answer(javascript=False).body == TRANSPARENT_GIF


def test_redirect_is_302_with_location_and_no_cache() -> None:
    answer = redirect_answer("https://example.com/landing?a=1&b=2", {"X-Impression-Id": "i"})
    assert answer.status == 302
    assert answer.body == b""
    headers = dict(answer.headers)
    assert headers["Location"] == "https://example.com/landing?a=1&b=2"
    assert headers["Cache-Control"].startswith("no-store")
    assert headers["X-Impression-Id"] == "i"


@pytest.mark.parametrize(
    "target",
    [
        "",
        "javascript:alert(1)",
        "//evil.example/",
        "https:///evil.example",
        "ftp://example.com/",
        "https://example.com/\r\nSet-Cookie: x=1",
        "https://example.com/a b",
        "/relative",
    ],
)
def test_unsafe_redirect_targets_are_refused(target: str) -> None:
    assert not is_safe_location(target)
    with pytest.raises(ValueError, match="unsafe"):
        redirect_answer(target)


async def test_gif_goes_over_the_wire_unchanged() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web_response(gif_answer())

    app = web.Application()
    app.router.add_get("/imp", handler)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/imp")
        assert response.status == 200
        assert response.headers["Content-Type"] == "image/gif"
        assert response.headers["Content-Length"] == "43"
        assert await response.read() == TRANSPARENT_GIF
