"""POST /publisher.v1/impression/record: batch impressions, all-or-nothing, idempotency keys."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Final

import msgspec
import structlog
from aiohttp import web
from redis.exceptions import RedisError

from tracker.config.live import LIVE_CONFIG, ConfigUnavailable
from tracker.events import ImpressionSeen, Verdict
from tracker.eventstore.keys import key_route
from tracker.eventstore.store import AppendUncertain
from tracker.gcpause import gc_paused
from tracker.http.app_keys import STORE
from tracker.http.batch import MAX_BODY_BYTES, Rejected, check_headers, validate
from tracker.http.config_common import authenticate
from tracker.http.errors import RETRY_AFTER, ApiError, error_response
from tracker.http.ingest import IMPRESSION_IDS
from tracker.ids import new_event_id
from tracker.projections.eligibility import publisher_reason

logger = structlog.get_logger()


# A batch waits this long for Redis, then answers 503 (a hung Redis would otherwise hold it for
# the socket timeout times the retries, ~40 s); calls already sent may still land, which the
# client's retry with the same idempotency keys finds.
BATCH_DEADLINE_S: Final = 10.0


def _decodable() -> tuple[str, ...]:
    """The Content-Encodings aiohttp decodes here: br and zstd only with their optional packages
    (without them aiohttp answers 400 "Please install ..." to a body it cannot read)."""
    from aiohttp import compression_utils

    optional = {"br": "HAS_BROTLI", "zstd": "HAS_ZSTD"}
    return (
        "gzip",
        "deflate",
        *(e for e, flag in optional.items() if getattr(compression_utils, flag, False)),
    )


_DECODABLE: Final = _decodable()
_ENCODINGS: Final = frozenset(("identity", *_DECODABLE))


def unsupported_encoding(encoding: str) -> ApiError:
    return ApiError(
        415,
        "unsupported_content_encoding",
        f"Content-Encoding {encoding!r} is not supported; use {', '.join(_DECODABLE)} or none",
    )


async def _read_capped(request: web.Request, limit: int) -> bytes:
    """The body, or its first ``limit`` bytes when longer (then it is refused as too large)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await request.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _rejected(rejected: Rejected) -> web.Response:
    extra = {"errors": msgspec.to_builtins(rejected.errors)} if rejected.errors else {}
    return error_response(rejected.status, rejected.code, rejected.message, **extra)


async def post_record(request: web.Request) -> web.Response:
    """Record a batch (seed 001): publisher or admin token; every item valid or nothing recorded.

    An item whose idempotency_key was recorded before is skipped silently (per tenant); the
    answer counts both. 503 with Retry-After when the event store is unavailable: retry with
    the same keys.
    """
    principal = await authenticate(request)
    if principal.role not in ("admin", "publisher"):
        raise ApiError(403, "forbidden", f"the {principal.role} role may not record impressions")
    encoding = request.headers.get("Content-Encoding", "").strip().lower() or "identity"
    if encoding not in _ENCODINGS:  # aiohttp would hand the bytes over undecoded
        raise unsupported_encoding(encoding)
    rejected = check_headers(request.headers.get("Content-Type"), request.content_length)
    if rejected is not None:
        return _rejected(rejected)
    body = await _read_capped(request, MAX_BODY_BYTES + 1)
    too_large = check_headers("application/json", len(body))  # a body longer than declared
    if too_large is not None:
        return _rejected(too_large)
    now = datetime.now(UTC)
    with gc_paused():
        result = validate(body, now)
    if isinstance(result, Rejected):
        return _rejected(result)
    store = request.app[STORE]
    ids = request.app[IMPRESSION_IDS]
    n = store.partition_count
    tenant = principal.tenant
    publisher_id = str(principal.scope_id) if principal.role == "publisher" else ""
    # recorded either way (the publisher served them), counted only for an active publisher
    reason = ""
    if principal.role == "publisher" and principal.scope_id is not None:
        try:  # the publisher may have been created a moment ago, through another process
            state = await request.app[LIVE_CONFIG].sync()
        except ConfigUnavailable as exc:
            return _unavailable(str(exc), len(result))
        reason = publisher_reason(state, tenant, principal.scope_id)
    verdict: Verdict = "not_counted" if reason else "counted"
    items: list[tuple[ImpressionSeen, str | None]] = []
    mint = ids.mint
    # keys are a publisher's own (another publisher cannot know them, nor learn them by a skip),
    # an admin's the tenant's; no tenant name has a NUL, so no admin key spells a publisher's
    scope = f"batch:{tenant}\x00publisher:{publisher_id}:" if publisher_id else f"batch:{tenant}:"
    with gc_paused():
        for item in result:
            key = item.idempotency_key
            event = ImpressionSeen(
                event_id=new_event_id(),
                occurred_at=item.occurred_at or now,
                recorded_at=now,
                tenant=tenant,
                impression_id=mint(key_route(tenant, key, n) if key is not None else None, n),
                dialect="batch",
                member_id=item.member_id,
                creative_id=item.creative_id,
                ad_unit_id=item.ad_unit_id,
                publisher_id=publisher_id,
                verdict=verdict,
                reason=reason,
            )
            items.append((event, scope + key if key is not None else None))
    try:
        results = await asyncio.wait_for(store.append_many(items), BATCH_DEADLINE_S)
    except (AppendUncertain, RedisError, OSError) as exc:  # OSError: wait_for's TimeoutError too
        return _unavailable(str(exc) or type(exc).__name__, len(items))  # TimeoutError: no text
    skipped = sum(r.duplicate for r in results)
    structlog.contextvars.bind_contextvars(tenant=tenant, recorded=len(results) - skipped)
    return web.json_response({"recorded": len(results) - skipped, "skipped": skipped})


def _unavailable(error: str, impressions: int) -> web.Response:
    """503 + Retry-After: Redis did not answer (in time); a retry with the same keys is safe."""
    logger.warning("batch_unavailable", error=error, impressions=impressions)
    response = error_response(
        503,
        "unavailable",
        "the event store is unavailable; retry with the same idempotency keys (items "
        "without a key may have been recorded already)",
    )
    response.headers.update(RETRY_AFTER)
    return response


def setup_record(app: web.Application) -> None:
    app.router.add_post("/publisher.v1/impression/record", post_record)
