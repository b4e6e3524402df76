"""Plain JSON CRUD for configuration objects, with versions: /advertisers, /line-items, /publishers,
/placements, /payment-rules, /offers, /affiliates.

POST creates (201); GET reads one or lists; PATCH changes the given fields and PUT replaces the
writable ones, both only from the version named by ``If-Match`` or a ``version`` field (428
without, 409 when stale); DELETE marks the object deleted (If-Match optional). Bodies are strict:
unknown fields and wrong types are a 422 naming the field. Xandr trackers live in imptracker.py.
"""

from __future__ import annotations

import typing
from typing import Any, Final, NamedTuple

import msgspec
from aiohttp import web

from tracker.config import model
from tracker.config.auth import Principal, can_read
from tracker.config.validate import Invalid, check
from tracker.config.writer import CONFIG_WRITER
from tracker.http.app_keys import SETTINGS
from tracker.http.config_common import (
    authenticate,
    based_on,
    int_param,
    require_admin,
    save,
    synced,
    visible,
    whole_number,
)
from tracker.http.errors import ApiError

MAX_LIMIT: Final = 1000
SERVER_FIELDS: Final = frozenset({"id", "tenant", "version", "last_modified"})


class Resource(NamedTuple):
    kind: str
    path: str
    model: type[Any]
    required: tuple[str, ...]  # on create (and PUT)
    filters: tuple[str, ...]  # query parameters a listing may filter on


RESOURCES: Final = (
    Resource(model.ADVERTISER, "/advertisers", model.Advertiser, ("name",), ("state",)),
    Resource(
        model.LINE_ITEM,
        "/line-items",
        model.LineItem,
        ("name", "advertiser_id"),
        ("advertiser_id", "state"),
    ),
    Resource(model.PUBLISHER, "/publishers", model.Publisher, ("name",), ("state",)),
    Resource(
        model.PLACEMENT,
        "/placements",
        model.Placement,
        ("name", "publisher_id"),
        ("publisher_id", "state"),
    ),
    Resource(
        model.PAYMENT_RULE,
        "/payment-rules",
        model.PaymentRule,
        ("name", "publisher_id", "pricing_type", "value"),
        ("publisher_id", "state"),
    ),
    Resource(
        model.OFFER, "/offers", model.Offer, ("name", "advertiser_id"), ("advertiser_id", "status")
    ),
    Resource(model.AFFILIATE, "/affiliates", model.Affiliate, ("name",), ("status",)),
)


def _input_type(resource: Resource) -> type[msgspec.Struct]:
    """The request body: every writable field optional (UNSET when absent), no unknown fields."""
    fields: list[tuple[str, Any, Any]] = [
        (f.name, typing.Union[f.type, msgspec.UnsetType], msgspec.UNSET)  # noqa: UP007  # runtime types
        for f in msgspec.structs.fields(resource.model)
        if f.name not in SERVER_FIELDS
    ]
    fields.append(("version", int | msgspec.UnsetType, msgspec.UNSET))
    return msgspec.defstruct(
        f"{resource.model.__name__}Request", fields, kw_only=True, forbid_unknown_fields=True
    )


_DECODERS: Final = {r.kind: msgspec.json.Decoder(_input_type(r)) for r in RESOURCES}


def present(obj: Any) -> dict[str, Any]:
    """The JSON shape of an object: every field but the tenant (always the caller's)."""
    body: dict[str, Any] = msgspec.to_builtins(obj)
    body.pop("tenant", None)
    return body


def _respond(obj: Any, status: int = 200) -> web.Response:
    response = web.json_response(present(obj), status=status)
    response.headers["ETag"] = f'"{obj.version}"'
    return response


async def decode_body(request: web.Request, decoder: msgspec.json.Decoder[Any]) -> dict[str, Any]:
    """The given fields of a strict body; 422 naming the path of the first bad field."""
    try:
        body = decoder.decode(await request.read())
    except msgspec.ValidationError as exc:
        raise ApiError(422, "invalid_body", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", str(exc)) from None
    return {
        f: getattr(body, f) for f in body.__struct_fields__ if getattr(body, f) is not msgspec.UNSET
    }


def build(resource_model: type[Any], fields: dict[str, Any]) -> Any:
    try:
        return msgspec.convert(fields, type=resource_model, from_attributes=False)
    except msgspec.ValidationError as exc:
        raise ApiError(422, "invalid_body", str(exc)) from None


def checked(request: web.Request, state: Any, kind: str, obj: Any, previous: Any | None) -> Any:
    try:
        check(state, kind, obj, previous)
    except Invalid as exc:
        raise ApiError(422, exc.code, exc.message, field=exc.field) from None
    lookup_days = request.app[SETTINGS].lookup_window_days
    window = obj.attribution_window_days if kind == model.OFFER else 0
    # attribution needs the impression lookup to still hold the impression; an offer made before
    # TRACKER_LOOKUP_WINDOW_DAYS was lowered can still change in other ways (its window is
    # reported at start-up, see live_config_ctx)
    if window > lookup_days and (previous is None or window != previous.attribution_window_days):
        raise ApiError(
            422,
            "invalid_field",
            f"attribution_window_days may be at most {lookup_days}: the impression lookup keeps "
            f"impressions that long (TRACKER_LOOKUP_WINDOW_DAYS)",
            field="attribution_window_days",
        )
    return obj


def expected_version(request: web.Request, given: dict[str, Any], *, required: bool) -> int | None:
    """The version a change is based on: ``If-Match: "3"`` (or ``W/"3"``, ``3``) or ``version``."""
    header = request.headers.get("If-Match")
    body_version = given.pop("version", None)
    if header is not None:
        version = whole_number(header.strip().removeprefix("W/").strip('"'))
        if version is None:
            raise ApiError(
                400, "bad_if_match", f"If-Match must name a version, got {header[:40]!r}"
            )
        return version
    if body_version is not None:
        return int(body_version)
    if required:
        raise ApiError(428, "version_required", "send If-Match or a version field")
    return None


def _missing(resource: Resource, given: dict[str, Any]) -> None:
    missing = [f for f in resource.required if f not in given]
    if missing:
        raise ApiError(422, "missing_field", f"required: {', '.join(missing)}", fields=missing)


def routes(resource: Resource) -> list[web.RouteDef]:
    decoder = _DECODERS[resource.kind]
    kind, path = resource.kind, resource.path

    async def create(request: web.Request) -> web.Response:
        principal = await authenticate(request)
        require_admin(principal)
        given = await decode_body(request, decoder)
        given.pop("version", None)
        _missing(resource, given)
        state = await synced(request)
        build(resource.model, {**given, "id": 0, "tenant": principal.tenant, "version": 0})
        new_id = await request.app[CONFIG_WRITER].next_id(kind)
        obj = build(
            resource.model, {**given, "id": new_id, "tenant": principal.tenant, "version": 0}
        )
        checked(request, state, kind, obj, None)
        return _respond(await save(request, principal, kind, obj), 201)

    async def update(request: web.Request) -> web.Response:
        principal = await authenticate(request)
        require_admin(principal)
        given = await decode_body(request, decoder)
        version = expected_version(request, given, required=True)
        state = await synced(request)
        current = visible(state, principal, kind, _path_id(request))
        if request.method == "PUT":
            _missing(resource, given)
            fields = given
        else:
            fields = {**msgspec.to_builtins(current), **given}
        fields.update(
            id=current.id, tenant=current.tenant, version=based_on(kind, current, version)
        )
        obj = checked(request, state, kind, build(resource.model, fields), current)
        return _respond(await save(request, principal, kind, obj))

    async def delete(request: web.Request) -> web.Response:
        principal = await authenticate(request)
        require_admin(principal)
        state = await synced(request)
        current = visible(state, principal, kind, _path_id(request))
        version = based_on(kind, current, expected_version(request, {}, required=False))
        status_field = "status" if hasattr(current, "status") else "state"
        obj = msgspec.structs.replace(current, version=version, **{status_field: model.DELETED})
        return _respond(await save(request, principal, kind, obj))

    async def read(request: web.Request) -> web.Response:
        principal = await authenticate(request)
        state = await synced(request)
        return _respond(visible(state, principal, kind, _path_id(request)))

    async def listing(request: web.Request) -> web.Response:
        principal = await authenticate(request)
        state = await synced(request)
        offset = int_param(request, "offset", 0) or 0
        limit = min(int_param(request, "limit", 100) or 100, MAX_LIMIT)
        items = _matching(resource, principal, state.of_tenant(principal.tenant, kind), request)
        page = items[offset : offset + limit]
        body = {
            "count": len(items),
            "offset": offset,
            "limit": limit,
            "items": [present(o) for o in page],
        }
        return web.json_response(body)

    item = path + "/{id}"
    return [
        web.post(path, create),
        web.get(path, listing, allow_head=False),
        web.get(item, read, allow_head=False),
        web.patch(item, update),
        web.put(item, update),
        web.delete(item, delete),
    ]


def _matching(
    resource: Resource, principal: Principal, objects: dict[int, Any], request: web.Request
) -> list[Any]:
    wanted: dict[str, str] = {f: request.query[f] for f in resource.filters if f in request.query}
    include_deleted = request.query.get("include_deleted") in ("1", "true")
    out = []
    for object_id in sorted(objects):
        obj = objects[object_id]
        status = getattr(obj, "state", None) or getattr(obj, "status", None)
        if status == model.DELETED and not include_deleted:
            continue
        if any(str(getattr(obj, f)) != v for f, v in wanted.items()):
            continue
        if can_read(principal, resource.kind, obj):
            out.append(obj)
    return out


def _path_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    object_id = whole_number(raw)
    if object_id is None:
        raise ApiError(404, "not_found", f"no object {raw[:40]!r}")
    return object_id


def config_routes() -> list[web.RouteDef]:
    return [route for resource in RESOURCES for route in routes(resource)]
