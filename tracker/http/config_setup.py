"""Wires configuration into the app: the live in-process copy, the writer, and their routes."""

from __future__ import annotations

from aiohttp import web

from tracker.config.live import LIVE_CONFIG, LiveConfig, live_config_ctx
from tracker.config.writer import CONFIG_WRITER, ConfigWriter
from tracker.eventstore.store import EventStore
from tracker.http.config_api import config_routes
from tracker.http.config_setup_keys import PUBLIC_URL
from tracker.http.eligibility_api import get_eligibility
from tracker.http.imptracker import imptracker_routes
from tracker.http.tags_api import get_offer_pixel, get_tracker_tags
from tracker.settings import Settings


def setup_config(app: web.Application, store: EventStore, settings: Settings) -> None:
    """Handlers read ``request.app[LIVE_CONFIG].state`` (kept current by a background tail)."""
    app[LIVE_CONFIG] = LiveConfig(store)
    app[CONFIG_WRITER] = ConfigWriter(store.client)
    app[PUBLIC_URL] = settings.public_url or f"http://{settings.host}:{settings.port}"
    app.cleanup_ctx.append(live_config_ctx)
    app.router.add_get("/imptracker/tags", get_tracker_tags, allow_head=False)
    app.router.add_routes(imptracker_routes())
    app.router.add_get("/eligibility", get_eligibility, allow_head=False)
    app.router.add_get("/offers/{id}/impression-pixel", get_offer_pixel, allow_head=False)
    app.router.add_routes(config_routes())
