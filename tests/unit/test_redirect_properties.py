"""No open redirect, as a browser sees it: every ``/imptr`` 302 goes to a host the tracker's
allow-list names, or to the host of the URL an admin signed, when the ``Location`` is read by a
WHATWG URL parser (ada, the one Node.js uses: how browsers read URLs), whatever a page put in
``redir``: userinfo, backslashes, tabs, fullwidth dots, escapes, odd IPv4 forms, macros.

The real ``Pixels.submit`` and ``finish`` decide (the code both front ends call); the event
store is a stub that says "appended" (no Redis: this is the decision, not the storage)."""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple
from urllib.parse import quote

import ada_url
from hypothesis import example, given
from hypothesis import strategies as st

from tracker.config.model import Tracker
from tracker.eventstore.store import AppendResult
from tracker.http.ingest import PixelRequest, Pixels
from tracker.ids import ImpressionIds
from tracker.projections.config import ConfigState
from tracker.settings import Settings

IDS = ImpressionIds(b"redirect-property-key-0123456789")
PAGE = "https://tracker.example/imptr"
ALLOW_LISTS = [
    (".shop.example",),
    ("www.shop.example",),
    ("shop.example", ".cdn.example"),
    ("127.0.0.1",),
    (".xn--bcher-kva.example",),
]
GOOD = ["shop.example", "www.shop.example", "a.cdn.example", "127.0.0.1", "xn--bcher-kva.example"]
EVIL = [
    "evil.example", "evilshop.example", "127.0.0.2", "2130706433", "0x7f.1", "[::1]",
    "[::ffff:127.0.0.1]", "bücher.example", "evil\u3002example", "evil\uff0eexample",
    "\uff25\uff36\uff29\uff2c.example", "localhost",
]  # fmt: skip
TOKENS = [
    "@", "\\", "%5C", "%40", "\t", "\n", " ", "\x00", "%00", "%09", "%0a", "/", "//", "#", "%23",
    "?", ":", "%3A", ".", "\uff0e", "\u3002", "%2E", "%E3%80%82", "{impression_id}",
    "%7Bimpression_id%7D",
    "[", "]", ":443", ":65536", "%25", "%", "%2540", "%2F", ";", "&", "&redir=", "=", "+", "\u00ad",
    "\u200b", "ß", "İ", "\uff0f", "\uff20", "%C0%AE", "%ff",
]  # fmt: skip
SCHEMES = [
    "https://", "HtTp://", "https:", "https:/", "https:\\\\", "//", "\\\\", "https:///",
    "https%3A%2F%2F", "https%3A//", "javascript:", " https://", "\thttps://", "ht\ttps://",
]  # fmt: skip

_pieces = st.sampled_from(GOOD) | st.sampled_from(EVIL) | st.sampled_from(TOKENS)
_targets = st.builds(
    lambda scheme, pieces, tail: scheme + "".join(pieces) + tail,
    st.sampled_from(SCHEMES) | st.just(""),
    st.lists(_pieces, min_size=1, max_size=6),
    st.sampled_from(["", "/", "/x?y=1", "/?to=https://evil.example/", "#f"]),
)


class _Appended:
    def result(self) -> AppendResult:
        return AppendResult("p0", "1-0", False)


class _Store:
    partition_count = 1

    def hot_route(self) -> int:
        return 0

    def submit(self, *args: Any, **kwargs: Any) -> _Appended:
        return _Appended()


class _Live:
    def __init__(self) -> None:
        self.state = ConfigState()


_LIVE = _Live()
_PIXELS = Pixels(_Store(), Settings(), _LIVE, IDS, None)  # type: ignore[arg-type]


class Answer(NamedTuple):
    status: int
    location: str
    impression_id: str


def _answer(raw_query: str, hosts: tuple[str, ...]) -> Answer:
    """What ``GET /imptr?raw_query`` answers, tracker 1 (tenant t1) and 2 (t2) having ``hosts``."""
    for tracker_id, tenant in ((1, "t1"), (2, "t2")):
        _LIVE.state.objects["tracker"][tracker_id] = Tracker(
            id=tracker_id,
            tenant=tenant,
            advertiser_id=1,
            line_item_id=1,
            publisher_id=1,
            redirect_hosts=hosts,
        )
    request = PixelRequest("/imptr", raw_query, {"user-agent": "Mozilla/5.0"}, "192.0.2.1", "https")
    pending, appended = _PIXELS.submit(request)
    answer = _PIXELS.finish(pending, appended.result()).answer
    location = dict(answer.headers).get("Location", "")
    return Answer(answer.status, location, pending.event.impression_id)


def _browser_host(location: str) -> str | None:
    """The host a browser goes to for this Location (None: it would not follow it)."""
    try:
        url = ada_url.URL(location, PAGE)
    except ValueError:
        return None
    return url.hostname if url.protocol in ("http:", "https:") else None


def _allowed(host: str, hosts: tuple[str, ...]) -> bool:
    """The documented rule: ``example.com`` exactly, ``.example.com`` it and its subdomains."""
    return any(
        host == entry or (entry.startswith(".") and (host == entry[1:] or host.endswith(entry)))
        for entry in hosts
    )


def _sent_as(target: str) -> list[str]:
    """``redir`` as typed, wholly encoded (once, twice), and as a browser sends the pixel URL."""
    forms = [target, quote(target, safe=""), quote(quote(target, safe=""), safe="")]
    with contextlib.suppress(ValueError, IndexError):  # not a URL a page could hold
        forms.append(ada_url.URL(f"{PAGE}?id=1&redir={target}").search.split("&redir=", 1)[1])
    return forms


@given(_targets, st.sampled_from(ALLOW_LISTS))
@example("https://[::1]@", (".shop.example",))  # yarl raised IndexError: a 500, a lost hit
@example("https://evil.example\\@www.shop.example/", (".shop.example",))
@example("https://www.shop.example%2F@evil.example/", (".shop.example",))
def test_a_redirect_goes_only_to_an_allowed_host(target: str, hosts: tuple[str, ...]) -> None:
    for redir in _sent_as(target):
        answer = _answer(f"id=1&redir={redir}", hosts)
        if answer.status == 302:
            host = _browser_host(answer.location)
            assert host is None or _allowed(host, hosts), (redir, answer.location, host)


@given(_targets, st.lists(st.booleans(), max_size=60), st.booleans())
def test_a_signature_redirects_only_to_the_host_signed_and_only_for_its_tenant(
    target: str, escaped: list[bool], whole: bool
) -> None:
    signature = IDS.sign_redirect("t1", target)  # what GET /redirect-signature hands t1's admin
    # the target as another encoder spells it: some characters percent-encoded, or all of it
    respelled = "".join(
        "".join(f"%{b:02X}" for b in c.encode()) if e and c != "%" else c
        for c, e in zip(target, escaped + [False] * len(target), strict=False)
    )
    redir = quote(respelled, safe="") if whole else respelled
    answer = _answer(f"sig={signature}&id=1&redir={redir}", ())
    if answer.status == 302:
        got = _browser_host(answer.location.replace(answer.impression_id, "{impression_id}"))
        assert got is None or got == _browser_host(target), (redir, answer.location)
    assert _answer(f"sig={signature}&id=2&redir={redir}", ()).status != 302  # t2's tracker
