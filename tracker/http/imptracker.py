"""Xandr's Impression Tracker Service at ``/imptracker`` (seed 002): same query parameters, body
and ``{"response": {...}}`` envelope, so a client written against Xandr works unchanged.

Read-only fields a client echoes back (``member_id``, ``last_modified``, linked names) are
accepted and ignored; unknown fields are a SYNTAX error. PUT changes only the given fields, on top
of the version it read (or the one ``If-Match`` names), so concurrent edits conflict, never merge
silently.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

import msgspec
from aiohttp import web

from tracker.config import model
from tracker.config.auth import Principal, can_read
from tracker.config.validate import Invalid, live_link
from tracker.config.writer import CONFIG_WRITER
from tracker.eventstore import keys
from tracker.http.config_api import expected_version
from tracker.http.config_common import (
    authenticate,
    based_on,
    id_list,
    require_admin,
    save,
    synced,
    visible,
    whole_number,
)
from tracker.http.errors import TOO_DEEP, ApiError
from tracker.projections.config import ConfigState

MAX_ELEMENTS: Final = 100
MAX_KEPT_DEPTH: Final = 8  # free-form JSON stored as given (clicktracker): nesting and size
MAX_KEPT_BYTES: Final = 4096
UNSET: Final = msgspec.UNSET

# ApiError status -> Xandr error_id (their API semantics page); 422 answers 400 as Xandr does.
ERROR_IDS: Final = {401: "NOAUTH", 403: "UNAUTH", 404: "NOTFOUND", 409: "INTEGRITY", 503: "SYSTEM"}


MAX_REDIRECT_HOSTS = 50
_HOST = re.compile(
    r"\.?(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)


class Ref(msgspec.Struct, forbid_unknown_fields=True):
    id: int
    name: Any = None  # read-only: resolved from the linked object


class ImptrackerBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: int | msgspec.UnsetType = UNSET  # read-only in the body (the query names it)
    member_id: Any = UNSET  # read-only
    advertiser_id: int | msgspec.UnsetType = UNSET  # read-only (the query names it)
    name: str | msgspec.UnsetType = UNSET
    code: str | msgspec.UnsetType | None = UNSET
    state: Literal["active", "inactive"] | msgspec.UnsetType = UNSET
    publisher: Ref | msgspec.UnsetType = UNSET
    tag: Ref | list[Ref] | msgspec.UnsetType | None = UNSET  # documented as array, shown as object
    payment_rule: Ref | msgspec.UnsetType | None = UNSET
    line_item: Ref | msgspec.UnsetType = UNSET
    clicktracker: Any = UNSET  # accepted, unused
    last_modified: Any = UNSET  # read-only
    redirect_hosts: list[str] | msgspec.UnsetType = UNSET  # our extension: the redir allow-list


class Envelope(msgspec.Struct, forbid_unknown_fields=True):
    imptracker: ImptrackerBody


_envelope: Final = msgspec.json.Decoder(Envelope)
XandrHandler = Callable[[web.Request], Awaitable[dict[str, Any]]]


def xandr(handler: XandrHandler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Wrap a handler's dict in ``{"response": ...}``; render any error as Xandr does."""

    async def wrapped(request: web.Request) -> web.Response:
        try:
            body = await handler(request)
        except ApiError as exc:
            return xandr_error(exc)
        return web.json_response({"response": {"status": "OK", **body}})

    return wrapped


# The paths whose handlers' errors, and aiohttp's 404 / 405 there, are in Xandr's envelope
XANDR_PATHS: Final = ("/imptracker",)


def is_xandr_path(path: str) -> bool:
    return path in XANDR_PATHS or path.startswith(tuple(f"{p}/" for p in XANDR_PATHS))


def xandr_error(exc: ApiError) -> web.Response:
    """``{"response": {"error_id", "error"}}`` with the matching 4xx (5xx) status."""
    error_id = ERROR_IDS.get(exc.status, "SYNTAX")
    if exc.code in ("invalid_reference", "name_taken"):
        error_id = "INTEGRITY"
    status = 400 if exc.status == 422 else exc.status
    return web.json_response(
        {"response": {"error_id": error_id, "error": exc.message}},
        status=status,
        headers=exc.headers,
    )


def member_id(tenant: str) -> int | str:
    return int(tenant) if (tenant.isascii() and tenant.isdigit()) else tenant


def _ref(state: ConfigState, kind: str, object_id: int | None) -> dict[str, Any] | None:
    if object_id is None:
        return None
    obj = state.get(kind, object_id)
    return {"id": object_id, "name": obj.name if obj is not None else None}


def render(state: ConfigState, t: model.Tracker) -> dict[str, Any]:
    """An impression tracker exactly as Xandr shows one (plus our ``redirect_hosts`` when set)."""
    shown: dict[str, Any] = {
        "id": t.id,
        "member_id": member_id(t.tenant),
        "advertiser_id": t.advertiser_id,
        "name": t.name,
        "code": t.code,
        "state": t.state,
        "last_modified": t.last_modified,
        "publisher": _ref(state, model.PUBLISHER, t.publisher_id),
        "tag": _ref(state, model.PLACEMENT, t.placement_id),
        "payment_rule": _ref(state, model.PAYMENT_RULE, t.payment_rule_id),
        "line_item": _ref(state, model.LINE_ITEM, t.line_item_id),
    }
    if t.redirect_hosts:
        shown["redirect_hosts"] = list(t.redirect_hosts)
    return shown


def _query_int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    value = whole_number(raw)
    if value is None:
        raise ApiError(400, "bad_parameter", f"{name} must be a whole number, got {raw[:40]!r}")
    return value


async def _decode(request: web.Request) -> ImptrackerBody:
    try:
        return _envelope.decode(await request.read()).imptracker
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_body", f"invalid imptracker: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", f"invalid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", TOO_DEEP) from None


def _tag_id(tag: Ref | list[Ref] | None) -> int | None:
    if isinstance(tag, list):
        if len(tag) > 1:
            raise ApiError(400, "invalid_body", "tag: at most one placement")
        return tag[0].id if tag else None
    return tag.id if tag is not None else None


def _kept_json(name: str, value: Any) -> Any:
    """Free-form JSON we store in the tracker's configuration event: at most MAX_KEPT_DEPTH levels
    and MAX_KEPT_BYTES. Every reader decodes that event again (recursively, and maybe deeper in
    its stack than this handler): a value nested near the interpreter's limit could be written
    and then never read back, stopping every process's configuration."""
    level, depth = [value], 0
    while level:
        depth += 1
        if depth > MAX_KEPT_DEPTH:
            raise ApiError(400, "invalid_body", f"{name} nests deeper than {MAX_KEPT_DEPTH} levels")
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
    if len(msgspec.json.encode(value)) > MAX_KEPT_BYTES:
        raise ApiError(400, "invalid_body", f"{name} is longer than {MAX_KEPT_BYTES} bytes of JSON")
    return value


def _changes(body: ImptrackerBody) -> dict[str, Any]:
    """The writable fields the body gives, under the model's names."""
    changes: dict[str, Any] = {}
    if body.name is not UNSET:
        if not body.name.strip():
            raise ApiError(400, "invalid_body", "name must not be empty")
        changes["name"] = body.name
    if body.code is not UNSET:
        changes["code"] = body.code or None
    if body.state is not UNSET:
        changes["state"] = body.state
    if body.publisher is not UNSET:
        changes["publisher_id"] = body.publisher.id
    if body.line_item is not UNSET:
        changes["line_item_id"] = body.line_item.id
    if body.tag is not UNSET:
        changes["placement_id"] = _tag_id(body.tag)
    if body.payment_rule is not UNSET:
        changes["payment_rule_id"] = body.payment_rule.id if body.payment_rule else None
    if body.clicktracker is not UNSET:
        changes["clicktracker"] = _kept_json("clicktracker", body.clicktracker)
    if body.redirect_hosts is not UNSET:
        bad = [h for h in body.redirect_hosts if not _HOST.fullmatch(h)]
        if bad or len(body.redirect_hosts) > MAX_REDIRECT_HOSTS:
            raise ApiError(
                400,
                "invalid_body",
                f"redirect_hosts: at most {MAX_REDIRECT_HOSTS} host names "
                f"('example.com' or '.example.com'); bad: {bad[:3]}",
            )
        changes["redirect_hosts"] = tuple(h.lower() for h in body.redirect_hosts)
    return changes


def check_links(
    state: ConfigState, t: model.Tracker, previous: model.Tracker | None = None
) -> None:
    """Every link made now (all on create, the changed ones on update: a tracker whose line
    item was deleted since can still be renamed) names a live object of the tenant, of this
    advertiser / publisher: else 400."""

    def new(*fields: str) -> bool:
        return previous is None or any(getattr(t, f) != getattr(previous, f) for f in fields)

    try:
        if new("line_item_id"):
            line_item = live_link(state, t.tenant, model.LINE_ITEM, t.line_item_id, "line_item")
            if line_item.advertiser_id != t.advertiser_id:
                raise Invalid(
                    "invalid_reference",
                    "line_item",
                    f"line item {t.line_item_id} belongs to another advertiser",
                )
        if new("publisher_id"):
            live_link(state, t.tenant, model.PUBLISHER, t.publisher_id, "publisher")
        for kind, object_id, field, attribute in (
            (model.PLACEMENT, t.placement_id, "tag", "placement_id"),
            (model.PAYMENT_RULE, t.payment_rule_id, "payment_rule", "payment_rule_id"),
        ):
            if object_id is not None and new(attribute, "publisher_id"):
                linked = live_link(state, t.tenant, kind, object_id, field)
                if linked.publisher_id != t.publisher_id:
                    raise Invalid(
                        "invalid_reference",
                        field,
                        f"{field} {object_id} belongs to another publisher",
                    )
    except Invalid as exc:
        raise ApiError(400, "invalid_reference", exc.message) from None


def _code_claim(t: model.Tracker) -> tuple[str, ...]:
    return (
        # global: /imptr?code= names no tenant or advertiser, so a code must find one tracker
        (keys.config_claim("*", f"tracker_code:{t.code}"),) if t.code else ()
    )


@xandr
async def post_imptracker(request: web.Request) -> dict[str, Any]:
    principal = await authenticate(request)
    require_admin(principal)
    advertiser_id = _query_int(request, "advertiser_id")
    if advertiser_id is None:
        raise ApiError(400, "missing_parameter", "advertiser_id is required in the query string")
    body = await _decode(request)
    changes = _changes(body)
    missing = [
        f
        for f, k in (("name", "name"), ("publisher", "publisher_id"), ("line_item", "line_item_id"))
        if k not in changes
    ]
    if missing:
        raise ApiError(400, "missing_field", f"required on POST: {', '.join(missing)}")
    state = await synced(request)
    advertiser = state.get(model.ADVERTISER, advertiser_id)
    if (
        advertiser is None
        or advertiser.tenant != principal.tenant
        or advertiser.state == model.DELETED
    ):
        raise ApiError(404, "not_found", f"no advertiser {advertiser_id}")
    draft = model.Tracker(
        id=0, tenant=principal.tenant, advertiser_id=advertiser_id, version=0, **changes
    )
    check_links(state, draft)
    tracker = msgspec.structs.replace(
        draft, id=await request.app[CONFIG_WRITER].next_id(model.TRACKER)
    )
    stored = await save(request, principal, model.TRACKER, tracker, claims=_code_claim(tracker))
    return _one(state, stored, id_value=stored.id)


def _one(state: ConfigState, t: model.Tracker, id_value: int | str | None = None) -> dict[str, Any]:
    head: dict[str, Any] = {"count": 1}
    if id_value is not None:
        head["id"] = id_value
    return {
        **head,
        "start_element": 0,
        "num_elements": MAX_ELEMENTS,
        "imptracker": render(state, t),
    }


@xandr
async def put_imptracker(request: web.Request) -> dict[str, Any]:
    principal = await authenticate(request)
    require_admin(principal)
    tracker_id = _query_int(request, "id")
    if tracker_id is None:
        raise ApiError(400, "missing_parameter", "id is required in the query string")
    body = await _decode(request)
    changes = _changes(body)
    state = await synced(request)
    current: model.Tracker = visible(state, principal, model.TRACKER, tracker_id)
    version = based_on(model.TRACKER, current, expected_version(request, {}, required=False))
    tracker = msgspec.structs.replace(current, version=version, **changes)
    check_links(state, tracker, current)
    claims, releases = _code_claim(tracker), _code_claim(current)
    stored = await save(
        request,
        principal,
        model.TRACKER,
        tracker,
        claims=claims,
        releases=tuple(r for r in releases if r not in claims),
    )
    return _one(state, stored, id_value=str(stored.id))  # Xandr answers a PUT's id as a string


@xandr
async def get_imptracker(request: web.Request) -> dict[str, Any]:
    principal = await authenticate(request)
    state = await synced(request)
    raw_ids = request.query.get("id")
    if raw_ids is not None:
        ids = id_list(raw_ids)
        if ids is None:
            raise ApiError(
                400,
                "bad_parameter",
                f"id must be a number or a comma-separated list, got {raw_ids[:80]!r}",
            )
        if len(ids) == 1:
            return _one(state, visible(state, principal, model.TRACKER, ids[0]))
        found = [t for t in (_visible_or_none(state, principal, i) for i in ids) if t is not None]
        if not found:
            raise ApiError(404, "not_found", f"no imptracker among {raw_ids}")
        return _page(state, found, 0, MAX_ELEMENTS)
    advertiser_id = _query_int(request, "advertiser_id")
    start = _query_int(request, "start_element") or 0
    # absent: a full page; 0: the count alone (no trackers); over the cap: the cap, as Xandr
    size = _query_int(request, "num_elements")
    size = MAX_ELEMENTS if size is None else min(size, MAX_ELEMENTS)
    trackers = [
        t
        for _, t in sorted(state.of_tenant(principal.tenant, model.TRACKER).items())
        if t.state != model.DELETED
        and (advertiser_id is None or t.advertiser_id == advertiser_id)
        and can_read(principal, model.TRACKER, t)
    ]
    return _page(state, trackers, start, size)


def _visible_or_none(
    state: ConfigState, principal: Principal, tracker_id: int
) -> model.Tracker | None:
    try:
        tracker: model.Tracker = visible(state, principal, model.TRACKER, tracker_id)
    except ApiError:
        return None
    return tracker


def _page(
    state: ConfigState, trackers: list[model.Tracker], start: int, size: int
) -> dict[str, Any]:
    return {
        "count": len(trackers),
        "start_element": start,
        "num_elements": size,
        "imptrackers": [render(state, t) for t in trackers[start : start + size]],
    }


@xandr
async def delete_imptracker(request: web.Request) -> dict[str, Any]:
    principal = await authenticate(request)
    require_admin(principal)
    tracker_id = _query_int(request, "id")
    if tracker_id is None:
        raise ApiError(400, "missing_parameter", "id is required in the query string")
    state = await synced(request)
    current: model.Tracker = visible(state, principal, model.TRACKER, tracker_id)
    version = based_on(model.TRACKER, current, expected_version(request, {}, required=False))
    deleted = msgspec.structs.replace(current, version=version, state=model.DELETED)
    await save(request, principal, model.TRACKER, deleted, releases=_code_claim(current))
    return {"count": 1, "id": tracker_id, "start_element": 0, "num_elements": MAX_ELEMENTS}


def imptracker_routes() -> list[web.RouteDef]:
    return [
        web.post("/imptracker", post_imptracker),
        web.put("/imptracker", put_imptracker),
        web.get("/imptracker", get_imptracker, allow_head=False),
        web.delete("/imptracker", delete_imptracker),
    ]
