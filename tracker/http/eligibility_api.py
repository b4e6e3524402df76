"""``GET /eligibility``: explains, for support, how the pixel path decides a hit right now.

``?offer_id=&affiliate_id=`` (Affise) or ``?tracker_id=`` / ``?code=`` (Xandr). Answered from
this process's in-process configuration *without* waiting for it to catch up, exactly as a pixel
hit would be decided (the answer names the config position it used).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tracker.config import model
from tracker.config.auth import Principal, can_read
from tracker.config.live import LIVE_CONFIG
from tracker.http.config_common import authenticate, int_param
from tracker.http.errors import ApiError
from tracker.projections import eligibility as el


def _scope_check(principal: Principal, decision: el.Decision, affiliate_id: int | None) -> None:
    """Another tenant's offer / tracker looks unknown (404); a scoped role sees only its own."""
    if decision.tenant and decision.tenant != principal.tenant:
        raise ApiError(404, "not_found", "no such offer or tracker")
    if principal.is_admin or not decision.tenant:
        return
    subject = decision.offer or decision.tracker
    kind = model.OFFER if decision.offer is not None else model.TRACKER
    allowed = subject is not None and can_read(principal, kind, subject)
    if principal.role == "affiliate":  # its own decisions, on offers open to it
        allowed = allowed and affiliate_id == principal.scope_id
    if not allowed:
        raise ApiError(403, "forbidden", f"the {principal.role} role may not see this decision")


async def get_eligibility(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    state = request.app[LIVE_CONFIG].state
    offer_id = int_param(request, "offer_id")
    tracker_id = int_param(request, "tracker_id")
    code = request.query.get("code")
    body: dict[str, Any]
    if offer_id is not None:
        affiliate_id = int_param(request, "affiliate_id")
        if affiliate_id is None:
            raise ApiError(400, "missing_parameter", "affiliate_id is required with offer_id")
        decision = el.decide_offer(state, offer_id, affiliate_id)
        _scope_check(principal, decision, affiliate_id)
        body = {"offer_id": offer_id, "affiliate_id": affiliate_id}
    elif tracker_id is not None or code:
        if tracker_id is not None:
            decision = el.decide_tracker(state, tracker_id)
        else:
            decision = el.decide_tracker_code(state, code or "")
        _scope_check(principal, decision, None)
        tracker = decision.tracker
        body = {"tracker_id": tracker.id if tracker is not None else tracker_id, "code": code}
    else:
        raise ApiError(400, "missing_parameter", "give offer_id and affiliate_id, or tracker_id")
    body.update(
        eligible=decision.eligible,
        reason=decision.reason or None,
        message=el.MESSAGES[decision.reason],
        config_position=state.position,
    )
    return web.json_response(body)
