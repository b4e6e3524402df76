"""Pixel responses: the 43-byte transparent GIF, the tiny JS body, no-cache headers, redirects.

Only response building lives here; deciding what to answer (and recording the hit) is the handler's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, NamedTuple

from aiohttp import web
from multidict import CIMultiDict

# GIF89a, 1x1, a two-colour global table, a graphic control extension marking colour 0
# transparent, one image of one pixel of colour 0, trailer: the same bytes as nginx's empty_gif.
TRANSPARENT_GIF: Final = (
    b"GIF89a"
    b"\x01\x00\x01\x00\x80\x00\x00"  # logical screen 1x1, global colour table of 2 entries
    b"\x00\x00\x00\xff\xff\xff"  # colour 0 black (transparent below), colour 1 white
    b"\x21\xf9\x04\x01\x00\x00\x00\x00"  # graphic control: transparent flag, index 0
    b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00"  # image at 0,0 of 1x1, no local table
    b"\x02\x02\x44\x01\x00"  # LZW min code size 2; one 2-byte block: CLEAR, 0, END
    b"\x3b"  # trailer
)
GIF_CONTENT_TYPE: Final = "image/gif"

# Served for ``t=1``: a script tag must get valid JavaScript that does nothing.
JS_BODY: Final = b"void 0;\n"
JS_CONTENT_TYPE: Final = "application/javascript; charset=utf-8"

NO_CACHE_HEADERS: Final[Mapping[str, str]] = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}

IMPRESSION_ID_HEADER: Final = "X-Impression-Id"


class PixelAnswer(NamedTuple):
    """A pixel endpoint's answer, independent of the HTTP server that sends it: the aiohttp
    handlers turn it into a ``web.Response``, the fast front end (``tracker.http.front``) writes
    it straight to the socket. ``headers`` exclude Content-Length, Date and Server."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


_NO_CACHE: Final = tuple(NO_CACHE_HEADERS.items())
_GIF_HEADERS: Final = (("Content-Type", GIF_CONTENT_TYPE), *_NO_CACHE)
_JS_HEADERS: Final = (("Content-Type", JS_CONTENT_TYPE), *_NO_CACHE)


def _headers(extra: Mapping[str, str] | None) -> list[tuple[str, str]]:
    return [*_NO_CACHE, *extra.items()] if extra else list(_NO_CACHE)


def gif_answer(headers: Mapping[str, str] | None = None) -> PixelAnswer:
    """200 with the transparent GIF and the no-cache headers (plus ``headers``)."""
    extra = headers.items() if headers else ()
    return PixelAnswer(200, [*_GIF_HEADERS, *extra], TRANSPARENT_GIF)


def js_answer(headers: Mapping[str, str] | None = None) -> PixelAnswer:
    """200 with a do-nothing script and the no-cache headers (plus ``headers``)."""
    extra = headers.items() if headers else ()
    return PixelAnswer(200, [*_JS_HEADERS, *extra], JS_BODY)


def is_safe_location(url: str) -> bool:
    """An absolute http(s) URL of ASCII without spaces, controls or backslashes: safe in a
    Location header.

    This is not the allow-list check (the handler does that); it only keeps a malformed target
    from reaching the response (header injection, ``javascript:`` or scheme-relative targets).
    """
    if not url.isascii() or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url) or "\\" in url:
        return False  # a backslash: browsers read it as "/", other parsers do not
    scheme, sep, rest = url.partition("://")
    return bool(sep) and scheme.lower() in ("http", "https") and bool(rest) and rest[0] != "/"


def redirect_answer(location: str, headers: Mapping[str, str] | None = None) -> PixelAnswer:
    """302 to ``location`` with the no-cache headers; raise ValueError for an unsafe target."""
    if not is_safe_location(location):
        raise ValueError("unsafe redirect target")
    return PixelAnswer(302, [*_headers(headers), ("Location", location)], b"")


def pixel_answer(javascript: bool, headers: Mapping[str, str] | None = None) -> PixelAnswer:
    """The JS body for ``t=1``, else the GIF."""
    return js_answer(headers) if javascript else gif_answer(headers)


def web_response(answer: PixelAnswer) -> web.Response:
    """The answer as an aiohttp response (for the handlers behind aiohttp's router)."""
    return web.Response(status=answer.status, body=answer.body, headers=CIMultiDict(answer.headers))
