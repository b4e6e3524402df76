"""Pixel query strings: both /imp dialects, the Xandr /imptr rules, and malformed input."""

from __future__ import annotations

import random

import pytest

from tracker.http.query import (
    MALFORMED,
    MAX_ID_CHARS,
    MAX_SUB_CHARS,
    ImpQuery,
    Malformed,
    parse_imp,
    parse_imptr,
)

# -- /imp, Affise ---------------------------------------------------------------------------------


def test_affise_pixel_with_subs_and_imp_id() -> None:
    q = parse_imp("aid=1&oid=102&sub1=news&sub3=a%20b&sub8=x+y&imp_id=ext-9")
    assert q == ImpQuery(
        dialect="affise",
        affiliate_id="1",
        offer_id="102",
        subs={"sub1": "news", "sub3": "a b", "sub8": "x y"},
        external_imp_id="ext-9",
    )
    assert q.reason == ""


def test_affise_requires_aid_and_oid() -> None:
    q = parse_imp("aid=1&sub1=x")
    assert q.dialect == "affise"
    assert q.problems == (Malformed("oid", "required"),)
    assert q.reason == MALFORMED
    assert q.affiliate_id == "1"  # what was fine is kept, for the record


def test_empty_query_is_malformed_not_an_error() -> None:
    q = parse_imp("")
    assert q.reason == MALFORMED
    assert {p.parameter for p in q.problems} == {"aid", "oid"}


def test_empty_subs_are_dropped_and_unknown_parameters_ignored() -> None:
    q = parse_imp("aid=1&oid=2&sub1=&sub9=nine&cb=123&&=x")
    assert q.subs == {}
    assert q.reason == ""


def test_sub_length_limit() -> None:
    ok = parse_imp(f"aid=1&oid=2&sub2={'s' * MAX_SUB_CHARS}")
    assert ok.subs["sub2"] == "s" * MAX_SUB_CHARS
    too_long = parse_imp(f"aid=1&oid=2&sub2={'s' * (MAX_SUB_CHARS + 1)}")
    assert too_long.problems == (Malformed("sub2", "too_long"),)
    assert too_long.subs == {}


def test_id_length_limit_counts_decoded_characters() -> None:
    assert parse_imp(f"aid={'%41' * MAX_ID_CHARS}&oid=2").reason == ""
    q = parse_imp(f"aid={'a' * (MAX_ID_CHARS + 1)}&oid=2")
    assert q.problems == (Malformed("aid", "too_long"),)


def test_utf8_values_are_decoded() -> None:
    assert parse_imp("aid=1&oid=2&sub1=%C3%A9t%C3%A9").subs == {"sub1": "été"}


@pytest.mark.parametrize("bad", ["%FF", "%C3", "%C3%28", "%ED%A0%80"])
def test_invalid_utf8_is_malformed(bad: str) -> None:
    q = parse_imp(f"aid=1&oid=2&sub4={bad}")
    assert q.problems == (Malformed("sub4", "invalid_encoding"),)


def test_undecodable_name_is_an_unknown_parameter_and_ignored() -> None:
    # no known name is undecodable; Xandr and Affise ignore parameters they do not know
    assert parse_imp("aid=1&oid=2&%FF=1&x%C3=%FF").problems == ()
    assert parse_imptr("id=1&%FF=1").problems == ()


@pytest.mark.parametrize("macro", ["{your_affiliate_imp_id}", "${IMPRESSION_ID}", "[IMP_ID]"])
def test_unfilled_imp_id_macro_is_no_id(macro: str) -> None:
    # seed 000 hands out the pixel with placeholders: one left unfilled must not become an id
    # that every later hit repeats (a duplicate_imp_id for all but the first in 24 h)
    q = parse_imp(f"aid=1&oid=2&imp_id={macro}")
    assert (q.external_imp_id, q.problems) == ("", ())
    q = parse_imp(f"env_id=e&dest_id=d&imp_id={macro}")  # Freshpaint requires one
    assert (q.external_imp_id, q.problems) == ("", (Malformed("imp_id", "required"),))


def test_control_characters_are_malformed() -> None:
    assert parse_imp("aid=1%0A&oid=2").problems == (Malformed("aid", "invalid_value"),)


def test_repeated_parameter_is_malformed_and_first_kept() -> None:
    q = parse_imp("aid=1&oid=2&oid=3")
    assert q.offer_id == "2"
    assert q.problems == (Malformed("oid", "repeated"),)


def test_gdpr_signals_are_passed_on() -> None:
    q = parse_imp("aid=1&oid=2&gdpr=1&gdpr_consent=CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA")
    assert (q.gdpr, q.gdpr_consent[:6]) == ("1", "CPXxRf")
    assert parse_imp("aid=1&oid=2&gdpr=${GDPR}").gdpr == ""


@pytest.mark.parametrize(
    ("query", "gdpr"),
    [
        ("gdpr=", ""),
        ("gdpr=[GDPR]", ""),  # not filled in: not said
        ("gdpr=0", "0"),
        ("gdpr=false", "0"),
        ("gdpr=TRUE", "1"),
        ("gdpr=maybe", "1"),  # said, but unclear: the privacy-preserving reading
        ("gdpr=0&gdpr=1", "1"),
        ("gdpr=0&gdpr=0", "1"),  # repeated: the hit is malformed, the signal unclear
        ("gdpr=%FF", "1"),
    ],
)
def test_an_unclear_gdpr_signal_is_read_as_applying(query: str, gdpr: str) -> None:
    assert parse_imp(f"aid=1&oid=2&{query}").gdpr == gdpr
    assert parse_imptr(f"id=1&{query}").gdpr == gdpr


# -- /imp, Freshpaint -----------------------------------------------------------------------------


def test_freshpaint_pixel() -> None:
    q = parse_imp("env_id=env_1&dest_id=dest_2&imp_id=abc")
    assert (q.dialect, q.env_id, q.dest_id, q.external_imp_id) == (
        "freshpaint",
        "env_1",
        "dest_2",
        "abc",
    )
    assert q.reason == ""


def test_freshpaint_requires_all_three() -> None:
    q = parse_imp("env_id=env_1")
    assert q.dialect == "freshpaint"
    assert set(q.problems) == {Malformed("dest_id", "required"), Malformed("imp_id", "required")}


# -- /imptr, Xandr --------------------------------------------------------------------------------


def test_xandr_image_tracker_defaults_to_image() -> None:
    q = parse_imptr("id=2766&cachebuster=839201&ancost=0.45&t=2")
    assert (q.tracker_id, q.javascript, q.media_cost) == ("2766", False, "0.45")
    assert parse_imptr("id=1").javascript is False
    assert q.reason == ""


def test_any_cachebuster_is_fine() -> None:
    """It only keeps caches away: a long, repeated or odd one leaves the hit counted."""
    for cachebuster in ("x" * 500, "1&cachebuster=2", "%FF", "[CACHEBUSTER]"):
        assert parse_imptr(f"id=1&cachebuster={cachebuster}").problems == ()


def test_xandr_js_tracker_and_code() -> None:
    q = parse_imptr("code=my-code&t=1")
    assert (q.code, q.tracker_id, q.javascript, q.reason) == ("my-code", "", True, "")


def test_xandr_requires_id_or_code() -> None:
    assert parse_imptr("t=2").problems == (Malformed("id", "required"),)


def test_xandr_bad_t_is_malformed() -> None:
    assert parse_imptr("id=1&t=3").problems == (Malformed("t", "invalid_value"),)


def test_redir_takes_everything_after_it_unparsed() -> None:
    q = parse_imptr("id=1&t=2&redir=https://shop.example/p?a=1&b=2&id=999&t=1")
    assert q.redirect == "https://shop.example/p?a=1&b=2&id=999&t=1"
    assert (q.tracker_id, q.javascript) == ("1", False)  # params inside the target don't count


def test_redir_first_occurrence_wins() -> None:
    q = parse_imptr("redir=https://a.example/?redir=https://b.example/")
    assert q.redirect == "https://a.example/?redir=https://b.example/"
    assert q.problems == (Malformed("id", "required"),)


def test_wholly_encoded_redir_is_decoded_once() -> None:
    q = parse_imptr("id=1&redir=https%3A%2F%2Fshop.example%2Fp%3Fa%3D1%26q%3D%2520")
    assert q.redirect == "https://shop.example/p?a=1&q=%20"


def test_a_parameter_named_like_redir_is_not_redir() -> None:
    q = parse_imptr("id=1&xredir=https://evil.example/")
    assert q.redirect == ""
    assert q.reason == ""


@pytest.mark.parametrize(
    "target", ["javascript:alert(1)", "//evil.example/", "ftp://x/", "https://a.example/\x01"]
)
def test_unsafe_redir_is_dropped_without_making_the_hit_malformed(target: str) -> None:
    q = parse_imptr(f"id=1&redir={target}")
    assert (q.redirect, q.redirect_problem) == ("", "invalid_value")
    assert (q.problems, q.reason) == ((), "")


def test_an_encoded_redir_with_spaces_or_non_ascii_is_encoded_again() -> None:
    q = parse_imptr("id=1&redir=https%3A%2F%2Fwww.shop.example%2Fa%20b%2Fcaf%C3%A9%3Fq%3D%22x%22")
    assert q.redirect == "https://www.shop.example/a%20b/caf%C3%A9?q=%22x%22"
    assert (q.redirect_problem, q.reason) == ("", "")


def test_a_raw_utf8_redir_is_encoded() -> None:
    q = parse_imptr("id=1&redir=https://www.shop.example/café?q=東京&id={impression_id}")
    assert q.redirect == (
        "https://www.shop.example/caf%C3%A9?q=%E6%9D%B1%E4%BA%AC&id=%7Bimpression_id%7D"
    )
    assert (q.redirect_problem, q.reason) == ("", "")


@pytest.mark.parametrize("macro", ["[REDIRECT_URL]", "${CLICK_URL}", "%%CLICK_URL%%"])
def test_an_unexpanded_redir_macro_means_no_redirect(macro: str) -> None:
    q = parse_imptr(f"id=1&ancost=[ANCOST]&cachebuster=[CACHEBUSTER]&t=2&redir={macro}")
    assert (q.redirect, q.redirect_problem, q.reason) == ("", "", "")


def test_redir_keeps_its_own_percent_escapes() -> None:
    q = parse_imptr("id=1&redir=https://a.example/?q=%0D%0A")
    assert q.redirect == "https://a.example/?q=%0D%0A"  # still encoded: harmless in a header


def test_encoded_crlf_in_an_encoded_redir_is_refused() -> None:
    q = parse_imptr("id=1&redir=https%3A%2F%2Fa.example%2F%0D%0ASet-Cookie%3A%20x%3D1")
    assert (q.redirect, q.redirect_problem, q.reason) == ("", "invalid_value", "")


def test_empty_redir_means_no_redirect() -> None:
    q = parse_imptr("id=1&redir=")
    assert (q.redirect, q.reason) == ("", "")


@pytest.mark.parametrize("cost", ["0", "1.5", "0.000123", "12"])
def test_ancost_accepts_plain_decimals_as_strings(cost: str) -> None:
    assert parse_imptr(f"id=1&ancost={cost}").media_cost == cost


@pytest.mark.parametrize(("cost", "stored"), [(".5", "0.5"), ("5.", "5"), ("0.", "0")])
def test_ancost_without_digits_on_one_side_is_read_as_the_decimal_it_is(
    cost: str, stored: str
) -> None:
    assert parse_imptr(f"id=1&ancost={cost}").media_cost == stored


@pytest.mark.parametrize(
    ("cost", "stored"),
    [
        ("0.30000000000000004", "0.3"),  # a float's digits: rounded to 9 places
        ("0.0021000000000000003", "0.0021"),
        ("0.0000000015", "0.000000002"),
        ("0.0000000001", "0"),
        ("5e-7", "0.0000005"),  # JavaScript's String(0.0000005)
        ("2.5E-6", "0.0000025"),
        ("1e3", "1000"),
        ("1e%2B3", "1000"),
        (".5e1", "5"),
        ("999999999999.999999999", "999999999999.999999999"),
    ],
)
def test_ancost_as_a_program_writes_a_float_is_read_as_its_decimal(cost: str, stored: str) -> None:
    q = parse_imptr(f"id=1&ancost={cost}")
    assert (q.media_cost, q.problems) == (stored, ())


@pytest.mark.parametrize(
    "cost",
    [
        "-1",
        "-1e3",
        "NaN",
        "inf",
        "1,5",
        "0x10",
        ".",
        "1.2.3",
        "..5",
        "%EF%BC%95",
        ".%D9%A5",
        "1e",
        "e5",
        "1e12",
        "1e1000",
        "999999999999.9999999999",  # 10^12 once rounded
        "1.5E+2",  # "+" is a space in a query
    ],
)
def test_ancost_rejects_anything_else(cost: str) -> None:
    q = parse_imptr(f"id=1&ancost={cost}")
    assert q.media_cost == ""
    assert q.problems == (Malformed("ancost", "invalid_value"),)


@pytest.mark.parametrize("macro", ["[ANCOST]", "${AUCTION_PRICE}", "%%COST%%", "{cost}"])
def test_unexpanded_ancost_macro_counts_as_absent(macro: str) -> None:
    q = parse_imptr(f"id=1&ancost={macro}")
    assert (q.media_cost, q.reason) == ("", "")


# -- never raises ---------------------------------------------------------------------------------


def test_random_garbage_never_raises() -> None:
    rng = random.Random(4)
    alphabet = "aidoubsub1_=&%+;#?/:редир\x00\udcff\U0001f600FFC3E2" + "0123456789"
    for _ in range(3000):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 60)))
        for candidate in (raw, "aid=1&oid=2&" + raw, "id=1&redir=" + raw):
            imp = parse_imp(candidate)
            imptr = parse_imptr(candidate)
            assert imp.reason in ("", MALFORMED)
            assert imptr.reason in ("", MALFORMED)
            assert imptr.redirect == "" or imptr.redirect.startswith(("http", "HTTP"))


def test_lone_surrogates_in_the_raw_string_are_malformed() -> None:
    assert parse_imp("aid=1&oid=\udcff").problems == (Malformed("oid", "invalid_encoding"),)
