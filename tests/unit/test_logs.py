"""Log output: libraries' stdlib records share the configured format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import logging
from tracker.logs import configure_logging
configure_logging("info", "json")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("aiohttp.server").exception("Unhandled exception")
logging.getLogger("asyncio").warning("slow %s", "callback")
lone = b"\\xff".decode("utf-8", "surrogateescape")
logging.getLogger("aiohttp.server").warning("bad header %s", lone)
logging.getLogger("asyncio").info("below the stdlib level: not written")
"""


def test_a_librarys_traceback_is_one_json_line() -> None:
    # aiohttp logs a handler's exception through the stdlib: a plain-text traceback of ~40 lines
    # broke the JSON log's one record per line
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=root, capture_output=True, text=True, check=True
    )
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(r["logger"], r["level"], r["event"]) for r in records] == [
        ("aiohttp.server", "error", "Unhandled exception"),
        ("asyncio", "warning", "slow callback"),
        ("aiohttp.server", "warning", "bad header \udcff"),  # a lone surrogate: not lost
    ]
    [exception] = records[0]["exception"]
    assert exception["exc_type"] == "ZeroDivisionError"
