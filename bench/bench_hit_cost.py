"""Instructions per pixel hit in the web process, counted by callgrind: a figure the VM's speed
does not move, for deciding between two versions of the hot path.

Each hit goes through what the web process runs for a browser's ``GET /imp``: ``PixelProtocol``
(a stand-in transport that counts the answers), ``Pixels`` (query, decision, privacy, ids, event)
and the ``EventStore``'s group commit to a real redis-server (a throwaway one, AOF on, over its
unix socket), 32 connections at a time so appends group as under load. Not in the count: the
kernel, the event loop's socket I/O for the client side, wrk, and Redis itself.

The count is the difference of two runs, ``--base`` hits and ``--base`` + ``--hits`` hits, so
start-up and imports cancel out. Baseline in the same run: the same hits with the pure-Python
parsers (``TRACKER_PURE_PYTHON=1``), and the ratio. The figures repeat to within ~0.1 % between
runs on one machine and build (session 14: 215,005 and 215,231).

    .venv/bin/python -m bench.bench_hit_cost              # ~3 min: valgrind runs each 50x slower
    .venv/bin/python -m bench.bench_hit_cost --cpu        # + CPU µs/hit without valgrind (noisy)

Needs valgrind (``apt install valgrind``; installed with apt when run as root).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tracker.eventstore.embedded import EmbeddedRedis

_RAW: bytes = (
    b"GET /imp?aid=7&oid=5&sub1=site42&sub2=banner300x250 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
    b"Gecko) Chrome/120.0.0.0 Safari/537.36\r\n"
    b"Accept: image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b"Referer: https://news.example.com/2026/01/15/some-article-about-things.html\r\n\r\n"
)
CONNECTIONS = 32
OUT_DIR = Path(__file__).resolve().parent / "out"
VARIANTS = {"c parsers": {}, "pure python": {"TRACKER_PURE_PYTHON": "1"}}


class _Transport:
    """What PixelProtocol needs of a transport; ``write`` wakes the waiting hit."""

    def __init__(self) -> None:
        self.answers = 0
        self.waiter: asyncio.Future[None] | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000)

    def write(self, data: bytes) -> None:
        if not data.startswith(b"HTTP/1.1 200 "):
            raise AssertionError(f"not a 200: {data[:80]!r}")
        self.answers += 1
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


async def _hits(n: int, url: str) -> float:
    """Send ``n`` hits (rounded up to the connections) through the lean path; CPU seconds."""
    from tracker.config.model import Advertiser, Affiliate, Offer
    from tracker.eventstore.connection import connect
    from tracker.eventstore.store import EventStore
    from tracker.http import front
    from tracker.http.access_log import AccessLog
    from tracker.http.ingest import Pixels
    from tracker.ids import ImpressionIds
    from tracker.projections.config import ConfigState
    from tracker.settings import Settings

    class Live:
        state = ConfigState()

    objects = Live.state.objects
    objects["advertiser"][1] = Advertiser(id=1, tenant="t1")
    objects["offer"][5] = Offer(advertiser_id=1, allow_impressions=True, id=5, tenant="t1")
    objects["affiliate"][7] = Affiliate(id=7, tenant="t1")
    client = connect(url)
    store = EventStore(client, 4)
    pixels = Pixels(store, Settings(), Live, ImpressionIds(b"k" * 32), None)  # type: ignore[arg-type]
    lean = front.Front(None, None, AccessLog("warning", "json"))  # type: ignore[arg-type]
    lean._pixels = pixels
    lean.loop = asyncio.get_running_loop()
    conns = []
    for _ in range(CONNECTIONS):
        protocol, transport = front.PixelProtocol(lean), _Transport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        conns.append((protocol, transport))
    loop = asyncio.get_running_loop()
    cpu = time.process_time()
    done = 0
    while done < n:
        waits = []
        for protocol, transport in conns:
            transport.waiter = loop.create_future()
            waits.append(transport.waiter)
            protocol.data_received(_RAW)
        await asyncio.gather(*waits)
        done += len(conns)
    cpu = time.process_time() - cpu
    if sum(t.answers for _, t in conns) != done:
        raise AssertionError("a hit was not answered")
    await client.aclose()
    return cpu


def _inner(n: int, url: str) -> None:
    import uvloop

    cpu = uvloop.run(_hits(n, url))
    print(f"hits {n} cpu {cpu:.6f}")


def _valgrind() -> str | None:
    found = shutil.which("valgrind")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing valgrind with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "valgrind"], check=False)
        found = shutil.which("valgrind")
    return found


def _collected(valgrind: str, n: int, url: str, env: dict[str, str], tmp: Path) -> int:
    argv = [
        valgrind, "--tool=callgrind", f"--callgrind-out-file={tmp / 'callgrind.out'}",
        sys.executable, "-m", "bench.bench_hit_cost", "--inner", str(n), url,
    ]  # fmt: skip
    done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1))


def _cpu(n: int, url: str, env: dict[str, str]) -> float:
    argv = [sys.executable, "-m", "bench.bench_hit_cost", "--inner", str(n), url]
    done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True)
    found = re.search(r"cpu ([0-9.]+)", done.stdout)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inner", nargs=2, metavar=("N", "URL"), help=argparse.SUPPRESS)
    parser.add_argument("--base", type=int, default=640, help="hits of the shorter run")
    parser.add_argument("--hits", type=int, default=3200, help="hits counted (the difference)")
    parser.add_argument("--cpu", action="store_true", help="also CPU µs/hit, without valgrind")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "hit_cost.json", help="JSON report")
    args = parser.parse_args()
    if args.inner:
        _inner(int(args.inner[0]), args.inner[1])
        return
    if args.base < 0 or args.hits <= 0 or args.base % CONNECTIONS or args.hits % CONNECTIONS:
        parser.error(f"--base (0 or more) and --hits (over 0) must be multiples of {CONNECTIONS}")
    valgrind = _valgrind()
    if valgrind is None:
        raise SystemExit("valgrind is not installed (apt install valgrind)")
    with tempfile.TemporaryDirectory(prefix="bench-hit-") as tmp:
        server = EmbeddedRedis(Path(tmp), appendfsync="everysec")
        server.start()
        try:
            rows = {}
            for name, env in VARIANTS.items():
                low = _collected(valgrind, args.base, server.url, env, Path(tmp))
                high = _collected(valgrind, args.base + args.hits, server.url, env, Path(tmp))
                cpu = _cpu(args.hits, server.url, env) / args.hits * 1e6 if args.cpu else None
                rows[name] = ((high - low) / args.hits, cpu)
        finally:
            server.stop()
    python = rows["pure python"][0]
    print(f"instructions per /imp hit in the web process (callgrind, {args.hits} hits)")
    for name, (instructions, cpu) in rows.items():
        extra = f"  {cpu:6.1f} µs CPU/hit (noisy)" if cpu is not None else ""
        print(
            f"  {name:12s} {instructions:10,.0f}  x pure python {instructions / python:.3f}{extra}"
        )


if __name__ == "__main__":
    main()
