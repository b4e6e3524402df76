"""GET /imp and GET /imptr: every hit becomes an ImpressionSeen with its verdict, appended before
the pixel answers. A pixel never breaks a page: invalid or ineligible hits still get their image
(recorded, not counted); with Redis unreachable the event is fsynced to the local spool first.

``Pixels.record`` does the work on a ``PixelRequest`` and returns a ``PixelAnswer``; it knows
nothing of the HTTP server. Two front ends call it: the fast one in ``tracker.http.front`` (the
web process's socket, for pixel requests) and the aiohttp handlers below (everything that reaches
aiohttp's router, e.g. in tests or when the fast path hands a connection over).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import msgspec
import structlog
from aiohttp import web
from multidict import CIMultiDictProxy
from redis.exceptions import RedisError

from tracker import events, privacy, traffic
from tracker.config.live import LIVE_CONFIG, LiveConfig
from tracker.events import ImpressionSeen
from tracker.eventstore import keys
from tracker.eventstore.spool import (
    STALE_TEMP_S,
    SpoolRecord,
    SpoolWriter,
    drain,
    remove_stale_temps,
    spool_dir,
    spool_files,
)
from tracker.eventstore.store import AppendResult, AppendUncertain, Claim, EventStore, as_str
from tracker.http.app_keys import SETTINGS, STORE
from tracker.http.config_common import authenticate, require_admin
from tracker.http.errors import RETRY_AFTER, ApiError
from tracker.http.pixel import (
    IMPRESSION_ID_HEADER,
    NO_CACHE_HEADERS,
    PixelAnswer,
    is_safe_location,
    pixel_answer,
    redirect_answer,
    web_response,
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
from tracker.settings import Settings

logger = structlog.get_logger()

IMPRESSION_IDS = web.AppKey("impression_ids", ImpressionIds)
SPOOL = web.AppKey("spool", SpoolWriter)

DUPLICATE_WINDOW_S: Final = 24 * 3600  # the same imp_id on the same offer within it: duplicate
DUPLICATE_IMP_ID: Final = "duplicate_imp_id"
UNKNOWN_ENVIRONMENT: Final = "unknown_environment"  # Freshpaint env_id of no known tenant
REDIRECT_NOT_ALLOWED: Final = "redirect_not_allowed"
REDIRECT_MALFORMED: Final = "redirect_malformed"  # not a safe absolute http(s) URL, too long, …
UNKNOWN_TENANT: Final = "-"  # the owner of a hit on an unknown offer / tracker
MAX_USER_AGENT: Final = 1024
MAX_REFERER: Final = 2048
DRAIN_INTERVAL_S: Final = 1.0
DRAIN_STOP_S: Final = 5.0  # on shutdown, how long a drain pass under way may still run
SECRET_KEY: Final = f"{keys.PREFIX}:secret"
# {impression_id} in a redirect target, as typed or with any of its characters percent-encoded
# (by an ad server): every spelling a redirect signature covers (ids.signing_form decodes them)
_IMPRESSION_MACRO: Final = re.compile(
    "".join(f"(?:{re.escape(c)}|%{ord(c):02X})" for c in "{impression_id}"), re.IGNORECASE
)


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


class PixelRequest(NamedTuple):
    """What a pixel hit needs of its HTTP request."""

    path: str  # "/imp" or "/imptr"
    raw_query: str  # still percent-encoded (``redir`` is cut from it before decoding)
    headers: Mapping[str, str]  # looked up by lowercase name (aiohttp's CIMultiDict does too)
    remote: str  # the peer's address
    scheme: str  # "http" or "https" as the server saw it
    method: str = "GET"  # or "HEAD": recorded, not counted (traffic.HEAD_REQUEST)


class Recorded(NamedTuple):
    """A pixel's answer, and what its log line says of the hit."""

    answer: PixelAnswer
    impression_id: str
    verdict: str
    reason: str
    tenant: str


class PendingHit(NamedTuple):
    """A decided hit whose event is on its way to the log."""

    hit: Hit
    event: ImpressionSeen
    claim: Claim | None
    cookie: privacy.Cookie | None


APPEND_ERRORS: Final = (AppendUncertain, RedisError, OSError)  # the spool takes over
# How long a pixel waits for Redis before its event goes to the spool instead: a hung Redis (no
# error, no answer) would otherwise hold every pixel for the socket timeout times the retries
# (~40 s). A call already sent may still run later: the spool drainer fences it (spool.py).
PIXEL_DEADLINE_S: Final = 2.0
FENCE_WAIT_S: Final = 2.0  # settling an uncertain append whose hit the spool could not take


class Pixels:
    """Records pixel hits: query -> verdict -> ImpressionSeen appended (or spooled) -> answer."""

    def __init__(
        self,
        store: EventStore,
        settings: Settings,
        live: LiveConfig,
        ids: ImpressionIds,
        spool: SpoolWriter,
    ) -> None:
        self.store = store
        self.settings = settings
        self.live = live
        self.ids = ids
        self.spool = spool
        self._policy: privacy.Policy = settings.privacy_policy  # type: ignore[assignment]  # validated

    async def record(self, request: PixelRequest) -> Recorded:
        """Record one hit and build its answer (appended, or spooled when Redis fails)."""
        pending, appended = self.submit(request)
        try:
            result = await appended
        except APPEND_ERRORS as exc:
            return await self.recover(pending, exc)
        return self.finish(pending, result)

    def submit(self, request: PixelRequest) -> tuple[PendingHit, asyncio.Future[AppendResult]]:
        """Decide the hit and queue its event: the future resolves once it is in the log.
        Then ``finish`` builds the answer, or, when the future failed with one of
        ``APPEND_ERRORS``, ``recover`` spools the event first."""
        hit = (
            self._imptr(request.raw_query, request.headers)
            if request.path == "/imptr"
            else self._imp(request.raw_query)
        )
        pending = self._pending(request, hit)
        appended = self.store.submit(
            pending.event, claim=pending.claim, deadline_s=PIXEL_DEADLINE_S
        )
        return pending, appended

    def finish(self, pending: PendingHit, result: AppendResult) -> Recorded:
        verdict = "not_counted" if result.alternate else pending.event.verdict
        return self._answer(pending, 200, verdict)

    async def recover(self, pending: PendingHit, exc: BaseException) -> Recorded:
        """The append failed: fsync the event to the local spool (the drainer re-appends it)."""
        event = pending.event
        token = exc.group_token if isinstance(exc, AppendUncertain) else ""
        claim = pending.claim
        record = SpoolRecord(event.impression_id, events.encode(event), token)
        if claim is not None:  # taken when the spool drains: a duplicate is still caught
            otherwise = events.encode(claim.otherwise)
            record = record._replace(claim=claim.name, claim_ttl_s=claim.ttl_s, otherwise=otherwise)
        try:
            await self.spool.write_many([record])
        except OSError as spool_error:
            if token and await self._ran(token) is True:  # landed after all: it is in the log
                logger.warning("impression_landed_late", impression_id=event.impression_id)
                return self._answer(pending, 200, event.verdict)
            logger.error("spool_failed", error=str(spool_error), redis_error=str(exc))
            return self._answer(pending, 503, event.verdict)
        logger.warning("impression_spooled", impression_id=event.impression_id, error=str(exc))
        return self._answer(pending, 200, event.verdict)

    async def _ran(self, token: str) -> bool | None:
        """Whether an uncertain call ran, fencing it when it had not (so a 503 is true: it will
        never append); None when Redis cannot say within FENCE_WAIT_S (the 503 stays, and the
        call may still land: Redis hung and the spool failed, two faults at once)."""
        try:
            async with asyncio.timeout(FENCE_WAIT_S):
                return await self.store.fence_group(token)
        except (RedisError, OSError, TimeoutError) as fence_error:
            logger.error("append_outcome_unknown", group_token=token, error=str(fence_error))
            return None

    def _imp(self, raw_query: str) -> Hit:
        """Affise pixel / impression link (aid, oid, sub1..sub8, imp_id), or Freshpaint's
        (env_id, dest_id, imp_id)."""
        q = parse_imp(raw_query)
        state = self.live.state
        fields: dict[str, Any] = {"dialect": q.dialect, "external_imp_id": q.external_imp_id}
        if q.dialect == "freshpaint":
            known = _tenant_known(state, q.env_id)
            fields |= {"env_id": q.env_id, "dest_id": q.dest_id}
            hit = Hit(
                tenant=q.env_id if known else UNKNOWN_TENANT,
                reason=q.reason or ("" if known else UNKNOWN_ENVIRONMENT),
                fields=fields,
                # no offer here: an imp_id repeats within its destination (as the lookup keys
                # it); the length keeps "a:b" + "c" apart from "a" + "b:c"
                claim_scope=f"{q.env_id}:dest:{len(q.dest_id)}:{q.dest_id}",
            )
        else:
            offer_id, affiliate_id = _canonical_id(q.offer_id), _canonical_id(q.affiliate_id)
            decision = _decide_offer(state, offer_id, affiliate_id)
            offer = decision.offer
            fields |= {
                "offer_id": offer_id,
                "affiliate_id": affiliate_id,
                "advertiser_id": str(offer.advertiser_id) if offer else "",
                "subs": q.subs,
            }
            tenant = decision.tenant or UNKNOWN_TENANT
            hit = Hit(
                tenant=tenant,
                reason=q.reason or decision.reason,
                fields=fields,
                claim_scope=f"{tenant}:{offer_id}",
            )
        hit.gdpr, hit.gdpr_consent = q.gdpr, q.gdpr_consent
        return hit

    def _imptr(self, raw_query: str, headers: Mapping[str, str]) -> Hit:
        """Xandr impression tracker: id or code, t=1 (JS) / t=2 (image), cachebuster, ancost,
        redir. Without ``t`` the image is the default, but a browser loading the URL as a
        script (``Sec-Fetch-Dest: script``: Xandr's own JavaScript tag example has no ``t``)
        gets the script: an image would be refused as one (strict MIME checking)."""
        q = parse_imptr(raw_query)
        state = self.live.state
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
        if q.redirect_problem:
            fields["redirect_refused"] = REDIRECT_MALFORMED
        elif q.redirect:
            # an unknown tracker never redirects; a signature holds for its tenant's trackers
            if tracker is not None and (
                (
                    q.redirect_sig
                    and self.ids.verify_redirect(tracker.tenant, q.redirect, q.redirect_sig)
                )
                or redirect_allowed(q.redirect, tracker.redirect_hosts)
            ):
                redirect = q.redirect
            else:
                fields["redirect_refused"] = REDIRECT_NOT_ALLOWED
        return Hit(
            tenant=decision.tenant or UNKNOWN_TENANT,
            reason=q.reason or decision.reason,
            fields=fields,
            javascript=q.javascript
            or (q.t_given == "" and headers.get("sec-fetch-dest") == "script"),
            redirect=redirect,
            gdpr=q.gdpr,
            gdpr_consent=q.gdpr_consent,
        )

    def _pending(self, request: PixelRequest, hit: Hit) -> PendingHit:
        """Decide the verdict and build the event (and its claim on the affiliate's imp_id)."""
        headers = request.headers
        user_agent = headers.get("user-agent", "")
        reason = (
            hit.reason
            or traffic.classify(user_agent, headers)
            or (traffic.HEAD_REQUEST if request.method == "HEAD" else "")
        )
        ip = client_ip(request, self.settings.trust_forwarded)
        cookies = privacy.parse_cookies(headers.get("cookie", ""))
        decided = privacy.decide(ip, hit.gdpr, hit.gdpr_consent, cookies, headers, self._policy)
        https = privacy.is_https(request.scheme, headers)
        visitor_id, cookie = privacy.visitor(decided, cookies, https)
        external = hit.fields.get("external_imp_id", "")
        claim_name = (
            f"imp:{hit.claim_scope}:{external}"
            if not reason and external and hit.claim_scope
            else ""
        )
        n = self.store.partition_count
        route = stable_hash(claim_name) % n if claim_name else self.store.hot_route()
        impression_id = self.ids.mint(route, n)
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
            referer=headers.get("referer", "")[:MAX_REFERER],
            consent=decided.consent,
            **hit.fields,
        )
        claim = None
        if claim_name:
            duplicate = msgspec.structs.replace(
                event, verdict="not_counted", reason=DUPLICATE_IMP_ID
            )
            claim = Claim(claim_name, DUPLICATE_WINDOW_S, duplicate)
        return PendingHit(hit, event, claim, cookie)

    def _answer(self, pending: PendingHit, status: int, verdict: str) -> Recorded:
        """The pixel's answer once the event is stored (``verdict`` as stored)."""
        hit, event = pending.hit, pending.event
        impression_id = event.impression_id
        reason = DUPLICATE_IMP_ID if verdict != event.verdict else event.reason
        if status != 200:  # neither Redis nor the spool took it: say so, keep the page whole
            # (the image or script all the same, uncacheable; no id or cookie: nothing was stored)
            answer = pixel_answer(hit.javascript, RETRY_AFTER)._replace(status=status)
            return Recorded(answer, impression_id, verdict, reason, hit.tenant)
        extra = {IMPRESSION_ID_HEADER: impression_id}
        if hit.redirect:
            target = _IMPRESSION_MACRO.sub(impression_id, hit.redirect)
            try:
                answer = redirect_answer(target, extra)
            except ValueError:
                answer = pixel_answer(hit.javascript, extra)
        else:
            answer = pixel_answer(hit.javascript, extra)
        if pending.cookie is not None:
            answer.headers.append(("Set-Cookie", pending.cookie.header()))
        return Recorded(answer, impression_id, verdict, reason, hit.tenant)


PIXELS = web.AppKey("pixels", Pixels)


async def pixel_handler(request: web.Request) -> web.StreamResponse:
    """GET /imp and GET /imptr behind aiohttp's router."""
    recorded = await request.app[PIXELS].record(
        PixelRequest(
            request.path,
            request.rel_url.raw_query_string,
            _pixel_headers(request.headers),
            request.remote or "",
            request.scheme,
            request.method,
        )
    )
    structlog.contextvars.bind_contextvars(
        impression_id=recorded.impression_id,
        verdict=recorded.verdict,
        reason=recorded.reason,
        tenant=recorded.tenant,
    )
    return web_response(recorded.answer)


def _pixel_headers(headers: CIMultiDictProxy[str]) -> Mapping[str, str]:
    """aiohttp's headers as the lean path reads them. Header bytes that are not UTF-8 (aiohttp
    keeps them as lone surrogates, which no event can store) get U+FFFD in their place, so the
    hit is recorded and answered like any other; the lines of ``X-Forwarded-For`` are joined
    in order, as ``client_ip`` needs them all, and so are Cookie's (an opt-out cookie in a second
    line counts). Otherwise aiohttp's own mapping serves."""
    if all(value.isascii() for value in headers.values()) and not any(
        len(headers.getall(name, ())) > 1 for name in _JOINED
    ):
        return headers
    clean: dict[str, str] = {}
    for name, value in headers.items():  # the first of repeated names wins, as on the lean path
        key = name.lower()
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        if key in _JOINED and key in clean:
            clean[key] = f"{clean[key]}{_JOINED[key]}{value}"
        else:
            clean.setdefault(key, value)
    return clean


# Headers whose repeated lines are one list (the lean path joins them alike): every
# X-Forwarded-For hop counts; HTTP/2 clients send a cookie per line (RFC 9113 8.2.3).
_JOINED: Final = {"x-forwarded-for": ", ", "cookie": "; "}


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
    """The target's host in lower case, or "" for none or one no browser would resolve as
    written: a percent-escape in a host (``evil.example%40www.shop.example``) is refused."""
    try:
        from yarl import URL  # aiohttp's own URL type

        host = (URL(url).host or "").lower()
    except Exception:  # yarl raises more than ValueError ("https://[::1]@": IndexError)
        return ""
    return "" if "%" in host else host


def _canonical_id(raw: str) -> str:
    """A numeric id without leading zeros (``oid=007`` is offer 7): eligibility reads the number,
    so the event, the duplicate ``imp_id`` claim and the lookup keys must name it alike, or
    ``oid=01`` would pass a duplicate off as new. Anything else is kept as given."""
    if len(raw) > 1 and raw[0] == "0" and raw.isascii() and raw.isdigit():
        return raw.lstrip("0") or "0"
    return raw


def _decide_offer(state: ConfigState, offer_id: str, affiliate_id: str) -> Decision:
    """Ids as given: one that is not a number names nothing. A bad ``aid`` on a real offer is
    still that offer's hit (its tenant's, reason ``unknown_affiliate``), not an unknown offer's."""
    if not (offer_id.isascii() and offer_id.isdigit()):
        return Decision(False, UNKNOWN_OFFER)
    numeric = affiliate_id.isascii() and affiliate_id.isdigit()
    return decide_offer(state, int(offer_id), int(affiliate_id) if numeric else _NO_AFFILIATE)


_NO_AFFILIATE: Final = -1  # no affiliate has it: ids are positive


_tenants_cache: dict[str, frozenset[str]] = {}


def _tenant_known(state: ConfigState, tenant: str) -> bool:
    """A Freshpaint env_id is a tenant with some configuration (cached per config position)."""
    known = _tenants_cache.get(state.position)
    if known is None:
        known = frozenset(t for t, _ in state.by_tenant) | {t.tenant for t in state.tokens.values()}
        _tenants_cache.clear()
        _tenants_cache[state.position] = known
    return tenant in known


def client_ip(request: PixelRequest, trusted_proxies: int) -> str:
    """The peer, or behind ``trusted_proxies`` proxies that each append the address they saw to
    ``X-Forwarded-For``, the entry that many from the right: what the outermost trusted proxy
    saw. Entries left of it are the client's to write, so never trusted."""
    if trusted_proxies:
        forwarded = request.headers.get("x-forwarded-for", "")
        if forwarded:
            hops = forwarded.split(",")
            return _without_port(hops[-min(trusted_proxies, len(hops))].strip())
    return request.remote


def _without_port(entry: str) -> str:
    """An X-Forwarded-For entry's address: some proxies append the client's port
    (``203.0.113.7:51234``, ``[2001:db8::7]:443``), which no address parser reads."""
    if entry.startswith("["):
        return entry[1:].partition("]")[0]
    if entry.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has several colons
        return entry.partition(":")[0]
    return entry


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
    app[PIXELS] = Pixels(store, settings, app[LIVE_CONFIG], app[IMPRESSION_IDS], writer)
    stopping = asyncio.Event()
    task = asyncio.create_task(_drain_loop(store, directory, writer, stopping), name="spool-drain")
    yield
    stopping.set()
    # a pass under way gets DRAIN_STOP_S: with Redis hung it would wait for each file's calls'
    # timeouts and retries (minutes); a pass cut short leaves its files for the next drain (each
    # record's key and fenced token keep a second pass from doubling what the first appended)
    await asyncio.wait({task}, timeout=DRAIN_STOP_S)
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        logger.warning("spool_drain_cut_short", message="its files stay for the next drain")
    await writer.close()


async def _drain_loop(
    store: EventStore, directory: Any, writer: SpoolWriter, stopping: asyncio.Event
) -> None:
    """Re-append spooled events once Redis answers again (idempotently: each has its key)."""
    next_sweep = 0.0
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), DRAIN_INTERVAL_S)
        if not spool_files(directory):
            if time.monotonic() >= next_sweep:  # a crashed writer's .tmp (a drain sweeps too)
                next_sweep = time.monotonic() + STALE_TEMP_S
                try:
                    await asyncio.to_thread(remove_stale_temps, directory)
                except Exception:  # a bug: it must not stop the drainer
                    logger.exception("spool_sweep_failed")
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
    """Admin: the ``sig`` that lets ``/imptr`` redirect to ``url`` though its host is not listed,
    on the trackers of the admin's own tenant."""

    principal = await authenticate(request)
    require_admin(principal)
    url = request.query.get("url", "")
    if not url or not is_safe_location(url):
        raise ApiError(422, "invalid_url", "url must be an absolute http(s) URL")
    sig = request.app[IMPRESSION_IDS].sign_redirect(principal.tenant, url)
    return web.json_response({"url": url, "sig": sig, "query": f"sig={sig}&redir={url}"})


async def opt_out(request: web.Request) -> web.Response:
    """``GET /optout`` (no token: a browser opens it on the tracker's own domain): sets
    ``tracker_optout=1`` for five years and expires the visitor cookie. From then on this browser's
    hits get no visitor cookie and a truncated IP, under either privacy policy."""
    return _cookie_page(request, privacy.opt_out_cookies, opted_out=True)


async def opt_in(request: web.Request) -> web.Response:
    """``GET /optin``: expires the opt-out cookie. Only as a visit (a link followed, the address
    typed): a request a page embeds (``<img src=".../optin">``, ``fetch``) could otherwise undo
    a person's opt-out behind their back. Browsers say which it is in ``Sec-Fetch-Mode``."""
    mode = request.headers.get("Sec-Fetch-Mode")
    if mode is not None and mode != "navigate":
        raise ApiError(
            403,
            "navigation_required",
            "opting back in takes visiting this address (a link), not a request from a page",
        )
    return _cookie_page(request, privacy.opt_in_cookies, opted_out=False)


def _cookie_page(
    request: web.Request, cookies: Callable[[bool], list[privacy.Cookie]], *, opted_out: bool
) -> web.Response:
    https = privacy.is_https(request.scheme, request.headers)
    response = web.json_response({"opted_out": opted_out}, headers=dict(NO_CACHE_HEADERS))
    for cookie in cookies(https):
        response.headers.add("Set-Cookie", cookie.header())
    return response


def setup_ingest(app: web.Application) -> None:
    app.cleanup_ctx.append(ingest_ctx)
    app.router.add_get("/optout", opt_out)
    app.router.add_get("/optin", opt_in)
    app.router.add_get("/redirect-signature", get_redirect_signature, allow_head=False)
    app.router.add_get("/imp", pixel_handler)
    app.router.add_get("/imptr", pixel_handler)
