"""create_app(): app keys, middleware (request id, canonical log line, JSON errors), routes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from redis.exceptions import RedisError

from tracker.config.live import LIVE_CONFIG
from tracker.eventstore.store import EventStore
from tracker.http.app_keys import SETTINGS, STORE
from tracker.http.config_setup import setup_config
from tracker.http.errors import RETRY_AFTER, ApiError, error_code, error_response
from tracker.http.impressions import setup_impressions
from tracker.http.imptracker import is_xandr_path, xandr_error
from tracker.http.ingest import setup_ingest
from tracker.http.record import setup_record
from tracker.ids import new_uuid7_hex
from tracker.settings import Settings

logger = structlog.get_logger()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One canonical log line per request; every error becomes a JSON body."""
    structlog.contextvars.clear_contextvars()
    request_id = request.headers.get("X-Request-Id") or new_uuid7_hex()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    try:
        response = await handler(request)
    except ApiError as exc:
        response = exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = ApiError(exc.status, error_code(exc.status), exc.reason)
        # 404 / 405 under Xandr's paths in Xandr's envelope, like their handlers' errors
        xandr = is_xandr_path(request.path)
        response = xandr_error(error) if xandr else error.response()
        if "Allow" in exc.headers:  # a 405 names the methods the resource has (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
    except (RequestPayloadError, HttpProcessingError) as exc:  # a body aiohttp could not read
        # e.g. a Content-Encoding: gzip body that is not gzip, or a chunked body cut short
        message = getattr(exc, "message", "") or str(exc) or type(exc).__name__
        response = error_response(400, "invalid_body", f"the request body is unreadable: {message}")
    except RedisError as exc:
        logger.error("redis_error", error=str(exc), path=request.path)
        response = error_response(503, "unavailable", "the event store is unavailable; retry")
        response.headers.update(RETRY_AFTER)
    except Exception:  # a bug: log it with its traceback, answer JSON, keep serving
        logger.exception("request_failed", method=request.method, path=request.path)
        response = error_response(500, "internal_error", "an internal error; it was logged")
    logger.info(
        "request",
        method=request.method,
        path=request.path,
        status=response.status,
        took_ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


# How long /readyz waits for Redis's PING: a hung Redis (no error, no answer) is not ready, and a
# probe must get its answer before its own timeout (Kubernetes' default is 1 s, most use 1-5 s).
READY_TIMEOUT_S = 2.0


async def readyz(request: web.Request) -> web.Response:
    store = request.app[STORE]
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await store.client.ping()
    except RedisError as exc:
        return error_response(503, "redis_unavailable", str(exc))
    except TimeoutError:
        message = f"Redis did not answer PING within {READY_TIMEOUT_S:g} s"
        return error_response(503, "redis_unavailable", message)
    failure = request.app[LIVE_CONFIG].failure
    if (
        failure is not None
    ):  # the configuration tail stopped on a bug: pixels decide on stale config
        return error_response(503, "config_stale", f"configuration tail stopped: {failure}")
    return web.json_response({"status": "ready"})


def create_app(store: EventStore, settings: Settings) -> web.Application:
    app = web.Application(middlewares=[request_middleware], client_max_size=8 * 1024 * 1024)
    app[STORE] = store
    app[SETTINGS] = settings
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    setup_config(app, store, settings)
    setup_ingest(app)
    setup_record(app)
    setup_impressions(app, store)
    return app
