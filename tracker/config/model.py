"""The configuration objects: one frozen Struct per kind, the exact shape of an event's snapshot.

Pure data: no I/O. A ``TrackerConfigured`` event's ``snapshot`` is ``msgspec.to_builtins(obj)``
and the fold turns it back with ``msgspec.convert``; unknown snapshot fields are ignored so older
readers skip fields added later (the events' additive versioning rule applies to snapshots too).
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

ADVERTISER: Final = "advertiser"
LINE_ITEM: Final = "line_item"
PUBLISHER: Final = "publisher"
PLACEMENT: Final = "placement"
PAYMENT_RULE: Final = "payment_rule"
OFFER: Final = "offer"
AFFILIATE: Final = "affiliate"
TRACKER: Final = "tracker"
TOKEN: Final = "token"

DELETED: Final = "deleted"


def is_deleted(obj: object) -> bool:
    """A configuration object deleted (``state`` or ``status`` ``deleted``: kinds name it
    either way)."""
    return DELETED in (getattr(obj, "state", None), getattr(obj, "status", None))


State = Literal["active", "inactive", "deleted"]
OfferStatus = Literal["active", "paused", "stopped", "deleted"]
AffiliateStatus = Literal["active", "inactive", "suspended", "deleted"]
Privacy = Literal["public", "premoderation", "private"]  # Affise: only public is open to all


class ConfigObject(msgspec.Struct, frozen=True, kw_only=True):
    """Fields every object has; the writer sets ``tenant``, ``version`` and ``last_modified``."""

    id: int
    tenant: str
    version: int = 1
    last_modified: str = ""  # "YYYY-MM-DD HH:MM:SS" UTC, Xandr's format
    name: str = ""

    @property
    def deleted(self) -> bool:
        return bool(
            getattr(self, "state", None) == DELETED or getattr(self, "status", None) == DELETED
        )


class Advertiser(ConfigObject, frozen=True):
    state: State = "active"
    disabled_affiliates: tuple[int, ...] = ()  # affiliates this advertiser refuses


class LineItem(ConfigObject, frozen=True):
    advertiser_id: int
    state: State = "active"


class Publisher(ConfigObject, frozen=True):
    state: State = "active"


class Placement(ConfigObject, frozen=True):
    publisher_id: int
    state: State = "active"


class PaymentRule(ConfigObject, frozen=True):
    publisher_id: int
    pricing_type: Literal["cpm", "revshare"] = "cpm"
    value: str = "0"  # decimal string: CPM in currency units, or revshare percent
    state: State = "active"


class Destination(msgspec.Struct, frozen=True):
    url: str
    weight: int = 1


class Goal(msgspec.Struct, frozen=True):
    value: str  # the goal value postbacks name (Affise ``goal``)
    name: str = ""
    payout_cpm: str = ""  # decimal string; "" = the offer's


class Offer(ConfigObject, frozen=True):
    advertiser_id: int
    status: OfferStatus = "active"
    allow_impressions: bool = False
    impressions_url: str = ""  # http/https absolute, or "" for none
    impressions_urls: tuple[Destination, ...] = ()  # additional destinations, by weight
    payout_cpm: str = "0"  # decimal string: paid to affiliates per 1,000 impressions
    revenue_cpm: str = "0"  # decimal string: received from the advertiser per 1,000
    attribution_window_days: int = 30
    goals: tuple[Goal, ...] = ()
    privacy: Privacy = "public"
    enabled_affiliates: tuple[int, ...] = ()  # may run a non-public offer
    disabled_affiliates: tuple[int, ...] = ()  # may never run it, public or not


class Affiliate(ConfigObject, frozen=True):
    status: AffiliateStatus = "active"


class Tracker(ConfigObject, frozen=True):
    """A Xandr impression tracker."""

    advertiser_id: int
    line_item_id: int
    publisher_id: int
    code: str | None = None  # custom code, unique across all tenants (/imptr?code= names none)
    state: State = "active"
    placement_id: int | None = None  # Xandr "tag"
    payment_rule_id: int | None = None
    clicktracker: Any = None  # accepted, unused (as in Xandr)
    # Our extension: hosts a `redir` may send the browser to ("example.com" exactly,
    # ".example.com" for it and its subdomains); anything else answers the pixel (no open redirect).
    redirect_hosts: tuple[str, ...] = ()


Role = Literal["admin", "advertiser", "affiliate", "publisher"]


class Token(msgspec.Struct, frozen=True, kw_only=True):
    """An API token: never the secret, only its SHA-256."""

    id: str  # public part of the bearer token, random hex
    tenant: str
    role: Role
    scope_id: int | None = None  # the advertiser / affiliate / publisher id for scoped roles
    secret_sha256: str
    state: Literal["active", "revoked"] = "active"
    created_at: str = ""
    version: int = 1
    last_modified: str = ""
    name: str = ""

    @property
    def deleted(self) -> bool:
        return self.state == "revoked"


TYPES: Final[dict[str, type[Any]]] = {
    ADVERTISER: Advertiser,
    LINE_ITEM: LineItem,
    PUBLISHER: Publisher,
    PLACEMENT: Placement,
    PAYMENT_RULE: PaymentRule,
    OFFER: Offer,
    AFFILIATE: Affiliate,
    TRACKER: Tracker,
    TOKEN: Token,
}

AnyObject = (
    Advertiser | LineItem | Publisher | Placement | PaymentRule | Offer | Affiliate | Tracker
)


def to_snapshot(obj: ConfigObject | Token) -> dict[str, Any]:
    snapshot: dict[str, Any] = msgspec.to_builtins(obj)
    return snapshot


def from_snapshot(kind: str, snapshot: dict[str, Any]) -> Any:
    """The typed object of a snapshot; a ValidationError here is a bug in the writer."""
    return msgspec.convert(snapshot, type=TYPES[kind])
