"""The local spool: durable group-committed writes, torn tails, and idempotent drains into Redis."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.factories import IDS, impression
from tracker import events
from tracker.actors.runner import ProjectionRunner
from tracker.events import ImpressionSeen
from tracker.eventstore import keys, spool
from tracker.eventstore.spool import (
    SpoolContents,
    SpoolRecord,
    SpoolWriter,
    drain,
    encode_record,
    read_spool,
    spool_files,
)
from tracker.eventstore.store import (
    FENCE,
    AppendItem,
    AppendResult,
    AppendUncertain,
    Claim,
    EventStore,
)
from tracker.http.ingest import DRAIN_INTERVAL_S, _drain_loop
from tracker.ids import new_uuid7_hex, route_of, stable_hash
from tracker.projections.impressions import ImpressionLookup


def spooled(n: int) -> tuple[list[ImpressionSeen], list[SpoolRecord]]:
    """``n`` impressions, each minted in the partition of its own fresh idempotency key."""
    keys = [new_uuid7_hex() for _ in range(n)]
    evs = [impression(key=k, offer_id=str(i)) for i, k in enumerate(keys)]
    return evs, [SpoolRecord(k, events.encode(e)) for k, e in zip(keys, evs, strict=True)]


async def logged_event_ids(store: EventStore) -> Counter[str]:
    ids: Counter[str] = Counter()
    for part in store.partitions:
        ids.update(s.event.event_id for s in await store.read(part, count=10_000))
    return ids


# -- writing --------------------------------------------------------------------------------------


async def test_written_records_read_back_in_order(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path)
    _, records = spooled(5)
    await writer.write_many(records[:2])
    await writer.write_many(records[2:])
    assert writer.path is not None
    contents = read_spool(writer.path)
    assert contents.records == records
    assert contents.torn_bytes == 0
    await writer.close()


async def test_write_returns_only_after_fsync_and_groups_concurrent_callers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced_sizes: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced_sizes.append(os.fstat(fd).st_size)

    monkeypatch.setattr(os, "fsync", fsync)
    writer = SpoolWriter(tmp_path)
    _, records = spooled(50)
    await asyncio.gather(*(writer.write_many([r]) for r in records))
    assert writer.path is not None
    size = writer.path.stat().st_size
    assert size in synced_sizes  # every byte acknowledged was fsynced first
    file_syncs = [s for s in synced_sizes if s == size]
    assert len(file_syncs) <= 2  # 50 callers, one (or two) write+fsync: group commit
    assert len(read_spool(writer.path).records) == 50
    await writer.close()


async def test_records_need_an_idempotency_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="idempotency key"):
        await SpoolWriter(tmp_path).write_many([SpoolRecord("", b"{}")])


async def test_write_failure_reaches_every_caller(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    writer = SpoolWriter(blocker / "spool")
    _, records = spooled(3)
    results = await asyncio.gather(
        *(writer.write_many([r]) for r in records), return_exceptions=True
    )
    assert all(isinstance(r, OSError) for r in results)


async def test_a_file_that_could_not_be_named_leaves_no_temp_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(src: object, dst: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "rename", refuse)
    writer = SpoolWriter(tmp_path)
    with pytest.raises(OSError, match="Input/output"):
        await writer.write_many(spooled(1)[1])
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240 (a test's listing)


@contextlib.contextmanager
def disk_full_after(
    monkeypatch: pytest.MonkeyPatch, reaches_disk: Callable[[bytes], bytes]
) -> Iterator[None]:
    """Within the block, a write puts ``reaches_disk(data)`` in the file, then fails: ENOSPC."""
    real_write = os.write

    def full_disk(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, reaches_disk(bytes(data)))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    try:
        yield
    finally:
        monkeypatch.setattr(os, "write", real_write)


async def test_after_a_failed_write_the_writer_starts_a_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = SpoolWriter(tmp_path)
    _, records = spooled(3)
    await writer.write_many(records[:1])
    first = writer.path
    half_a_header = disk_full_after(monkeypatch, lambda data: data[:7])
    with half_a_header, pytest.raises(OSError, match="No space"):
        await writer.write_many(records[1:2])
    await writer.write_many(records[2:])
    assert first is not None
    assert writer.path is not None
    assert writer.path != first
    old = read_spool(first)
    assert (old.records, old.torn_bytes) == (records[:1], 0)  # the failed write was cut off
    assert read_spool(writer.path).records == records[2:]
    await writer.close()


async def test_a_write_that_failed_after_whole_records_leaves_none_of_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk (or a file size limit) can stop a group's write after some whole records: the
    # group's callers answer 503 ("nothing stored"), so the drainer must not append those.
    writer = SpoolWriter(tmp_path)
    _, records = spooled(4)
    await writer.write_many(records[:1])
    first = writer.path
    with disk_full_after(monkeypatch, lambda _: encode_record(records[1])):  # one whole record
        results = await asyncio.gather(
            writer.write_many(records[1:3]), writer.write_many(records[3:]), return_exceptions=True
        )
    assert [type(r) for r in results] == [OSError, OSError]
    assert first is not None
    assert read_spool(first) == SpoolContents(records[:1], len(encode_record(records[0])), 0)


# -- torn tails -----------------------------------------------------------------------------------


def write_file(directory: Path, records: Iterable[SpoolRecord], tail: bytes = b"") -> Path:
    """A spool file as a crashed writer leaves it (no lock held)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (new_uuid7_hex() + spool.SUFFIX)
    path.write_bytes(b"".join(map(encode_record, records)) + tail)
    return path


def test_torn_tail_is_skipped_and_reported(tmp_path: Path) -> None:
    _, records = spooled(4)
    cut = encode_record(records[3])[:-5]
    contents = read_spool(write_file(tmp_path, records[:3], tail=cut))
    assert contents.records == records[:3]
    assert contents.torn_bytes == len(cut)
    assert contents.good_bytes == sum(len(encode_record(r)) for r in records[:3])


def test_last_record_with_bad_crc_is_torn(tmp_path: Path) -> None:
    _, records = spooled(2)
    last = bytearray(encode_record(records[1]))
    last[-3] ^= 0xFF
    contents = read_spool(write_file(tmp_path, records[:1], tail=bytes(last)))
    assert contents.records == records[:1]
    assert contents.torn_bytes == len(last)


def damaged_in_the_middle(directory: Path, records: list[SpoolRecord]) -> tuple[Path, int]:
    """A file whose second record has a flipped byte (the disk, not a crash): its path and the
    damaged record's length."""
    middle = bytearray(encode_record(records[1]))
    middle[20] ^= 0xFF
    data = encode_record(records[0]) + bytes(middle) + b"".join(map(encode_record, records[2:]))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (new_uuid7_hex() + spool.SUFFIX)
    path.write_bytes(data)
    return path, len(middle)


def test_records_after_damage_in_the_middle_are_read(tmp_path: Path) -> None:
    _, records = spooled(4)
    path, damaged = damaged_in_the_middle(tmp_path, records)
    contents = read_spool(path)
    assert contents.records == [records[0], *records[2:]]
    assert (contents.torn_bytes, contents.damaged_bytes) == (0, damaged)


def test_a_header_then_zeros_at_a_record_boundary_is_torn(tmp_path: Path) -> None:
    # the crash wrote the magic of the next record, the file system zero-filled the rest: an
    # empty payload with CRC 0 would pass the CRC, but the writer never writes an empty record
    _, records = spooled(1)
    contents = read_spool(write_file(tmp_path, records, tail=b"SP" + b"\0" * 64))
    assert (contents.records, contents.torn_bytes) == (records, 66)


def test_zero_filled_tail_is_torn(tmp_path: Path) -> None:
    _, records = spooled(1)
    contents = read_spool(write_file(tmp_path, records, tail=b"\0" * 4096))
    assert (contents.records, contents.torn_bytes) == (records, 4096)


# -- draining -------------------------------------------------------------------------------------


async def test_drain_appends_every_event_once_with_its_key_and_removes_the_file(
    store: EventStore, tmp_path: Path
) -> None:
    evs, records = spooled(20)
    path = write_file(tmp_path, records)
    report = await drain(store, tmp_path)
    assert report == spool.DrainReport(files=1, events=20, duplicates=0, torn_bytes=0)
    assert not path.exists()
    assert await logged_event_ids(store) == Counter(e.event_id for e in evs)
    # the keys were recorded: the same events appended again are duplicates
    items = [(e, r.idempotency_key) for e, r in zip(evs, records, strict=True)]
    again = await store.append_many(items)
    assert all(r.duplicate for r in again)


async def test_drain_of_a_torn_file_appends_the_intact_records(
    store: EventStore, tmp_path: Path
) -> None:
    evs, records = spooled(3)
    write_file(tmp_path, records[:2], tail=encode_record(records[2])[:10])
    report = await drain(store, tmp_path)
    assert (report.events, report.torn_bytes) == (2, 10)
    assert await logged_event_ids(store) == Counter(e.event_id for e in evs[:2])
    assert spool_files(tmp_path) == []


async def test_a_damaged_file_drains_what_is_intact_and_is_kept(
    store: EventStore, tmp_path: Path
) -> None:
    evs, records = spooled(4)
    path, damaged = damaged_in_the_middle(tmp_path, records)
    report = await drain(store, tmp_path)
    assert (report.events, report.damaged_bytes) == (3, damaged)
    assert await logged_event_ids(store) == Counter(e.event_id for e in [evs[0], *evs[2:]])
    assert not path.exists()
    assert path.with_name(path.name + ".bad").exists()  # for an operator, not deleted
    assert spool_files(tmp_path) == []


@pytest.mark.parametrize("zeros", [0, 4096])
async def test_a_torn_tail_holding_sp_still_drains_the_intact_records(
    store: EventStore, tmp_path: Path, zeros: int
) -> None:
    # A crash persisted the last record up to an "SP" in its payload (an affiliate's sub value),
    # then zeros: "SP" + zeros reads as an empty record whose CRC holds. It is no record.
    evs, records = spooled(2)
    key = new_uuid7_hex()
    last = impression(key=key, offer_id="9", subs={"sub1": "SPRING_SALE"})
    torn = encode_record(SpoolRecord(key, events.encode(last)))
    cut = torn.index(b"SPRING") + 2
    path = tmp_path / (new_uuid7_hex() + spool.SUFFIX)
    path.write_bytes(b"".join(map(encode_record, records)) + torn[:cut] + b"\0" * zeros)
    report = await drain(store, tmp_path)
    assert (report.events, report.torn_bytes) == (2, cut + zeros)
    assert await logged_event_ids(store) == Counter(e.event_id for e in evs)
    assert os.listdir(tmp_path) == []


async def test_a_drainer_skips_a_file_another_one_set_aside(
    store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, records = spooled(4)
    path, _ = damaged_in_the_middle(tmp_path, records)
    other = os.open(path, os.O_RDONLY)  # a drainer in another web process opened it ...
    try:
        await drain(store, tmp_path)  # ... this one drained it and set it aside ...
        assert path.with_name(path.name + ".bad").exists()

        def late_lock(_: Path) -> int:  # ... then the other gets the lock
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return os.dup(other)

        monkeypatch.setattr(spool, "_try_lock", late_lock)
        assert await spool._drain_file(store, path, spool.DRAIN_BATCH, 0.0) is None
    finally:
        os.close(other)


async def test_a_file_this_build_cannot_read_is_set_aside_by_one_drainer_only(
    store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a record whose CRC holds but that this build cannot decode (a newer build's); while one
    # drainer sets the file aside, another (a second web process) tries to drain it too
    payload = msgspec.json.encode({"v": 2})
    alien = struct.pack(">2sII", b"SP", len(payload), zlib.crc32(payload)) + payload
    path = write_file(tmp_path, [], tail=alien)
    set_aside = spool._set_aside
    calls: list[Path] = []
    second: list[spool.DrainReport | BaseException] = []

    def meanwhile_another_drainer(p: Path) -> Path:
        calls.append(p)
        if len(calls) == 1:
            thread = threading.Thread(
                target=lambda: second.append(asyncio.run(drain(store, tmp_path)))
            )
            thread.start()
            thread.join(10)
        return set_aside(p)

    monkeypatch.setattr(spool, "_set_aside", meanwhile_another_drainer)
    assert await drain(store, tmp_path) == spool.DrainReport()
    assert (calls, second) == ([path], [spool.DrainReport()])  # the other one skipped it
    assert os.listdir(tmp_path) == [path.name + ".bad"]


class FlakyStore(EventStore):
    """Redis "goes away" after ``ok_calls`` append_many calls."""

    def __init__(self, client: redis.Redis, ok_calls: int) -> None:
        super().__init__(client, partitions=4)
        self.ok_calls = ok_calls

    async def append_many(self, items: Iterable[AppendItem]) -> list[AppendResult]:
        if self.ok_calls == 0:
            raise RedisConnectionError("Connection refused")
        self.ok_calls -= 1
        return await super().append_many(items)


async def test_interrupted_drain_is_rerun_without_duplicates(
    store: EventStore, client: redis.Redis, tmp_path: Path
) -> None:
    evs, records = spooled(10)
    path = write_file(tmp_path, records)
    with pytest.raises(RedisConnectionError):
        await drain(FlakyStore(client, ok_calls=2), tmp_path, batch=3)
    assert path.exists()  # kept: not everything was appended
    assert sum((await logged_event_ids(store)).values()) == 6
    report = await drain(store, tmp_path, batch=3)
    assert (report.events, report.duplicates) == (4, 6)
    assert not path.exists()
    assert await logged_event_ids(store) == Counter(e.event_id for e in evs)


async def test_a_live_writers_file_is_drained_only_after_rotation(
    store: EventStore, tmp_path: Path
) -> None:
    writer = SpoolWriter(tmp_path)
    evs, records = spooled(4)
    await writer.write_many(records[:2])
    assert (await drain(store, tmp_path)).files == 0  # still held by the writer
    report = await drain(store, tmp_path, writer=writer)  # rotates first
    assert (report.files, report.events) == (1, 2)
    await writer.write_many(records[2:])  # goes to a new file
    assert (await drain(store, tmp_path, writer=writer)).events == 2
    assert await logged_event_ids(store) == Counter(e.event_id for e in evs)
    assert spool_files(tmp_path) == []


def test_spool_files_are_listed_oldest_first(tmp_path: Path) -> None:
    _, records = spooled(3)
    written = [write_file(tmp_path, [r]) for r in records]
    (tmp_path / "crashed-before-rename.tmp").write_bytes(b"")
    assert spool_files(tmp_path) == written


async def test_a_drain_removes_only_the_empty_temp_files_of_crashed_writers(
    store: EventStore, tmp_path: Path
) -> None:
    old = time.time() - spool.STALE_TEMP_S - 5

    def temp(name: str, data: bytes = b"", *, mtime: float = old) -> Path:
        path = tmp_path / f"{name}.tmp"
        path.write_bytes(data)
        os.utime(path, (mtime, mtime))
        return path

    crashed = temp("crashed")
    being_named = temp("being-named", mtime=time.time())  # a writer between open and rename
    held = temp("held")  # a live writer's lock
    with_bytes = temp("with-bytes", b"SP")  # no writer leaves one: an operator looks at it
    lock = os.open(held, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        await drain(store, tmp_path)
    finally:
        os.close(lock)
    assert not crashed.exists()
    assert being_named.exists()
    assert held.exists()
    assert with_bytes.exists()


def stale_temp(directory: Path, name: str) -> Path:
    path = directory / f"{name}.tmp"
    path.write_bytes(b"")
    old = time.time() - spool.STALE_TEMP_S - 5
    os.utime(path, (old, old))
    return path


async def test_a_temp_that_cannot_be_removed_holds_back_neither_the_others_nor_the_drain(
    store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck, other = stale_temp(tmp_path, "a-stuck"), stale_temp(tmp_path, "b-other")
    evs, records = spooled(2)
    write_file(tmp_path, records)
    real_unlink = Path.unlink

    def unlink(path: Path, missing_ok: bool = False) -> None:
        if path == stuck:
            raise PermissionError(13, "Permission denied", str(path))
        real_unlink(path, missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    report = await drain(store, tmp_path)
    assert report.events == 2
    assert stuck.exists()
    assert not other.exists()
    assert await logged_event_ids(store) == Counter(e.event_id for e in evs)


async def test_the_web_drain_loop_sweeps_temps_with_no_spool_file_to_drain(
    store: EventStore, tmp_path: Path
) -> None:
    crashed = stale_temp(tmp_path, "crashed")
    stopping = asyncio.Event()
    loop_task = asyncio.create_task(_drain_loop(store, tmp_path, SpoolWriter(tmp_path), stopping))
    await asyncio.sleep(DRAIN_INTERVAL_S + 0.5)  # the first pass is one interval in
    stopping.set()
    await loop_task
    assert not crashed.exists()


async def test_a_failing_sweep_does_not_stop_the_web_drain_loop(
    store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    swept: list[Path] = []

    def broken(directory: Path) -> None:
        swept.append(directory)
        raise RuntimeError("a bug in the sweep")

    monkeypatch.setattr("tracker.http.ingest.remove_stale_temps", broken)
    stopping = asyncio.Event()
    loop_task = asyncio.create_task(_drain_loop(store, tmp_path, SpoolWriter(tmp_path), stopping))
    await asyncio.sleep(DRAIN_INTERVAL_S + 0.5)  # the first pass: no spool file, a sweep
    assert swept == [tmp_path]
    evs, records = spooled(2)
    path = write_file(tmp_path, records)  # an outage's spool, after the failed sweep
    await asyncio.sleep(DRAIN_INTERVAL_S)
    stopping.set()
    await loop_task
    assert not path.exists()
    assert await logged_event_ids(store) == Counter(e.event_id for e in evs)


async def test_drain_of_an_empty_or_missing_directory_does_nothing(
    store: EventStore, tmp_path: Path
) -> None:
    assert await drain(store, tmp_path / "absent") == spool.DrainReport()
    assert await drain(store, tmp_path) == spool.DrainReport()


async def test_drain_skips_events_whose_uncertain_append_landed(
    tmp_path: Path, store: EventStore
) -> None:
    landed = impression()
    lost = impression(at=datetime.now(UTC))  # its token would still be there had its call run
    await store.append(landed)  # ran, but (say) its reply never arrived
    [token] = [k.decode() async for k in store.client.scan_iter(match="tracker:*:gtok:*")]
    writer = SpoolWriter(tmp_path)
    await writer.write_many(
        [
            SpoolRecord(landed.impression_id, events.encode(landed), token),
            SpoolRecord(lost.impression_id, events.encode(lost), "tracker:{p0}:gtok:expired"),
        ]
    )
    report = await spool.drain(store, tmp_path, writer=writer)
    await writer.close()
    assert (report.events, report.duplicates) == (1, 1)
    stored = [s.event for p in store.partitions for s in await store.read(p)]
    assert sorted(e.impression_id for e in stored) == sorted(  # type: ignore[union-attr]
        [landed.impression_id, lost.impression_id]
    )


async def test_a_call_still_on_its_way_is_fenced_by_the_drain_and_changes_nothing(
    tmp_path: Path, store: EventStore
) -> None:
    """A pixel that stopped waiting (a hung Redis) spooled its hits with their call's token;
    the call itself runs only after the drain: it must find the fence and append nothing."""
    late, other = impression(), impression()
    part = store.partition_of(late)
    token = keys.group_token(part, "late-call")
    writer = SpoolWriter(tmp_path)
    await writer.write_many(
        [
            SpoolRecord(late.impression_id, events.encode(late), token),
            SpoolRecord(other.impression_id, events.encode(other), token),  # same call
        ]
    )
    report = await spool.drain(store, tmp_path, writer=writer)
    await writer.close()
    assert (report.events, report.duplicates) == (2, 0)
    assert await store.client.get(token) == FENCE.encode()
    payloads = [(events.encode(e), None, None) for e in (late, other)]
    with pytest.raises(AppendUncertain):  # the call, at last: it finds the fence
        await store._append_call(part, payloads, token)
    assert (await logged_event_ids(store)).most_common(1)[0][1] == 1
    assert sum((await logged_event_ids(store)).values()) == 2


async def test_an_unreadable_file_is_set_aside_and_the_rest_drain(
    tmp_path: Path, store: EventStore
) -> None:
    bad_event = impression()
    raw = msgspec.json.decode(events.encode(bad_event))
    raw["type"] = "from_a_newer_build"
    first = SpoolWriter(tmp_path)
    await first.write_many([SpoolRecord("k-bad", msgspec.json.encode(raw))])
    await first.close()
    evs, records = spooled(3)
    second = SpoolWriter(tmp_path)
    await second.write_many(records)
    await second.close()
    report = await spool.drain(store, tmp_path)
    assert report.events == 3
    assert [name.endswith(".bad") for name in os.listdir(tmp_path)] == [True]
    assert set(await logged_event_ids(store)) == {e.event_id for e in evs}


async def _fold_lookup(store: EventStore) -> None:
    for part in store.partitions:
        await ProjectionRunner(store, ImpressionLookup(), part).run(until_caught_up=True)


def _expired_token_record(event: ImpressionSeen) -> SpoolRecord:
    """A hit spooled after its call's answer was lost, whose token is gone now."""
    return SpoolRecord(event.impression_id, events.encode(event), "tracker:{p0}:gtok:gone")


OLD = timedelta(seconds=spool.TOKEN_MAY_HAVE_EXPIRED_S + 60)


async def test_drain_skips_a_landed_event_after_its_token_expired(
    tmp_path: Path, store: EventStore
) -> None:
    landed = impression(at=datetime.now(UTC) - OLD)
    await store.append(landed)  # it ran; its reply was lost; its token has since expired
    await _fold_lookup(store)
    writer = SpoolWriter(tmp_path)
    await writer.write_many([_expired_token_record(landed)])
    report = await spool.drain(store, tmp_path, writer=writer)
    await writer.close()
    assert (report.events, report.duplicates) == (0, 1)
    assert sum((await logged_event_ids(store)).values()) == 1


async def test_an_old_hit_waits_for_the_lookup_to_tell_whether_it_landed(
    tmp_path: Path, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its call ran and its token expired during a long outage; the lookup has not folded the
    log to its end: appending now could count it twice. The file waits for the lookup."""
    monkeypatch.setattr(spool, "LOOKUP_WAIT_S", 0.2)
    ran, never = impression(at=datetime.now(UTC) - OLD), impression(at=datetime.now(UTC) - OLD)
    await store.append(ran)
    writer = SpoolWriter(tmp_path)
    await writer.write_many([_expired_token_record(ran), _expired_token_record(never)])
    await writer.close()
    assert await spool.drain(store, tmp_path) == spool.DrainReport()  # not yet
    assert len(os.listdir(tmp_path)) == 1
    assert sum((await logged_event_ids(store)).values()) == 1
    await _fold_lookup(store)
    report = await spool.drain(store, tmp_path)
    assert (report.files, report.events, report.duplicates) == (1, 1, 1)
    assert set(await logged_event_ids(store)) == {ran.event_id, never.event_id}
    assert os.listdir(tmp_path) == []


async def test_a_lookup_a_moment_behind_does_not_hold_the_drain_back(
    tmp_path: Path, store: EventStore
) -> None:
    """Live traffic keeps the log's end moving: the drain waits for the lookup to reach the end
    as it stood after the fence (where a call that ran must be), not the end of the moment."""
    old = impression(at=datetime.now(UTC) - OLD)
    route = route_of(old.impression_id, len(store.partitions))

    def same_partition() -> ImpressionSeen:
        return impression(impression_id=IDS.mint(route, len(store.partitions)))

    await store.append(same_partition())  # in the log, not yet folded
    writer = SpoolWriter(tmp_path)
    await writer.write_many([_expired_token_record(old)])
    await writer.close()
    loop = asyncio.get_running_loop()
    stop = loop.time() + 1

    async def traffic_and_projector() -> None:
        while loop.time() < stop:
            await asyncio.sleep(0.1)  # the projector folds a beat late...
            await _fold_lookup(store)
            for _ in range(3):  # ...and more hits arrive meanwhile
                await store.append(same_partition())

    busy = asyncio.create_task(traffic_and_projector())
    report = await spool.drain(store, tmp_path)
    await busy
    assert (report.events, report.duplicates) == (1, 0)
    assert os.listdir(tmp_path) == []


async def test_with_the_lookup_down_a_pass_waits_once_and_newer_files_still_drain(
    tmp_path: Path, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No projector: each file of old hits must wait, but not each for the whole budget (a drain
    pass, and the web process's shutdown behind it, took 5 s a file)."""
    monkeypatch.setattr(spool, "LOOKUP_WAIT_S", 0.5)
    for _ in range(4):
        ran = impression(at=datetime.now(UTC) - OLD)
        await store.append(ran)  # the log has an end the lookup never reaches
        writer = SpoolWriter(tmp_path)
        await writer.write_many([_expired_token_record(ran)])
        await writer.close()
    recent = impression(at=datetime.now(UTC))
    writer = SpoolWriter(tmp_path)
    await writer.write_many([_expired_token_record(recent)])
    await writer.close()
    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await spool.drain(store, tmp_path)
    assert loop.time() - started < 1.5  # one budget for the pass, not 0.5 s a file
    assert (report.files, report.events) == (1, 1)  # the recent hit, after the four waiting
    assert len(os.listdir(tmp_path)) == 4


async def test_a_recent_hit_whose_token_is_missing_never_ran_and_needs_no_lookup(
    tmp_path: Path, store: EventStore
) -> None:
    """Had its call run, its token would still hold the result: fenced now, it never will."""
    recent = impression(at=datetime.now(UTC))
    writer = SpoolWriter(tmp_path)
    await writer.write_many([_expired_token_record(recent)])
    await writer.close()
    report = await spool.drain(store, tmp_path)  # no projector has ever run
    assert (report.events, report.duplicates) == (1, 0)


# -- claims (duplicate imp_id) --------------------------------------------------------------------


def claimed_hit(name: str) -> tuple[ImpressionSeen, SpoolRecord]:
    """A counted pixel hit spooled with its claim, as ``Pixels.recover`` writes it."""
    iid = IDS.mint(stable_hash(name) % 4, 4)
    event = impression(impression_id=iid, external_imp_id="ext-1", verdict="counted")
    otherwise = msgspec.structs.replace(event, verdict="not_counted", reason="duplicate_imp_id")
    record = SpoolRecord(iid, events.encode(event), "", name, 86_400, events.encode(otherwise))
    return event, record


def test_a_claim_survives_the_record_format(tmp_path: Path) -> None:
    _, record = claimed_hit("imp:t1:7:ext-1")
    path = tmp_path / "x.spool"
    path.write_bytes(encode_record(record) + encode_record(SpoolRecord("k", b"{}", "tok")))
    assert read_spool(path).records == [record, SpoolRecord("k", b"{}", "tok")]


async def test_drained_hits_take_their_claims(store: EventStore, tmp_path: Path) -> None:
    name = "imp:t1:7:ext-1"
    earlier, _ = claimed_hit(name)  # appended live before the outage: it holds the claim
    otherwise = msgspec.structs.replace(earlier, verdict="not_counted", reason="duplicate_imp_id")
    await store.append(earlier, claim=Claim(name, 86_400, otherwise))
    first, a = claimed_hit(name)
    second, b = claimed_hit("imp:t1:7:ext-2")
    third, c = claimed_hit("imp:t1:7:ext-2")
    writer = SpoolWriter(tmp_path)
    await writer.write_many([a, b, c])
    await writer.close()
    report = await drain(store, tmp_path)
    assert (report.events, report.duplicates) == (3, 0)
    stored = {
        s.event.impression_id: s.event
        for p in store.partitions
        for s in await store.read(p, count=100)
        if isinstance(s.event, ImpressionSeen)
    }
    verdicts = {
        iid: (e.verdict, e.reason) for iid, e in stored.items() if iid != earlier.impression_id
    }
    assert verdicts == {
        first.impression_id: ("not_counted", "duplicate_imp_id"),  # the live hit had it
        second.impression_id: ("counted", ""),  # first of its imp_id
        third.impression_id: ("not_counted", "duplicate_imp_id"),
    }


async def test_a_drain_cancelled_while_reading_loses_nothing_for_the_next(
    tmp_path: Path, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancelled drain closes its fd while its read thread goes on; the next drain's open
    gets the same fd number. Sharing a file offset, the next drain read nothing and deleted the
    file (every record lost)."""
    evs, records = spooled(10)
    writer = SpoolWriter(tmp_path)
    await writer.write_many(records)
    await writer.close()
    real_read = spool._read_fd
    first_read_done = threading.Event()
    delays = iter([0.3, 0.6])  # the orphaned read lands before the next drain reads

    def slow_read(fd: int, path: Path) -> bytes | None:
        time.sleep(next(delays, 0))  # a slow disk, a descheduled thread
        try:
            return real_read(fd, path)
        finally:
            first_read_done.set()

    monkeypatch.setattr(spool, "_read_fd", slow_read)
    cancelled = asyncio.create_task(drain(store, tmp_path))
    await asyncio.sleep(0.1)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    report = await drain(store, tmp_path)
    await asyncio.to_thread(first_read_done.wait, 5)
    assert report.events == 10
    assert set(await logged_event_ids(store)) == {e.event_id for e in evs}
    assert os.listdir(tmp_path) == []
