"""Consent policy: which signals stop the visitor cookie and truncate the IP, and the cookie."""

from __future__ import annotations

import base64
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from tracker.http.ingest import PixelRequest, client_ip
from tracker.privacy import (
    OPT_OUT_COOKIE,
    VISITOR_COOKIE,
    Privacy,
    decide,
    is_https,
    opt_out_cookie,
    parse_cookies,
    tcf_purpose_1,
    truncate_ip,
    visitor,
)

IP4 = "203.0.113.77"
IP6 = "2001:db8:85a3:8d3:1319:8a2e:370:7348"
NONE: CIMultiDict[str] = CIMultiDict()


def tc_string(version: int = 2, purposes: str = "1" + "0" * 23, segments: str = "") -> str:
    """A TC string whose core segment has the given version and purpose consent bits."""
    bits = f"{version:06b}" + "0" * 146 + purposes + "0" * 64  # 152 bits precede the purposes
    bits += "0" * (-len(bits) % 8)
    raw = int(bits, 2).to_bytes(len(bits) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=") + segments


GRANTED = tc_string()
DENIED = tc_string(purposes="0" * 24)


# -- TCF ------------------------------------------------------------------------------------------


def test_tcf_v2_purpose_1_is_read_from_the_core_segment() -> None:
    assert tcf_purpose_1(GRANTED) is True
    assert tcf_purpose_1(DENIED) is False
    assert tcf_purpose_1(tc_string(segments=".YAAAAAAAAAAA")) is True


@pytest.mark.parametrize(
    "consent", ["", "${GDPR_CONSENT_123}", "not a tc string!", "Cabc", "C" * 5000, "A" * 40]
)
def test_malformed_consent_strings_are_not_tcf(consent: str) -> None:
    assert tcf_purpose_1(consent) is None


def test_tcf_v1_is_never_taken_as_purpose_1_consent() -> None:
    assert tcf_purpose_1(tc_string(version=1)) is False


# -- decide ---------------------------------------------------------------------------------------


def test_no_signals_keep_full_ip_and_allow_the_cookie() -> None:
    assert decide(IP4, "", "", {}, NONE) == Privacy(True, IP4, "")
    assert decide(IP6, "0", "", {}, NONE).store_ip == "2001:db8:85a3:8d3:1319:8a2e:370:7348"


def test_gdpr_with_granted_consent_allows_the_cookie() -> None:
    privacy = decide(IP4, "1", GRANTED, {}, NONE)
    assert privacy == Privacy(True, IP4, GRANTED)


@pytest.mark.parametrize("consent", ["", "garbage", DENIED, tc_string(version=1)])
def test_strict_gdpr_without_usable_consent_restricts(consent: str) -> None:
    privacy = decide(IP4, "1", consent, {}, NONE)
    assert privacy == Privacy(False, "203.0.113.0", consent, "gdpr_no_consent")


def test_permissive_restricts_gdpr_only_when_consent_is_missing() -> None:
    assert decide(IP4, "1", "", {}, NONE, "permissive").reason == "gdpr_no_consent"
    assert decide(IP4, "1", DENIED, {}, NONE, "permissive").set_cookie
    assert decide(IP4, "1", "anything", {}, NONE, "permissive").set_cookie


@pytest.mark.parametrize("policy", ["strict", "permissive"])
def test_opt_out_cookie_restricts_under_every_policy(policy: str) -> None:
    privacy = decide(IP6, "", "", {OPT_OUT_COOKIE: "1"}, NONE, policy)  # type: ignore[arg-type]
    assert privacy == Privacy(False, "2001:db8:85a3::", "", "opt_out")


@pytest.mark.parametrize(
    ("header", "reason"), [("DNT", "do_not_track"), ("sec-gpc", "global_privacy")]
)
def test_strict_honours_dnt_and_gpc(header: str, reason: str) -> None:
    headers = CIMultiDict({header: "1"})
    assert decide(IP4, "", "", {}, headers) == Privacy(False, "203.0.113.0", "", reason)
    assert decide(IP4, "", "", {}, headers, "permissive").set_cookie


def test_dnt_zero_is_not_a_signal() -> None:
    assert decide(IP4, "", "", {}, CIMultiDict({"DNT": "0", "Sec-GPC": "0"})).set_cookie


def test_not_an_ip_is_never_stored() -> None:
    assert decide("unknown", "", "", {}, NONE).store_ip == ""
    assert decide("unknown", "1", "", {}, NONE).store_ip == ""


# -- IP truncation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "stored"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("10.1.2.255", "10.1.2.0"),
        ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::"),
        ("::ffff:198.51.100.9", "198.51.100.0"),
        ("fe80::1:2:3:4%eth0", "fe80::"),
        (" 203.0.113.5 ", "203.0.113.0"),
        ("999.1.1.1", ""),
        ("", ""),
    ],
)
def test_truncate_ip(ip: str, stored: str) -> None:
    assert truncate_ip(ip) == stored


# -- cookies --------------------------------------------------------------------------------------


def test_https_cookie_is_samesite_none_and_secure() -> None:
    _, cookie = visitor(decide(IP4, "", "", {}, NONE), {}, https=True)
    assert cookie is not None
    assert cookie.header() == (
        f"{VISITOR_COOKIE}={cookie.value}; Max-Age=31536000; Path=/; HttpOnly; "
        "SameSite=None; Secure"
    )


def test_plain_http_cookie_is_lax_without_secure() -> None:
    _, cookie = visitor(decide(IP4, "", "", {}, NONE), {}, https=False)
    assert cookie is not None
    header = cookie.header()
    assert "SameSite=Lax" in header
    assert "Secure" not in header
    assert "HttpOnly" in header


def test_new_visitor_gets_a_uuid7_hex_id() -> None:
    visitor_id, cookie = visitor(decide(IP4, "", "", {}, NONE), {}, https=True)
    assert len(visitor_id) == 32
    assert visitor_id[12] == "7"  # the UUID version nibble
    assert cookie is not None
    assert cookie.value == visitor_id


def test_returning_visitor_keeps_the_id_and_renews_the_cookie() -> None:
    known = "0192f0a1b2c37d4e8f9a0b1c2d3e4f50"
    visitor_id, cookie = visitor(decide(IP4, "", "", {}, NONE), {VISITOR_COOKIE: known}, True)
    assert visitor_id == known
    assert cookie is not None
    assert cookie.max_age_s == 365 * 24 * 3600


def test_forged_visitor_cookie_is_replaced() -> None:
    forged = "x; Domain=evil.example"
    visitor_id, _ = visitor(decide(IP4, "", "", {}, NONE), {VISITOR_COOKIE: forged}, True)
    assert visitor_id != forged
    assert len(visitor_id) == 32


def test_restricted_hit_has_no_id_and_expires_an_old_cookie() -> None:
    restricted = decide(IP4, "1", "", {}, NONE)
    assert visitor(restricted, {}, True) == ("", None)
    visitor_id, cookie = visitor(restricted, {VISITOR_COOKIE: "0" * 32}, True)
    assert visitor_id == ""
    assert cookie is not None
    assert cookie.header().startswith(f"{VISITOR_COOKIE}=; Max-Age=0;")


def test_opt_out_cookie_header() -> None:
    assert opt_out_cookie(https=True).header() == (
        f"{OPT_OUT_COOKIE}=1; Max-Age=157680000; Path=/; HttpOnly; SameSite=None; Secure"
    )


@pytest.mark.parametrize(
    ("scheme", "forwarded", "https"),
    [
        ("http", "", False),
        ("https", "", True),
        ("http", "https", True),
        ("http", "HTTPS, http", True),
        ("https", "http", False),
    ],
)
def test_is_https_prefers_the_proxy_header(scheme: str, forwarded: str, https: bool) -> None:
    headers = CIMultiDict({"X-Forwarded-Proto": forwarded} if forwarded else {})
    assert is_https(scheme, headers) is https


def test_cookie_header_is_parsed_leniently_first_name_wins() -> None:
    header = 'a=1; tracker_vid=first; tracker_vid=second; junk; q="quoted value"; =x; e='
    assert parse_cookies(header) == {
        "a": "1",
        "tracker_vid": "first",
        "q": "quoted value",
        "": "x",
        "e": "",
    }
    assert parse_cookies("") == {}


@pytest.mark.parametrize(
    "ip",
    ["0.0.0.0", "9.9.9.9", "10.20.30.40", "100.200.250.255", "249.255.199.1", "127.0.0.1"],
)
def test_canonical_ipv4_is_stored_as_ipaddress_would(ip: str) -> None:
    assert decide(ip, "", "", {}, NONE).store_ip == str(ipaddress.ip_address(ip))


@pytest.mark.parametrize(
    "ip", ["01.2.3.4", "256.1.1.1", "1.2.3", "1.2.3.4.5", " 1.2.3.4", "a.b.c.d"]
)
def test_non_canonical_ipv4_takes_the_full_parser(ip: str) -> None:
    try:
        expected = str(ipaddress.ip_address(ip.strip()))
    except ValueError:
        expected = ""
    assert decide(ip, "", "", {}, NONE).store_ip == expected


@pytest.mark.parametrize(
    ("forwarded", "hops", "ip"),
    [
        ("", 1, "10.0.0.9"),  # no header: the peer
        ("203.0.113.7", 0, "10.0.0.9"),  # not trusted: the peer
        ("203.0.113.7", 1, "203.0.113.7"),  # one proxy that overwrites it
        ("6.6.6.6, 203.0.113.7", 1, "203.0.113.7"),  # one proxy that appends: the client's own
        ("6.6.6.6, 203.0.113.7, 198.51.100.2", 2, "203.0.113.7"),  # CDN, then a load balancer
        ("203.0.113.7", 3, "203.0.113.7"),  # fewer entries than proxies: the leftmost
    ],
)
def test_client_ip_never_takes_an_entry_the_client_wrote(
    forwarded: str, hops: int, ip: str
) -> None:
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    request = PixelRequest("/imp", "", headers, "10.0.0.9", "http")
    assert client_ip(request, hops) == ip


# -- properties over generated addresses and signals (hypothesis) ----------------------------------

_SIGNALS = {
    "opt_out": ({OPT_OUT_COOKIE: "1"}, {}, "", ""),
    "gdpr_no_consent": ({}, {}, "1", ""),
    "do_not_track": ({}, {"dnt": "1"}, "", ""),
    "global_privacy": ({}, {"sec-gpc": "1"}, "", ""),
}


@given(address=st.ip_addresses(), signal=st.sampled_from(sorted(_SIGNALS)))
def test_any_restriction_stores_only_the_network(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, signal: str
) -> None:
    cookies, headers, gdpr, consent = _SIGNALS[signal]
    got = decide(str(address), gdpr, consent, cookies, headers)
    assert (got.set_cookie, got.reason) == (False, signal)
    seen = getattr(address, "ipv4_mapped", None) or address  # ::ffff:a.b.c.d is a.b.c.d
    prefix = 24 if seen.version == 4 else 48
    network = ipaddress.ip_network(f"{seen}/{prefix}", strict=False)
    assert got.store_ip == str(network.network_address)
    assert visitor(got, {VISITOR_COOKIE: "0" * 32}, https=True)[0] == ""


@given(address=st.ip_addresses(v=4))
def test_an_ipv4_mapped_address_is_stored_as_the_ipv4_it_is(address: ipaddress.IPv4Address) -> None:
    mapped = f"::ffff:{address}"
    assert decide(mapped, "", "", {}, {}).store_ip == str(address)
    assert decide(mapped, "1", "", {}, {}).store_ip == truncate_ip(str(address))


@given(address=st.ip_addresses())
def test_without_a_signal_the_whole_address_is_stored(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    got = decide(str(address), "", "", {}, {})
    assert got.set_cookie
    assert ipaddress.ip_address(got.store_ip) == (getattr(address, "ipv4_mapped", None) or address)


@given(st.text(), st.text())
def test_no_consent_string_or_address_makes_the_decision_fail(consent: str, ip: str) -> None:
    got = decide(ip, "1", consent, {}, {})
    assert got.consent == consent
    if got.set_cookie:  # only a TCF v2 string granting purpose 1 allows it
        assert tcf_purpose_1(consent) is True
