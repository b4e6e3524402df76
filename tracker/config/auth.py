"""API tokens and roles: minting, verifying (constant time) and what each role may see.

Pure: no I/O. A bearer token is ``trk_<id>_<secret>``: the id (public, random hex) finds the
token's record in the configuration; only the SHA-256 of the secret is ever stored, and it is
compared with ``hmac.compare_digest``. The tenant always comes from the token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any, Final, NamedTuple, cast

from tracker.config import model
from tracker.projections.config import ConfigState

TOKEN_PREFIX: Final = "trk"
ROLES: Final = ("admin", "advertiser", "affiliate", "publisher")
TENANT_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# the scheme is case-insensitive (RFC 9110 11.1): some clients send "bearer"
_BEARER_RE: Final = re.compile(r"(?i:Bearer)[ \t]+trk_([0-9a-f]{16})_([A-Za-z0-9_-]{20,128})[ \t]*")
_ANY_BEARER_RE: Final = re.compile(r"[ \t]*(?i:Bearer)[ \t]+[^ \t].*", re.DOTALL)


class Principal(NamedTuple):
    tenant: str
    role: str  # admin | advertiser | affiliate | publisher
    scope_id: int | None  # the advertiser / affiliate / publisher id of a scoped role
    token_id: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def parse_role(raw: str) -> tuple[model.Role, int | None]:
    """``admin``, ``advertiser:ID``, ``affiliate:ID`` or ``publisher:ID``; else ValueError."""
    role, _, scope = raw.partition(":")
    if role == "admin" and not scope:
        return "admin", None
    if (
        role in ROLES
        and role != "admin"
        and (scope.isascii() and scope.isdigit())
        and int(scope) > 0
    ):
        return cast(model.Role, role), int(scope)
    raise ValueError(f"role {raw!r}: expected admin, advertiser:ID, affiliate:ID or publisher:ID")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mint() -> tuple[str, str, str]:
    """A new token: (token id, secret sha256, the bearer token to show once)."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return token_id, hash_secret(secret), f"{TOKEN_PREFIX}_{token_id}_{secret}"


def token_id_of(authorization: str | None) -> tuple[str, str] | None:
    """(token id, secret) from an ``Authorization`` header, or None when it is not ours."""
    match = _BEARER_RE.fullmatch(authorization or "")
    return (match.group(1), match.group(2)) if match else None


def names_a_bearer_token(authorization: str | None) -> bool:
    """Whether the header gives some Bearer token, ours or not (``Bearer`` alone gives none)."""
    return _ANY_BEARER_RE.fullmatch(authorization or "") is not None


def verify(state: ConfigState, token_id: str, secret: str) -> Principal | None:
    """The principal of a live token whose secret matches, else None."""
    token = state.tokens.get(token_id)
    if token is None:
        hmac.compare_digest(hash_secret(secret), "0" * 64)  # same work whether or not it exists
        return None
    if not hmac.compare_digest(hash_secret(secret), token.secret_sha256):
        return None
    if token.state != "active":
        return None
    return Principal(token.tenant, token.role, token.scope_id, token.id)


def can_read(principal: Principal, kind: str, obj: Any) -> bool:
    """May this (same-tenant) principal see ``obj``? Admins see everything of their tenant."""
    role, scope = principal.role, principal.scope_id
    if role == "admin":
        return True
    if role == "advertiser":
        if kind == model.ADVERTISER:
            return bool(obj.id == scope)
        return kind in (model.LINE_ITEM, model.OFFER, model.TRACKER) and obj.advertiser_id == scope
    if role == "publisher":
        if kind == model.PUBLISHER:
            return bool(obj.id == scope)
        return (
            kind in (model.PLACEMENT, model.PAYMENT_RULE, model.TRACKER)
            and obj.publisher_id == scope
        )
    if role == "affiliate":
        if kind == model.AFFILIATE:
            return bool(obj.id == scope)
        if kind == model.OFFER:
            return scope not in obj.disabled_affiliates and (
                obj.privacy == "public" or scope in obj.enabled_affiliates
            )
    return False
