"""Validation of `POST /publisher.v1/impression/record` bodies: all-or-nothing, every error named.

Pure: no I/O, no clock (``now`` is an argument). The handler checks the headers with
``check_headers``, reads at most ``MAX_BODY_BYTES`` and calls ``validate``, which returns either
the validated items or a ``Rejected`` carrying the HTTP status, a stable code and, for 422, the
JSON path of every problem (``$.impressions[3].member_id: required``).

Decisions: a timestamp must carry a UTC offset (``Z`` or ``+02:00``); a naive one is an error,
never guessed to be UTC, since a wrong guess silently shifts attribution windows by hours. Over
5,000 items is 422 ``too_many_impressions`` (the request is well-formed; 413 is for the byte
limit). An empty ``impressions`` list is valid and records nothing.

A member name repeated in an object (``{"impressions": [...], "impressions": []}``) is a 422
naming it: JSON leaves its meaning open, and keeping the last would drop data silently.

Timestamps in RFC 3339 (what clients send; lower-case ``t``/``z`` too, and more than six
fractional digits are rounded to the microsecond) are parsed by msgspec while decoding; a body
it refuses is decoded again with timestamps as strings, so other ISO 8601 forms (``+0200``,
``20240115T103000Z``) and leap seconds (``23:59:60Z``, read as the next second's start) are
valid as well, and only then is every problem named.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import islice
from operator import attrgetter
from typing import Annotated, Any, Final

import msgspec

from tracker.http.errors import TOO_DEEP

MAX_IMPRESSIONS: Final = 5_000
# 5,000 items with every field at its longest take ~4 MB when the ids are ASCII; non-Latin ids
# at their longest (3 bytes a character, 6 when \u-escaped) can exceed it: fewer items then.
MAX_BODY_BYTES: Final = 8 * 1024 * 1024
MAX_ID_CHARS: Final = 128
MAX_KEY_CHARS: Final = 256
MAX_TIMESTAMP_CHARS: Final = 64
MAX_ERRORS: Final = 1_000  # problems listed in one 422
MAX_FUTURE: Final = timedelta(minutes=5)

_ID_FIELDS: Final = ("member_id", "creative_id", "ad_unit_id")
_FIELDS: Final = frozenset((*_ID_FIELDS, "timestamp", "idempotency_key"))

# Failure -> (HTTP status, stable code)
INVALID_JSON: Final = (400, "invalid_json")
PAYLOAD_TOO_LARGE: Final = (413, "payload_too_large")
UNSUPPORTED_MEDIA_TYPE: Final = (415, "unsupported_media_type")
TOO_MANY_IMPRESSIONS: Final = (422, "too_many_impressions")
VALIDATION_FAILED: Final = (422, "validation_failed")

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]
_Key = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KEY_CHARS)]


class ValidImpression(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """One valid item. The fast path decodes straight into it: RFC 3339 timestamps (what
    clients send) are parsed by msgspec, in C."""

    member_id: _Id
    creative_id: _Id
    ad_unit_id: _Id
    # aware UTC once validated; None: the server's time of acceptance
    occurred_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = msgspec.field(
        default=None, name="timestamp"
    )
    idempotency_key: _Key | None = None


class _ValidRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    impressions: Annotated[list[ValidImpression], msgspec.Meta(max_length=MAX_IMPRESSIONS)]


class ImpressionRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """One item with its timestamp as sent: for bodies the fast path refused (other ISO 8601
    forms, e.g. ``+0200`` offsets, are valid too)."""

    member_id: _Id
    creative_id: _Id
    ad_unit_id: _Id
    timestamp: str | None = None  # ISO 8601 with an offset; parsed by _timestamp()
    idempotency_key: _Key | None = None


class RecordRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    impressions: Annotated[list[ImpressionRequest], msgspec.Meta(max_length=MAX_IMPRESSIONS)]


class FieldError(msgspec.Struct, frozen=True):
    path: str  # JSON path: $.impressions[3].member_id
    message: str


class Rejected(msgspec.Struct, frozen=True):
    status: int
    code: str
    message: str
    errors: list[FieldError] = []  # every problem, for validation_failed


_fast_decoder: Final = msgspec.json.Decoder(_ValidRequest)
_iso_decoder: Final = msgspec.json.Decoder(RecordRequest)


def _reject(
    failure: tuple[int, str], message: str, errors: list[FieldError] | None = None
) -> Rejected:
    status, code = failure
    return Rejected(status, code, message, errors or [])


# The labels that name UTF-8 (the WHATWG Encoding Standard's list): "utf8" is common
_UTF8: Final = frozenset(
    ("utf-8", "utf8", "unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "x-unicode20utf8")
)


def check_headers(content_type: str | None, content_length: int | None) -> Rejected | None:
    """415 unless the body is JSON in UTF-8; 413 when the declared length is over the limit."""
    media_type, _, params = (content_type or "").partition(";")
    if media_type.strip().lower() != "application/json":
        return _reject(UNSUPPORTED_MEDIA_TYPE, "send Content-Type: application/json")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in _UTF8:
            return _reject(UNSUPPORTED_MEDIA_TYPE, "the body must be UTF-8")
    if content_length is not None and content_length > MAX_BODY_BYTES:
        return _too_large()
    return None


def _too_large() -> Rejected:
    return _reject(PAYLOAD_TOO_LARGE, f"the body is limited to {MAX_BODY_BYTES} bytes")


NOT_A_TIME: Final = (
    "not a timestamp this API reads: an ISO 8601 calendar or week date and time with its offset, "
    "e.g. 2024-01-15T10:30:00Z"
)


def _timestamp(value: str, now: datetime) -> datetime | str:
    """The aware UTC time, or the error message."""
    if len(value) > MAX_TIMESTAMP_CHARS:
        return NOT_A_TIME
    # RFC 3339 allows a lower-case "t" / "z"; a leap second (23:59:60 UTC, in any offset) is
    # read, as POSIX time has it, as the start of the next second
    value = value.upper()
    if not _ISO_FORM.fullmatch(value):  # before CPython's reader, which misreads some forms
        return NOT_A_TIME
    value, leap = _LEAP_SECOND.subn(r"\g<1>59", value, count=1)
    try:
        parsed = datetime.fromisoformat(value)
        if leap:
            offset = parsed.utcoffset()
            at = (parsed - offset).time() if offset is not None else parsed.time()
            if (at.hour, at.minute, at.second) != (23, 59, 59):  # :60 is no other second
                return NOT_A_TIME
            parsed += timedelta(seconds=1)
    except (ValueError, OverflowError):
        return NOT_A_TIME
    if parsed.tzinfo is UTC:  # "...Z" or "+00:00": the usual case, already UTC
        utc = parsed
    elif parsed.tzinfo is None or parsed.utcoffset() is None:
        return "needs a UTC offset, e.g. 2024-01-15T10:30:00Z"
    else:
        try:
            utc = parsed.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is before year 1 in UTC
            return "out of range"
    if utc - now > MAX_FUTURE:
        return "more than 5 minutes in the future"
    return utc


# The ISO 8601 forms read (after upper-casing): a calendar or week date, extended or basic; "T"
# or a blank; hh[:mm[:ss[.fraction]]] (a fraction of seconds only); Z or ±hh[[:]mm], minutes
# below 60. CPython's fromisoformat reads more, and some of it wrongly: any character between
# date and time, any fraction as seconds' ("T10.5" would be 10:00:00.5, "+05.5" +05:00:00.5),
# an offset with seconds, minutes over 59 (+05:99), a NUL ending the string.
_ISO_FORM: Final = re.compile(
    r"(?:[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{8}|[0-9]{4}-W[0-9]{2}-[0-9]|[0-9]{4}W[0-9]{3})"
    r"[T ][0-9]{2}(?::?[0-9]{2}(?::?[0-9]{2}(?:[.,][0-9]+)?)?)?"
    r"(?:Z|[+\-][0-9]{2}(?::?[0-5][0-9])?)?"
)


_LEAP_SECOND: Final = re.compile(r"([T ]\d\d:?\d\d:?)60(?=\D|$)")
# A member name written with an escape ("member\u005fid" is member_id): the count below misses it
_ESCAPED_NAME: Final = re.compile(rb'"[A-Za-z_]*\\u[0-9A-Fa-f]{4}[^"]*"\s*:')
# An optional name given as null: present in the body, not in the item (a null, then a value,
# for one name is not seen as a repeat: nothing is lost when the null gives way)
_NULL_VALUES: Final = {
    name: re.compile(rb'"%b"\s*:\s*null' % name.encode())
    for name in ("timestamp", "idempotency_key")
}
_REPEATS: Final = object()  # the key under which _repeated's hook lists an object's repeats


def _may_repeat(body: bytes, present: Mapping[str, int]) -> bool:
    """Whether a member name may be repeated in an object (JSON leaves the meaning of
    ``{"a": 1, "a": 2}`` open; a decoder keeps the last one, which would drop data silently).
    A cheap scan: ``impressions`` twice, a name seen more often than the decoded items carry it
    (``present``: name -> items with it), or a name written with an escape. ``_repeated`` then
    decides exactly (a value may spell a name too)."""
    if body.count(b'"impressions"') > 1:
        return True
    nulls = b"null" in body
    for name, n in present.items():
        count = body.count(b'"%b"' % name.encode())
        if count > n and nulls and name in _NULL_VALUES:  # "timestamp": null is an item without
            count -= len(_NULL_VALUES[name].findall(body))
        if count > n:
            return True
    return b"\\u" in body and _ESCAPED_NAME.search(body) is not None


def _present(items: Sequence[ValidImpression | ImpressionRequest]) -> dict[str, int]:
    """How many items carry each member name (the optional ones only when given). In C: map
    with attrgetter, list.count; a Python loop would double the cost of validating a batch."""
    n = len(items)
    stamp = "occurred_at" if items and isinstance(items[0], ValidImpression) else "timestamp"
    return {
        **dict.fromkeys(_ID_FIELDS, n),
        "timestamp": n - list(map(attrgetter(stamp), items)).count(None),
        "idempotency_key": n - list(map(attrgetter("idempotency_key"), items)).count(None),
    }


def _repeated(body: bytes) -> list[FieldError]:
    """The JSON path of every repeated member name of the request and of its items."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[Any, Any]:
        obj: dict[Any, Any] = {}
        repeats: dict[str, None] = {}  # each repeated name once
        for name, value in pairs:
            if name in obj:
                repeats[name] = None
            obj[name] = value
        if repeats:
            obj[_REPEATS] = list(repeats)
        return obj

    try:
        doc = json.loads(body, object_pairs_hook=hook)
    except (ValueError, RecursionError):  # not JSON: the decoders say so
        return []
    if not isinstance(doc, dict):
        return []
    errors = [FieldError(f"$.{name}", "repeated") for name in doc.get(_REPEATS, ())]
    items = doc.get("impressions")
    for i, item in enumerate(items if isinstance(items, list) else ()):
        if isinstance(item, dict):
            path = f"$.impressions[{i}]"
            errors += [FieldError(f"{path}.{name}", "repeated") for name in item.get(_REPEATS, ())]
    return errors


def _refuse_repeats(
    body: bytes, items: Sequence[ValidImpression | ImpressionRequest]
) -> Rejected | None:
    errors = _repeated(body) if _may_repeat(body, _present(items)) else []
    return _invalid(errors) if errors else None


def _invalid(errors: list[FieldError]) -> Rejected:
    """422 naming every problem once, the first MAX_ERRORS of them: a small body can hold
    hundreds of thousands of bad names, and an answer a thousand times its size would cost the
    web process the memory and the event loop the time."""
    unique = list(dict.fromkeys(errors))
    if len(unique) > MAX_ERRORS:
        found = f"more than {MAX_ERRORS} invalid fields (the first {MAX_ERRORS} are listed)"
    else:
        found = f"{len(unique)} invalid field(s)"
    return _reject(VALIDATION_FAILED, f"{found}; nothing was recorded", unique[:MAX_ERRORS])


def _present_in(items: list[Any]) -> dict[str, int]:
    """``_present`` for items decoded as plain JSON (any shape)."""
    counts = dict.fromkeys(_FIELDS, 0)
    for item in items:
        if isinstance(item, dict):
            for name in _FIELDS.intersection(item):
                counts[name] += 1
    return counts


def _string_error(value: object, limit: int) -> str | None:
    if not isinstance(value, str):
        return "expected a string"
    if not value:
        return "must not be empty"
    if len(value) > limit:
        return f"at most {limit} characters"
    return None


def _check_item(item: object, path: str, now: datetime, errors: list[FieldError]) -> None:
    if not isinstance(item, dict):
        errors.append(FieldError(path, "expected an object"))
        return
    for name in item:
        if name not in _FIELDS and len(errors) <= MAX_ERRORS:  # _invalid lists no more
            errors.append(FieldError(f"{path}.{name}", "unknown field"))
    for name in _ID_FIELDS:
        if name not in item:
            errors.append(FieldError(f"{path}.{name}", "required"))
        elif problem := _string_error(item[name], MAX_ID_CHARS):
            errors.append(FieldError(f"{path}.{name}", problem))
    key = item.get("idempotency_key")
    if key is not None and (problem := _string_error(key, MAX_KEY_CHARS)):
        errors.append(FieldError(f"{path}.idempotency_key", problem))
    stamp = item.get("timestamp")
    if stamp is not None:
        result = _timestamp(stamp, now) if isinstance(stamp, str) else "expected a string"
        if isinstance(result, str):
            errors.append(FieldError(f"{path}.timestamp", result))


def _lenient(body: bytes, now: datetime) -> Rejected:
    """Every problem of a body the fast path refused (decoding it again as plain JSON)."""
    try:
        doc: Any = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return _reject(INVALID_JSON, f"the body is not valid JSON: {exc}")
    except RecursionError:  # msgspec decodes nested values recursively
        return _reject(INVALID_JSON, TOO_DEEP)
    if not isinstance(doc, dict):
        return _reject(VALIDATION_FAILED, "invalid body", [FieldError("$", "expected an object")])
    unknown = (name for name in doc if name != "impressions")
    errors = [FieldError(f"$.{name}", "unknown field") for name in islice(unknown, MAX_ERRORS + 1)]
    items = doc.get("impressions")
    if "impressions" not in doc:
        errors.append(FieldError("$.impressions", "required"))
    elif not isinstance(items, list):
        errors.append(FieldError("$.impressions", "expected an array"))
    elif len(items) > MAX_IMPRESSIONS:
        return _reject(
            TOO_MANY_IMPRESSIONS,
            f"{len(items)} impressions; at most {MAX_IMPRESSIONS} per request",
        )
    else:
        for i, item in enumerate(items):
            _check_item(item, f"$.impressions[{i}]", now, errors)
    if _may_repeat(body, _present_in(items if isinstance(items, list) else [])):
        errors += _repeated(body)  # the first of a repeated name may be what was refused
    if not errors:  # the fast decoder refused something the checks above let through
        errors.append(FieldError("$", "invalid body"))
    return _invalid(errors)


def validate(body: bytes, now: datetime) -> list[ValidImpression] | Rejected:
    """All items validated, or why the whole request is refused; ``now`` is aware UTC."""
    if len(body) > MAX_BODY_BYTES:
        return _too_large()
    try:
        items = _fast_decoder.decode(body).impressions
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return _iso(body, now)
    for i, item in enumerate(items):
        stamp = item.occurred_at
        if stamp is None:
            continue
        if stamp.tzinfo is not UTC:
            try:
                stamp = stamp.astimezone(UTC)
            except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is before year 1 in UTC
                return _lenient(body, now)
            items[i] = msgspec.structs.replace(item, occurred_at=stamp)
        if stamp - now > MAX_FUTURE:
            return _lenient(body, now)
    return _refuse_repeats(body, items) or items


def _iso(body: bytes, now: datetime) -> list[ValidImpression] | Rejected:
    """``validate`` for a body the fast path refused: valid with other ISO 8601 forms, or
    every problem named."""
    try:
        request = _iso_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return _lenient(body, now)
    if _refuse_repeats(body, request.impressions):  # named with every other problem
        return _lenient(body, now)
    valid: list[ValidImpression] = []
    for item in request.impressions:
        occurred_at = None
        if item.timestamp is not None:
            parsed = _timestamp(item.timestamp, now)
            if isinstance(parsed, str):
                return _lenient(body, now)
            occurred_at = parsed
        valid.append(
            ValidImpression(
                item.member_id, item.creative_id, item.ad_unit_id, occurred_at, item.idempotency_key
            )
        )
    return valid
