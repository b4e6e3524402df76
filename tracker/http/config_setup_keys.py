"""App keys of the configuration routes that are not owned by a config module."""

from __future__ import annotations

from aiohttp import web

PUBLIC_URL = web.AppKey("public_url", str)  # TRACKER_PUBLIC_URL, else http://HOST:PORT
