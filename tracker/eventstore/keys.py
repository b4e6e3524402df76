"""Every Redis key, stream and group name, and the partition function; nowhere else.

Each partition ``pN`` has a Redis Cluster hash tag ``{pN}`` shared by its stream, idempotency keys,
group tokens, checkpoints and projection state, so every script touches exactly one slot.
"""

from __future__ import annotations

from typing import Final

from tracker.events import AnyEvent, ConversionReceived, ImpressionSeen, TrackerConfigured
from tracker.ids import route_of, stable_hash

PREFIX: Final = "tracker"
CONFIG: Final = "config"  # the configuration stream's partition name
META: Final = f"{PREFIX}:meta"  # hash: partitions, created_at


def partitions(n: int) -> list[str]:
    return [f"p{i}" for i in range(n)]


def stream(part: str) -> str:
    return f"{PREFIX}:{{{part}}}:events"


def idempotency(part: str) -> str:
    """The prefix of a partition's idempotency key buckets, ``PREFIX:TTL:PERIOD`` (hashes whose
    fields are the keys; see scripts.APPEND)."""
    return f"{PREFIX}:{{{part}}}:idem"


def group_token(part: str, token: str) -> str:
    return f"{PREFIX}:{{{part}}}:gtok:{token}"


def claim(part: str, name: str) -> str:
    """A first-of-its-kind claim (see scripts.APPEND), e.g. ``imp:OFFER:IMP_ID``."""
    return f"{PREFIX}:{{{part}}}:claim:{name}"


def checkpoint(part: str, projection: str) -> str:
    return f"{PREFIX}:{{{part}}}:ckpt:{projection}"


def projection(part: str, name: str, *rest: str) -> str:
    """A projection's state key in partition ``part``: ``tracker:{pN}:proj:NAME:REST…``."""
    return ":".join((f"{PREFIX}:{{{part}}}:proj:{name}", *rest))


def dead_letter(part: str, group: str) -> str:
    return f"{PREFIX}:{{{part}}}:dead:{group}"


def partition_of(event: AnyEvent, n: int) -> str:
    """The partition an event is appended to: a pure function of the event.

    Configuration goes to the single config stream. An impression goes by its impression id; a
    conversion naming our impression id (aimp_id) goes to that impression's partition, so it is
    read after the impression; any other conversion goes by its conversion id. An event appended
    with an idempotency key must be in ``key_route(...)``'s partition: mint its id with that route.
    """
    if type(event) is ImpressionSeen:  # the hot case first, without the match machinery
        return f"p{route_of(event.impression_id, n)}"
    match event:
        case TrackerConfigured():
            return CONFIG
        case ImpressionSeen(impression_id=iid):
            return f"p{route_of(iid, n)}"
        case ConversionReceived(aimp_id=aimp, conversion_id=cid):
            return f"p{route_of(aimp, n)}" if aimp else f"p{stable_hash(cid) % n}"


def key_route(tenant: str, idempotency_key: str, n: int) -> int:
    """The partition number where an idempotency key lives; mint the event's id with this route."""
    return stable_hash(f"{tenant}\x00{idempotency_key}") % n


def parse_id(entry_id: str) -> tuple[int, int]:
    """A stream entry id as (ms, seq): ids are compared as numbers, never as strings."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


MAX_ID_PART: Final = 2**64 - 1  # a stream id's ms and seq are unsigned 64-bit numbers


def checked_id(value: str) -> tuple[int, int]:
    """A stream id given by a person (``<ms>`` or ``<ms>-<seq>``, ASCII digits, each part at most
    2^64 - 1), as (ms, seq); ValueError for anything Redis would refuse."""
    ms, sep, seq = value.partition("-")
    digits = [ms, seq] if sep else [ms]
    if not all(d.isascii() and d.isdigit() for d in digits):
        raise ValueError(f"{value!r}: expected a stream id such as 1700000000000-0")
    parsed = int(ms), int(seq or 0)
    if max(parsed) > MAX_ID_PART:
        raise ValueError(f"{value!r}: a stream id's parts are at most {MAX_ID_PART}")
    return parsed


def id_after(a: str, b: str) -> bool:
    return parse_id(a) > parse_id(b)


# -- configuration write guards (all in the config stream's slot) --------------------------------


def config_version(kind: str, object_id: str) -> str:
    """The current version of one configuration object (compare-and-set on every write)."""
    return f"{PREFIX}:{{{CONFIG}}}:ver:{kind}:{object_id}"


def config_sequence(kind: str) -> str:
    """The auto-increment id counter of one kind of configuration object."""
    return f"{PREFIX}:{{{CONFIG}}}:seq:{kind}"


def config_request(token: str) -> str:
    """A configuration write's request token: a re-sent call returns the first call's entry id."""
    return f"{PREFIX}:{{{CONFIG}}}:req:{token}"


def config_claim(tenant: str, name: str) -> str:
    """A unique name (e.g. a tracker code, global) held by one object id."""
    return f"{PREFIX}:{{{CONFIG}}}:claim:{tenant}:{name}"
