"""The append path's pipelined connection against a real redis-server: order, errors, AUTH,
SELECT, reconnection, and what the event store does with it."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.factories import impression
from tracker.eventstore import keys
from tracker.eventstore.connection import connect
from tracker.eventstore.embedded import EmbeddedRedis, free_port
from tracker.eventstore.pipe import Pipe, close_pipe, pack
from tracker.eventstore.store import EventStore, _packed_events


def test_pack_is_resp_bulk_strings() -> None:
    assert pack(("SET", "k", b"\x00v", 5, 1.5)) == (
        b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\x00v\r\n$1\r\n5\r\n$3\r\n1.5\r\n"
    )
    with pytest.raises(TypeError):
        pack(("SET", None))


def test_a_packed_tail_continues_the_command() -> None:
    tail = pack(("k", b"v"))[len(b"*2\r\n") :]
    assert pack(("SET",), tail, 2) == pack(("SET", "k", b"v"))


def test_the_append_path_packs_its_events_as_the_general_packer_does() -> None:
    items = [(b'{"a":1}', None, None), (b"\x00\xff", "batch:t:k\u00e9", None)]
    packed = _packed_events(items, plain=False)
    assert packed is not None
    assert pack(("EVALSHA",), packed, 6) == pack(
        ("EVALSHA", "", "", b'{"a":1}', "batch:t:k\u00e9", "", b"\x00\xff")
    )
    claimed = [*items, (b"{}", None, ("imp:o:x", 60, b"{}"))]
    assert _packed_events(claimed, plain=False) is None
    plain = [(b'{"a":1}', None, None), (b"\x00\xff", None, None)]  # APPEND_PLAIN: payloads only
    packed = _packed_events(plain, plain=True)
    assert packed is not None
    assert pack(("EVALSHA",), packed, 2) == pack(("EVALSHA", b'{"a":1}', b"\x00\xff"))


async def test_concurrent_calls_get_their_own_replies_in_order(client: redis.Redis) -> None:
    pipe = Pipe.for_client(client)
    assert pipe is not None
    replies = await asyncio.gather(*(pipe.call("INCR", "tracker:test:n") for _ in range(500)))
    assert replies == list(range(1, 501))  # sent in one write per tick, answered in order


async def test_error_replies_raise_and_the_connection_goes_on(client: redis.Redis) -> None:
    pipe = Pipe.for_client(client)
    assert pipe is not None
    await client.set("tracker:test:s", "x")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await pipe.call("LPUSH", "tracker:test:s", "v")
    with pytest.raises(NoScriptError):
        await pipe.call("EVALSHA", "0" * 40, 0)
    assert await pipe.call("GET", "tracker:test:s") == b"x"


async def test_a_killed_connection_is_reopened_for_the_next_call(client: redis.Redis) -> None:
    pipe = Pipe.for_client(client)
    assert pipe is not None
    assert await pipe.call("PING") == b"PONG"
    await client.client_kill_filter(_type="normal", skipme=True)
    await asyncio.sleep(0.05)
    assert await pipe.call("PING") == b"PONG"


async def test_appends_survive_a_script_flush(store: EventStore) -> None:
    await store.append(impression())
    await store.client.script_flush()  # as after a restart or failover: NOSCRIPT, then reload
    result = await store.append(impression())
    assert not result.duplicate
    assert sum([await store.length(p) for p in store.partitions]) == 2


async def test_unreachable_redis_raises_a_connection_error_after_retries() -> None:
    pipe = Pipe(host="127.0.0.1", port=free_port())
    with pytest.raises(RedisConnectionError):
        await pipe.call("PING")


async def test_password_and_database_from_the_url(redis_server: EmbeddedRedis) -> None:
    admin = connect(redis_server.url)
    await admin.config_set("requirepass", "s3cret")
    try:
        base = f"redis://:s3cret@127.0.0.1:{redis_server.port}"
        client = connect(f"{base}/3")
        store = EventStore(client, partitions=1)
        await client.flushdb()
        await store.append(impression())  # over the pipe: AUTH, SELECT 3, EVALSHA
        assert await client.xlen(keys.stream("p0")) == 1
        wrong = Pipe(host="127.0.0.1", port=redis_server.port, password="wrong")
        with pytest.raises(AuthenticationError):
            await wrong.call("PING")
        close_pipe(client)
        await client.flushdb()
        await client.aclose()
    finally:
        authed = connect(f"redis://:s3cret@127.0.0.1:{redis_server.port}/0")
        await authed.config_set("requirepass", "")
        await authed.aclose()
        await admin.aclose()


async def test_a_call_cancelled_while_connecting_stops_at_once() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers AUTH
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pipe = Pipe(host="127.0.0.1", port=port, password="pw")
    call = asyncio.create_task(pipe.call("PING"))
    await asyncio.sleep(0.2)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(call, 1.0)  # not turned into a connection error and retried
    pipe.close()
    server.close()
    await server.wait_closed()
