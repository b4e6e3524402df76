"""A lean, pipelined Redis connection for the append path.

redis-py spends about 100 µs of CPU per command on its connection pool, health checks, timeouts
and reply handling: more than the group-commit script call it carries costs Redis. ``Pipe`` is one
connection of its own (an asyncio protocol and hiredis's reply parser): commands issued in one
event-loop tick leave in one ``write``, replies are matched to callers in order. It has the same
failure contract as the client ``connection.connect`` builds: connection errors and timeouts are
retried ``RETRIES`` times with jittered backoff by re-sending the command (so, as there, only
commands that are idempotent under re-execution belong here: the append script with its group
token), then raised as ``redis.exceptions.ConnectionError`` / ``TimeoutError``; error replies are
raised as ``ResponseError`` (``NoScriptError`` for NOSCRIPT).

Only plain TCP and unix-socket URLs get a pipe (``Pipe.for_client``); for TLS (``rediss://``) the
event store keeps using redis-py.
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from collections import deque
from typing import Any, Final

import hiredis
import redis.asyncio as redis
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    NoScriptError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tracker.eventstore.connection import (
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    CONNECT_TIMEOUT_S,
    RETRIES,
    SOCKET_TIMEOUT_S,
)

WATCH_S: Final = 1.0  # how often a connection checks its oldest unanswered command
_PIPES: weakref.WeakKeyDictionary[redis.Redis, Pipe | None] = weakref.WeakKeyDictionary()


def pack(args: tuple[Any, ...], tail: bytes = b"", tail_count: int = 0) -> bytes:
    """One command in RESP: an array of bulk strings (str as UTF-8, numbers as decimal).
    hiredis's C packer, then ``tail``: ``tail_count`` more arguments already in RESP (the
    append path packs its events itself: ``store._packed_events``)."""
    try:
        packed: bytes = hiredis.pack_command(args)
    except TypeError:
        raise TypeError(f"cannot send {args!r:.200} to Redis") from None
    if tail_count:
        packed = b"*%d%b%b" % (len(args) + tail_count, packed[packed.index(b"\r\n") :], tail)
    return packed


def _raise_reply_error(reply: hiredis.ReplyError) -> None:
    message = str(reply)
    if message.startswith("NOSCRIPT"):
        raise NoScriptError(message)
    if message.startswith("LOADING"):  # a connection error for redis-py too: retried
        raise BusyLoadingError(message)
    if message.startswith(("WRONGPASS", "NOAUTH")):
        raise AuthenticationError(message)
    raise ResponseError(message)


class _Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.outgoing: list[bytes] = []
        self.lost = False
        self._watch: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        self._watch = self.loop.call_later(WATCH_S, self._check)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if not self.waiting:  # a reply nobody asked for: the stream is out of step
                self.close(RedisConnectionError("unexpected reply from Redis"))
                return
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def close(self, error: Exception) -> None:
        """Fail every unanswered command with ``error`` and drop the connection."""
        self.lost = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.abort()
            self.transport = None

    def send(self, command: bytes) -> asyncio.Future[Any]:
        future = self.loop.create_future()
        if not self.outgoing:
            self.loop.call_soon(self._write)
        self.outgoing.append(command)
        self.waiting.append((future, time.monotonic()))
        return future

    def _write(self) -> None:
        data = b"".join(self.outgoing)
        self.outgoing.clear()
        if self.transport is not None and not self.lost:
            self.transport.write(data)

    def _check(self) -> None:
        if self.waiting and time.monotonic() - self.waiting[0][1] > SOCKET_TIMEOUT_S:
            self.close(RedisTimeoutError(f"no reply from Redis within {SOCKET_TIMEOUT_S:.0f} s"))
            return
        self._watch = self.loop.call_later(WATCH_S, self._check)


class Pipe:
    """One pipelined connection, opened on first use and again after it is lost."""

    def __init__(
        self,
        *,
        host: str = "",
        port: int = 0,
        path: str = "",
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
    ) -> None:
        self.host, self.port, self.path = host, port, path
        self.username, self.password, self.db = username, password, db
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._generation = 0  # bumped by close(): a connection opened across it is dropped

    @classmethod
    def for_client(cls, client: redis.Redis) -> Pipe | None:
        """The pipe to the server ``client`` talks to (one per client, shared by every event
        store on it), or None when it is not plain TCP / unix."""
        if client in _PIPES:
            return _PIPES[client]
        pipe = cls._for_pool(client.connection_pool)
        _PIPES[client] = pipe
        return pipe

    @classmethod
    def _for_pool(cls, pool: redis.ConnectionPool) -> Pipe | None:
        kw = pool.connection_kwargs
        user, password, db = kw.get("username"), kw.get("password"), int(kw.get("db") or 0)
        if pool.connection_class is redis.UnixDomainSocketConnection:
            return cls(path=str(kw["path"]), username=user, password=password, db=db)
        if pool.connection_class is redis.Connection:
            host, port = str(kw.get("host", "localhost")), int(kw.get("port", 6379))
            return cls(host=host, port=port, username=user, password=password, db=db)
        return None

    async def call(self, *args: Any, tail: bytes = b"", tail_count: int = 0) -> Any:
        """Send one command (``args``, then ``tail_count`` arguments already packed in ``tail``);
        its reply (hiredis types: bytes, int, list, None)."""
        command = pack(args, tail, tail_count)
        attempt = 0
        while True:
            try:
                conn = self._conn
                if conn is None or conn.lost:
                    conn = await self._connect()
                reply = await conn.send(command)
                if isinstance(reply, hiredis.ReplyError):
                    _raise_reply_error(reply)  # LOADING is a connection error: retried
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if attempt >= RETRIES:
                    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
                        raise
                    raise RedisConnectionError(f"cannot reach Redis: {exc}") from exc
                attempt += 1
                delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)
                await asyncio.sleep(random.uniform(0, delay))
                continue
            return reply

    async def _connect(self) -> _Connection:
        """The live connection; concurrent callers share one connection attempt."""
        if self._connecting is None:
            loop = asyncio.get_running_loop()
            connecting = self._connecting = loop.create_future()
            generation = self._generation
            try:
                conn = await asyncio.wait_for(self._open(loop), CONNECT_TIMEOUT_S)
            except BaseException as exc:
                error: Exception = RedisConnectionError("connection attempt cancelled")
                if isinstance(exc, TimeoutError):
                    error = RedisTimeoutError("timed out connecting to Redis")
                elif isinstance(exc, Exception):
                    error = exc
                connecting.set_exception(error)  # the callers sharing this attempt retry
                connecting.exception()  # retrieved: no "never retrieved" warning
                self._connecting = None
                if isinstance(exc, asyncio.CancelledError):
                    raise  # cancellation is the caller's, not a connection error to retry
                raise error from exc
            self._connecting = None
            if self._generation != generation:  # close() ran meanwhile: do not keep this one
                conn.close(RedisConnectionError("pipe closed"))
                connecting.set_exception(RedisConnectionError("pipe closed"))
                connecting.exception()
                raise RedisConnectionError("pipe closed")
            self._conn = conn
            connecting.set_result(conn)
            return conn
        return await asyncio.shield(self._connecting)

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        if self.path:
            _, conn = await loop.create_unix_connection(lambda: _Connection(loop), self.path)
        else:
            _, conn = await loop.create_connection(lambda: _Connection(loop), self.host, self.port)
        try:
            if self.password:
                user = (self.username,) if self.username else ()
                reply = await conn.send(pack(("AUTH", *user, self.password)))
                if isinstance(reply, hiredis.ReplyError):
                    raise AuthenticationError(str(reply))
            if self.db:
                reply = await conn.send(pack(("SELECT", self.db)))
                if isinstance(reply, hiredis.ReplyError):
                    raise ResponseError(str(reply))
        except BaseException:  # AUTH/SELECT refused, timed out or cancelled: drop the socket
            conn.close(RedisConnectionError("closed before use"))
            raise
        return conn

    def close(self) -> None:
        """Drop the connection, and one being opened now; a later call opens a new one."""
        self._generation += 1
        if self._conn is not None:
            self._conn.close(RedisConnectionError("pipe closed"))
            self._conn = None


def close_pipe(client: redis.Redis) -> None:
    """Close the pipe of ``client`` if it has one (before closing the client itself)."""
    pipe = _PIPES.get(client)
    if pipe is not None:
        pipe.close()
