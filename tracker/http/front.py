"""The web process's listening socket: pixel requests answered on a lean path, the rest by aiohttp.

A pixel hit is the whole product's hot path, and aiohttp's request machinery (request and response
objects, router, middleware, its writer) costs several times what recording the hit does. So every
connection starts with ``PixelProtocol``, which reads requests itself: a ``GET``/``HEAD`` of
``/imp`` or ``/imptr`` without a body is parsed here, recorded by ``Pixels.record`` (the same code
aiohttp's pixel handlers call) and answered straight onto the socket. The first request that is
anything else (another path or method, a body, an upgrade, HTTP/2, a header this parser will not
judge) hands the connection to aiohttp for good, with every byte not yet consumed: aiohttp then
routes, validates and answers it as if it had had the connection from the start. A pixel client
(a browser on a page) normally never leaves the lean path; an API client leaves it on its first
request.

Per connection, requests are answered in order (HTTP/1.1 pipelining); reading pauses while more
than ``MAX_BUFFER`` bytes wait. Idle keep-alive connections close after ``KEEPALIVE_S``, and a
connection that sends a partial request for that long is closed too.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Final, NamedTuple, cast

import msgspec
import structlog
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, ContentEncodingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest

from tracker.http import lean_speedups
from tracker.http.access_log import AccessLog
from tracker.http.errors import error_code, error_response
from tracker.http.ingest import APPEND_ERRORS, PIXELS, PendingHit, PixelRequest, Pixels, Recorded
from tracker.http.pixel import PixelAnswer
from tracker.http.record import unsupported_encoding

logger = structlog.get_logger()
_lean = lean_speedups.module()

# The longest pixel URL our parameter limits allow (consent 4,096 + redir 4,096 + subs 8 x 512
# characters + ids), percent-encoded, stays under MAX_LINE: aiohttp gets the same limit for the
# request line and each header line (its default, 8,190, refused valid pixels and big cookies).
MAX_LINE: Final = 32 * 1024
MAX_HEAD: Final = 64 * 1024  # request line and headers; longer goes to aiohttp (its 4xx)
MAX_BUFFER: Final = 256 * 1024  # pipelined bytes read ahead before reading pauses
KEEPALIVE_S: Final = 75.0  # idle keep-alive connections close after it, on both paths
SWEEP_S: Final = 5.0
SHUTDOWN_GRACE_S: Final = 10.0  # for hits being recorded when the process stops
_PATHS: Final = frozenset(("/imp", "/imptr"))
_METHODS: Final = frozenset(("GET", "HEAD"))
_VERSIONS: Final = frozenset(("HTTP/1.1", "HTTP/1.0"))
# A request with one of these is not a plain pixel GET: aiohttp handles it. (aiohttp's C parser
# reads Proxy-Connection as Connection, refuses Sec-WebSocket-Key1, and refuses a Content-Encoding
# it has no decoder for even without a body.)
_HAND_OFF_HEADERS: Final = frozenset(
    (
        "transfer-encoding",
        "upgrade",
        "expect",
        "http2-settings",
        "proxy-connection",
        "sec-websocket-key1",
        "content-encoding",
    )
)
# Names aiohttp refuses to see twice (its 400 "Duplicate header"): repeated, aiohttp handles it
_SINGLE_HEADERS: Final = frozenset(
    (
        "content-location",
        "content-range",
        "content-type",
        "etag",
        "max-forwards",
        "server",
        "user-agent",
    )
)
MAX_HEADERS: Final = 126  # header lines; more go to aiohttp (its limit, as its parsers count)
# Headers whose every line counts (not only the first), joined with these
_JOINERS: Final = {
    # a proxy may add its own line instead of appending to the client's: all lines count, in
    # order (RFC 9110 5.3), or the client's first line would pass for the proxy's
    "x-forwarded-for": ", ",
    # HTTP/2 and /3 clients send one field per cookie (RFC 9113 8.2.3): a proxy that does not
    # join them, or a client sending two lines, must not hide the opt-out cookie in the second
    "cookie": "; ",
}
# The header names _fields looks at, by what it does with them
_HAND_OFF, _LENGTH, _CONNECTION, _HOST, _JOINED, _SINGLE = range(6)
_SPECIAL: Final = {
    **dict.fromkeys(_HAND_OFF_HEADERS, _HAND_OFF),
    **dict.fromkeys(_SINGLE_HEADERS, _SINGLE),
    "content-length": _LENGTH,
    "connection": _CONNECTION,
    "host": _HOST,
    **dict.fromkeys(_JOINERS, _JOINED),
}
_REASONS: Final = {
    200: "OK",
    302: "Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
# RFC 9110 token characters (a header name): a name is a token when stripping them leaves nothing
_TOKEN_CHARS: Final = (
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
_EMPTY_LINES: Final = re.compile(rb"(?:\r\n)+")
_MISSING_DECODER: Final = re.compile(r"\((\w+)\)\. Please install")
_INTERNAL_ERROR: Final = msgspec.json.encode(
    {"error": {"code": "internal_error", "message": "an internal error; it was logged"}}
)


class Head(NamedTuple):
    """A pixel request's head, as the lean path accepts it."""

    method: str
    path: str
    raw_query: str
    http10: bool
    keep_alive: bool
    # by lowercase name; the first of repeated ones (X-Forwarded-For, Cookie: all lines, joined)
    headers: dict[str, str]


def parse_head(raw: bytes) -> Head | None:
    """``parse_head_py``'s answer: from the C parser where it reads the head (an ASCII one, the
    usual), else from ``parse_head_py``."""
    if _lean is not None:
        head = _lean.parse_head(raw)
        if head is not NotImplemented:
            return cast(Head | None, head)
    return parse_head_py(raw)


def parse_head_py(raw: bytes) -> Head | None:
    """The request line and headers (without the blank line), or None for anything the lean
    path leaves to aiohttp (which answers it, or refuses it with its own 400): not a pixel path,
    not GET/HEAD, not HTTP/1.x, a body or a framing header, an HTTP/1.1 request without exactly one
    Host (or any with two), a header aiohttp refuses twice given twice, HTTP/1.0 with both
    ``close`` and ``keep-alive``, over ``MAX_HEADERS`` headers, a line over ``MAX_LINE`` bytes,
    a bare CR or LF or another control character (a tab too, though legal in a value: aiohttp
    reads those few), a header name
    that is not a token, a folded line, bytes that are not UTF-8 outside the query (UTF-8 text
    in the query is fine, in the path not; other bytes in the query are read percent-encoded, so
    the hit is recorded with the parameter holding them malformed, and answered its image).
    Strict on purpose: a head both parsers would not read alike could smuggle a request past a
    proxy in front."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        escaped = _escape_query(raw)
        if escaped is None:
            return None
        text, raw = escaped, escaped.encode()  # its lines are measured as a browser sends them
    lines = text.split("\r\n")
    # With the CRLFs gone, any CR, LF or other control character left (a tab too) is not
    # printable: one C pass instead of a regex. Then the number of lines, and the longest (in
    # bytes, as aiohttp counts).
    if (
        not "".join(lines).isprintable()
        or len(lines) > MAX_HEADERS + 1
        or (len(raw) > MAX_LINE and max(map(len, raw.split(b"\r\n"))) > MAX_LINE)
    ):
        return None
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    path, _, query = target.partition("?")
    if path not in _PATHS or method not in _METHODS or version not in _VERSIONS:
        return None
    # A query may carry raw UTF-8 (a non-browser client that did not percent-encode): it is
    # read as the decoded text it is; aiohttp's parser would refuse it with a 400.
    if not path.isascii() or not target.isprintable() or "#" in target:
        return None
    fields = _fields(lines[1:])
    if fields is None:
        return None
    headers, tokens, hosts = fields
    http10 = version == "HTTP/1.0"
    if hosts > 1 or (not http10 and hosts != 1):  # never two (RFC 9112 3.2)
        return None
    if http10 and "close" in tokens and "keep-alive" in tokens:  # aiohttp's parsers disagree
        return None
    keep_alive = "keep-alive" in tokens if http10 else "close" not in tokens
    return Head(method, path, query, http10, keep_alive, headers)


if _lean is not None:  # the C parser reads by the same rules
    _lean.configure_head(
        _SPECIAL,
        _JOINERS,
        _PATHS,
        _METHODS,
        _VERSIONS,
        Head,
        _TOKEN_CHARS,
        MAX_HEADERS,
        MAX_LINE,
        (_HAND_OFF, _LENGTH, _CONNECTION, _HOST, _JOINED, _SINGLE),
    )


_NON_ASCII: Final = re.compile(rb"[\x80-\xff]")
_UNDECODED: Final = re.compile("[\udc80-\udcff]")  # surrogateescape's stand-ins for bad bytes


def _escape_query(raw: bytes) -> str | None:
    """The head as text with the query's non-ASCII bytes percent-encoded (as a browser sends
    them), when the bytes that are not UTF-8 are all in the query; else None. Browsers never send
    such bytes; a client that writes Latin-1 into a URL does, and its hit still gets its image."""
    line_end = raw.find(b"\r\n")
    line, rest = (raw, b"") if line_end < 0 else (raw[:line_end], raw[line_end:])
    query_at, version_at = line.find(b"?"), line.rfind(b" ")
    if query_at < 0 or version_at < query_at:
        return None
    start, query, end = line[:query_at], line[query_at:version_at], line[version_at:]
    # what is UTF-8 in it must be printable (no NEL, no U+2028), as in a head that is all UTF-8
    if not _UNDECODED.sub("", query.decode("utf-8", "surrogateescape")).isprintable():
        return None
    try:
        return "".join(
            (
                start.decode("ascii"),
                _NON_ASCII.sub(lambda m: b"%%%02X" % m[0][0], query).decode("ascii"),
                end.decode("ascii"),
                rest.decode("utf-8"),
            )
        )
    except UnicodeDecodeError:
        return None


def _fields(lines: list[str]) -> tuple[dict[str, str], set[str], int] | None:
    """(values by lowercase name, the first of repeated ones but X-Forwarded-For's and Cookie's
    lines joined; Connection tokens; number of Host headers), or None to hand off. A plain dict:
    the pixel path looks names up in lowercase."""
    headers: dict[str, str] = {}
    tokens: set[str] = set()
    hosts = 0
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name.strip(_TOKEN_CHARS):
            return None  # no colon, obs-fold, whitespace before the colon, not a token
        value = value.strip(" \t")
        key = name.lower()
        special = _SPECIAL.get(key)
        if special is not None:  # one lookup for the few names that need a look
            if special == _HAND_OFF:
                return None
            if special in (_LENGTH, _SINGLE):
                if key in headers or (special == _LENGTH and value != "0"):
                    return None  # a body, or a name aiohttp refuses twice
            elif special == _CONNECTION:
                if not value.isascii():  # "\u212aeep-alive".lower() is "keep-alive"
                    return None
                tokens.update(t.strip(" \t").lower() for t in value.split(","))
            elif special == _HOST:
                hosts += 1
            elif special == _JOINED and key in headers:
                headers[key] = f"{headers[key]}{_JOINERS[key]}{value}"
                continue
        if key not in headers:
            headers[key] = value
    return headers, tokens, hosts


class _Date:
    """The ``Date`` header, formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def __call__(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True)
        return self._value


_date = _Date()


_status_lines: dict[int, str] = {}


def _status_line(status: int) -> str:
    line = _status_lines.get(status)
    if line is None:
        line = _status_lines[status] = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
    return line


_SERVER_LINE: Final = "Server: tracker\r\n"


def render(answer: PixelAnswer, head: Head) -> bytes:
    """The response's bytes: status line, headers, Content-Length, Date, Server, body (from the
    C module when it is built; ``render_py`` is its reference)."""
    if _lean is not None:
        data = _lean.render(
            _status_line(answer.status),
            answer.headers,
            _SERVER_LINE,
            _date(),
            _connection_line(head),
            answer.body,
            head.method == "HEAD",
        )
        if data is not NotImplemented:  # over 64 headers: never a pixel's answer
            return cast(bytes, data)
    return render_py(answer, head)


def render_py(answer: PixelAnswer, head: Head) -> bytes:
    data = "".join(
        [
            _status_line(answer.status),
            *[f"{name}: {value}\r\n" for name, value in answer.headers],
            f"Content-Length: {len(answer.body)}\r\nDate: {_date()}\r\n{_SERVER_LINE}",
            _connection_line(head),
            "\r\n",
        ]
    ).encode()
    return data if head.method == "HEAD" else data + answer.body


def _connection_line(head: Head) -> str:
    if not head.keep_alive:
        return "Connection: close\r\n"
    if head.http10:
        return "Connection: keep-alive\r\n"
    return ""


_BAD_LINE_BODY: Final = msgspec.json.encode(
    {"error": {"code": "bad_request", "message": "the request line has no HTTP/1.x version"}}
)
_BAD_LINE_HEADERS: Final = (
    "Content-Type: application/json; charset=utf-8\r\n"
    f"Content-Length: {len(_BAD_LINE_BODY)}\r\nConnection: close\r\nServer: tracker\r\n"
)


def _not_http1_line(buffer: bytes) -> bool:
    """A complete first line that is no HTTP/1.x request line (HTTP/0.9 style ``GET /imp``):
    no headers will follow, so waiting for them would hold the connection until it idles out."""
    line_end = buffer.find(b"\r\n")
    return line_end >= 0 and not buffer[:line_end].endswith((b" HTTP/1.1", b" HTTP/1.0"))


class Front:
    """The protocol factory of the web socket (``loop.create_server(front, ...)``)."""

    def __init__(
        self, app: web.Application, fallback: Callable[[], JsonErrorHandler], access_log: AccessLog
    ) -> None:
        self.app = app
        self.fallback = fallback  # aiohttp's factory: it gets every connection handed over
        self.access_log = access_log
        self.connections: set[PixelProtocol] = set()
        self.recovering: set[asyncio.Task[None]] = set()  # hits being spooled
        self._pixels: Pixels | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop  # set on the first connection

    @property
    def pixels(self) -> Pixels:
        if self._pixels is None:  # set by ingest_ctx during the runner's setup
            self._pixels = self.app[PIXELS]
        return self._pixels

    def __call__(self) -> asyncio.Protocol:
        if self._sweeper is None:
            self.loop = asyncio.get_running_loop()
            self._sweeper = self.loop.create_task(self._sweep())
        return PixelProtocol(self)

    async def _sweep(self) -> None:
        """Close connections without an answer for KEEPALIVE_S (idle, or stuck in a partial
        request, however slowly it trickles in) that are not recording a hit."""
        while True:
            await asyncio.sleep(SWEEP_S)
            deadline = time.monotonic() - KEEPALIVE_S
            for conn in list(self.connections):
                if not conn.busy and conn.last_active < deadline:
                    conn.close()

    async def shutdown(self, grace_s: float) -> None:
        """Close idle connections now; let requests being recorded finish (up to ``grace_s``)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        deadline = time.monotonic() + grace_s
        while True:
            for conn in list(self.connections):
                if not conn.busy:
                    conn.close()
            if not self.connections or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.close()
        if self.recovering:  # their events must reach the spool before the app closes it
            await asyncio.wait(list(self.recovering), timeout=SHUTDOWN_GRACE_S)
        self.access_log.flush()


class PixelProtocol(asyncio.Protocol):
    """One client connection while it asks for pixels (see the module docstring)."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.remote = ""
        self.buffer = b""
        self.busy = False  # a request is being recorded; later ones wait in the buffer
        self.paused = False  # reading paused: MAX_BUFFER bytes wait, or the client reads slowly
        self.write_paused = False  # the transport's buffer is full: start no new request
        self.eof = False  # the client half-closed: answer what is buffered, then close
        # the connection's start, then its last answer: bytes alone do not count, or a client
        # trickling a byte a minute (a head, empty lines) would hold the connection for ever
        self.last_active = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else ""
        self.front.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.connections.discard(self)
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buffer = self.buffer + data if self.buffer else data
        if not self.busy and not self.write_paused:
            self._next()
        elif len(self.buffer) > MAX_BUFFER:
            self._pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        if not self.busy and not self.write_paused:
            self._next()  # may start a buffered request, close, or hand over (aiohttp gets EOF)
        # True keeps the socket open to answer what was asked; _next closes it afterwards
        return self.busy or self.write_paused

    def pause_writing(self) -> None:
        self.write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.busy:
            self._resume_reading()
            self._next()

    def _pause_reading(self) -> None:
        if self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.transport is not None and self.paused and not self.eof:
            self.paused = False
            self.transport.resume_reading()

    def _next(self) -> None:
        """Start the next complete request in the buffer, or hand the connection over; after
        the client's EOF, close once nothing complete is left."""
        buffer = self.buffer
        # empty lines before a request line are skipped (RFC 9112 2.2), in one pass
        if buffer.startswith(b"\r\n") and (skipped := _EMPTY_LINES.match(buffer)) is not None:
            buffer = self.buffer = buffer[skipped.end() :]
        end = buffer.find(b"\r\n\r\n")
        if end < 0 or end > MAX_HEAD:
            if _not_http1_line(buffer):  # aiohttp would wait for headers too: answer now
                self._refuse_line()
            elif len(buffer) > MAX_HEAD or b"\n\n" in buffer or (buffer and buffer[0] not in b"GH"):
                self._hand_off()
            elif self.eof:
                self.close()
            return
        head = parse_head(buffer[:end])
        if head is None:
            self._hand_off()
            return
        self.buffer = buffer[end + 4 :]
        self.busy = True
        self._start(head)

    def _start(self, head: Head) -> None:
        """Record the hit; answer from the append's callback (no task per request)."""
        started = time.perf_counter()
        request = PixelRequest(
            head.path, head.raw_query, head.headers, self.remote, "http", head.method
        )
        pixels = self.front.pixels
        try:
            pending, appended = pixels.submit(request)
        except Exception as exc:
            self._failed(head, started, exc)
            return
        appended.add_done_callback(functools.partial(self._appended, head, started, pending))

    def _appended(
        self, head: Head, started: float, pending: PendingHit, appended: asyncio.Future[Any]
    ) -> None:
        if appended.cancelled():  # shutting down
            self.close()
            return
        exc = appended.exception()
        try:
            if exc is None:
                recorded = self.front.pixels.finish(pending, appended.result())
            elif isinstance(exc, APPEND_ERRORS):  # Redis failed: spool it (a rare, slow path)
                task = self.front.loop.create_task(self._recover(head, started, pending, exc))
                self.front.recovering.add(task)
                task.add_done_callback(self.front.recovering.discard)
                return
            else:
                raise exc
        except Exception as exc:
            self._failed(head, started, exc)
            return
        self._respond(head, started, recorded)

    async def _recover(
        self, head: Head, started: float, pending: PendingHit, exc: BaseException
    ) -> None:
        try:
            recorded = await self.front.pixels.recover(pending, exc)
        except Exception as exc:
            self._failed(head, started, exc)
            return
        self._respond(head, started, recorded)

    def _failed(self, head: Head, started: float, exc: BaseException) -> None:
        """A bug: log it with its traceback, answer like the aiohttp middleware, keep serving."""
        logger.error("request_failed", method=head.method, path=head.path, exc_info=exc)
        answer = PixelAnswer(500, [("Content-Type", "application/json")], _INTERNAL_ERROR)
        request_id = head.headers.get("x-request-id", "")
        self._send(head, started, answer, request_id, {})

    def _respond(self, head: Head, started: float, recorded: Recorded) -> None:
        if not self.front.access_log.enabled:  # no line to write: skip building its fields
            self._send(head, started, recorded.answer, "", {})
            return
        fields = {
            "impression_id": recorded.impression_id,
            "verdict": recorded.verdict,
            "reason": recorded.reason,
            "tenant": recorded.tenant,
        }
        request_id = head.headers.get("x-request-id") or recorded.impression_id
        self._send(head, started, recorded.answer, request_id, fields)

    def _send(
        self,
        head: Head,
        started: float,
        answer: PixelAnswer,
        request_id: str,
        fields: dict[str, Any],
    ) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(render(answer, head))
        self.front.access_log.request(
            request_id, head.method, head.path, answer.status, started, fields
        )
        self.busy = False
        self.last_active = time.monotonic()
        if transport is None or transport.is_closing():
            return
        if not head.keep_alive:
            transport.close()
            return
        if self.write_paused:  # resume_writing() goes on
            return
        self._resume_reading()
        if self.buffer or self.eof:
            self._next()

    def _refuse_line(self) -> None:
        """400 to a request line without an HTTP/1.x version, and close: no headers follow it."""
        if self.transport is not None:
            head = f"HTTP/1.1 400 Bad Request\r\n{_BAD_LINE_HEADERS}Date: {_date()}\r\n\r\n"
            self.transport.write(head.encode() + _BAD_LINE_BODY)
            self.transport.close()

    def _hand_off(self) -> None:
        """Give the connection, and what it sent that is not consumed yet, to aiohttp."""
        transport = self.transport
        if transport is None:
            return
        self.front.connections.discard(self)
        self.transport = None
        protocol = self.front.fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self.paused and not self.eof:
            transport.resume_reading()
        if self.buffer:
            protocol.data_received(self.buffer)
            self.buffer = b""
        if self.eof and not protocol.eof_received():
            transport.close()


class JsonErrorHandler(RequestHandler):
    """aiohttp's protocol, answering the errors it raises itself (a malformed request line or
    header, a line over the limit, a Content-Encoding it cannot decode) in the API's JSON shape
    rather than as plain text. Its handlers' errors are the middleware's (``http.app``).

    After the client's half-close (``peer_closed``: seen here, or by the lean path before it
    handed the connection over) the requests it sent are answered and the connection closes
    with the last answer; aiohttp's own ``eof_received`` closes at once, dropping them. A
    connection whose answers stop coming (a body that never arrives) closes ``KEEPALIVE_S``
    after the half-close or its last answer. Reads aiohttp's private ``_request_count`` and
    ``_messages`` (checked at start-up by ``FrontRunner.setup``)."""

    peer_closed = False
    _eof_timer: asyncio.TimerHandle | None = None
    _answered = 0

    def eof_received(self) -> bool:  # type: ignore[override]
        """The client half-closed: keep the connection while requests it sent are unanswered.
        Called again when aiohttp resumes reading after EOF (its queue of 32 had filled)."""
        self.peer_closed = True
        if self._request_count == self._answered:  # every request read is answered
            return False
        self._arm_eof_timer()
        return True

    def _arm_eof_timer(self) -> None:
        if self._eof_timer is not None:
            self._eof_timer.cancel()
        if self.transport is not None:
            loop = asyncio.get_running_loop()  # called from the loop (a callback, a task)
            self._eof_timer = loop.call_later(KEEPALIVE_S, self.force_close)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._eof_timer is not None:  # its handle would keep this protocol alive
            self._eof_timer.cancel()
            self._eof_timer = None
        super().connection_lost(exc)

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if self.peer_closed and not self._messages:  # the last request the client sent
            resp.force_close()
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._answered += 1
            if self._eof_timer is not None:  # answers are coming: the deadline moves on
                self._arm_eof_timer()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp logs an error with its traceback when the rest of a body it drains after the
        answer cannot be decoded (a broken gzip stream): the client's mistake, answered already
        (400 ``invalid_body``), that any client could repeat to flood the log. One info line."""
        exc = kw.get("exc_info")
        if isinstance(exc, RequestPayloadError | ContentEncodingError):
            logger.info("request_body_unreadable", error=str(exc.__cause__ or exc))
            return
        super().log_exception(*args, **kw)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp's: too late for another response
            raise ConnectionError("a response was sent already; cannot send the error")
        if status >= 500:
            # a bug: its traceback in the structured log (aiohttp's own goes to stderr as text)
            logger.error("request_failed", path=request.path, exc_info=exc)
            response = error_response(
                status, error_code(status), "an internal error; it was logged"
            )
        elif isinstance(exc, ContentEncodingError):
            # aiohttp's parser refuses br or zstd without their package as soon as the headers
            # are in (the request it passes here has none): "... brotli (br). Please install"
            missing = _MISSING_DECODER.search(str(exc))
            if missing:
                response = unsupported_encoding(missing.group(1)).response()
            else:  # an encoding it reads, but the bytes are not in it
                text = f"the request body is unreadable: {exc.message}"
                response = error_response(400, "invalid_body", text)
        else:  # the client's mistake: one line, no traceback (any client could flood the log)
            text = message or HTTPStatus(status).phrase
            # not even HTTP (TLS or a scanner on the port): debug, as aiohttp has it
            log = logger.debug if isinstance(exc, BadHttpMethod) else logger.info
            log("bad_request", status=status, error=text, remote=request.remote)
            response = error_response(status, error_code(status), text)
        response.force_close()
        return response


class FrontRunner(web.AppRunner):
    """An ``AppRunner`` whose sites listen through a ``Front``: its sites (``web.TCPSite``, the
    test server's ``SockSite``) take ``runner.server`` as their protocol factory."""

    def __init__(self, app: web.Application, pixel_log: AccessLog, **kwargs: Any) -> None:
        kwargs.setdefault("max_line_size", MAX_LINE)
        kwargs.setdefault("max_field_size", MAX_LINE)
        # idle keep-alive connections close alike on both paths (aiohttp 3.14's default: 3,630 s)
        kwargs.setdefault("keepalive_timeout", KEEPALIVE_S)
        super().__init__(app, **kwargs)
        self._pixel_log = pixel_log
        self.front: Front | None = None

    async def setup(self) -> None:
        await super().setup()
        server = super().server
        assert server is not None
        # What web.Server() makes, answering errors in JSON. Its private attributes are read
        # here, once: an aiohttp without them fails at start-up, not on a connection.
        loop, kwargs = server._loop, dict(server._kwargs)
        if not {"_messages", "_request_count"} <= set(RequestHandler.__slots__):
            raise RuntimeError("this aiohttp's RequestHandler lacks what JsonErrorHandler reads")

        def handler() -> JsonErrorHandler:
            return JsonErrorHandler(server, loop=loop, **kwargs)

        self.front = Front(self.app, handler, self._pixel_log)

    @property
    def server(self) -> Any:  # the sites' protocol factory
        return self.front

    async def shutdown(self) -> None:
        if self.front is not None:  # before the app's cleanup closes the store and the spool
            await self.front.shutdown(SHUTDOWN_GRACE_S)
        await super().shutdown()
