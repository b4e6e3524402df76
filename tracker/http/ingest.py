"""GET /imp and GET /imptr: every hit becomes an ImpressionSeen with its verdict, appended before
the pixel answers. A pixel never breaks a page: invalid or ineligible hits still get their image
(recorded, not counted); with Redis unreachable the event is fsynced to the local spool first.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import structlog
from aiohttp import web
from redis.exceptions import RedisError

from tracker import events, privacy, traffic
from tracker.config.live import LIVE_CONFIG
from tracker.events import ImpressionSeen
from tracker.eventstore import keys
from tracker.eventstore.spool import SpoolRecord, SpoolWriter, drain, spool_dir, spool_files
from tracker.eventstore.store import AppendUncertain, Claim, EventStore, as_str
from tracker.http.app_keys import SETTINGS, STORE
from tracker.http.config_common import authenticate, require_admin
from tracker.http.errors import ApiError
from tracker.http.pixel import (
    IMPRESSION_ID_HEADER,
    TRANSPARENT_GIF,
    is_safe_location,
    pixel_response,
    redirect_response,
)
from tracker.http.query import parse_imp, parse_imptr
from tracker.ids import ImpressionIds, new_event_id, stable_hash
from tracker.projections.config import ConfigState
from tracker.projections.eligibility import (
    UNKNOWN_OFFER,
    UNKNOWN_TRACKER,
    Decision,
    decide_offer,
    decide_tracker,
    decide_tracker_code,
)

logger = structlog.get_logger()

IMPRESSION_IDS = web.AppKey("impression_ids", ImpressionIds)
SPOOL = web.AppKey("spool", SpoolWriter)

DUPLICATE_WINDOW_S: Final = 24 * 3600  # the same imp_id on the same offer within it: duplicate
DUPLICATE_IMP_ID: Final = "duplicate_imp_id"
UNKNOWN_ENVIRONMENT: Final = "unknown_environment"  # Freshpaint env_id of no known tenant
REDIRECT_NOT_ALLOWED: Final = "redirect_not_allowed"
UNKNOWN_TENANT: Final = "-"  # the owner of a hit on an unknown offer / tracker
MAX_USER_AGENT: Final = 1024
MAX_REFERER: Final = 2048
DRAIN_INTERVAL_S: Final = 1.0
SECRET_KEY: Final = f"{keys.PREFIX}:secret"
# {impression_id} in a redirect target, as typed or percent-encoded by the ad server
_IMPRESSION_MACRO: Final = re.compile(r"\{impression_id\}|%7Bimpression_id%7D", re.IGNORECASE)


class Hit(msgspec.Struct, kw_only=True):
    """What a pixel handler learned from its query and the configuration."""

    tenant: str
    reason: str  # malformed parameters or ineligibility; "" when eligible
    fields: dict[str, Any]  # ImpressionSeen fields specific to the dialect
    claim_scope: str = ""  # duplicate imp_id detection scope ("tenant:offer"), "" for none
    javascript: bool = False
    redirect: str = ""  # a redirect target the tracker allows
    gdpr: str = ""
    gdpr_consent: str = ""


async def get_imp(request: web.Request) -> web.StreamResponse:
    """Affise pixel / impression link (aid, oid, sub1..sub8, imp_id), or Freshpaint's
    (env_id, dest_id, imp_id)."""
    q = parse_imp(request.rel_url.raw_query_string)
    state = request.app[LIVE_CONFIG].state
    fields: dict[str, Any] = {"dialect": q.dialect, "external_imp_id": q.external_imp_id}
    if q.dialect == "freshpaint":
        known = _tenant_known(state, q.env_id)
        fields |= {"env_id": q.env_id, "dest_id": q.dest_id}
        hit = Hit(
            tenant=q.env_id if known else UNKNOWN_TENANT,
            reason=q.reason or ("" if known else UNKNOWN_ENVIRONMENT),
            fields=fields,
        )
    else:
        decision = _decide_offer(state, q.offer_id, q.affiliate_id)
        offer = decision.offer
        fields |= {
            "offer_id": q.offer_id,
            "affiliate_id": q.affiliate_id,
            "advertiser_id": str(offer.advertiser_id) if offer else "",
            "subs": q.subs,
        }
        tenant = decision.tenant or UNKNOWN_TENANT
        hit = Hit(
            tenant=tenant,
            reason=q.reason or decision.reason,
            fields=fields,
            claim_scope=f"{tenant}:{q.offer_id}",
        )
    hit.gdpr, hit.gdpr_consent = q.gdpr, q.gdpr_consent
    return await record_hit(request, hit)


async def get_imptr(request: web.Request) -> web.StreamResponse:
    """Xandr impression tracker: id or code, t=1 (JS) / t=2 (image), cachebuster, ancost, redir."""
    q = parse_imptr(request.rel_url.raw_query_string)
    state = request.app[LIVE_CONFIG].state
    if q.tracker_id.isascii() and q.tracker_id.isdigit():
        decision = decide_tracker(state, int(q.tracker_id))
    elif q.code:
        decision = decide_tracker_code(state, q.code)
    else:
        decision = Decision(False, UNKNOWN_TRACKER)
    tracker = decision.tracker
    fields: dict[str, Any] = {
        "dialect": "xandr",
        "media_cost": q.media_cost,
        "redirect": q.redirect,
    }
    if tracker is not None:
        fields |= {
            "tracker_id": str(tracker.id),
            "advertiser_id": str(tracker.advertiser_id),
            "line_item_id": str(tracker.line_item_id),
            "publisher_id": str(tracker.publisher_id),
            "placement_id": str(tracker.placement_id or ""),
            "payment_rule_id": str(tracker.payment_rule_id or ""),
        }
    else:
        fields["tracker_id"] = q.tracker_id or q.code
    redirect = ""
    if q.redirect:
        allowed = tracker.redirect_hosts if tracker is not None else ()
        signed = bool(q.redirect_sig) and request.app[IMPRESSION_IDS].verify_redirect(
            q.redirect, q.redirect_sig
        )
        if signed or redirect_allowed(q.redirect, allowed):
            redirect = q.redirect
        else:
            fields["redirect_refused"] = REDIRECT_NOT_ALLOWED
    hit = Hit(
        tenant=decision.tenant or UNKNOWN_TENANT,
        reason=q.reason or decision.reason,
        fields=fields,
        javascript=q.javascript,
        redirect=redirect,
        gdpr=q.gdpr,
        gdpr_consent=q.gdpr_consent,
    )
    return await record_hit(request, hit)


def redirect_allowed(target: str, hosts: tuple[str, ...]) -> bool:
    """Whether ``target``'s host is on the allow-list: ``example.com`` exactly, ``.example.com``
    for it and every subdomain."""
    host = _host_of(target)
    if not host:
        return False
    for allowed in hosts:
        entry = allowed.lower()
        if entry.startswith("."):
            if host == entry[1:] or host.endswith(entry):
                return True
        elif host == entry:
            return True
    return False


def _host_of(url: str) -> str:
    try:
        from yarl import URL  # aiohttp's own URL type

        return (URL(url).host or "").lower()
    except ValueError:
        return ""


def _decide_offer(state: ConfigState, offer_id: str, affiliate_id: str) -> Decision:
    if not (
        (offer_id.isascii() and offer_id.isdigit())
        and (affiliate_id.isascii() and affiliate_id.isdigit())
    ):
        return Decision(False, UNKNOWN_OFFER)
    return decide_offer(state, int(offer_id), int(affiliate_id))


_tenants_cache: dict[str, frozenset[str]] = {}


def _tenant_known(state: ConfigState, tenant: str) -> bool:
    """A Freshpaint env_id is a tenant with some configuration (cached per config position)."""
    known = _tenants_cache.get(state.position)
    if known is None:
        known = frozenset(t for t, _ in state.by_tenant) | {t.tenant for t in state.tokens.values()}
        _tenants_cache.clear()
        _tenants_cache[state.position] = known
    return tenant in known


def client_ip(request: web.Request, trust_forwarded: bool) -> str:
    if trust_forwarded:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded:
            return forwarded.split(",", 1)[0].strip()
    return request.remote or ""


async def record_hit(request: web.Request, hit: Hit) -> web.StreamResponse:
    """Decide the verdict, append the event (or spool it), answer the pixel."""
    app = request.app
    settings = app[SETTINGS]
    store = app[STORE]
    headers = request.headers
    user_agent = headers.get("User-Agent", "")
    reason = hit.reason or traffic.classify(user_agent, headers) or ""
    ip = client_ip(request, settings.trust_forwarded)
    decided = privacy.decide(
        ip,
        hit.gdpr,
        hit.gdpr_consent,
        request.cookies,
        headers,
        settings.privacy_policy,  # type: ignore[arg-type]  # validated setting
    )
    https = privacy.is_https(request.scheme, headers)
    visitor_id, cookie = privacy.visitor(decided, request.cookies, https)
    external = hit.fields.get("external_imp_id", "")
    claim_name = (
        f"imp:{hit.claim_scope}:{external}" if not reason and external and hit.claim_scope else ""
    )
    n = store.partition_count
    impression_id = app[IMPRESSION_IDS].mint(stable_hash(claim_name) % n if claim_name else None, n)
    now = datetime.now(UTC)
    event = ImpressionSeen(
        event_id=new_event_id(),
        occurred_at=now,
        recorded_at=now,
        tenant=hit.tenant,
        impression_id=impression_id,
        verdict="not_counted" if reason else "counted",
        reason=reason,
        visitor_id=visitor_id,
        ip=decided.store_ip,
        user_agent=user_agent[:MAX_USER_AGENT],
        referer=headers.get("Referer", "")[:MAX_REFERER],
        consent=decided.consent,
        **hit.fields,
    )
    claim = None
    if claim_name:
        duplicate = msgspec.structs.replace(event, verdict="not_counted", reason=DUPLICATE_IMP_ID)
        claim = Claim(claim_name, DUPLICATE_WINDOW_S, duplicate)
    status, verdict = await _append_or_spool(app, store, event, claim)
    if verdict != event.verdict:  # the claim was taken: the duplicate was stored instead
        reason = DUPLICATE_IMP_ID
    structlog.contextvars.bind_contextvars(
        impression_id=impression_id, verdict=verdict, reason=reason, tenant=hit.tenant
    )
    response_headers = {IMPRESSION_ID_HEADER: impression_id}
    if status != 200:  # neither Redis nor the spool took it: say so, but keep the page whole
        response_headers["Retry-After"] = "1"
        response = web.Response(
            status=status, body=TRANSPARENT_GIF, content_type="image/gif", headers=response_headers
        )
    elif hit.redirect:
        target = _IMPRESSION_MACRO.sub(impression_id, hit.redirect)
        try:
            response = redirect_response(target, response_headers)
        except ValueError:
            response = pixel_response(hit.javascript, response_headers)
    else:
        response = pixel_response(hit.javascript, response_headers)
    if cookie is not None:
        response.headers.add("Set-Cookie", cookie.header())
    return response


async def _append_or_spool(
    app: web.Application, store: EventStore, event: ImpressionSeen, claim: Claim | None
) -> tuple[int, str]:
    """(HTTP status, verdict as stored). 200 only once the event is in Redis or fsynced."""
    try:
        result = await store.append(event, claim=claim)
    except (AppendUncertain, RedisError, OSError) as exc:
        token = exc.group_token if isinstance(exc, AppendUncertain) else ""
        record = SpoolRecord(event.impression_id, events.encode(event), token)
        try:
            await app[SPOOL].write_many([record])
        except OSError as spool_error:
            logger.error("spool_failed", error=str(spool_error), redis_error=str(exc))
            return 503, event.verdict
        logger.warning("impression_spooled", impression_id=event.impression_id, error=str(exc))
        return 200, event.verdict
    return 200, ("not_counted" if result.alternate else event.verdict)


async def load_secret(store: EventStore, configured: str) -> bytes:
    """TRACKER_SECRET_KEY, else one random key shared by every process through Redis."""
    if configured:
        return configured.encode()
    await store.client.set(SECRET_KEY, secrets.token_hex(32), nx=True)
    value = await store.client.get(SECRET_KEY)
    if value is None:
        raise RuntimeError("could not read the shared impression id key from Redis")
    return as_str(value).encode()


async def ingest_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the impression id key, the spool writer, and the spool drainer."""
    store = app[STORE]
    settings = app[SETTINGS]
    if IMPRESSION_IDS not in app:
        app[IMPRESSION_IDS] = ImpressionIds(await load_secret(store, settings.secret_key))
    directory = spool_dir(settings.data_dir)
    writer = SpoolWriter(directory)
    app[SPOOL] = writer
    stopping = asyncio.Event()
    task = asyncio.create_task(_drain_loop(store, directory, writer, stopping), name="spool-drain")
    yield
    stopping.set()
    await task
    await writer.close()


async def _drain_loop(
    store: EventStore, directory: Any, writer: SpoolWriter, stopping: asyncio.Event
) -> None:
    """Re-append spooled events once Redis answers again (idempotently: each has its key)."""
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), DRAIN_INTERVAL_S)
        if not spool_files(directory):
            continue
        try:
            report = await drain(store, directory, writer=writer)
        except (AppendUncertain, RedisError, OSError) as exc:
            logger.warning("spool_drain_deferred", error=str(exc))
            continue
        except Exception:  # a bug: keep the drainer alive, the files stay for the next round
            logger.exception("spool_drain_failed")
            continue
        if report.events or report.duplicates:
            logger.info("spool_drain_done", events=report.events, duplicates=report.duplicates)


async def get_redirect_signature(request: web.Request) -> web.Response:
    """Admin: the ``sig`` that lets ``/imptr`` redirect to ``url`` though its host is not listed."""

    require_admin(await authenticate(request))
    url = request.query.get("url", "")
    if not url or not is_safe_location(url):
        raise ApiError(422, "invalid_url", "url must be an absolute http(s) URL")
    sig = request.app[IMPRESSION_IDS].sign_redirect(url)
    return web.json_response({"url": url, "sig": sig, "query": f"sig={sig}&redir={url}"})


def setup_ingest(app: web.Application) -> None:
    app.cleanup_ctx.append(ingest_ctx)
    app.router.add_get("/redirect-signature", get_redirect_signature, allow_head=False)
    app.router.add_get("/imp", get_imp)
    app.router.add_get("/imptr", get_imptr)
