"""Tag export over HTTP: ``GET /imptracker/tags`` (Xandr, HTML) and
``GET /offers/{id}/impression-pixel?affiliate_id=`` (Affise pixel and impression link, JSON)."""

from __future__ import annotations

from aiohttp import web

from tracker.config import model, tags
from tracker.http.config_common import (
    authenticate,
    id_list,
    int_param,
    synced,
    visible,
    whole_number,
)
from tracker.http.config_setup_keys import PUBLIC_URL
from tracker.http.errors import ApiError
from tracker.http.imptracker import xandr_error


async def get_tracker_tags(request: web.Request) -> web.Response:
    """The snippets of one or more trackers (``id=1,2``), one per line, as ``text/html``."""
    try:
        principal = await authenticate(request)
        raw_ids = request.query.get("id", "")
        ids = id_list(raw_ids)
        if ids is None:
            raise ApiError(400, "bad_parameter", "id must be a number or a comma-separated list")
        try:
            macros = tags.parse_macros(request.query.get("macros"))
            fmt = request.query.get("format", "image")
            if fmt not in tags.FORMATS:
                raise tags.TagError(f"format {fmt!r}: expected one of {', '.join(tags.FORMATS)}")
        except tags.TagError as exc:
            raise ApiError(400, "bad_parameter", str(exc)) from None
        state = await synced(request)
        base = request.app[PUBLIC_URL]
        snippets = []
        for tracker_id in ids:
            tracker: model.Tracker = visible(state, principal, model.TRACKER, tracker_id)
            snippets.append(tags.tracker_tag(base, tracker.id, tracker.name, fmt, macros))
    except ApiError as exc:
        return xandr_error(exc)
    return web.Response(text="\n".join(snippets) + "\n", content_type="text/html")


async def get_offer_pixel(request: web.Request) -> web.Response:
    """The Affise impression pixel and link of (offer, affiliate)."""
    principal = await authenticate(request)
    state = await synced(request)
    offer: model.Offer = visible(state, principal, model.OFFER, _path_id(request))
    affiliate_id = int_param(request, "affiliate_id", principal.scope_id)
    if affiliate_id is None:
        raise ApiError(400, "missing_parameter", "affiliate_id is required")
    if principal.role == "affiliate" and affiliate_id != principal.scope_id:
        raise ApiError(403, "forbidden", "an affiliate may export only its own pixel")
    visible(state, principal, model.AFFILIATE, affiliate_id)  # 404 / 403 as for a read
    if not offer.allow_impressions:
        raise ApiError(
            409, "impressions_not_allowed", "turn on allow_impressions for this offer first"
        )
    subs = int_param(request, "subs", 3) or 0
    try:
        base = request.app[PUBLIC_URL]
        body = {
            "offer_id": offer.id,
            "affiliate_id": affiliate_id,
            "pixel": tags.impression_pixel(base, offer.id, affiliate_id, subs),
            "link": tags.impression_link(base, offer.id, affiliate_id, subs),
        }
    except tags.TagError as exc:
        raise ApiError(400, "bad_parameter", str(exc)) from None
    return web.json_response(body)


def _path_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    offer_id = whole_number(raw)
    if offer_id is None:
        raise ApiError(404, "not_found", f"no offer {raw[:40]!r}")
    return offer_id
