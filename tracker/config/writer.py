"""ConfigWriter: one configuration change = one ``TrackerConfigured`` event, appended atomically
after a compare-and-set of the object's version (and of any unique names it claims).

Two admins on two web processes therefore can't silently overwrite each other (the second gets
``VersionConflict``), and a call redis-py re-sends after a lost reply returns the first call's
entry instead of appending again (each call carries a request token, as store.py's groups do).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import msgspec
import redis.asyncio as redis
from aiohttp import web
from redis.exceptions import TimeoutError as RedisTimeoutError

from tracker import events
from tracker.config import model
from tracker.events import TrackerConfigured
from tracker.eventstore import keys
from tracker.eventstore.store import as_str
from tracker.ids import new_event_id

REQUEST_TTL_S: Final = 300
# A hung Redis (no error, no answer) would hold a write for the socket timeout times the retries
# (~40 s): past this the caller is told the write's outcome is unknown (WriteUncertain).
WRITE_TIMEOUT_S: Final = 10.0

# KEYS[1] config stream, KEYS[2] request token, KEYS[3] version key, KEYS[4..] claim keys to take
# (ARGV[4] of them), then claim keys to release. ARGV[1] token ttl, ARGV[2] expected version
# (0 = must not exist), ARGV[3] event payload, ARGV[4] number of claims to take, ARGV[5] the owner
# (object id). Returns {'ok', entry id} | {'conflict', current version} | {'taken', key, owner}.
WRITE: Final = """
local saved = redis.call('GET', KEYS[2])
if saved then return {'ok', saved} end
local cur = tonumber(redis.call('GET', KEYS[3]) or '0')
if cur ~= tonumber(ARGV[2]) then return {'conflict', tostring(cur)} end
local ntake = tonumber(ARGV[4])
for i = 4, 3 + ntake do
  local owner = redis.call('GET', KEYS[i])
  if owner and owner ~= ARGV[5] then return {'taken', KEYS[i], owner} end
end
local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[3])
redis.call('SET', KEYS[3], cur + 1)
for i = 4, 3 + ntake do redis.call('SET', KEYS[i], ARGV[5]) end
for i = 4 + ntake, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[5] then redis.call('DEL', KEYS[i]) end
end
redis.call('SET', KEYS[2], id, 'EX', ARGV[1])
return {'ok', id}
"""

Obj = TypeVar("Obj", bound=model.ConfigObject | model.Token)


class VersionConflict(Exception):
    """The object's version is not the one the change was based on."""

    def __init__(self, current: int) -> None:
        super().__init__(f"the object is at version {current}")
        self.current = current


class NameTaken(Exception):
    """A unique name the object claims is held by another object."""

    def __init__(self, claim: str, owner: str) -> None:
        super().__init__(f"{claim} is taken by {owner}")
        self.claim = claim
        self.owner = owner


class WriteUncertain(RedisTimeoutError):
    """Redis did not answer a write within ``WRITE_TIMEOUT_S``: it may have been applied, or may
    still be. Re-read the object: a retry based on the old version gets VersionConflict if so."""


def xandr_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def stamped(obj: Obj, version: int, at: datetime) -> Obj:
    """``obj`` as version ``version``, modified at ``at``."""
    return msgspec.structs.replace(obj, version=version, last_modified=xandr_time(at))


class ConfigWriter:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._write = client.register_script(WRITE)

    async def next_id(self, kind: str) -> int:
        """A fresh id for a new object; a re-sent INCR only leaves a gap, as Xandr's ids have."""
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                return int(await self.client.incr(keys.config_sequence(kind)))
        except TimeoutError:  # nothing was written that matters: a gap in the ids at most
            raise RedisTimeoutError(f"Redis did not answer within {WRITE_TIMEOUT_S:g} s") from None

    async def save(
        self,
        kind: str,
        obj: model.ConfigObject | model.Token,
        *,
        actor: str = "",
        claims: Sequence[str] = (),
        releases: Sequence[str] = (),
        now: datetime | None = None,
    ) -> tuple[str, Any]:
        """Append ``obj`` as the version after ``obj.version`` (0 for a new object).

        Returns (entry id, the object as stored). ``claims``/``releases`` are unique names
        (``keys.config_claim``) taken or given up in the same step.
        Raises VersionConflict or NameTaken; then nothing was written. Raises WriteUncertain
        when Redis gave no answer within WRITE_TIMEOUT_S.
        """
        at = now or datetime.now(UTC)
        expected = obj.version
        stored = stamped(obj, expected + 1, at)
        object_id = str(stored.id)
        event = TrackerConfigured(
            event_id=new_event_id(),
            occurred_at=at,
            recorded_at=at,
            tenant=stored.tenant,
            kind=kind,
            object_id=object_id,
            version=stored.version,
            snapshot=model.to_snapshot(stored),
            actor=actor,
        )
        script_keys = [
            keys.stream(keys.CONFIG),
            keys.config_request(secrets.token_hex(12)),
            keys.config_version(kind, object_id),
            *claims,
            *releases,
        ]
        args: list[bytes | str | int] = [
            REQUEST_TTL_S,
            expected,
            events.encode(event),
            len(claims),
            object_id,
        ]
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                reply = [as_str(x) for x in await self._write(keys=script_keys, args=args)]
        except TimeoutError:
            raise WriteUncertain(
                f"Redis did not answer within {WRITE_TIMEOUT_S:g} s: the change may or may not "
                "have been saved"
            ) from None
        if reply[0] == "conflict":
            raise VersionConflict(int(reply[1]))
        if reply[0] == "taken":
            raise NameTaken(reply[1], reply[2])
        return reply[1], stored


CONFIG_WRITER = web.AppKey("config_writer", ConfigWriter)
