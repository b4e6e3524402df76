"""The command line: `python -m tracker web | actor NAME | redis | dev | events tail|export`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import msgspec
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tracker import events
from tracker.actors.supervisor import ACTORS
from tracker.config import token_cli
from tracker.eventstore import keys
from tracker.eventstore.connection import ServerRefused
from tracker.eventstore.embedded import EmbeddedRedisError, RedisNotFound
from tracker.eventstore.export import export, time_bound
from tracker.eventstore.store import EventStore, PartitionMismatch, StoredEvent
from tracker.logs import configure_logging
from tracker.settings import Settings, SettingsError

logger = structlog.get_logger()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tracker",
        description="Ad impression tracking and view-through attribution on Redis Streams. "
        "Settings come from the environment (see README: Configuration).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("web", help="run the HTTP front end (stateless; run several)")
    actor = sub.add_parser("actor", help="run one actor process")
    actor.add_argument("name", choices=sorted(ACTORS), help="which actor")
    sub.add_parser("redis", help="run the embedded redis-server in the foreground (AOF on)")
    dev = sub.add_parser("dev", help="web + every actor in one process, on the embedded Redis")
    dev.add_argument(
        "--actors",
        default=",".join(sorted(ACTORS)),
        help="comma-separated actors to run (default: all)",
    )
    ev = sub.add_parser("events", help="read the event log")
    ev_sub = ev.add_subparsers(dest="events_command", required=True, metavar="SUBCOMMAND")
    tail = ev_sub.add_parser("tail", help="print events as JSON lines as they are appended")
    tail.add_argument(
        "--from", dest="start", default="$", help="stream id to start after (default: now)"
    )
    _stream_arg(tail)
    exp = ev_sub.add_parser("export", help="print stored events as JSON lines, in time order")
    exp.add_argument("--since", default="-", help="ISO 8601 time or stream id (inclusive)")
    exp.add_argument("--until", default="+", help="ISO 8601 time or stream id (exclusive)")
    _stream_arg(exp)
    token_cli.add_parser(sub)
    return parser


def _stream_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stream",
        action="append",
        help="partition (p0, p1, ...) or 'config'; repeatable (default: all)",
    )


def _check_events_args(args: argparse.Namespace) -> None:
    """Bounds and positions of `events export|tail`, checked before anything connects."""
    if args.command != "events":
        return
    if args.events_command == "export":
        time_bound(args.since, upper=False)
        time_bound(args.until, upper=True)
    elif args.start != "$":
        _check_stream_id(args.start)


def _check_stream_id(value: str) -> None:
    try:
        keys.checked_id(value)
    except ValueError as exc:
        raise SettingsError(f"--from {exc}") from None


def _line(stored: StoredEvent) -> bytes:
    body = {"stream": stored.partition, "id": stored.entry_id, "event": stored.event}
    return msgspec.json.encode(body) + b"\n"


def _streams(store: EventStore, chosen: list[str] | None) -> list[str]:
    valid = [*store.partitions, keys.CONFIG]
    if not chosen:
        return valid
    bad = [s for s in chosen if s not in valid]
    if bad:
        raise SettingsError(f"--stream {bad[0]!r}: expected one of {', '.join(valid)}")
    return list(dict.fromkeys(chosen))  # a stream named twice is still read once


async def _events_main(settings: Settings, args: argparse.Namespace) -> None:
    from tracker.service import open_store, resolve_redis_url

    async with open_store(settings, await resolve_redis_url(settings)) as store:
        parts = _streams(store, args.stream)
        out = sys.stdout.buffer
        if args.events_command == "export":
            async for stored in export(store, parts, args.since, args.until):
                out.write(_line(stored))
            out.flush()
            return
        positions = dict.fromkeys(parts, args.start)
        if args.start == "$":  # resolve "now" once, so no event between two reads is missed
            positions = {p: await store.last_id(p) for p in parts}
        while True:
            for stored in await store.tail(positions, block_ms=1000):
                positions[stored.partition] = stored.entry_id
                out.write(_line(stored))
            out.flush()


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop  # optional speed-up

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        _check_events_args(args)
        token_cli.check_args(args)
    except (SettingsError, ValueError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    configure_logging(settings.log_level, settings.log_format)
    from tracker import service  # keeps `--help` fast

    try:
        if args.command == "web":
            _run(service.web_main(settings))
        elif args.command == "actor":
            _run(service.actor_main(settings, args.name))
        elif args.command == "redis":
            _run(service.redis_main(settings))
        elif args.command == "dev":
            chosen = [a for a in args.actors.split(",") if a]
            unknown = [a for a in chosen if a not in ACTORS]
            if unknown:
                parser.exit(2, f"{parser.prog}: error: unknown actor {unknown[0]!r}\n")
            _run(service.dev_main(settings, chosen))
        else:
            is_token = args.command == "token"
            _run(token_cli.token_main(settings, args) if is_token else _events_main(settings, args))
    except KeyboardInterrupt:
        return 130
    except (
        SettingsError,
        ServerRefused,
        PartitionMismatch,
        RedisNotFound,
        EmbeddedRedisError,
    ) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except (RedisConnectionError, RedisTimeoutError) as exc:  # REDIS_URL names no live server
        print(f"{parser.prog}: error: cannot reach Redis: {exc}", file=sys.stderr)
        return 2
    except events.UnknownEvent as exc:
        logger.error("unknown_event", entry_id=exc.entry_id, detail=exc.detail)
        return 1
    except BrokenPipeError:
        return 0
    return 0
