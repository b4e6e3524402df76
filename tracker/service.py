"""Process boot: find or start Redis, check it, open the event store; run web and actors."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import AsyncIterator
from typing import Final

import redis.asyncio as redis
import structlog
from aiohttp import web

from tracker.actors.supervisor import run_actor
from tracker.eventstore.connection import check_server, connect
from tracker.eventstore.embedded import EmbeddedRedis, wait_for_url_file
from tracker.eventstore.store import EventStore
from tracker.http.access_log import AccessLog
from tracker.http.app import create_app
from tracker.http.front import FrontRunner
from tracker.settings import Settings

logger = structlog.get_logger()

GC_YOUNG_THRESHOLD = 100_000  # net tracked allocations between young collections (default: 700)


def install_stop_handlers(stopping: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)


async def resolve_redis_url(settings: Settings) -> str:
    """REDIS_URL, else the embedded server that `tracker redis` / `tracker dev` runs."""
    if settings.redis_url:
        return settings.redis_url
    return await wait_for_url_file(settings.data_dir)


# On shutdown, how long the appends still in flight may take to get their answers. A hung Redis
# would otherwise hold the process for each call's timeouts times its retries (minutes). Leaving
# them is what a crash does: a pixel's hit is in the spool by then (its call fenced when it
# drains), a batch request was not answered 2xx, an actor's step is re-run after its checkpoint.
SHUTDOWN_DRAIN_S: Final = 10.0


@contextlib.asynccontextmanager
async def open_store(
    settings: Settings, url: str, *, drain_timeout_s: float = SHUTDOWN_DRAIN_S
) -> AsyncIterator[EventStore]:
    client: redis.Redis = connect(url)
    try:
        await check_server(client)
        store = EventStore(
            client, settings.partitions, idempotency_ttl_s=settings.idempotency_ttl_seconds
        )
        await store.check_partitions()
        try:
            yield store
            try:
                await asyncio.wait_for(store.drain(), drain_timeout_s)
            except TimeoutError:
                logger.warning(
                    "store_drain_abandoned",
                    message=f"appends still unanswered after {drain_timeout_s:.0f} s; "
                    "left as a crash leaves them",
                )
        finally:
            store.close()
    finally:
        await client.aclose()


def tune_gc() -> None:
    """Once started. Start-up objects (modules, the configuration copy) never become garbage: keep
    the cyclic collector from re-scanning them, and let it run less often on the many short-lived
    objects of a pixel, a batch request or a projection batch (none of which form cycles). The
    young threshold counts tracked objects allocated and not yet freed: at 100,000 a batch
    request's ~15,000 (its per-item tuples) are freed before a collection would scan them (at
    10,000 that scan was ~5 % of its web CPU), and so are a projection batch's events and ops (at
    the default 700, collections were ~20 % of the impression lookup's fold)."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


async def serve_web(
    store: EventStore, settings: Settings, stopping: asyncio.Event, *, announce: bool = False
) -> None:
    app = create_app(store, settings)
    access_log = AccessLog(settings.log_level, settings.log_format)
    runner = FrontRunner(app, access_log, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_port=True)
    await site.start()
    tune_gc()
    url = f"http://{settings.host}:{settings.port}"
    logger.info("web_started", url=url)
    if announce:
        print(f"tracker is running at {url}  (Ctrl-C to stop)", flush=True)
    try:
        await stopping.wait()
    finally:
        await runner.cleanup()
        logger.info("web_stopped")


async def web_main(settings: Settings) -> None:
    stopping = asyncio.Event()
    install_stop_handlers(stopping)
    async with open_store(settings, await resolve_redis_url(settings)) as store:
        await serve_web(store, settings, stopping)


async def actor_main(settings: Settings, name: str) -> None:
    stopping = asyncio.Event()
    install_stop_handlers(stopping)
    async with open_store(settings, await resolve_redis_url(settings)) as store:
        tune_gc()
        await run_actor(name, store, stopping, batch_size=settings.batch_size, settings=settings)


async def redis_main(settings: Settings) -> None:
    stopping = asyncio.Event()
    install_stop_handlers(stopping)
    server = EmbeddedRedis(
        settings.data_dir, port=settings.redis_port, appendfsync=settings.appendfsync
    )
    server.spawn()
    await asyncio.to_thread(server.wait_ready)
    print(f"redis-server is running at {server.url}  (data in {server.data_dir})", flush=True)
    try:
        while not stopping.is_set() and server.process and server.process.poll() is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=1.0)
    finally:
        await asyncio.to_thread(server.stop)


async def dev_main(settings: Settings, actors: list[str]) -> None:
    """Web and every actor in one process, on the embedded Redis unless REDIS_URL is set."""
    stopping = asyncio.Event()
    install_stop_handlers(stopping)
    server: EmbeddedRedis | None = None
    if settings.redis_url:
        url = settings.redis_url
    else:
        server = EmbeddedRedis(
            settings.data_dir, port=settings.redis_port, appendfsync=settings.appendfsync
        )
        server.spawn()
        url = await asyncio.to_thread(server.wait_ready)
    try:
        async with open_store(settings, url) as store:
            tasks = [asyncio.create_task(serve_web(store, settings, stopping, announce=True))]
            tasks += [
                asyncio.create_task(
                    run_actor(a, store, stopping, batch_size=settings.batch_size, settings=settings)
                )
                for a in actors
            ]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            stopping.set()
            await asyncio.gather(*tasks)
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
