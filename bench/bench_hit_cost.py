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
    .venv/bin/python -m bench.bench_hit_cost --redis      # + Redis's instructions per event

``--redis`` counts the other side of the append: redis-server's own instructions per pixel event
(callgrind on the embedded server, user space only), with the hits sent ``--group`` (11, what
``bench_ingest``'s pixel runs average) at a time, so each append script call carries that many
events. Baseline in the same run: the same payloads as plain ``XADD``s pipelined 64 at a time
(what ``redis-benchmark -P 64`` sends), and the ratio.

Needs valgrind (``apt install valgrind``; installed with apt when run as root).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from tracker.eventstore.embedded import EmbeddedRedis, find_redis_server

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


async def _hits(n: int, url: str, connections: int = CONNECTIONS) -> float:
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
    for _ in range(connections):
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


def _redis_instructions(valgrind: str, tmp: Path, load: Callable[[str], None]) -> int:
    """Instructions a throwaway redis-server (under callgrind) runs from start to stop, with
    ``load(url)`` sent to it."""
    out = tmp / "redis-callgrind.out"
    out.unlink(missing_ok=True)
    wrapper = tmp / "redis-under-callgrind"
    binary = find_redis_server()
    argv = [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", binary]
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.join(argv)} "$@"\n')
    wrapper.chmod(0o700)
    data = tmp / "redis-data"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir()
    server = EmbeddedRedis(data, appendfsync="everysec", binary=str(wrapper))
    server.start(timeout_s=120)
    try:
        load(server.url)
    finally:
        server.stop(timeout_s=120)
    found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
    if found is None:
        raise SystemExit(f"no callgrind totals in {out}")
    return int(found.group(1))


def _pixel_load(n: int, group: int) -> Callable[[str], None]:
    def load(url: str) -> None:
        import uvloop

        uvloop.run(_hits(n, url, group))

    return load


def _xadd_load(n: int, payload: bytes) -> Callable[[str], None]:
    """``n`` plain XADDs of ``payload`` into one stream, pipelined 64 at a time."""

    def load(url: str) -> None:
        client = redis.Redis.from_url(url)
        try:
            for start in range(0, n, 64):
                pipe = client.pipeline(transaction=False)
                for _ in range(min(64, n - start)):
                    pipe.xadd("bench:xadd", {"event": payload})
                pipe.execute()
        finally:
            client.close()

    return load


def _a_pixel_payload(tmp: Path) -> bytes:
    """One ImpressionSeen as the harness appends it (a throwaway server, not under callgrind)."""
    import uvloop

    data = tmp / "payload-data"
    data.mkdir()
    server = EmbeddedRedis(data, appendfsync="everysec")
    server.start()
    try:
        uvloop.run(_hits(1, server.url, 1))
        client = redis.Redis.from_url(server.url)
        try:
            for key in client.scan_iter(match="tracker:*:events"):
                [(_, fields)] = client.execute_command(  # type: ignore[no-untyped-call]
                    "XRANGE", key, "-", "+", "COUNT", 1
                )
                payload: bytes = fields[b"event"]
                return payload
        finally:
            client.close()
    finally:
        server.stop()
    raise SystemExit("the harness appended no event")


def redis_cost(valgrind: str, hits: int, group: int) -> dict[str, float]:
    """Redis's instructions per appended pixel event, and per pipelined plain XADD (``hits``:
    a multiple of ``group``)."""
    with tempfile.TemporaryDirectory(prefix="bench-hit-redis-") as tmp_name:
        tmp = Path(tmp_name)
        payload = _a_pixel_payload(tmp)
        low = _redis_instructions(valgrind, tmp, _pixel_load(hits, group))
        high = _redis_instructions(valgrind, tmp, _pixel_load(2 * hits, group))
        raw_low = _redis_instructions(valgrind, tmp, _xadd_load(hits, payload))
        raw_high = _redis_instructions(valgrind, tmp, _xadd_load(2 * hits, payload))
    per_event = (high - low) / hits
    per_xadd = (raw_high - raw_low) / hits
    return {
        "events": hits,
        "per_event": per_event,
        "per_xadd": per_xadd,
        "payload_bytes": len(payload),
    }


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
    parser.add_argument(
        "--redis", action="store_true", help="also Redis's instructions per event (callgrind)"
    )
    parser.add_argument(
        "--group", type=int, default=11, help="--redis: hits sent at a time (events per call)"
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR / "hit_cost.json", help="JSON report")
    args = parser.parse_args()
    if args.inner:
        _inner(int(args.inner[0]), args.inner[1])
        return
    if args.base < 0 or args.hits <= 0 or args.base % CONNECTIONS or args.hits % CONNECTIONS:
        parser.error(f"--base (0 or more) and --hits (over 0) must be multiples of {CONNECTIONS}")
    if args.group <= 0:
        parser.error("--group must be over 0")
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
    report: dict[str, Any] = {
        "hits": args.hits,
        "web": {name: {"instructions": i, "cpu_us": cpu} for name, (i, cpu) in rows.items()},
    }
    if args.redis:
        cost = redis_cost(valgrind, args.group * max(1, args.hits // args.group), args.group)
        report["redis"] = {"group": args.group, **cost}
        print(
            f"redis-server instructions per event (callgrind, {cost['events']:.0f} events, "
            f"{cost['payload_bytes']:.0f}-byte payload)\n"
            f"  {f'append script, {args.group} events a call':32s} {cost['per_event']:10,.0f}"
            f"  x plain XADD {cost['per_event'] / cost['per_xadd']:.2f}\n"
            f"  {'plain XADD, pipelined 64':32s} {cost['per_xadd']:10,.0f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
