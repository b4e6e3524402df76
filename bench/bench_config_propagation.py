"""Config propagation: from a configuration change being accepted (its HTTP response) to every web
process deciding with it, p50 / p99 over N changes. Goal: p99 < 1 s.

Starts a throwaway redis-server (never a running one) and two ``python -m tracker web`` processes,
creates an admin token with ``python -m tracker token create``, then N times flips an offer between
``active`` and ``paused`` through one web process (alternating) and polls ``GET /eligibility`` on
both until both report the new decision. Run from the repo root:
``.venv/bin/python -m bench.bench_config_propagation --changes 200``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tracker.eventstore.embedded import EmbeddedRedis, free_port

POLL_S = 0.001


def start_web(url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "REDIS_URL": url,
        "TRACKER_PORT": str(port),
        "TRACKER_LOG_LEVEL": "warning",
        "TRACKER_LOG_FORMAT": "json",
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tracker", "web"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def wait_up(session: aiohttp.ClientSession, base: str) -> None:
    for _ in range(300):
        try:
            async with session.get(f"{base}/healthz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise SystemExit(f"{base} did not start")


async def call(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Any:
    async with session.request(method, url, **kw) as r:
        body = await r.json()
        if r.status >= 300:
            raise SystemExit(f"{method} {url}: {r.status} {body}")
        return body


async def until_decided(
    session: aiohttp.ClientSession, base: str, query: str, h: dict[str, str], reason: str | None
) -> float:
    while True:
        body = await call(session, "GET", f"{base}/eligibility?{query}", headers=h)
        if body["reason"] == reason:
            return time.perf_counter()
        await asyncio.sleep(POLL_S)


async def measure(bases: list[str], bearer: str, changes: int) -> list[float]:
    h = {"Authorization": f"Bearer {bearer}"}
    async with aiohttp.ClientSession() as session:
        for base in bases:
            await wait_up(session, base)
        adv = await call(session, "POST", f"{bases[0]}/advertisers", json={"name": "A"}, headers=h)
        aff = await call(session, "POST", f"{bases[0]}/affiliates", json={"name": "F"}, headers=h)
        body = {"name": "O", "advertiser_id": adv["id"], "allow_impressions": True}
        offer = await call(session, "POST", f"{bases[0]}/offers", json=body, headers=h)
        query = f"offer_id={offer['id']}&affiliate_id={aff['id']}"
        version, lags = offer["version"], []
        for i in range(changes):
            status = "paused" if i % 2 == 0 else "active"
            reason = "offer_not_active" if status == "paused" else None
            url = f"{bases[i % len(bases)]}/offers/{offer['id']}"
            patch = {"status": status, "version": version}
            version = (await call(session, "PATCH", url, json=patch, headers=h))["version"]
            accepted = time.perf_counter()
            done = await asyncio.gather(
                *(until_decided(session, b, query, h, reason) for b in bases)
            )
            lags.append(max(done) - accepted)
        return lags


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-config-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", port=0, unix_socket=False)
        url = server.start()
        webs: list[subprocess.Popen[bytes]] = []
        try:
            env = {**os.environ, "REDIS_URL": url, "TRACKER_LOG_LEVEL": "warning"}
            token = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tracker",
                    "token",
                    "create",
                    "--tenant",
                    "bench",
                    "--role",
                    "admin",
                ],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            ports = [free_port(), free_port()]
            webs = [start_web(url, p, Path(tmp) / f"web{p}.log") for p in ports]
            bases = [f"http://127.0.0.1:{p}" for p in ports]
            lags = asyncio.run(measure(bases, token, args.changes))
        finally:
            for web in webs:
                web.terminate()
            for web in webs:
                web.wait(timeout=10)
            server.stop()
    lags_ms = sorted(x * 1000 for x in lags)
    p50 = statistics.median(lags_ms)
    p99 = lags_ms[min(len(lags_ms) - 1, round(0.99 * len(lags_ms)) - 1)]
    print(
        f"config propagation over {len(lags_ms)} changes, 2 web processes: "
        f"p50 {p50:.2f} ms  p99 {p99:.2f} ms  max {lags_ms[-1]:.2f} ms  (goal: p99 < 1000 ms)"
    )
    return 0 if p99 < 1000 else 1


if __name__ == "__main__":
    sys.exit(main())
