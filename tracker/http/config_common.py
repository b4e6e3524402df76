"""What every configuration handler shares: authentication, scoped lookups, versioned writes.

Errors are raised as ApiError (JSON envelope); the Xandr handlers translate them to theirs.
"""

from __future__ import annotations

from typing import Any, Final

import structlog
from aiohttp import web

from tracker.config import auth, model
from tracker.config.auth import Principal
from tracker.config.live import LIVE_CONFIG, ConfigUnavailable
from tracker.config.writer import CONFIG_WRITER, NameTaken, VersionConflict, WriteUncertain
from tracker.http.errors import RETRY_AFTER, ApiError
from tracker.projections.config import ConfigState

logger = structlog.get_logger()

# A 401 says how to authenticate (RFC 9110 11.6.1; RFC 6750 3 for the error parameter).
CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="tracker"'}
INVALID_TOKEN: Final = {"WWW-Authenticate": 'Bearer realm="tracker", error="invalid_token"'}


async def authenticate(request: web.Request) -> Principal:
    """The caller: 401 when the bearer token is missing, malformed, unknown or revoked."""
    header = request.headers.get("Authorization")
    parsed = auth.token_id_of(header)
    if parsed is None:
        if auth.names_a_bearer_token(header):  # RFC 6750: a malformed one is an invalid_token
            raise ApiError(
                401,
                "unauthorized",
                "the bearer token is malformed: send it as `tracker token create` printed it",
                headers=INVALID_TOKEN,
            )
        raise ApiError(
            401,
            "unauthorized",
            "an Authorization: Bearer token is required",
            headers=CHALLENGE,
        )
    token_id, secret = parsed
    live = request.app[LIVE_CONFIG]
    if token_id not in live.state.tokens:
        await synced(request)  # a token created a moment ago, maybe through another process
    principal = auth.verify(live.state, token_id, secret)
    if principal is None:
        raise ApiError(
            401, "unauthorized", "the bearer token is invalid or revoked", headers=INVALID_TOKEN
        )
    return principal


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise ApiError(403, "forbidden", f"the {principal.role} role may not change configuration")


async def synced(request: web.Request) -> ConfigState:
    """The in-process configuration, caught up with everything written so far (any process)."""
    try:
        return await request.app[LIVE_CONFIG].sync()
    except ConfigUnavailable as exc:
        raise ApiError(503, "config_unavailable", str(exc), headers=RETRY_AFTER) from None


def visible(state: ConfigState, principal: Principal, kind: str, object_id: int) -> Any:
    """The object, for this principal: 404 when missing, deleted or another tenant's (no
    existence oracle across tenants); 403 when it is outside a scoped role."""
    obj = state.get(kind, object_id)
    if obj is None or obj.tenant != principal.tenant or model.is_deleted(obj):
        raise ApiError(404, "not_found", f"no {kind} {object_id}")
    if not auth.can_read(principal, kind, obj):
        raise ApiError(
            403, "forbidden", f"the {principal.role} role may not see {kind} {object_id}"
        )
    return obj


async def save(
    request: web.Request,
    principal: Principal,
    kind: str,
    obj: Any,
    *,
    claims: tuple[str, ...] = (),
    releases: tuple[str, ...] = (),
) -> Any:
    """Append the change (version compare-and-set) and wait until this process has applied it,
    so the response and any later read reflect it. 409 on a version or unique-name conflict.

    Once the change is in the log it is answered as saved, even when this process does not
    apply it within ``SYNC_TIMEOUT_S``: a 503 then would have a client retry a create that
    landed (a second object). The answer is built from the saved object, and a later read
    here syncs first (or answers 503 itself)."""
    try:
        position, stored = await request.app[CONFIG_WRITER].save(
            kind, obj, actor=principal.token_id, claims=claims, releases=releases
        )
    except VersionConflict as exc:
        raise ApiError(
            409,
            "version_conflict",
            f"{kind} {obj.id} is at version {exc.current}, not {obj.version}: reload and retry",
            current_version=exc.current,
        ) from None
    except NameTaken:
        # the owner may be another tenant's (tracker codes are global): it is not named
        raise ApiError(409, "name_taken", f"already used by another {kind}") from None
    except WriteUncertain as exc:
        logger.error("config_write_uncertain", kind=kind, object_id=obj.id, error=str(exc))
        if obj.version == 0:  # a retried create would get a new id: say which one to look for
            advice = f"{kind} {obj.id} may have been created: read it, and create again only if 404"
        else:
            advice = (
                f"read {kind} {obj.id} before retrying (a retry based on version {obj.version} "
                "gets 409 version_conflict if it was saved)"
            )
        raise ApiError(503, "write_uncertain", f"{exc}: {advice}") from None
    logger.info(
        "config_changed",
        kind=kind,
        object_id=stored.id,
        version=stored.version,
        position=position,
        actor=principal.token_id,
    )
    try:
        await request.app[LIVE_CONFIG].wait_for(position)
    except ConfigUnavailable as exc:
        logger.warning(
            "config_change_not_applied_here",
            kind=kind,
            object_id=stored.id,
            position=position,
            error=str(exc),
        )
    return stored


MAX_DIGITS: Final = 18  # ids, versions and paging numbers: they fit a signed 64-bit integer


def whole_number(raw: str) -> int | None:
    """ASCII digits (at most MAX_DIGITS: ``int()`` of thousands raises, and nothing here is
    that big) as an int, else None."""
    if raw.isascii() and raw.isdigit() and len(raw) <= MAX_DIGITS:
        return int(raw)
    return None


def id_list(raw: str) -> list[int] | None:
    """``1,2,3`` (blanks around an id allowed) as ids, else None."""
    ids = [whole_number(part.strip()) for part in raw.split(",")]
    return None if None in ids else [i for i in ids if i is not None]


def based_on(kind: str, current: Any, version: int | None) -> int:
    """The version a change to ``current`` is saved as: the one the client named must be the
    one the change is applied to. The writer's compare-and-set alone would let a request that
    named a newer version (which landed after this process read ``current``) through, and
    its change, applied to the older snapshot, would undo that version's (a lost update)."""
    if version is not None and version != current.version:
        raise ApiError(
            409,
            "version_conflict",
            f"{kind} {current.id} is at version {current.version}, not {version}: reload and retry",
            current_version=current.version,
        )
    return int(current.version)


def int_param(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = whole_number(raw)
    if value is None:
        raise ApiError(
            400, "bad_parameter", f"{name} must be a whole number of at most {MAX_DIGITS} digits"
        )
    return value
