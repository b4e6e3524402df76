"""The /imptr redirect allow-list: ``.example.com`` is the domain and its subdomains, a bare
``example.com`` that host only; nothing that merely ends in the same letters, or hides the real
host behind userinfo, passes."""

from __future__ import annotations

import pytest

from tracker.http.ingest import redirect_allowed
from tracker.http.pixel import is_safe_location

DOMAIN = (".shop.example",)
EXACT = ("shop.example",)


@pytest.mark.parametrize(
    "target",
    [
        "https://shop.example/",  # the domain itself
        "https://www.shop.example/x",
        "https://a.b.shop.example/deep?q=1",
        "http://shop.example:8080/",
    ],
)
def test_a_dot_entry_allows_the_domain_and_its_subdomains(target: str) -> None:
    assert redirect_allowed(target, DOMAIN)


@pytest.mark.parametrize(
    "target",
    [
        "https://evilshop.example/",  # ends in the same letters, not a subdomain
        "https://www.evilshop.example/x",
        "https://www.shop.example.evil.example/",  # the listed name as a prefix only
        "https://www.shop.example@evil.example/",  # userinfo: the host is evil.example
        "https://evil.example/?to=https://www.shop.example/",
        "https://example/",  # the parent of the listed domain
        "https://[::1]@",  # no host after the userinfo (yarl raised IndexError)
        "https://[]@/",
    ],
)
def test_a_dot_entry_refuses_lookalike_hosts(target: str) -> None:
    assert not redirect_allowed(target, DOMAIN)


def test_an_exact_entry_allows_that_host_only() -> None:
    assert redirect_allowed("https://shop.example/landing", EXACT)
    assert not redirect_allowed("https://www.shop.example/landing", EXACT)
    assert not redirect_allowed("https://evilshop.example/", EXACT)
    assert not redirect_allowed("https://shop.example.evil.example/", EXACT)


@pytest.mark.parametrize(
    ("target", "hosts"),
    [
        ("https://WWW.Shop.Example/x", DOMAIN),
        ("https://www.shop.example/x", (".SHOP.Example",)),
        ("https://SHOP.EXAMPLE/", EXACT),
        ("https://shop.example/", ("Shop.Example",)),
    ],
)
def test_host_matching_ignores_case(target: str, hosts: tuple[str, ...]) -> None:
    assert redirect_allowed(target, hosts)


def test_case_does_not_widen_the_list() -> None:
    assert not redirect_allowed("https://EVILSHOP.example/", (".Shop.Example",))
    assert not redirect_allowed("https://WWW.SHOP.EXAMPLE/", ("Shop.Example",))


def test_any_entry_of_several_allows_and_none_refuses() -> None:
    hosts = ("partner.example", ".shop.example")
    assert redirect_allowed("https://partner.example/", hosts)
    assert redirect_allowed("https://m.shop.example/", hosts)
    assert not redirect_allowed("https://m.partner.example/", hosts)
    assert not redirect_allowed("https://shop.example/", ())


def test_a_host_with_a_percent_escape_is_refused() -> None:
    # yarl keeps the escape in the host, and the escaped "@" would pass for a subdomain
    assert not redirect_allowed("https://evil.example%40www.shop.example/", (".shop.example",))


def test_a_target_with_a_backslash_is_no_safe_location() -> None:
    assert not is_safe_location("https://evil.example\\@www.shop.example/")
    assert is_safe_location("https://www.shop.example/a%5Cb")
