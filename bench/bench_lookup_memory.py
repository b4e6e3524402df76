"""Redis memory per impression of the impression lookup projection, all indexes included.

Appends N realistic impressions (Affise, Xandr and batch dialects; visitor ids seen ~3 times each,
truncated IPs shared by several visitors, subs, a share with external imp ids, member ids on the
batch share), takes ``INFO memory`` ``used_memory``, folds the log through
``ProjectionRunner(ImpressionLookup())`` and takes it again: the difference is the projection's
cost. Per key kind, ``MEMORY USAGE key SAMPLES 0`` of a sample of keys times the kind's key count.

Run it from the repo root: ``.venv/bin/python -m bench.bench_lookup_memory --help``. It starts its
own redis-server (AOF on) on a free loopback port, never a running one, and checks that every
impression has its record and exits 1 if not.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import msgspec
import redis.asyncio as redis

from tracker.actors.runner import ProjectionRunner
from tracker.events import ImpressionSeen
from tracker.eventstore.connection import connect
from tracker.eventstore.embedded import EmbeddedRedis
from tracker.eventstore.pipe import close_pipe
from tracker.eventstore.store import EventStore, as_str
from tracker.ids import ImpressionIds, new_event_id, new_uuid7_hex
from tracker.logs import configure_logging
from tracker.projections import impressions as imp
from tracker.projections.impressions import ImpressionLookup

IDS: Final = ImpressionIds(b"bench-lookup-key-0123456789abcdef")
# kind -> SCAN pattern segment after tracker:{pN}:proj:imp:
KINDS: Final = {
    "record": "i",
    "external": "xc",
    "duplicate": "xd",
    "visitor": "v",
    "member": "m",
    "ip": "ip",
}
USER_AGENT: Final = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36"
)


class BenchFailed(Exception):
    """The benchmark's own correctness check failed: its figures mean nothing."""


def make_events(n: int, seed: int, external_share: float) -> list[ImpressionSeen]:
    """``n`` impressions over the last 3 days, in time order, one tenant."""
    rng = random.Random(seed)
    visitors = [new_uuid7_hex() for _ in range(max(1, n // 3))]
    ips = [
        f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.0"
        for _ in range(n // 5)
    ]
    ips += [f"2001:db8:{rng.randrange(65536):x}::" for _ in range(n // 50)]  # IPv6 /48
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        at = now - timedelta(days=3) * (1 - i / n)
        visitor = visitors[int(rng.random() ** 1.5 * len(visitors))]  # some visitors far busier
        dialect = rng.choices(("affise", "xandr", "batch"), (0.5, 0.3, 0.2))[0]
        fields: dict[str, Any] = {}
        if dialect == "affise":
            offer = rng.randrange(1, 400)
            fields = {
                "offer_id": str(offer),
                "affiliate_id": str(rng.randrange(1, 2000)),
                "advertiser_id": str(offer % 37 + 1),
                "payment_rule_id": str(rng.randrange(1, 60)),
                "subs": {
                    "sub1": f"camp{rng.randrange(1000)}",
                    "sub2": f"src{rng.randrange(30)}",
                    "sub3": new_uuid7_hex()[:20],  # a click-level token
                },
            }
            if rng.random() < external_share / 0.5:  # the share is of all impressions
                fields["external_imp_id"] = new_uuid7_hex()[:24]
        elif dialect == "xandr":
            fields = {
                "tracker_id": str(rng.randrange(1, 5000)),
                "line_item_id": str(rng.randrange(1, 800)),
                "advertiser_id": str(rng.randrange(1, 37)),
                "publisher_id": str(rng.randrange(1, 300)),
                "placement_id": str(rng.randrange(1, 3000)),
                "media_cost": f"{rng.randrange(1, 900) / 1000:.3f}",
            }
        else:
            fields = {
                "member_id": str(rng.choice((958, 1021, 7294, 11805))),
                "publisher_id": str(rng.randrange(1, 300)),
            }
        out.append(
            ImpressionSeen(
                event_id=new_event_id(),
                occurred_at=at,
                recorded_at=at,
                tenant="958",
                impression_id=IDS.mint(),
                dialect=dialect,
                visitor_id=visitor if dialect != "batch" else "",
                ip=rng.choice(ips),
                user_agent=USER_AGENT,
                **fields,
            )
        )
    return out


async def used_memory(client: redis.Redis) -> int:
    for _ in range(3):  # let lazy frees settle
        await client.memory_purge()
    return int((await client.info("memory"))["used_memory"])


async def keys_of(client: redis.Redis, segment: str) -> list[str]:
    return [
        as_str(k)
        async for k in client.scan_iter(match=f"tracker:*:proj:imp:{segment}:*", count=5000)
    ]


async def measure(args: argparse.Namespace, client: redis.Redis) -> dict[str, Any]:
    store = EventStore(client, args.partitions)
    await store.check_partitions()
    evs = make_events(args.impressions, args.seed, args.external_share)
    for start in range(0, len(evs), 5000):
        await store.append_many(evs[start : start + 5000])
    await store.drain()
    before = await used_memory(client)
    projection = ImpressionLookup()
    started = time.perf_counter()
    for part in projection.parts(store.partitions):
        await ProjectionRunner(store, projection, part, batch_size=500).run(until_caught_up=True)
    fold_s = time.perf_counter() - started
    after = await used_memory(client)

    rng = random.Random(args.seed)
    n = len(evs)
    kinds: dict[str, dict[str, float]] = {}
    for kind, segment in KINDS.items():
        found = await keys_of(client, segment)
        sample = rng.sample(found, min(args.sample, len(found)))
        sizes = [int(await client.memory_usage(k, samples=0) or 0) for k in sample]
        avg = sum(sizes) / len(sizes) if sizes else 0.0
        kinds[kind] = {
            "keys": len(found),
            "bytes_per_key": avg,
            "bytes_per_impression": avg * len(found) / n,
        }
    records = await keys_of(client, "i")
    if len(records) != n:
        raise BenchFailed(f"{len(records)} records for {n} impressions")
    values = [imp.encode_record(imp.record_of(e)) for e in evs[: args.sample]]
    as_json = [
        msgspec.json.encode(msgspec.structs.asdict(imp.record_of(e))) for e in evs[: args.sample]
    ]
    return {
        "impressions": n,
        "partitions": args.partitions,
        "used_memory_delta_per_impression": (after - before) / n,
        "memory_usage_sum_per_impression": sum(k["bytes_per_impression"] for k in kinds.values()),
        "kinds": kinds,
        "record_value_bytes_msgpack": sum(map(len, values)) / len(values),
        "record_value_bytes_json_dict": sum(map(len, as_json)) / len(as_json),
        "distinct_visitors": len({e.visitor_id for e in evs if e.visitor_id}),
        "distinct_ips": len({e.ip for e in evs}),
        "with_external_imp_id": sum(1 for e in evs if e.external_imp_id),
        "fold_s": fold_s,
        "redis_version": (await client.info("server"))["redis_version"],
    }


def report(r: dict[str, Any]) -> None:
    print(
        f"impression lookup memory: {r['impressions']:,} impressions, {r['partitions']} partitions,"
        f" redis {r['redis_version']}; {r['distinct_visitors']:,} visitors,"
        f" {r['distinct_ips']:,} IPs, {r['with_external_imp_id']:,} with an external imp id"
    )
    print(f"{'kind':<10} {'keys':>9} {'bytes/key':>10} {'bytes/impression':>17}")
    for kind, k in r["kinds"].items():
        per_key, per_impression = k["bytes_per_key"], k["bytes_per_impression"]
        print(f"{kind:<10} {k['keys']:>9,} {per_key:>10.1f} {per_impression:>17.1f}")
    print(f"{'sum (MEMORY USAGE)':<31} {r['memory_usage_sum_per_impression']:>17.1f}")
    print(f"{'INFO used_memory delta':<31} {r['used_memory_delta_per_impression']:>17.1f}")
    print(
        f"record value: {r['record_value_bytes_msgpack']:.1f} B msgpack array"
        f" (JSON object: {r['record_value_bytes_json_dict']:.1f} B); fold {r['fold_s']:.1f} s"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_lookup_memory",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--impressions", type=int, default=100_000)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--sample", type=int, default=2000, help="keys per kind for MEMORY USAGE")
    p.add_argument("--external-share", type=float, default=0.3, help="share with external imp ids")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-lookup-") as tmp:
        server = EmbeddedRedis(Path(tmp), unix_socket=False)
        url = server.start()
        client = connect(url)
        try:
            return await measure(args, client)
        finally:
            close_pipe(client)
            await client.aclose()
            server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("warning")
    try:
        result = asyncio.run(run(args))
    except BenchFailed as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    report(result)
    if args.json:
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
