"""The C parsers of the pixel path (``tracker/http/_lean.c``) against their Python references,
on generated heads and queries: where the C one answers, it answers what the Python one does
(None, a ``Head``, the values and problems); it leaves only heads with bytes outside ASCII or
longer than a line may be, and queries outside ASCII, to the Python one. The C answer writer
writes the bytes the Python one does. The other tests of
``parse_head`` and the query parsers (against aiohttp's parsers, properties of the values) run
through the C parsers, as the service does."""

from __future__ import annotations

from unittest import mock

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tracker.http import front, lean_speedups, query
from tracker.http.front import MAX_LINE, Head, parse_head_py, render, render_py
from tracker.http.pixel import TRANSPARENT_GIF, PixelAnswer, gif_answer
from tracker.settings import pure_python_from_env

_lean = lean_speedups.module()
_needs_lean = pytest.mark.skipif(_lean is None, reason="the C parsers are not in use")


def test_the_c_parsers_are_built() -> None:
    """A build that failed quietly (``optional=True``: no compiler) must not pass for a tested
    one; ``TRACKER_PURE_PYTHON=1`` is the way to test without them."""
    if pure_python_from_env():
        pytest.skip("TRACKER_PURE_PYTHON=1")
    assert lean_speedups.in_use(), (
        "tracker.http._lean did not build (a C compiler and Python's headers are needed); "
        "set TRACKER_PURE_PYTHON=1 to test the pure-Python parsers alone"
    )


# -- heads ------------------------------------------------------------------------------------

_NAMES = [
    "Host", "host", "HOST", "User-Agent", "user-agent", "Cookie", "cookie", "X-Forwarded-For",
    "Connection", "connection", "Content-Length", "Content-Type", "Transfer-Encoding", "Upgrade",
    "Expect", "Referer", "Accept", "Sec-Fetch-Dest", "DNT", "X-Request-Id", "Proxy-Connection",
    "Content-Encoding", "ETag", "Max-Forwards", "Server", "X Y", "X(", "", "x_y", "K\u212aeep",
]  # fmt: skip
_VALUES = [
    "t", "", " a ", "keep-alive", "close", "Keep-Alive, Close", " keep-alive ,close ", "0", "5",
    "00", "a=1; b=2", "1.2.3.4", "\t1\t", "a\x00b", "a\x7fb", "caf\u00e9", "a\rb", "a\nb", "x" * 40,
    "Mozilla/5.0 (X11) Gecko", "keep-alive,", ",close", "upgrade", "\u2028", "\x85",
]  # fmt: skip
_LINES = [
    "GET /imp?aid=1&oid=2 HTTP/1.1", "GET /imptr?id=1&redir=https://a.example/?b=1 HTTP/1.1",
    "HEAD /imp HTTP/1.0", "GET /imp HTTP/1.0", "POST /imp HTTP/1.1", "GET /other HTTP/1.1",
    "GET /imp HTTP/2.0", "GET  /imp HTTP/1.1", "GET /imp  HTTP/1.1", "GET /imp",
    "get /imp HTTP/1.1",
    "GET /imp?a=b#frag HTTP/1.1", "GET /imp? HTTP/1.1", "GET /imp?x=caf\u00e9 HTTP/1.1",
    "GET /imp HTTP/1.1 ", " GET /imp HTTP/1.1", "GET /im\u00e9 HTTP/1.1",
    "GET /imp?a=\x01 HTTP/1.1",
    "GET http://t/imp HTTP/1.1", "GET /imp?a=%zz&b=+ HTTP/1.1", "",
]  # fmt: skip
# mostly well-formed pieces: a head is read in full only when every line is
_SEPARATORS = [": "] * 6 + [":", ":\t", " :", "", ":  "]
_BREAKS = ["\r\n"] * 12 + ["\n", "\r", "\r\n "]

_headers = st.lists(
    st.tuples(
        st.sampled_from(_NAMES) | st.sampled_from(["Referer", "Accept", "X-A", "Cookie"]),
        st.sampled_from(_SEPARATORS),
        st.sampled_from(_VALUES) | st.text(max_size=6),
        st.sampled_from(_BREAKS),
    ),
    max_size=8,
)


def _head(line: str, headers: list[tuple[str, str, str, str]], latin1: bool) -> bytes:
    """The head; with one Host first unless ``latin1`` (a head is read in full only when it
    has exactly one: most generated ones must, or they would all be refused alike)."""
    host = "" if latin1 else "\r\nHost: t"
    text = line + host + "".join(brk + name + sep + value for name, sep, value, brk in headers)
    return text.encode("latin-1" if latin1 else "utf-8", "replace" if latin1 else "surrogatepass")


def _agrees(raw: bytes) -> None:
    read = _lean.parse_head(raw)  # type: ignore[union-attr]
    if read is NotImplemented:  # only for what the C parser leaves alone
        assert not raw.isascii() or len(raw) > MAX_LINE
        return
    assert raw.isascii()
    assert read == parse_head_py(raw)
    if read is not None:
        assert type(read) is type(parse_head_py(raw))


@_needs_lean
@given(st.sampled_from(_LINES), _headers, st.booleans())
@example(
    "GET /imp?aid=1 HTTP/1.1",
    [("Cookie", ": ", "a=1", "\r\n"), ("cookie", ":", "b=2 ", "\r\n")],
    False,
)
@example(
    "GET /imp HTTP/1.1",
    [("X-Forwarded-For", ": ", "1.2.3.4", "\r\n")] * 2,
    False,
)
@example("GET /imp HTTP/1.0", [("Connection", ": ", "keep-alive, close", "\r\n")], False)
@example("GET /imp HTTP/1.1", [("Content-Length", ":", "0", "\r\n")], False)
@example("GET /imp?a=b#frag HTTP/1.1", [], False)
@example("GET /imp HTTP/1.1", [("Content-Length", ": ", "0", "\r\n")] * 2, False)
@example("GET /imp HTTP/1.1", [("Transfer-Encoding", ": ", "x", "\r\n")], False)
@example("GET /imp HTTP/1.1", [("X(", ": ", "x", "\r\n")], False)
@example("GET /imp HTTP/1.1", [("Connection", ": ", "close", "\r\n")], False)
def test_the_c_head_parser_reads_as_the_python_one(
    line: str, headers: list[tuple[str, str, str, str]], latin1: bool
) -> None:
    _agrees(_head(line, headers, latin1))


@_needs_lean
@given(st.binary(max_size=200))
def test_the_c_head_parser_agrees_on_any_bytes(tail: bytes) -> None:
    _agrees(b"GET /imp?a=1 HTTP/1.1\r\nHost: t\r\n" + tail)
    _agrees(tail)


@_needs_lean
def test_the_c_head_parser_counts_lines_and_measures_them_as_the_python_one() -> None:
    host = b"GET /imp HTTP/1.1\r\nHost: t"
    for extra in (124, 125, 126, 127, 600):  # MAX_HEADERS (126) lines after the request line
        _agrees(host + b"\r\nX: y" * extra)
    _agrees(b"GET /imp?a=" + b"x" * (MAX_LINE - 30) + b" HTTP/1.1\r\nHost: t")
    _agrees(b"GET /imp?a=" + b"x" * MAX_LINE + b" HTTP/1.1\r\nHost: t")  # left to Python


@_needs_lean
def test_the_c_head_parser_reads_a_browser_pixel() -> None:
    raw = (
        b"GET /imp?aid=7&oid=5 HTTP/1.1\r\nHost: t\r\nUser-Agent: Mozilla/5.0 (X11)\r\n"
        b"Cookie: a=1\r\nCookie: b=2\r\nConnection: keep-alive"
    )
    head = _lean.parse_head(raw)  # type: ignore[union-attr]
    assert head == parse_head_py(raw)
    assert head.headers["cookie"] == "a=1; b=2"
    assert head.raw_query == "aid=7&oid=5"
    assert head.keep_alive


# -- queries ----------------------------------------------------------------------------------

_PARAM_NAMES = [
    "aid", "oid", "sub1", "sub8", "imp_id", "gdpr", "gdpr_consent", "env_id", "dest_id", "id",
    "code", "t", "ancost", "sig", "imp%5Fid", "imp%5fid", "su%62%31", "a+id", "x", "%ff", "%zz",
    "", "cachebuster", "AID",
]  # fmt: skip
_PARAM_VALUES = [
    "1", "", "a+b", "a%20b", "%", "%2", "%zz", "%C3%A9", "%E9", "%ED%A0%80", "%00", "%1F", "%7F",
    "%7f", "%0A", "+", "%2B", "%25", "x" * 128, "x" * 129, "y" * 513, "%C3%A9" * 128,
    "%C3%A9" * 129, "caf\u00e9", "%F0%9F%98%80", "%C2%85", "[IMP_ID]",
]  # fmt: skip

_queries = st.lists(
    st.tuples(
        st.sampled_from(_PARAM_NAMES) | st.text("a%=+&bc", max_size=4),
        st.sampled_from(["=", "", "=="]),
        st.sampled_from(_PARAM_VALUES) | st.text("%aF0+=&\x01 \u00e9", max_size=8),
    ),
    max_size=8,
).map(lambda parts: "&".join(name + eq + value for name, eq, value in parts))


def _split_agrees(raw: str) -> None:
    for known in (query._IMP_PARAMS, query._IMPTR_PARAMS):
        read = _lean.split_query(raw, known, query._LIMITS, query.MAX_ID_CHARS)  # type: ignore[union-attr]
        if read is NotImplemented:
            assert not raw.isascii()
            continue
        values, problems = read
        assert (values, [query.Malformed(n, p) for n, p in problems]) == query.split_py(raw, known)


@_needs_lean
@given(_queries)
@example("aid=1&aid=2&sub1=%E9&sub2=%00&imp%5Fid=x&&=&sub3=" + "z" * 513)
@example("sub1=%C3%A9&sub1=x&gdpr_consent=" + "a" * 4096)
@example("aid=a+b&oid=%2B+&sub1=+")
def test_the_c_query_parser_reads_as_the_python_one(raw: str) -> None:
    _split_agrees(raw)


@_needs_lean
@given(st.text(max_size=60))
def test_the_c_query_parser_agrees_on_any_text(raw: str) -> None:
    _split_agrees(raw)


# -- answers ----------------------------------------------------------------------------------

_header_text = st.sampled_from(
    ["X-Impression-Id", "Set-Cookie", "a", "", "caf\u00e9", "1"]
) | st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)


@_needs_lean
@given(
    st.sampled_from([200, 302, 500, 503]),
    st.lists(st.tuples(_header_text, _header_text), max_size=70),
    st.binary(max_size=50),
    st.sampled_from(["GET", "HEAD"]),
    st.booleans(),
    st.booleans(),
)
def test_the_c_answer_writer_writes_what_the_python_one_does(
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    method: str,
    http10: bool,
    keep_alive: bool,
) -> None:
    answer = PixelAnswer(status, headers, body)
    head = Head(method, "/imp", "", http10, keep_alive, {})
    # one Date for both: a second may tick between the two calls
    with mock.patch.object(front, "_date", return_value="Thu, 03 Dec 2026 22:00:00 GMT"):
        assert render(answer, head) == render_py(answer, head)


@_needs_lean
def test_the_c_answer_writer_writes_a_pixel_answer() -> None:
    answer = gif_answer({"X-Impression-Id": "abc"})
    written = render(answer, Head("GET", "/imp", "", False, True, {}))
    assert written.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: image/gif\r\n")
    assert b"\r\nX-Impression-Id: abc\r\nContent-Length: 43\r\nDate: " in written
    assert written.endswith(b"\r\nServer: tracker\r\n\r\n" + TRANSPARENT_GIF)


@_needs_lean
def test_the_c_module_refuses_a_head_type_that_is_no_tuple() -> None:
    """A wrong type here would make parse_head build a broken object (found in review)."""
    args = (front._SPECIAL, front._JOINERS, front._PATHS, front._METHODS, front._VERSIONS)
    codes = (
        front._HAND_OFF,
        front._LENGTH,
        front._CONNECTION,
        front._HOST,
        front._JOINED,
        front._SINGLE,
    )
    with pytest.raises(TypeError):
        _lean.configure_head(*args, dict, front._TOKEN_CHARS, 126, 32768, codes)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="max_headers"):
        _lean.configure_head(*args, Head, front._TOKEN_CHARS, 600, 32768, codes)  # type: ignore[union-attr]
    assert _lean.parse_head(b"GET /imp HTTP/1.1\r\nHost: t") == Head(  # type: ignore[union-attr]
        "GET", "/imp", "", False, True, {"host": "t"}
    )
