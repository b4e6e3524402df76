"""EventStore: idempotent, group-committed appends and typed reads. Raw Redis replies stop here."""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple

import msgspec
import redis.asyncio as redis
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tracker import events
from tracker.events import AnyEvent
from tracker.eventstore import keys, scripts
from tracker.eventstore.pipe import Pipe
from tracker.gcpause import gc_paused

logger = structlog.get_logger()

GROUP_TOKEN_TTL_S: Final = 300  # outlives any client retry of one script call
# A group token set to FENCE by the spool drainer: the call, if it comes late, finds its token
# taken and changes nothing (see spool._landed); kept long enough to outlast any Redis stall.
FENCE: Final = "fenced"
FENCE_TTL_S: Final = 7 * 24 * 3600
DEADLINE_SWEEP_S: Final = 0.1  # how often submits with a deadline are checked
RETRYABLE: Final = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)
MAX_GROUP: Final = 500  # events per append script call (bounds Redis's time in one script)
MAX_INFLIGHT: Final = 2  # script calls in flight per partition (the rest queue into bigger groups)


class StoredEvent(NamedTuple):
    partition: str
    entry_id: str
    event: AnyEvent


class AppendResult(NamedTuple):
    partition: str
    entry_id: str
    duplicate: bool  # True: the idempotency key was seen before; entry_id is the original
    alternate: bool = False  # True: the claim was taken, so the alternative event was appended


class Claim(NamedTuple):
    """Append ``otherwise`` instead of the event when ``name`` was claimed within ``ttl_s``."""

    name: str
    ttl_s: int
    otherwise: AnyEvent


# what append_many takes: an event, (event, idempotency key), or (event, key, claim)
AppendItem = AnyEvent | tuple[AnyEvent, str | None] | tuple[AnyEvent, str | None, Claim | None]


class AppendUncertain(Exception):
    """The append call failed in a way that leaves open whether Redis ran it (connection lost,
    timeout) after the client's retries. ``group_token`` is the call's token key: while it holds
    the call's result (GROUP_TOKEN_TTL_S), it proves the call ran; the spool drainer fences a
    missing one (FENCE) so a call arriving later changes nothing. See ``EventStore.group_ran``."""

    def __init__(self, cause: Exception, partition: str, group_token: str) -> None:
        super().__init__(f"append to {partition} uncertain: {cause}")
        self.cause = cause
        self.partition = partition
        self.group_token = group_token


class Op(msgspec.Struct, frozen=True, gc=False):
    """One Redis command a projection wants applied with its checkpoint: ``cmd key *args``.
    A Struct rather than a NamedTuple: a fold builds several per event, and a Struct is made in C
    (~0.08 µs against ~0.45); untracked by the cyclic GC (a value: it cannot form a cycle)."""

    cmd: str
    key: str
    args: tuple[str | int | float | bytes, ...] = ()


class PartitionMismatch(Exception):
    """TRACKER_PARTITIONS differs from the count the log was created with."""


_EMPTY_KEY: Final = "an idempotency key must not be empty (None: no key)"


def _result(part: str, raw: str) -> AppendResult:
    mark = raw[0]  # a digit for a new entry id (the usual case), else "=" or "!"
    if mark == "=":
        return AppendResult(part, raw[1:], duplicate=True)
    if mark == "!":
        return AppendResult(part, raw[1:], duplicate=False, alternate=True)
    return AppendResult(part, raw, duplicate=False)


def as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def queue_fence(pipe: Any, group_token: str) -> None:
    """Queue on ``pipe`` the fence of a call's group token (``SET NX``: a call arriving later
    then changes nothing) and its read-back: two replies, the second for ``token_ran``."""
    pipe.set(group_token, FENCE, nx=True, ex=FENCE_TTL_S)
    pipe.get(group_token)


def token_ran(saved: Any) -> bool:
    """Whether a group token's value says its call ran: it holds the call's result, not FENCE."""
    return saved is not None and as_str(saved) != FENCE


# what one script call appends: payload, idempotency key, claim (name, ttl, alternative payload)
_Item = tuple[bytes, str | None, tuple[str, int, bytes] | None]


class _Pending(NamedTuple):
    item: _Item
    future: asyncio.Future[AppendResult]
    deadline: float = math.inf  # time.monotonic() after which its caller stops waiting


class _Script:
    """EVALSHA with a fallback to SCRIPT LOAD on NOSCRIPT (after a Redis restart or failover)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha: str | None = None

    async def __call__(
        self,
        client: redis.Redis,
        keys_: Sequence[str],
        args: Sequence[Any],
        pipe: Pipe | None = None,
        packed: tuple[bytes, int] = (b"", 0),
    ) -> Any:
        """``packed``: more arguments already in RESP and their count (with ``pipe`` only)."""
        if packed[1] and pipe is None:
            raise ValueError("packed arguments need the append pipe")
        if self.sha is None:
            self.sha = as_str(await client.script_load(self.source))
        try:
            return await self._evalsha(client, pipe, keys_, args, packed)
        except NoScriptError:
            self.sha = as_str(await client.script_load(self.source))
            return await self._evalsha(client, pipe, keys_, args, packed)

    async def _evalsha(
        self,
        client: redis.Redis,
        pipe: Pipe | None,
        keys_: Sequence[str],
        args: Sequence[Any],
        packed: tuple[bytes, int],
    ) -> Any:
        if pipe is not None:
            tail, count = packed
            return await pipe.call(
                "EVALSHA", self.sha, len(keys_), *keys_, *args, tail=tail, tail_count=count
            )
        return await client.evalsha(self.sha, len(keys_), *keys_, *args)  # type: ignore[arg-type]


def _is_plain(items: Sequence[_Item]) -> bool:
    """Whether no event of the group has an idempotency key or a claim (a pixel group)."""
    return all(key is None and claim is None for _, key, claim in items)


def _packed_events(items: Sequence[_Item], plain: bool) -> bytes | None:
    """The events' append arguments in RESP: APPEND_PLAIN's one payload per event for a plain
    group, else APPEND's three (key, claim, payload), or None when an event has a claim (those go
    ``_general_args``'s way). A format per event instead of hiredis's packer per argument: about
    0.25 us an event instead of 0.5 on a batch's groups."""
    if plain:
        return b"".join([b"$%d\r\n%b\r\n" % (len(p), p) for p, _, _ in items])
    out = []
    for payload, key, claim in items:
        if claim is not None:
            return None
        if key is None:
            out.append(b"$0\r\n\r\n$0\r\n\r\n$%d\r\n%b\r\n" % (len(payload), payload))
        else:
            k = key.encode()
            out.append(b"$%d\r\n%b\r\n$0\r\n\r\n$%d\r\n%b\r\n" % (len(k), k, len(payload), payload))
    return b"".join(out)


class EventStore:
    """The partitioned event log.

    ``append`` enqueues and awaits: every append issued in one event-loop tick is sent in one script
    call per partition (group commit), and each caller gets its own result or exception.
    """

    def __init__(
        self,
        client: redis.Redis,
        partitions: int = 4,
        *,
        idempotency_ttl_s: int = 7 * 24 * 3600,
        max_group: int = MAX_GROUP,
    ) -> None:
        self.client = client
        # appends go over a lean pipelined connection of their own (see pipe.py), when possible
        self._pipe = Pipe.for_client(client)
        self.partition_count = partitions
        self.partitions = keys.partitions(partitions)
        self.idempotency_ttl_s = idempotency_ttl_s
        self.max_group = max_group
        self._append_script = _Script(scripts.APPEND)
        self._plain_script = _Script(scripts.APPEND_PLAIN)
        self._commit_script = _Script(scripts.COMMIT)
        self._pending: dict[str, list[_Pending]] = {}
        self._flush_scheduled = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._busy: dict[str, int] = {}  # partition -> script calls in flight
        self._slots: dict[str, asyncio.Semaphore] = {}  # partition -> append_many's call slots
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hot = secrets.randbelow(partitions)  # see hot_route()
        self._sent: dict[str, tuple[str, list[_Pending]]] = {}  # token -> group in flight
        self._sweeper: asyncio.Task[None] | None = None  # expires submits past their deadline

    # -- start-up -------------------------------------------------------------------------------

    async def check_partitions(self) -> None:
        """Record the partition count on first use; refuse a different one later."""
        await self.client.hsetnx(keys.META, "partitions", str(self.partition_count))
        stored = as_str(await self.client.hget(keys.META, "partitions"))
        if int(stored) != self.partition_count:
            raise PartitionMismatch(
                f"TRACKER_PARTITIONS={self.partition_count} but this log was created with "
                f"{stored} partitions; changing it would move events between partitions"
            )

    # -- appending ------------------------------------------------------------------------------

    def hot_route(self) -> int:
        """The partition number to route an event to when any partition will do (an impression
        without an idempotency key or claim): the same for every such event of one event-loop
        tick, and the next one after each flush. One script call then carries the tick's events
        instead of one per partition, while over time every partition gets its share."""
        return self._hot

    def partition_of(self, event: AnyEvent) -> str:
        return keys.partition_of(event, self.partition_count)

    async def append(
        self, event: AnyEvent, idempotency_key: str | None = None, *, claim: Claim | None = None
    ) -> AppendResult:
        """Append one event; with a key, a repeat returns the original entry (duplicate=True).
        See ``submit``."""
        return await self.submit(event, idempotency_key, claim=claim)

    def submit(
        self,
        event: AnyEvent,
        idempotency_key: str | None = None,
        *,
        claim: Claim | None = None,
        deadline_s: float | None = None,
    ) -> asyncio.Future[AppendResult]:
        """``append`` without the coroutine: queue the event, return the future of its result
        (for callers that answer from a callback, like the lean pixel front end).

        Keys are scoped to a partition: an event with a key must be routed to
        ``keys.key_route(tenant, key, n)`` (mint its impression id with that route). A claim, too,
        lives in the event's partition: route the event by the claim's name.
        Raises AppendUncertain when the outcome is unknown (connection lost after retries).

        With ``deadline_s``, the future fails once that long has passed without an answer (a
        hung Redis): with RedisTimeoutError while the event still waits in the queue (it is
        taken out: it will not be sent), with AppendUncertain once its call was sent (it may
        still run: spool the event with the call's token, and the drainer fences the call).
        """
        if idempotency_key == "":
            raise ValueError(_EMPTY_KEY)
        part = self.partition_of(event)
        raw_claim = self._raw_claim(part, claim)
        deadline = math.inf
        if deadline_s is not None:
            deadline = time.monotonic() + deadline_s
            if self._sweeper is None or self._sweeper.done():  # first use, or a new loop
                self._sweeper = asyncio.get_running_loop().create_task(self._sweep_deadlines())
        return self._enqueue(part, events.encode(event), idempotency_key, raw_claim, deadline)

    def _raw_claim(self, part: str, claim: Claim | None) -> tuple[str, int, bytes] | None:
        if claim is None:
            return None
        if self.partition_of(claim.otherwise) != part:
            raise ValueError("a claim's alternative event must be in the same partition")
        return (claim.name, claim.ttl_s, events.encode(claim.otherwise))

    async def append_many(
        self,
        items: Iterable[AppendItem],
    ) -> list[AppendResult]:
        """Append several events (each optionally with an idempotency key, and a claim): one
        script call per partition and MAX_GROUP events, sent together, results in order.

        Unlike ``append``, the calls do not wait for the event-loop tick's other appends: a
        batch is a group already, and it skips the per-event futures of the group commit.
        Raises the first failure (AppendUncertain when a call's outcome is unknown); calls for
        other partitions may have run, and a retry with the same keys finds them.
        """
        n_parts = self.partition_count
        encode = events.encode
        by_part: dict[str, tuple[list[int], list[_Item]]] = {}  # partition -> (indexes, items)
        with gc_paused():  # thousands of tuples that all live until the reply
            n = 0
            for n, item in enumerate(items, 1):
                if isinstance(item, tuple):
                    event, key = item[0], item[1]
                    claim = item[2] if len(item) == 3 else None
                else:
                    event, key, claim = item, None, None
                if key == "":
                    raise ValueError(_EMPTY_KEY)
                part = keys.partition_of(event, n_parts)
                rows = by_part.get(part)
                if rows is None:
                    rows = by_part[part] = ([], [])
                rows[0].append(n - 1)
                rows[1].append(
                    (encode(event), key, self._raw_claim(part, claim) if claim else None)
                )
        calls = []
        for part, (indexes, part_items) in by_part.items():
            for start in range(0, len(part_items), self.max_group):
                end = start + self.max_group
                calls.append(
                    (indexes[start:end], self._append_limited(part, part_items[start:end]))
                )
        results: list[AppendResult | None] = [None] * n
        outcomes = await asyncio.gather(*(call for _, call in calls), return_exceptions=True)
        for (indexes, _), outcome in zip(calls, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                raise outcome
            for i, result in zip(indexes, outcome, strict=True):
                results[i] = result
        return results  # type: ignore[return-value]  # every slot was filled

    async def _append_limited(self, part: str, items: Sequence[_Item]) -> list[AppendResult]:
        """``_append_call`` with at most MAX_INFLIGHT of append_many's calls per partition in
        flight, however many batches run at once (without the append pipe, each call holds a
        pooled connection)."""
        slots = self._slots.get(part)
        if slots is None:
            slots = self._slots[part] = asyncio.Semaphore(MAX_INFLIGHT)
        async with slots:
            return await self._append_call(part, items)

    async def _append_call(
        self, part: str, items: Sequence[_Item], token: str = ""
    ) -> list[AppendResult]:
        """One script call; a failure that leaves open whether it ran becomes AppendUncertain."""
        token = token or keys.group_token(part, secrets.token_hex(12))
        try:
            return await self._append_group(part, token, items)
        except Exception as exc:
            if isinstance(exc, RETRYABLE) and not isinstance(exc, MaxConnectionsError):
                raise AppendUncertain(exc, part, token) from exc
            raise

    def _enqueue(
        self,
        part: str,
        payload: bytes,
        idempotency_key: str | None,
        claim: tuple[str, int, bytes] | None,
        deadline: float = math.inf,
    ) -> asyncio.Future[AppendResult]:
        loop = self._loop
        if loop is None or loop.is_closed():  # cached: get_running_loop() is a getpid() on 3.11
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[AppendResult] = loop.create_future()
        self._pending.setdefault(part, []).append(
            _Pending((payload, idempotency_key, claim), future, deadline)
        )
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush_all)
        return future

    def _flush_all(self) -> None:
        """Start a script call for every partition with queued appends and a free call slot.

        At most MAX_INFLIGHT calls per partition are in flight: what arrives meanwhile waits and
        goes in the next call, so groups grow with load and a Redis stall queues appends instead
        of exhausting the connection pool.
        """
        self._flush_scheduled = False
        self._hot = (self._hot + 1) % self.partition_count
        for part in list(self._pending):
            while self._pending.get(part) and self._busy.get(part, 0) < MAX_INFLIGHT:
                items = self._pending[part][: self.max_group]
                del self._pending[part][: self.max_group]
                if not self._pending[part]:
                    del self._pending[part]
                self._busy[part] = self._busy.get(part, 0) + 1
                task = asyncio.create_task(self._flush(part, items))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    def _release(self, part: str) -> None:
        self._busy[part] -= 1
        if self._pending.get(part) and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_all)

    async def _flush(self, part: str, items: list[_Pending]) -> None:
        token = keys.group_token(part, secrets.token_hex(12))
        self._sent[token] = (part, items)
        try:
            results = await self._append_call(part, [p.item for p in items], token)
        except Exception as exc:  # fails exactly the callers of this group
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        except BaseException:  # cancelled (a shutdown): no caller may wait forever
            for item in items:
                item.future.cancel()
            raise
        finally:
            del self._sent[token]
            self._release(part)
        for item, result in zip(items, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)

    async def _append_group(
        self, part: str, token: str, items: Sequence[_Item]
    ) -> list[AppendResult]:
        stream = keys.stream(part)
        reply = await self._append_reply(part, stream, token, items)
        if isinstance(reply, list):  # {"replay", saved}: the call had run (see scripts.APPEND)
            raw = [as_str(x) for x in reply]
            if len(raw) != 2 or raw[0] != "replay":
                raise ValueError(f"unexpected append script reply: {raw[:3]}")
            if raw[1] == FENCE:  # it changed nothing: its events go to the spool, which has
                # some of them already (their callers' deadline passed) and appends them all
                cause = RuntimeError("the call ran after the spool drainer had fenced it")
                raise AppendUncertain(cause, part, token)
            raw = await self._replayed(stream, raw[1], len(items))
        else:
            raw = as_str(reply).split()
        return [_result(part, r) for r in raw]

    async def _append_reply(
        self, part: str, stream: str, token: str, items: Sequence[_Item]
    ) -> Any:
        """The group's script call: APPEND_PLAIN when no event has a key or a claim, else
        APPEND; on the append pipe, the events go packed in RESP."""
        plain = _is_plain(items)
        packed = _packed_events(items, plain) if self._pipe is not None else None
        args: list[Any]
        if plain:
            script, script_keys, args = self._plain_script, [stream, token], [GROUP_TOKEN_TTL_S]
            per_event = 1
        else:
            script, script_keys = self._append_script, [stream, token, keys.idempotency(part)]
            args = [self.idempotency_ttl_s, GROUP_TOKEN_TTL_S, len(items)]
            per_event = 3
        if packed is not None:
            return await script(
                self.client, script_keys, args, self._pipe, (packed, per_event * len(items))
            )
        if plain:
            args += [payload for payload, _, _ in items]
        else:
            args = self._general_args(part, items, args, script_keys)
        return await script(self.client, script_keys, args, self._pipe)

    @staticmethod
    def _general_args(
        part: str, items: Sequence[_Item], args: list[Any], script_keys: list[str]
    ) -> list[Any]:
        """The events' arguments one by one, claims among them (adds their keys to script_keys)."""
        alternatives: list[bytes] = []
        claims: dict[str, int] = {}  # one KEYS slot per distinct claim: repeats in a group match
        for payload, key, claim in items:
            if claim is None:
                args += [key or "", "", payload]
            else:
                name, ttl_s, alternative = claim
                ci = claims.get(name)
                if ci is None:
                    script_keys.append(keys.claim(part, name))
                    ci = claims[name] = len(script_keys)
                args += [key or "", f"{ci} {ttl_s}", payload]
                alternatives.append(alternative)
        args += alternatives
        return args

    async def group_ran(self, group_token: str) -> bool:
        """Whether the append call with this token ran (within GROUP_TOKEN_TTL_S of it): its
        token holds the call's result. A fenced token (FENCE, set by the spool drainer) means
        it did not, and never will."""
        return token_ran(await self.client.get(group_token))

    async def fence_group(self, group_token: str) -> bool:
        """Settle an uncertain append call for good: True when it ran (its token holds its
        result), False when it had not, and now never will (its token is fenced, as the spool
        drainer fences it). Within GROUP_TOKEN_TTL_S of the call."""
        pipe = self.client.pipeline(transaction=False)
        queue_fence(pipe, group_token)
        _, saved = await pipe.execute()
        return token_ran(saved)

    def _expire_overdue(self, now: float) -> None:
        """Fail the submits whose deadline passed (see ``submit``)."""
        for token, (part, items) in list(self._sent.items()):
            for item in items:
                if item.deadline <= now and not item.future.done():
                    cause = RedisTimeoutError("no answer from Redis within the deadline")
                    item.future.set_exception(AppendUncertain(cause, part, token))
        for part, queue in list(self._pending.items()):
            if all(item.deadline > now for item in queue):
                continue
            keep = []
            for item in queue:
                if item.deadline > now:
                    keep.append(item)
                elif not item.future.done():
                    item.future.set_exception(
                        RedisTimeoutError("not sent: Redis took no call within the deadline")
                    )
            if keep:
                self._pending[part] = keep
            else:
                del self._pending[part]

    async def _sweep_deadlines(self) -> None:
        while True:
            await asyncio.sleep(DEADLINE_SWEEP_S)
            try:
                self._expire_overdue(time.monotonic())
            except Exception:  # a bug: say so, and keep the deadlines working
                logger.exception("deadline_sweep_failed")

    async def _replayed(self, stream: str, saved: str, n: int) -> list[str]:
        """Rebuild the reply of a call that already ran (its reply was lost, the call re-sent)."""
        first, count, *notes = saved.split(" ")
        dups: dict[int, str] = {}
        alternates: set[int] = set()
        for note in filter(None, notes):
            if note.endswith("!"):
                alternates.add(int(note[:-1]))
            else:
                i, _, entry_id = note.partition("=")
                dups[int(i)] = "=" + entry_id
        new_ids: list[str] = []
        if int(count):
            entries = await self.client.xrange(stream, min=first, max="+", count=int(count))
            new_ids = [as_str(entry_id) for entry_id, _ in entries or []]
        fresh = iter(new_ids)
        logger.info("append_replayed", stream=stream, events=n)
        return [
            dups[i] if i in dups else ("!" if i in alternates else "") + next(fresh)
            for i in range(1, n + 1)
        ]

    def close(self) -> None:
        """Close the append connection (the redis-py client is the caller's to close)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._pipe is not None:
            self._pipe.close()

    async def drain(self) -> None:
        """Wait until every append issued so far has its answer (used on shutdown)."""
        while self._pending or self._inflight or self._flush_scheduled:
            if self._inflight:
                await asyncio.gather(*list(self._inflight), return_exceptions=True)
            else:
                await asyncio.sleep(0)
                if self._pending and not self._flush_scheduled:
                    self._flush_all()

    # -- reading --------------------------------------------------------------------------------

    def _decode_entries(self, part: str, entries: Any) -> list[StoredEvent]:
        out = []
        for raw_id, fields in entries:
            entry_id = as_str(raw_id)
            payload = fields.get(b"event") if fields else None
            if payload is None:
                raise events.UnknownEvent(entry_id, f"entry in {part} has no 'event' field")
            out.append(StoredEvent(part, entry_id, events.decode(payload, entry_id)))
        return out

    @staticmethod
    def _decode_raw_entries(part: str, entries: Any) -> list[StoredEvent]:
        """As ``_decode_entries``, for the pipe's raw reply: ``[[id, [field, value, ...]], ...]``
        (no dict per entry: the appended entries hold the one field ``event``)."""
        out = []
        decode = events.decode
        for raw_id, fields in entries:
            entry_id = raw_id.decode()
            if fields and fields[0] == b"event":
                payload = fields[1]
            else:  # another layout: look the field up, or report the entry
                found = dict(zip(fields[::2], fields[1::2], strict=True)) if fields else {}
                payload = found.get(b"event")
                if payload is None:
                    raise events.UnknownEvent(entry_id, f"entry in {part} has no 'event' field")
            out.append(StoredEvent(part, entry_id, decode(payload, entry_id)))
        return out

    async def read(self, part: str, after: str = "0-0", count: int = 500) -> list[StoredEvent]:
        """Up to ``count`` events of a partition strictly after position ``after`` (for replay,
        and for a projection catching up). Over the append pipe when there is one: its raw reply
        skips redis-py's per-entry parsing (a dict and tuples per entry)."""
        lo = "-" if after in ("", "0", "0-0") else "(" + after
        if self._pipe is not None:
            raw = await self._pipe.call("XRANGE", keys.stream(part), lo, "+", "COUNT", count)
            return self._decode_raw_entries(part, raw)
        entries = await self.client.xrange(keys.stream(part), min=lo, max="+", count=count)
        return self._decode_entries(part, entries)

    async def read_range(
        self, part: str, lo: str = "-", hi: str = "+", count: int = 500
    ) -> list[StoredEvent]:
        entries = await self.client.xrange(keys.stream(part), min=lo, max=hi, count=count)
        return self._decode_entries(part, entries)

    async def tail(
        self, positions: dict[str, str], *, block_ms: int = 1000, count: int = 500
    ) -> list[StoredEvent]:
        """Events after the given positions, waiting up to ``block_ms`` when there are none."""
        streams = {keys.stream(p): (pos or "0-0") for p, pos in positions.items()}
        by_stream = {keys.stream(p): p for p in positions}
        reply: Any = await self.client.xread(streams, count=count, block=block_ms)  # type: ignore[arg-type]  # str ids are fine
        out: list[StoredEvent] = []
        for raw_stream, entries in reply or []:  # RESP2: [[stream, entries], ...]
            out += self._decode_entries(by_stream[as_str(raw_stream)], entries)
        return out

    async def last_id(self, part: str) -> str:
        entries = await self.client.xrevrange(keys.stream(part), max="+", min="-", count=1)
        return as_str(entries[0][0]) if entries else "0-0"

    async def length(self, part: str) -> int:
        return int(await self.client.xlen(keys.stream(part)))

    # -- checkpoints ----------------------------------------------------------------------------

    async def checkpoint(self, part: str, projection: str) -> str:
        value = await self.client.get(keys.checkpoint(part, projection))
        return as_str(value) if value is not None else ""

    async def commit(
        self, part: str, projection: str, expected: str, new: str, ops: Sequence[Op]
    ) -> tuple[bool, str]:
        """Apply ``ops`` and move the checkpoint from ``expected`` to ``new`` in one atomic step.

        Returns (True, new), or (False, found) when the checkpoint was not ``expected`` (another
        runner moved it, or this is a re-sent call that already applied): nothing was changed.
        """
        script_keys = [keys.checkpoint(part, projection)]
        index: dict[str, int] = {}
        args: list[Any] = [expected, new, len(ops)]
        for op in ops:
            slot = index.get(op.key)
            if slot is None:
                script_keys.append(op.key)
                slot = index[op.key] = len(script_keys)
            # numbers travel as decimal strings, exactly (no Lua double in between)
            args += (op.cmd, slot, len(op.args), *op.args)
        reply = await self._commit_script(self.client, script_keys, args, self._pipe)
        return bool(int(reply[0])), as_str(reply[1])

    async def groups_info(self, part: str) -> list[dict[str, Any]]:
        return list(await self.client.xinfo_groups(keys.stream(part)))
