"""Impression ids: time-ordered, unique, self-validating, routable to a partition."""

from __future__ import annotations

import hmac

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tracker.eventstore.keys import key_route, partition_of
from tracker.ids import IMPRESSION_ID_LENGTH, ImpressionIds, route_of, signing_form

IDS = ImpressionIds(b"0123456789abcdef-server-key")


def test_minted_ids_verify_and_are_ordered_and_unique() -> None:
    minted = [IDS.mint() for _ in range(2000)]
    assert all(len(i) == IMPRESSION_ID_LENGTH and IDS.verify(i) for i in minted)
    assert len(set(minted)) == len(minted)
    assert [i[:12] for i in minted] == sorted(i[:12] for i in minted)  # ms timestamp prefix


@pytest.mark.parametrize("key", [b"0123456789abcdef", b"k" * 64, b"long key " * 20])
def test_the_tag_is_hmac_sha256_of_the_body(key: bytes) -> None:
    """Anyone holding the key can check an id with a stock HMAC (keys over 64 bytes included)."""
    iid = ImpressionIds(key).mint()
    body, tag = iid[:32], iid[32:]
    assert tag == hmac.digest(key, body.encode(), "sha256")[:6].hex()


def _flip_last(iid: str) -> str:
    return iid[:-1] + ("1" if iid[-1] == "0" else "0")


def _flip_body(iid: str) -> str:
    return ("1" if iid[0] == "0" else "0") + iid[1:]


@pytest.mark.parametrize(
    "bad",
    ["", "abc", "z" * 44, _flip_last(IDS.mint()), _flip_body(IDS.mint()), "0" * 44],
)
def test_broken_ids_do_not_verify(bad: str) -> None:
    assert not IDS.verify(bad)


@given(st.text(min_size=IMPRESSION_ID_LENGTH, max_size=IMPRESSION_ID_LENGTH))
@example("0" * 32 + "é" * 12)
@example(IDS.mint()[:-1] + "é")
def test_no_other_text_verifies_and_none_raises(text: str) -> None:
    """A postback can name anything: judging it never fails, and only minted ids pass."""
    assert not IDS.verify(text)


@given(st.data())
def test_any_changed_character_breaks_an_id(data: st.DataObject) -> None:
    iid = IDS.mint()
    at = data.draw(st.integers(0, IMPRESSION_ID_LENGTH - 1))
    other = data.draw(st.characters().filter(lambda c: c != iid[at]))
    assert not IDS.verify(iid[:at] + other + iid[at + 1 :])


def test_another_key_does_not_verify() -> None:
    other = ImpressionIds(b"another-server-key-0123")
    assert not other.verify(IDS.mint())


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        ImpressionIds(b"short")


@pytest.mark.parametrize("partitions", [1, 2, 3, 4, 8, 16, 1024])
def test_route_chooses_the_partition(partitions: int) -> None:
    """Counts dividing 16 change only the last hex digit; others the low 48 bits. Many ids per
    route, so every random last digit meets the adjustment."""
    for route in {0, partitions // 2, partitions - 1}:
        for _ in range(64):
            iid = IDS.mint(route, partitions)
            assert IDS.verify(iid)
            assert route_of(iid, partitions) == route


def test_keyed_event_lands_where_its_key_lives() -> None:
    from tests.factories import conversion, impression

    imp = impression(key="order-17")
    assert partition_of(imp, 4) == f"p{key_route('t1', 'order-17', 4)}"
    assert partition_of(conversion(aimp_id=imp.impression_id), 4) == partition_of(imp, 4)


@pytest.mark.parametrize(("route", "partitions"), [(4, 4), (-1, 4), (3, 3), (16, 16)])
def test_a_route_outside_the_partitions_is_refused(route: int, partitions: int) -> None:
    with pytest.raises(ValueError, match="partition number"):
        IDS.mint(route, partitions)


def test_a_redirect_signature_covers_escapes_of_plain_characters_not_of_delimiters() -> None:
    ids = ImpressionIds(b"k" * 32)
    sig = ids.sign_redirect("t1", "https://p.example/caf\u00e9 {x}?q=a%26b")
    assert ids.verify_redirect("t1", "https://p.example/caf%C3%A9%20%7bx%7D?q=a%26b", sig)
    # an escaped delimiter means something else than the delimiter: "a&b" is two parameters
    assert not ids.verify_redirect("t1", "https://p.example/caf\u00e9 {x}?q=a&b", sig)
    assert not ids.verify_redirect("t2", "https://p.example/caf\u00e9 {x}?q=a%26b", sig)
    assert signing_form("https://p.example/%ff%41") == "https://p.example/%ffA"  # not UTF-8: kept


def test_an_escaped_backslash_stays_distinct_from_a_backslash() -> None:
    # browsers read "\\" as "/": "evil.example\\@shop.example" goes to evil.example, while
    # "evil.example%5C@shop.example" is a user name at shop.example
    ids = ImpressionIds(b"k" * 32)
    sig = ids.sign_redirect("t1", "https://evil.example%5C@www.shop.example/")
    assert not ids.verify_redirect("t1", "https://evil.example\\@www.shop.example/", sig)
