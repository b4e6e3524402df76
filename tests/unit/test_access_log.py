"""The lean path's request lines: structlog's JSON shape, buffered, none at warning level."""

from __future__ import annotations

import asyncio
import io
import time

import msgspec

from tracker.http.access_log import FLUSH_BYTES, AccessLog


async def test_lines_are_buffered_then_written_as_json() -> None:
    out = io.BytesIO()
    log = AccessLog("info", "json", out)
    log.request("rid", "GET", "/imp", 200, time.perf_counter(), {"verdict": "counted"})
    assert out.getvalue() == b""  # not yet: written within FLUSH_S
    await asyncio.sleep(0.15)
    [line] = out.getvalue().splitlines()
    record = msgspec.json.decode(line)
    assert record["event"] == "request"
    assert record["level"] == "info"
    assert (record["request_id"], record["method"], record["path"]) == ("rid", "GET", "/imp")
    assert (record["status"], record["verdict"]) == (200, "counted")
    assert record["took_ms"] >= 0
    assert record["timestamp"].endswith("Z")


async def test_a_full_buffer_is_written_at_once_and_flush_empties_it() -> None:
    out = io.BytesIO()
    log = AccessLog("debug", "json", out)
    n = 0
    while len(out.getvalue()) == 0:
        log.request("r" * 200, "GET", "/imp", 200, time.perf_counter(), {})
        n += 1
    assert n * 200 >= FLUSH_BYTES * 0.5  # written because the buffer filled, not by the timer
    log.request("last", "GET", "/imp", 200, time.perf_counter(), {})
    log.flush()
    lines = out.getvalue().splitlines()
    assert len(lines) == n + 1
    assert msgspec.json.decode(lines[-1])["request_id"] == "last"


def test_no_lines_at_warning_level() -> None:
    out = io.BytesIO()
    log = AccessLog("warning", "json", out)
    log.request("rid", "GET", "/imp", 200, time.perf_counter(), {})
    log.flush()
    assert out.getvalue() == b""
