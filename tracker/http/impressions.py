"""``GET /impressions/{impression_id}`` (admin): the impression lookup projection's record.

Authenticates like the configuration API (``config_common.authenticate``). Another tenant's
impression answers 404, as an unknown one does (no existence oracle across tenants). An id whose
HMAC tag does not verify under the server key is 400 ``invalid_impression_id`` without a lookup.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web
from redis.exceptions import TimeoutError as RedisTimeoutError

from tracker.eventstore import lookup
from tracker.eventstore.store import EventStore
from tracker.http.config_common import authenticate
from tracker.http.errors import ApiError
from tracker.http.ingest import IMPRESSION_IDS
from tracker.ids import IMPRESSION_ID_LENGTH
from tracker.projections.impressions import ImpressionRecord

LOOKUP_STORE = web.AppKey("lookup_store", EventStore)
_ID_RE: Final = re.compile(f"[0-9a-f]{{{IMPRESSION_ID_LENGTH}}}")
# A hung Redis (no error, no answer) would hold the request for the socket timeout times the
# retries (~40 s): past this, the middleware answers 503 with Retry-After, as for Redis errors.
LOOKUP_TIMEOUT_S = 5.0


def setup_impressions(app: web.Application, store: EventStore) -> None:
    app[LOOKUP_STORE] = store
    app.router.add_get("/impressions/{impression_id}", get_impression, allow_head=False)


def record_json(record: ImpressionRecord) -> dict[str, Any]:
    occurred_at = datetime.fromtimestamp(record.occurred_at_ms / 1000, UTC)
    return {
        "impression_id": record.impression_id,
        "occurred_at": occurred_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "occurred_at_ms": record.occurred_at_ms,
        "tenant": record.tenant,
        "verdict": record.verdict,
        "reason": record.reason,
        "offer_id": record.offer_id,
        "affiliate_id": record.affiliate_id,
        "advertiser_id": record.advertiser_id,
        "tracker_id": record.tracker_id,
        "line_item_id": record.line_item_id,
        "publisher_id": record.publisher_id,
        "placement_id": record.placement_id,
        "payment_rule_id": record.payment_rule_id,
        "external_imp_id": record.external_imp_id,
        "visitor_id": record.visitor_id,
        "ip": record.ip,
        "member_id": record.member_id,
        "creative_id": record.creative_id,
        "ad_unit_id": record.ad_unit_id,
        "dest_id": record.dest_id,
        "media_cost": record.media_cost,
        "subs": record.subs,
    }


async def get_impression(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    if not principal.is_admin:
        raise ApiError(403, "forbidden", f"the {principal.role} role may not look up impressions")
    impression_id = request.match_info["impression_id"]
    if not _ID_RE.fullmatch(impression_id) or not request.app[IMPRESSION_IDS].verify(impression_id):
        raise ApiError(
            400,
            "invalid_impression_id",
            "not an impression id of this tracker (wrong length, characters or signature)",
        )
    store = request.app[LOOKUP_STORE]
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT_S):
            record = await lookup.get_record(store.client, store.partitions, impression_id)
    except TimeoutError:
        message = f"the impression lookup did not answer within {LOOKUP_TIMEOUT_S:g} s"
        raise RedisTimeoutError(message) from None
    if record is None or record.tenant != principal.tenant:
        raise ApiError(404, "not_found", f"no impression {impression_id} (or it has expired)")
    return web.json_response(record_json(record))
