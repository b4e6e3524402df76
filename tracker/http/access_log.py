"""The canonical request line of the lean pixel path, at a fraction of structlog's cost.

The aiohttp middleware logs each request through structlog (contextvars, processors, one
``write(2)`` per line): fine for the API, a double-digit share of a pixel's CPU. Here a pixel's
line is one msgspec encode into a buffer that is written out every ``FLUSH_S`` (or sooner when it
grows past ``FLUSH_BYTES``), in the same JSON shape structlog writes. Lines are for operators:
the event log, not this, is the record of a hit, so a crash losing the last ``FLUSH_S`` of lines
loses no impression. With ``TRACKER_LOG_FORMAT=console`` (or a TTY), lines go through structlog
as before; at ``warning`` and above there are none.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime
from typing import Any, BinaryIO, Final

import msgspec
import structlog

FLUSH_S: Final = 0.1
FLUSH_BYTES: Final = 64 * 1024

logger = structlog.get_logger()
_encoder: Final = msgspec.json.Encoder()


class AccessLog:
    def __init__(self, level: str, fmt: str, stream: BinaryIO | None = None) -> None:
        self.enabled = level in ("debug", "info")
        self.console = sys.stderr.isatty() if fmt == "auto" else fmt == "console"
        self._stream = stream if stream is not None else sys.stderr.buffer
        self._lines: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None

    def request(
        self,
        request_id: str,
        method: str,
        path: str,
        status: int,
        started: float,
        fields: dict[str, Any],
    ) -> None:
        """One request's line: id, method, path, status, took_ms, and ``fields``."""
        if not self.enabled:
            return
        took_ms = round((time.perf_counter() - started) * 1000, 2)
        line = {"request_id": request_id, "method": method, "path": path, "status": status}
        line["took_ms"] = took_ms
        line.update(fields)
        if self.console:
            logger.info("request", **line)
            return
        line["event"] = "request"
        line["level"] = "info"
        line["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        data = _encoder.encode(line) + b"\n"
        self._lines.append(data)
        self._size += len(data)
        if self._size >= FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        data = b"".join(self._lines)
        self._lines.clear()
        self._size = 0
        try:
            self._stream.write(data)
            self._stream.flush()
        except (OSError, ValueError):  # stderr closed or full: lines are not worth a failure
            pass
