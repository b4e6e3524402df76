"""The application's typed keys shared by every handler module (no imports of app.py needed)."""

from __future__ import annotations

from aiohttp import web

from tracker.eventstore.store import EventStore
from tracker.settings import Settings

STORE = web.AppKey("store", EventStore)
SETTINGS = web.AppKey("settings", Settings)
