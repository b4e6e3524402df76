"""Properties of the pixel query parsers over generated queries (hypothesis): what an ad server
encodes is what the event gets back, whatever the order, the encoder or the parameters around
it; no input makes a parser raise; a redirect target that comes out is always safe to send."""

from __future__ import annotations

import functools
from collections.abc import Callable
from urllib.parse import quote, quote_plus

from hypothesis import example, given
from hypothesis import strategies as st

from tracker.http.pixel import is_safe_location
from tracker.http.query import (
    MAX_ID_CHARS,
    MAX_SUB_CHARS,
    SUBS,
    parse_imp,
    parse_imptr,
)

# Text a query value may hold: anything printable (non-ASCII included), no controls, no lone
# surrogates (they are not UTF-8, so no browser can send them).
_PRINTABLE = st.characters(blacklist_categories=("Cc", "Cs"))
_ids = st.text(_PRINTABLE, min_size=1, max_size=MAX_ID_CHARS)
_subs = st.dictionaries(
    st.sampled_from(SUBS), st.text(_PRINTABLE, min_size=1, max_size=MAX_SUB_CHARS), max_size=8
)
# parameters the pixel does not read, with names none of its parameters has
_others = st.dictionaries(
    st.text(st.characters(whitelist_categories=["Ll"]), min_size=4, max_size=8).filter(
        lambda n: not n.startswith(("sub", "gdpr", "env", "dest"))
    ),
    st.text(_PRINTABLE, max_size=20),
    max_size=3,
)
# how ad servers encode: %20 for a space, or + (form encoding)
_ENCODERS: dict[str, Callable[[str], str]] = {
    "quote": functools.partial(quote, safe=""),
    "quote_plus": functools.partial(quote_plus, safe=""),
}


@given(
    aid=_ids,
    oid=_ids,
    subs=_subs,
    imp_id=st.one_of(st.just(""), _ids),
    others=_others,
    encoder=st.sampled_from(sorted(_ENCODERS)),
    order=st.randoms(use_true_random=False),
)
@example(
    aid="a b",
    oid="1+1=2&x",
    subs={"sub1": "ü/?#%"},
    imp_id="",
    others={},
    encoder="quote_plus",
    order=None,
)
def test_affise_values_come_back_as_encoded(aid, oid, subs, imp_id, others, encoder, order):
    params = {"aid": aid, "oid": oid, **subs, **others}
    if imp_id:
        params["imp_id"] = imp_id
    encode = _ENCODERS[encoder]
    pairs = [f"{encode(k)}={encode(v)}" for k, v in params.items()]
    if order is not None:
        order.shuffle(pairs)
    q = parse_imp("&".join(pairs))
    assert q.problems == ()
    assert q.dialect == "affise"
    assert (q.affiliate_id, q.offer_id, q.external_imp_id) == (aid, oid, imp_id)
    assert q.subs == subs


@given(env_id=_ids, dest_id=_ids, imp_id=_ids, encoder=st.sampled_from(sorted(_ENCODERS)))
def test_freshpaint_values_come_back_as_encoded(env_id, dest_id, imp_id, encoder):
    encode = _ENCODERS[encoder]
    q = parse_imp(f"env_id={encode(env_id)}&dest_id={encode(dest_id)}&imp_id={encode(imp_id)}")
    assert q.problems == ()
    assert (q.dialect, q.env_id, q.dest_id, q.external_imp_id) == (
        "freshpaint",
        env_id,
        dest_id,
        imp_id,
    )


@given(name=st.sampled_from(("aid", "oid", *SUBS)), value=_ids, again=_ids)
def test_a_repeated_parameter_is_malformed_and_the_first_value_kept(name, value, again):
    base = "".join(f"{n}=1&" for n in ("aid", "oid") if n != name)
    q = parse_imp(f"{base}{name}={quote(value, safe='')}&{name}={quote(again, safe='')}")
    assert [(p.parameter, p.problem) for p in q.problems] == [(name, "repeated")]
    got = {"aid": q.affiliate_id, "oid": q.offer_id, **q.subs}
    assert got[name] == value


@given(st.text())
@example("aid=%ff&oid=%")
@example("=&&=&%zz=%C3")
@example("sub1=\ud800")
def test_parse_imp_never_raises(raw):
    q = parse_imp(raw)
    assert all(len(v) <= MAX_SUB_CHARS for v in q.subs.values())
    assert len(q.affiliate_id) <= MAX_ID_CHARS
    assert len(q.offer_id) <= MAX_ID_CHARS


@given(st.text(), st.text())
@example("id=1&redir=", "https%3A%2F%2Fx.example%0D%0ASet-Cookie:a=b")
@example("id=1&redir=", "https://x.example\\@evil.example/")
@example("id=1&redir=", "//evil.example/")
def test_parse_imptr_never_raises_and_only_yields_safe_targets(head, target):
    q = parse_imptr(f"{head}&redir={target}")
    if q.redirect:
        assert is_safe_location(q.redirect)
        assert q.redirect_problem == ""


@given(
    tracker_id=_ids,
    target=st.text(
        st.characters(blacklist_categories=("Cc", "Cs", "Zs"), blacklist_characters="\\"),
        max_size=60,
    ),
)
def test_everything_after_redir_is_the_target(tracker_id, target):
    url = f"https://shop.example/landing?a=1&b={target}&redir=inner"
    q = parse_imptr(f"id={quote(tracker_id, safe='')}&t=2&redir={url}")
    assert q.problems == ()
    assert q.tracker_id == tracker_id
    if url.isascii() and "%" not in target:  # sent as typed: the target is kept as typed
        assert q.redirect == url
    else:  # non-ASCII characters (or escapes) are encoded again: a browser reads it the same
        assert q.redirect.startswith("https://shop.example/landing?a=1&b=")
        assert q.redirect.endswith("&redir=inner")
