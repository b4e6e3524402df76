"""The command line as a user runs it: real subprocesses, a real redis-server, real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from structlog.testing import capture_logs

from tests.factories import configured, impression
from tracker import events
from tracker.eventstore import keys
from tracker.eventstore.connection import ServerRefused, check_server
from tracker.eventstore.embedded import free_port
from tracker.eventstore.export import export
from tracker.eventstore.store import EventStore

ROOT = Path(__file__).resolve().parents[2]


def tracker(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracker", *args],
        cwd=ROOT,
        env={**os.environ, "TRACKER_LOG_FORMAT": "json", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["nope"],
        ["actor", "nobody"],
        ["events"],
        ["dev", "--actors", "ghost"],
        [],
        ["events", "tail", "--from", "yesterday"],
        ["events", "tail", "--from", "18446744073709551616-0"],  # over 2^64 - 1: Redis refuses
        ["events", "export", "--since", "99999999999999999999999-0"],
        ["events", "export", "--until", "1-+5"],
    ],
)
def test_bad_arguments_exit_2_with_a_message(args: list[str]) -> None:
    result = tracker(*args)
    assert result.returncode == 2
    assert "error" in result.stderr


@pytest.mark.parametrize("args", [["events", "export"], ["actor", "projector"]])
def test_a_redis_url_nobody_answers_is_a_message_not_a_traceback(args: list[str]) -> None:
    result = tracker(*args, env={"REDIS_URL": f"redis://127.0.0.1:{free_port()}"})
    assert result.returncode == 2
    assert "cannot reach Redis" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_second_embedded_server_on_one_data_dir_is_a_message(tmp_path: Path) -> None:
    env_proc = {**os.environ, "TRACKER_LOG_FORMAT": "json", "TRACKER_DATA_DIR": str(tmp_path)}
    env_proc.pop("REDIS_URL", None)
    first = subprocess.Popen(
        [sys.executable, "-m", "tracker", "redis"], cwd=ROOT, env=env_proc,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "redis.url").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = subprocess.run(
            [sys.executable, "-m", "tracker", "redis"], cwd=ROOT, env=env_proc,
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert second.returncode == 2
        assert "already serves" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(10)


def test_bad_setting_names_the_variable() -> None:
    result = tracker("web", env={"TRACKER_PARTITIONS": "zero"})
    assert result.returncode == 2
    assert "TRACKER_PARTITIONS" in result.stderr


def test_help_on_every_command() -> None:
    for args in (["--help"], ["web", "--help"], ["events", "export", "--help"]):
        result = tracker(*args)
        assert result.returncode == 0
        assert "usage:" in result.stdout


async def test_events_export_in_time_order_with_bounds(store: EventStore, redis_url: str) -> None:
    first = [impression() for _ in range(5)]
    await store.append_many(first)
    await store.append(configured())
    await asyncio.sleep(0.01)
    cut = time.time()
    await asyncio.sleep(0.01)
    later = [impression() for _ in range(3)]
    await store.append_many(later)
    env = {"REDIS_URL": redis_url}
    everything = tracker("events", "export", env=env)
    assert everything.returncode == 0, everything.stderr
    lines = [json.loads(line) for line in everything.stdout.splitlines()]
    assert len(lines) == 9
    ids = [tuple(int(x) for x in line["id"].split("-")) for line in lines]
    assert ids == sorted(ids)
    assert {line["event"]["type"] for line in lines} == {"impression_seen", "tracker_configured"}
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut)) + f".{int(cut % 1 * 1000):03d}Z"
    since = tracker("events", "export", "--since", iso, env=env)
    exported = [json.loads(line)["event"]["impression_id"] for line in since.stdout.splitlines()]
    assert sorted(exported) == sorted(e.impression_id for e in later)
    until = tracker("events", "export", "--until", iso, "--stream", "config", env=env)
    assert [json.loads(x)["event"]["type"] for x in until.stdout.splitlines()] == [
        "tracker_configured"
    ]
    bad = tracker("events", "export", "--since", "yesterday", env=env)
    assert bad.returncode == 2
    assert "yesterday" in bad.stderr
    # times before 1970: the log's start (everything since, nothing until)
    assert tracker("events", "export", "--since", "1969-12-31T00:00:00Z", env=env).stdout == (
        everything.stdout
    )
    for bounds in (["--until", "1970-01-01T00:00:00Z"], ["--until", "-"], ["--since", "+"]):
        nothing = tracker("events", "export", *bounds, env=env)
        assert (nothing.returncode, nothing.stdout) == (0, ""), nothing.stderr
    # a bare <ms> as the exclusive end leaves that whole millisecond out, as a time would
    last_ms = lines[-1]["id"].split("-")[0]
    before = tracker("events", "export", "--until", last_ms, env=env).stdout.splitlines()
    assert [json.loads(x)["id"] for x in before] == [
        line["id"] for line in lines if line["id"].split("-")[0] != last_ms
    ]
    part = lines[0]["stream"]
    once = tracker("events", "export", "--stream", part, env=env)
    assert tracker("events", "export", "--stream", part, "--stream", part, env=env).stdout == (
        once.stdout
    )
    assert once.stdout


async def test_an_until_id_is_exclusive_whatever_its_sequence(
    store: EventStore, client: redis.Redis
) -> None:
    part = store.partitions[0]
    top = f"5-{keys.MAX_ID_PART}"
    for entry_id in ("5-0", "5-1", top):
        await client.xadd(keys.stream(part), {"event": events.encode(impression())}, id=entry_id)

    async def ids(since: str, until: str) -> list[str]:
        return [s.entry_id async for s in export(store, [part], since, until)]

    assert await ids("-", top) == ["5-0", "5-1"]
    assert await ids("-", "5-1") == ["5-0"]
    assert await ids("-", "5") == []  # <ms> alone: the whole millisecond is left out
    assert await ids("5-1", "+") == ["5-1", top]
    assert await ids("-", "1970-01-01T00:00:00.006Z") == ["5-0", "5-1", top]


def test_dev_runs_everything_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TRACKER_DATA_DIR": str(tmp_path / "var"),
        "TRACKER_PORT": str(port),
        "TRACKER_LOG_FORMAT": "json",
    }
    env.pop("REDIS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker", "dev"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    assert json.loads(r.read()) == {"status": "ready"}
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "dev did not become ready"
                time.sleep(0.1)
        assert (tmp_path / "var" / "appendonly.aof").exists() or (
            tmp_path / "var" / "appendonlydir"
        ).exists()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert f"http://127.0.0.1:{port}" in out
        assert "redis_stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


class _Info:
    """Stands in for a server's INFO reply (check_server is logic over it)."""

    def __init__(self, **info: str) -> None:
        self._info = info

    async def info(self) -> dict[str, str]:
        return self._info


def _any(info: _Info) -> Any:
    return info


async def test_server_checks_warn_about_aof_and_eviction() -> None:
    risky = _Info(redis_version="7.0.15", aof_enabled="0", maxmemory_policy="allkeys-lru")
    with capture_logs() as logs:
        info = await check_server(_any(risky))
    assert info.version == (7, 0, 15)
    warnings = {entry["event"] for entry in logs if entry["log_level"] == "warning"}
    assert warnings == {"redis_aof_disabled", "redis_eviction_enabled"}
    with capture_logs() as logs:
        healthy = _Info(redis_version="6.2.14", aof_enabled="1", maxmemory_policy="noeviction")
        await check_server(_any(healthy))
    assert logs == []


async def test_server_older_than_6_2_is_refused() -> None:
    with pytest.raises(ServerRefused, match=r"6\.2"):
        await check_server(_any(_Info(redis_version="6.0.16", aof_enabled="1")))


async def test_real_server_passes_the_checks(store: EventStore) -> None:
    with capture_logs() as logs:
        info = await check_server(store.client)
    assert info.aof_enabled
    assert info.version >= (6, 2, 0)
    assert logs == []
