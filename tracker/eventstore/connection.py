"""Redis clients: one place that sets timeouts and the retry policy, and checks the server."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as redis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = structlog.get_logger()

SOCKET_TIMEOUT_S = 10.0  # blocking reads use block times well below this
CONNECT_TIMEOUT_S = 5.0
RETRIES = 3  # re-sends of a command after a connection error or timeout
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.05, 1.0  # jittered exponential backoff between them
MIN_VERSION = (6, 2)


def connect(url: str, *, max_connections: int = 64) -> redis.Redis:
    """A client that retries connection errors and timeouts a few times with jittered backoff.

    Retries re-send whole commands, so every write we issue is idempotent under re-execution:
    appends carry a group token, checkpoint commits compare-and-set the previous position.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=30,
        max_connections=max_connections,
        retry=Retry(
            ExponentialWithJitterBackoff(cap=BACKOFF_CAP_S, base=BACKOFF_BASE_S), retries=RETRIES
        ),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


class ServerRefused(Exception):
    """The Redis server cannot be used (too old)."""


@dataclass(frozen=True)
class ServerInfo:
    version: tuple[int, int, int]
    aof_enabled: bool
    maxmemory_policy: str


async def check_server(client: redis.Redis) -> ServerInfo:
    """Refuse a server older than 6.2; warn loudly when AOF is off or eviction could drop keys."""
    info = await client.info()
    raw_version = str(info.get("redis_version", "0.0.0"))
    parts = [int(p) if p.isdigit() else 0 for p in raw_version.split(".")[:3]]
    version = [*parts, 0, 0, 0][:3]
    server = ServerInfo(
        version=(version[0], version[1], version[2]),
        aof_enabled=str(info.get("aof_enabled", "0")) == "1",
        maxmemory_policy=str(info.get("maxmemory_policy", "unknown")),
    )
    if server.version[:2] < MIN_VERSION:
        raise ServerRefused(f"Redis {raw_version} is too old: tracker needs Redis 6.2 or newer")
    if not server.aof_enabled:
        logger.warning(
            "redis_aof_disabled",
            message="appendonly is off: acknowledged events can be lost when Redis restarts",
        )
    if server.maxmemory_policy not in ("noeviction", "unknown"):
        logger.warning(
            "redis_eviction_enabled",
            maxmemory_policy=server.maxmemory_policy,
            message="maxmemory-policy is not noeviction: Redis may evict idempotency keys,"
            " checkpoints or projection state",
        )
    return server
