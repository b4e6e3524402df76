"""The local spool: pixel events fsynced to disk while Redis is unreachable, drained back later.

Layout: ``<data dir>/spool/<uuid7 hex>.spool``, one append-only file per writer, names in creation
order. A record is ``b"SP" | u32 payload length | u32 CRC-32 of payload | payload`` (big-endian),
the payload the JSON array ``[idempotency_key, event, group_token?, claim?, claim_ttl_s?,
otherwise?]`` (trailing fields omitted when empty). A crash can leave a torn last record;
readers report the bytes from the first record that is short or fails its CRC when no intact
record follows. Unreadable bytes *between* intact records are damage (a writer only tears its
end): the records around them are read, and the drained file is kept as ``.bad``, not deleted.
A writer never appends after a failed write: it cuts the file back to what it had acknowledged
(a full disk can stop a write after whole records, whose callers were told it failed), then
abandons that file and starts a new one. A file is created as ``<name>.tmp`` and renamed once
locked, before anything is written to it; a crash in between leaves an empty ``.tmp``, which
``remove_stale_temps`` removes once it is ``STALE_TEMP_S`` old and unlocked.

A writer holds ``flock(LOCK_EX)`` on its file while it is open, so a drainer (in this or another
process) drains only files no live writer holds: rotated ones and those of crashed processes.
A file is deleted only after every record in it was appended, each with its idempotency key, so
a drain that dies halfway is simply run again and finds the appended events to be duplicates.
A record may carry its event's claim (the duplicate ``imp_id`` check of a pixel hit) and the
alternative event: the claim is taken when the record is drained, as the append would have.

Every spooled event must carry a key and be routed to it: mint the impression id with
``route=keys.key_route(tenant, key, n)`` (``EventStore.append`` scopes keys to a partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final, NamedTuple

import msgspec
import structlog

from tracker import events
from tracker.eventstore import keys
from tracker.eventstore.store import (
    GROUP_TOKEN_TTL_S,
    Claim,
    EventStore,
    as_str,
    queue_fence,
    token_ran,
)
from tracker.ids import new_uuid7_hex
from tracker.projections import impressions

logger = structlog.get_logger()

SUFFIX: Final = ".spool"
_HEADER = struct.Struct(">2sII")  # magic, payload length, CRC-32 of the payload
_MAGIC: Final = b"SP"
MAX_PAYLOAD: Final = 16 * 1024 * 1024
DRAIN_BATCH: Final = 500  # records per append_many call while draining
# A spooled hit recorded longer ago than this may have had its call run and its token expire
# since (GROUP_TOKEN_TTL_S, less a margin for the web and Redis clocks' skew)
TOKEN_MAY_HAVE_EXPIRED_S: Final = GROUP_TOKEN_TTL_S - 60
# A writer holds its .tmp's lock within microseconds of creating it, and renames it at once: one
# this old that nobody locks is a crashed writer's (a younger one may be between open and flock)
STALE_TEMP_S: Final = 60.0
# How long one drain pass (every file in it) may wait for the lookup to fold up to its fences:
# short, so that a projector that is down or far behind neither holds newer files back for long
# nor the web process's shutdown (the drain loop stops between passes)
LOOKUP_WAIT_S: Final = 3.0
LOOKUP_POLL_S: Final = 0.05


class SpoolRecord(NamedTuple):
    idempotency_key: str
    event: bytes  # tracker.events.encode(event)
    group_token: str = ""  # the failed append call's token (AppendUncertain): if it exists, the
    # call ran after all and the event is already in the log, appended without this key
    claim: str = ""  # the event's claim (a duplicate imp_id check), taken when it is drained
    claim_ttl_s: int = 0
    otherwise: bytes = b""  # the event appended instead when the claim was taken


class SpoolContents(NamedTuple):
    records: list[SpoolRecord]
    good_bytes: int  # where the last intact record ends
    torn_bytes: int  # bytes after it: a record cut short by a crash (0 when the file is whole)
    damaged_bytes: int = 0  # unreadable bytes between intact records (the disk, not a crash)


class DrainReport(NamedTuple):
    files: int = 0
    events: int = 0  # appended now
    duplicates: int = 0  # already in the log (an earlier, interrupted drain got them there)
    torn_bytes: int = 0
    damaged_bytes: int = 0  # their files were drained and then set aside as .bad, not deleted


class _LookupBehind(Exception):  # not an error: the file waits for a later drain
    """A record's fate needs the impression lookup, which has not folded its partition's log to
    the end yet."""

    def __init__(self, part: str) -> None:
        super().__init__(part)
        self.part = part


class SpoolCorrupt(Exception):
    """A record with a valid CRC that does not decode: written by another version, not torn."""


def spool_dir(data_dir: Path) -> Path:
    return data_dir / "spool"


def encode_record(record: SpoolRecord) -> bytes:
    fields: tuple[object, ...] = (record.idempotency_key, msgspec.Raw(record.event))
    if record.group_token or record.claim:
        fields += (record.group_token,)
    if record.claim:
        fields += (record.claim, record.claim_ttl_s, msgspec.Raw(record.otherwise))
    payload = msgspec.json.encode(fields)
    return _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload


class _Record(msgspec.Struct, array_like=True):
    key: str
    event: msgspec.Raw
    group_token: str = ""  # absent in records of calls without a token
    claim: str = ""  # these three are absent in records of events without a claim
    claim_ttl_s: int = 0
    otherwise: msgspec.Raw = msgspec.Raw(b"")


_record_decoder: Final = msgspec.json.Decoder(_Record)


def _record_at(data: bytes, pos: int, *, boundary: bool) -> tuple[SpoolRecord, int] | None:
    """The record starting at ``pos`` and where it ends, or None when none intact starts there
    (short, a bad header or CRC, an empty payload: the writer never writes one, and "SP" then
    zeros would pass the CRC). A record whose CRC holds but that does not decode raises
    SpoolCorrupt at a ``boundary`` (where the previous record ended: written by another build);
    elsewhere (looking for a record after damage) it is no record."""
    if pos + _HEADER.size > len(data):
        return None
    magic, length, crc = _HEADER.unpack_from(data, pos)
    end = pos + _HEADER.size + length
    if magic != _MAGIC or not 0 < length <= MAX_PAYLOAD or end > len(data):
        return None
    payload = data[pos + _HEADER.size : end]
    if zlib.crc32(payload) != crc:
        return None
    try:
        record = _record_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        if not boundary:
            return None
        raise SpoolCorrupt(f"record at byte {pos}: {exc}") from exc
    spooled = SpoolRecord(
        record.key,
        bytes(record.event),
        record.group_token,
        record.claim,
        record.claim_ttl_s,
        bytes(record.otherwise),
    )
    return spooled, end


def _next_record(data: bytes, start: int) -> int:
    """Where the next intact record after ``start`` begins, or -1."""
    at = data.find(_MAGIC, start)
    while at >= 0 and _record_at(data, at, boundary=False) is None:
        at = data.find(_MAGIC, at + 1)
    return at


def parse(data: bytes) -> SpoolContents:
    """The intact records of a spool file's bytes, how many bytes after them are torn, and how
    many unreadable bytes lie between intact records (damage, not a crash: a writer only ever
    tears its file's end). Reading goes on after damage at the next intact record."""
    records: list[SpoolRecord] = []
    pos = good = damaged = 0
    while pos < len(data):
        found = _record_at(data, pos, boundary=True)
        if found is None:
            resume = _next_record(data, pos + 1)
            if resume < 0:
                break  # the rest is a torn tail
            damaged += resume - pos
            pos = resume
            continue
        record, pos = found
        records.append(record)
        good = pos
    return SpoolContents(records, good, len(data) - pos, damaged)


def read_spool(path: Path) -> SpoolContents:
    return parse(path.read_bytes())


def _read_fd(fd: int, path: Path) -> bytes | None:
    """The file's bytes, or None when another drainer finished it meanwhile: deleted it, or set
    it aside (``path`` no longer names the file this fd has open)."""
    opened = os.fstat(fd)
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return None
    if opened.st_nlink == 0 or (opened.st_dev, opened.st_ino) != (named.st_dev, named.st_ino):
        return None
    # positional reads: a cancelled drain's read thread may still hold this fd number (closed
    # under it, reused by the next drain's open): a shared file offset would lose the records
    chunks, at = [], 0
    while chunk := os.pread(fd, 1 << 20, at):
        chunks.append(chunk)
        at += len(chunk)
    return b"".join(chunks)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    path.unlink()
    _fsync_dir(path.parent)


def _set_aside(path: Path) -> Path:
    """Rename a spool file to ``.bad``: drainers skip it; it waits for an operator."""
    quarantined = path.with_name(path.name + ".bad")
    path.rename(quarantined)
    _fsync_dir(path.parent)
    return quarantined


class _Pending(NamedTuple):
    data: bytes
    future: asyncio.Future[None]


class SpoolWriter:
    """Appends records durably: ``write_many`` returns once they are fsynced.

    Calls made while a write is in flight are joined into the next one (group commit), so many
    concurrent pixels share one write + fsync; the file work runs in a thread.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path: Path | None = None  # the file being written, None until the first write
        self._fd: int | None = None
        self._size = 0  # bytes of the current file, all of them fsynced and acknowledged
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None

    async def write_many(self, records: Sequence[SpoolRecord]) -> None:
        """Append ``records`` and fsync; raise OSError when that failed (nothing is promised)."""
        for record in records:
            if not record.idempotency_key:
                raise ValueError("a spooled event needs an idempotency key")
        if not records:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(b"".join(map(encode_record, records)), future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        await asyncio.shield(future)  # a cancelled caller does not cancel the others' write

    async def _run(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._write, b"".join(p.data for p in group))
            except OSError as exc:
                for item in group:
                    item.future.set_exception(exc)
            else:
                for item in group:
                    item.future.set_result(None)

    def _open(self) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = new_uuid7_hex()
        temp, path = self.directory / (name + ".tmp"), self.directory / (name + SUFFIX)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            # Locked before it gets a name drainers look at, so none can take it from us.
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(temp, path)
            _fsync_dir(self.directory)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):  # empty: it never got a name drainers read
                temp.unlink()
            raise
        self.path, self._fd, self._size = path, fd, 0
        return fd

    def _write(self, data: bytes) -> None:
        fd = self._fd if self._fd is not None else self._open()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as exc:
            self._abandon(fd, exc)
            raise
        self._size += len(data)

    def _abandon(self, fd: int, exc: OSError) -> None:
        """After a failed write: cut what it left (its callers are told it failed, so none of it
        may be drained: whole records could have reached the file before a full disk stopped
        the rest), then close; the next write starts a new file."""
        try:
            os.ftruncate(fd, self._size)  # shrinking needs no free space
            os.fsync(fd)
        except OSError as cut_error:  # a second I/O error: the records stay drainable
            logger.error(
                "spool_cut_failed",
                path=str(self.path),
                acknowledged_bytes=self._size,
                error=str(cut_error),
                write_error=str(exc),
            )
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # also releases the flock: the file becomes drainable
        self._fd = None
        self.path = None

    async def rotate(self) -> None:
        """Close the current file (after writes in flight) so a drainer can take it."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)
        self._close()

    async def close(self) -> None:
        await self.rotate()


def spool_files(directory: Path) -> list[Path]:
    """Spool files, oldest first (names are time-ordered)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX))


def remove_stale_temps(directory: Path) -> None:
    """Remove the empty ``.tmp`` files crashed writers left (see the module docstring); ``drain``
    calls it, and the web's drain loop once every ``STALE_TEMP_S`` while it has nothing to drain.
    One with bytes in it is no file this build leaves: it stays, for an operator. Never raises: a
    file that cannot be removed is logged and left."""
    try:
        temps = [p for p in directory.iterdir() if p.name.endswith(".tmp")]
    except OSError:  # no spool yet (or unreadable: the drain says so)
        return
    now = time.time()
    for path in temps:
        try:
            fd = _try_lock(path)
            if fd is None:
                continue
            try:
                info = os.fstat(fd)
                if info.st_size == 0 and now - info.st_mtime > STALE_TEMP_S:
                    path.unlink(missing_ok=True)
                    logger.info("spool_temp_removed", path=str(path))
            finally:
                os.close(fd)
        except OSError as exc:
            logger.warning("spool_temp_not_removed", path=str(path), error=str(exc))


def _chunks(records: list[SpoolRecord], size: int) -> Iterator[list[SpoolRecord]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


def _try_lock(path: Path) -> int | None:
    """An fd holding the file's lock, or None when a live writer holds it (or it is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


async def _drain_file(
    store: EventStore, path: Path, batch: int, lookup_deadline: float
) -> DrainReport | None:
    """Drain one file under its lock: None when a live writer holds it or another drainer
    finished it; a file this build cannot read is set aside, under the lock, so that no other
    drainer reads it again meanwhile."""
    fd = _try_lock(path)
    if fd is None:
        return None
    try:
        data = await asyncio.to_thread(_read_fd, fd, path)
        if data is None:
            return None
        try:
            return await _drain_bytes(store, path, data, batch, lookup_deadline)
        except _LookupBehind as behind:  # it drains once the projector has caught up
            if path not in _waiting:
                _waiting.add(path)
                logger.warning(
                    "spool_drain_waits_for_lookup", path=str(path), partition=behind.part
                )
            return None
        except (SpoolCorrupt, events.UnknownEvent) as exc:
            # e.g. from a newer build before a rollback: set aside, loudly, so the files after
            # it still drain; nothing in it is deleted (what was appended is found again)
            quarantined = await asyncio.to_thread(_set_aside, path)
            logger.error("spool_file_unreadable", path=str(quarantined), error=str(exc))
            return None
    finally:
        os.close(fd)


_waiting: set[Path] = set()  # files whose wait for the lookup was logged (once each)


async def _drain_bytes(
    store: EventStore, path: Path, data: bytes, batch: int, lookup_deadline: float
) -> DrainReport:
    contents = parse(data)
    if contents.torn_bytes:
        logger.warning("spool_torn_tail", path=str(path), torn_bytes=contents.torn_bytes)
    appended = duplicates = 0
    for chunk in _chunks(contents.records, batch):
        decoded = [events.decode(r.event) for r in chunk]  # once, for the check and the append
        landed = await _landed(store, chunk, decoded, lookup_deadline)
        items = [_item(r, decoded[i]) for i, r in enumerate(chunk) if i not in landed]
        results = await store.append_many(items)
        dup = sum(r.duplicate for r in results) + len(chunk) - len(items)
        duplicates += dup
        appended += len(chunk) - dup
    if contents.damaged_bytes:  # kept for an operator: a record in the damage is lost
        quarantined = await asyncio.to_thread(_set_aside, path)
        logger.error(
            "spool_file_damaged",
            path=str(quarantined),
            damaged_bytes=contents.damaged_bytes,
            drained=len(contents.records),
        )
    else:
        await asyncio.to_thread(_remove, path)
    _waiting.discard(path)
    logger.info(
        "spool_drained",
        path=str(path),
        events=appended,
        duplicates=duplicates,
        torn_bytes=contents.torn_bytes,
        damaged_bytes=contents.damaged_bytes,
    )
    return DrainReport(1, appended, duplicates, contents.torn_bytes, contents.damaged_bytes)


def _item(record: SpoolRecord, event: events.AnyEvent) -> tuple[events.AnyEvent, str, Claim | None]:
    claim = None
    if record.claim:
        claim = Claim(record.claim, record.claim_ttl_s, events.decode(record.otherwise))
    return event, record.idempotency_key, claim


async def _landed(
    store: EventStore,
    records: list[SpoolRecord],
    decoded: list[events.AnyEvent],
    lookup_deadline: float,
) -> set[int]:
    """Indexes of records already in the log though their append failed: the failed call's group
    token holds its result (it ran after all), or, once the token may have expired, the impression
    lookup knows the record's impression id (a pixel spools under its impression id).

    A token not there yet is *fenced* first (set to FENCE, ``SET NX``): a call still on its way
    (a Redis that hung, a pixel that stopped waiting for it) then finds its token taken when it
    runs, and changes nothing; so appending the record cannot double it. A fenced token of a
    hit recorded within TOKEN_MAY_HAVE_EXPIRED_S means the call never ran. For an older one the
    call may have run and its token expired since: only the impression lookup can tell, and only
    once it has folded the partition's log up to its end as it stands after the fence; until then
    ``_LookupBehind`` keeps the file for a later drain."""
    pipe = store.client.pipeline(transaction=False)
    # per record: where its token's and its lookup record's replies are, and the hit
    at: list[tuple[int | None, int | None, events.ImpressionSeen | None]] = []
    n = 0
    for record, event in zip(records, decoded, strict=True):
        token_at = lookup_at = hit = None
        if record.group_token:
            queue_fence(pipe, record.group_token)
            token_at, n = n + 1, n + 2
        if isinstance(event, events.ImpressionSeen):
            hit = event
            pipe.exists(impressions.record_key(store.partition_of(event), event.impression_id))
            lookup_at, n = n, n + 1
        at.append((token_at, lookup_at, hit))
    found = await pipe.execute()
    landed = set()
    doubtful: list[tuple[int, events.ImpressionSeen]] = []  # fenced, unknown to the lookup, old
    old = time.time() - TOKEN_MAY_HAVE_EXPIRED_S
    for i, (token_at, lookup_at, hit) in enumerate(at):
        if (token_at is not None and token_ran(found[token_at])) or (
            lookup_at is not None and found[lookup_at]
        ):
            landed.add(i)
        elif token_at is not None and hit is not None and hit.recorded_at.timestamp() < old:
            doubtful.append((i, hit))
    if doubtful:
        landed |= await _landed_by_lookup(store, doubtful, lookup_deadline)
    return landed


async def _landed_by_lookup(
    store: EventStore, doubtful: list[tuple[int, events.ImpressionSeen]], deadline: float
) -> set[int]:
    """Which of these fenced, old hits the impression lookup knows. Each partition's end is read
    once, after the fence (a call that ran is at or before it); the lookup's checkpoint is then
    awaited up to that end until ``deadline`` (the drain pass's; not the live end, which traffic
    keeps moving; one look even after it), and
    only then are the records read (a commit moves records and checkpoint at once). Raises
    _LookupBehind when a checkpoint does not get there in time."""
    parts = sorted({store.partition_of(event) for _, event in doubtful})
    pipe = store.client.pipeline(transaction=False)
    for part in parts:
        pipe.xrevrange(keys.stream(part), max="+", min="-", count=1)
    ends = {
        part: as_str(last[0][0]) if last else "0-0"
        for part, last in zip(parts, await pipe.execute(), strict=True)
    }
    behind = [part for part in parts if ends[part] != "0-0"]
    while behind:
        pipe = store.client.pipeline(transaction=False)
        for part in behind:
            pipe.get(keys.checkpoint(part, impressions.NAME))
        checkpoints = await pipe.execute()
        behind = [
            part
            for part, checkpoint in zip(behind, checkpoints, strict=True)
            if keys.id_after(ends[part], as_str(checkpoint) if checkpoint else "0-0")
        ]
        if behind:
            if time.monotonic() > deadline:
                raise _LookupBehind(behind[0])
            await asyncio.sleep(LOOKUP_POLL_S)
    pipe = store.client.pipeline(transaction=False)
    for _, event in doubtful:
        pipe.exists(impressions.record_key(store.partition_of(event), event.impression_id))
    found = await pipe.execute()
    return {i for (i, _), there in zip(doubtful, found, strict=True) if there}


async def drain(
    store: EventStore,
    directory: Path,
    *,
    writer: SpoolWriter | None = None,
    batch: int = DRAIN_BATCH,
) -> DrainReport:
    """Re-append every drainable spool file through ``store``, oldest first, deleting each file
    once all its records are in the log. Raises what ``append_many`` raises (files stay)."""
    if writer is not None:
        await writer.rotate()
    await asyncio.to_thread(remove_stale_temps, directory)
    total = DrainReport()
    lookup_deadline = time.monotonic() + LOOKUP_WAIT_S  # shared by the pass's files
    for path in spool_files(directory):
        report = await _drain_file(store, path, batch, lookup_deadline)
        if report is not None:
            total = DrainReport(*(a + b for a, b in zip(total, report, strict=True)))
    return total
