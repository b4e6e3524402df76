"""A TCP proxy in front of redis-server that can forward a command and then drop its reply."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from tracker.eventstore.connection import connect
from tracker.eventstore.store import EventStore


class ReplyDroppingProxy:
    """Forwards bytes both ways; while ``drops`` > 0, a client chunk containing ``trigger`` is
    forwarded to Redis, Redis's reply is swallowed, and the client's connection is cut: the
    command ran, but the client never hears so, and its retry re-sends it."""

    def __init__(self, upstream_port: int, trigger: bytes = b"EVALSHA", drops: int = 1) -> None:
        self.upstream_port = upstream_port
        self.trigger = trigger
        self.drops = drops
        self.dropped = 0
        self.server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._pipe(c_reader, c_writer)
        finally:
            self._handlers.discard(task)

    async def _pipe(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        u_reader, u_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        drop_reply = asyncio.Event()

        async def upstream() -> None:
            while chunk := await c_reader.read(65536):
                if self.drops > 0 and self.trigger in chunk.upper():
                    self.drops -= 1
                    drop_reply.set()
                u_writer.write(chunk)
                await u_writer.drain()

        async def downstream() -> None:
            while chunk := await u_reader.read(65536):
                if drop_reply.is_set():
                    self.dropped += 1
                    return  # swallow the reply and hang up on the client
                c_writer.write(chunk)
                await c_writer.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for writer in (c_writer, u_writer):
                writer.close()
            for writer in (c_writer, u_writer):
                with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                    await writer.wait_closed()


@contextlib.asynccontextmanager
async def proxied_store(
    upstream_port: int, drops: int
) -> AsyncIterator[tuple[ReplyDroppingProxy, EventStore]]:
    """An EventStore whose connections go through a reply-dropping proxy to ``upstream_port``."""
    proxy = ReplyDroppingProxy(upstream_port, drops=drops)
    await proxy.start()
    client = connect(f"redis://127.0.0.1:{proxy.port}/0")
    store = EventStore(client, partitions=4)
    try:
        yield proxy, store
    finally:
        store.close()
        await client.aclose()
        await proxy.stop()
