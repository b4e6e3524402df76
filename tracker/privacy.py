"""Consent policy for pixel hits: may we set the visitor cookie, and how much of the IP is stored.

Pure: no I/O, no clock. Signals, in order: the opt-out cookie ``tracker_optout=1``; ``gdpr=1``
without a usable ``gdpr_consent`` (IAB TCF string); ``DNT: 1`` / ``Sec-GPC: 1`` (strict only).
Any of them means no visitor cookie (an existing one is expired), no visitor id, and the IP
truncated to its /24 (IPv4) or /48 (IPv6) network.

Policies (the ``TRACKER_PRIVACY_POLICY`` setting):

- ``strict`` (default): under ``gdpr=1`` the consent string must be a TCF v2 string that grants
  purpose 1 (store and/or access information on a device); DNT and GPC are honoured.
- ``permissive``: only the opt-out cookie, and ``gdpr=1`` with no consent string at all, count.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Mapping
from typing import Final, Literal

import msgspec

from tracker.ids import new_uuid7_hex

Policy = Literal["strict", "permissive"]
POLICIES: Final = ("strict", "permissive")

VISITOR_COOKIE: Final = "tracker_vid"
OPT_OUT_COOKIE: Final = "tracker_optout"
VISITOR_MAX_AGE_S: Final = 365 * 24 * 3600
OPT_OUT_MAX_AGE_S: Final = 5 * 365 * 24 * 3600

MAX_CONSENT_CHARS: Final = 4096
_TCF = re.compile(r"[A-Za-z0-9_-]{20,}(?:\.[A-Za-z0-9_-]+)*")  # core segment, then optional ones
_VISITOR_ID = re.compile(r"[0-9a-f]{32}")
_OCTET: Final = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")  # no leading zeros
_PURPOSE_1_BIT: Final = 152  # TCF v2 core: 6+36+36+12+12+6+12+12+6+1+1+12 bits precede purposes


class Privacy(msgspec.Struct, frozen=True):
    set_cookie: bool  # False: set no visitor cookie and read none
    store_ip: str  # the IP as it may be stored: full, truncated, or "" when not an IP
    consent: str  # the gdpr_consent string as given (kept on the event for audit)
    reason: str = ""  # why restricted: opt_out, gdpr_no_consent, do_not_track, global_privacy


class Cookie(msgspec.Struct, frozen=True):
    """One Set-Cookie header's name, value and attributes."""

    name: str
    value: str
    max_age_s: int
    secure: bool  # True over HTTPS, together with SameSite=None
    http_only: bool = True

    def header(self) -> str:
        """The ``Set-Cookie`` header value."""
        # Third-party pixels need SameSite=None, which browsers accept only with Secure; plain
        # HTTP (local development) falls back to Lax, which first-party pages still send.
        http_only = "; HttpOnly" if self.http_only else ""
        secure = "; SameSite=None; Secure" if self.secure else "; SameSite=Lax"
        return f"{self.name}={self.value}; Max-Age={self.max_age_s}; Path=/{http_only}{secure}"


def tcf_purpose_1(consent: str) -> bool | None:
    """Whether a TC string grants purpose 1: None when it is not a well-formed TCF string,
    False for a TCF v1 string (purposes are encoded differently there, so never assumed)."""
    if not consent or len(consent) > MAX_CONSENT_CHARS or not _TCF.fullmatch(consent):
        return None
    core = consent.split(".", 1)[0]
    try:
        raw = base64.urlsafe_b64decode(core + "=" * (-len(core) % 4))
    except (binascii.Error, ValueError):
        return None
    version = raw[0] >> 2
    if version not in (1, 2):
        return None
    if version == 1 or len(raw) * 8 <= _PURPOSE_1_BIT:
        return False
    byte, bit = divmod(_PURPOSE_1_BIT, 8)
    return bool(raw[byte] & (0x80 >> bit))


def truncate_ip(ip: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) network address; "" when ``ip`` is not an address."""
    address = _parse_ip(ip)
    if address is None:
        return ""
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def _parse_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(ip.strip().split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _restriction(
    gdpr: str, consent: str, cookies: Mapping[str, str], headers: Mapping[str, str], policy: Policy
) -> str:
    if cookies.get(OPT_OUT_COOKIE) == "1":
        return "opt_out"
    if gdpr == "1":
        if policy == "permissive" and not consent:
            return "gdpr_no_consent"
        if policy == "strict" and not tcf_purpose_1(consent):
            return "gdpr_no_consent"
    if policy == "strict":
        if headers.get("dnt", "").strip() == "1":
            return "do_not_track"
        if headers.get("sec-gpc", "").strip() == "1":
            return "global_privacy"
    return ""


def decide(
    ip: str,
    gdpr: str,
    gdpr_consent: str,
    cookies: Mapping[str, str],
    headers: Mapping[str, str],
    policy: Policy = "strict",
) -> Privacy:
    """The privacy decision for one hit; ``headers`` is looked up by lowercase name (a dict of
    lowercase names, or aiohttp's case-insensitive headers)."""
    reason = _restriction(gdpr, gdpr_consent, cookies, headers, policy)
    if reason:
        return Privacy(False, truncate_ip(ip), gdpr_consent, reason)
    if _CANONICAL_IPV4.fullmatch(ip):  # the common case, already as str(ip_address(ip))
        return Privacy(True, ip, gdpr_consent)
    address = _parse_ip(ip)
    return Privacy(True, "" if address is None else str(address), gdpr_consent)


def is_https(scheme: str, headers: Mapping[str, str]) -> bool:
    """HTTPS as the browser sees it: ``X-Forwarded-Proto`` (first hop) when a proxy set it.

    Only trust this behind a proxy that overwrites the header; it decides just the cookie flags.
    """
    forwarded = headers.get("x-forwarded-proto", "")
    if forwarded:
        return forwarded.split(",", 1)[0].strip().lower() == "https"
    return scheme.lower() == "https"


def parse_cookies(header: str) -> dict[str, str]:
    """Name -> value of a ``Cookie`` request header; the first of a repeated name wins (browsers
    send the most specific path first). Lenient like browsers: a part without ``=`` is skipped,
    surrounding double quotes are dropped."""
    cookies: dict[str, str] = {}
    if not header:
        return cookies
    for part in header.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            cookies.setdefault(name.strip(), value)
    return cookies


def visitor(privacy: Privacy, cookies: Mapping[str, str], https: bool) -> tuple[str, Cookie | None]:
    """(visitor id, cookie to set): the browser's id is kept and its cookie renewed for a year;
    without permission the id is "" and an existing cookie is expired."""
    if not privacy.set_cookie:
        expire = Cookie(VISITOR_COOKIE, "", 0, https) if VISITOR_COOKIE in cookies else None
        return "", expire
    current = cookies.get(VISITOR_COOKIE, "")
    visitor_id = current if _VISITOR_ID.fullmatch(current) else new_uuid7_hex()
    return visitor_id, Cookie(VISITOR_COOKIE, visitor_id, VISITOR_MAX_AGE_S, https)


def opt_out_cookie(https: bool) -> Cookie:
    """The cookie ``GET /optout`` sets: no visitor cookie for five years."""
    return Cookie(OPT_OUT_COOKIE, "1", OPT_OUT_MAX_AGE_S, https)


def opt_out_cookies(https: bool) -> list[Cookie]:
    """What ``GET /optout`` sets: the opt-out cookie, and the visitor cookie expired."""
    return [opt_out_cookie(https), Cookie(VISITOR_COOKIE, "", 0, https)]


def opt_in_cookies(https: bool) -> list[Cookie]:
    """What ``GET /optin`` sets: the opt-out cookie expired (a visitor cookie comes with the
    next pixel the policy allows one on)."""
    return [Cookie(OPT_OUT_COOKIE, "", 0, https)]
