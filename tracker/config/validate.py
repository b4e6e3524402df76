"""Checks a configuration object must pass before it is written: field rules and links.

Pure: no I/O. Raises ``Invalid`` naming the field; the HTTP layer turns it into a 422 (or Xandr's
error envelope). Links must name a live object of the same tenant (and, where it matters, of the
same advertiser / publisher): an object of another tenant looks exactly like a missing one.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, Final
from urllib.parse import urlsplit

from tracker.config import model
from tracker.projections.config import ConfigState

MAX_WINDOW_DAYS: Final = 365
MAX_WEIGHT: Final = 1000
_PLAIN_DECIMAL: Final = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,10})?")


class Invalid(Exception):
    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.code = code  # invalid_field | invalid_reference | immutable_field
        self.field = field
        self.message = f"{field}: {message}"


def check_url(value: str, field: str) -> None:
    """An absolute http(s) URL (macros such as ``{aimp_id}`` may appear in it)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
        raise Invalid("invalid_field", field, "expected an absolute http:// or https:// URL")


def check_decimal(
    value: str, field: str, hi: Decimal | None = None, *, before: str | None = None
) -> None:
    """A non-negative decimal string such as ``"1.25"``: ASCII digits, an optional point and
    fraction, nothing else (money is never a float, and the string is stored as given, so every
    reader must be able to parse it: no exponent, sign, blank, ``_`` or non-ASCII digit). A
    value unchanged from ``before`` is not judged again (it was stored under older rules)."""
    if before is not None and value == before:
        return
    if not _PLAIN_DECIMAL.fullmatch(value):
        raise Invalid(
            "invalid_field", field, f'expected a decimal string such as "1.25", got {value[:40]!r}'
        )
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise Invalid("invalid_field", field, f"expected a decimal string, got {value!r}") from None
    if not number.is_finite() or number < 0 or (hi is not None and number > hi):
        limit = f"0..{hi}" if hi is not None else "0 or more"
        raise Invalid("invalid_field", field, f"expected {limit}, got {value!r}")


def live_link(state: ConfigState, tenant: str, kind: str, object_id: int, field: str) -> Any:
    obj = state.get(kind, object_id)
    if (
        obj is None
        or obj.tenant != tenant
        or getattr(obj, "state", getattr(obj, "status", "")) == model.DELETED
    ):
        raise Invalid("invalid_reference", field, f"no {kind} {object_id}")
    return obj


def check(state: ConfigState, kind: str, obj: Any, previous: Any | None) -> None:
    """Every rule for ``obj`` (about to replace ``previous``, None on create)."""
    tenant = obj.tenant
    status = getattr(obj, "state", None) or getattr(obj, "status", None)
    if status == model.DELETED and (previous is None or _status(previous) != model.DELETED):
        raise Invalid("invalid_field", "state", "use DELETE to delete")
    for owner in ("advertiser_id", "publisher_id"):
        if (
            previous is not None
            and hasattr(obj, owner)
            and getattr(obj, owner) != getattr(previous, owner)
        ) and (kind != model.TRACKER or owner == "advertiser_id"):
            raise Invalid("immutable_field", owner, "cannot be changed after creation")
    # Links are checked when they are made: an object whose advertiser or listed affiliate was
    # deleted since can still be paused or renamed (only a new link to a deleted one is refused)
    if kind in (model.LINE_ITEM, model.OFFER, model.TRACKER) and _new(
        obj, previous, "advertiser_id"
    ):
        live_link(state, tenant, model.ADVERTISER, obj.advertiser_id, "advertiser_id")
    if kind in (model.PLACEMENT, model.PAYMENT_RULE, model.TRACKER) and _new(
        obj, previous, "publisher_id"
    ):
        live_link(state, tenant, model.PUBLISHER, obj.publisher_id, "publisher_id")
    if kind in (model.OFFER, model.ADVERTISER):
        for field in ("enabled_affiliates", "disabled_affiliates"):
            listed = set(getattr(previous, field, ())) if previous is not None else set()
            for affiliate_id in getattr(obj, field, ()):  # moved to the other list: a new link
                if affiliate_id not in listed:
                    live_link(state, tenant, model.AFFILIATE, affiliate_id, field)
    if kind == model.OFFER:
        _check_offer(obj, previous)
    elif kind == model.PAYMENT_RULE:
        hi = Decimal(100) if obj.pricing_type == "revshare" else None
        same_type = previous is not None and previous.pricing_type == obj.pricing_type
        before = previous.value if previous is not None and same_type else None
        check_decimal(obj.value, "value", hi, before=before)


def _new(obj: Any, previous: Any | None, field: str) -> bool:
    """The link in ``field`` is made now (a create, or a changed id)."""
    return previous is None or getattr(obj, field) != getattr(previous, field)


def _status(obj: Any) -> str | None:
    return getattr(obj, "state", None) or getattr(obj, "status", None)


def _check_offer(offer: model.Offer, previous: model.Offer | None) -> None:
    if offer.impressions_url:
        check_url(offer.impressions_url, "impressions_url")
    for i, destination in enumerate(offer.impressions_urls):
        check_url(destination.url, f"impressions_urls[{i}].url")
        if not 1 <= destination.weight <= MAX_WEIGHT:
            raise Invalid(
                "invalid_field", f"impressions_urls[{i}].weight", f"expected 1..{MAX_WEIGHT}"
            )
    for field in ("payout_cpm", "revenue_cpm"):
        before = getattr(previous, field) if previous is not None else None
        check_decimal(getattr(offer, field), field, before=before)
    if not 1 <= offer.attribution_window_days <= MAX_WINDOW_DAYS:
        raise Invalid("invalid_field", "attribution_window_days", f"expected 1..{MAX_WINDOW_DAYS}")
    values = [goal.value for goal in offer.goals]
    if len(set(values)) != len(values) or not all(values):
        raise Invalid("invalid_field", "goals", "each goal needs a distinct, non-empty value")
    payouts_before = {g.value: g.payout_cpm for g in previous.goals} if previous else {}
    for i, goal in enumerate(offer.goals):
        if goal.payout_cpm:
            before = payouts_before.get(goal.value)
            check_decimal(goal.payout_cpm, f"goals[{i}].payout_cpm", before=before)
