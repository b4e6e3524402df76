"""Tag export strings, compared with the seeds' examples exactly."""

from __future__ import annotations

import pytest

from tracker.config import tags


def test_image_tag_as_in_seed_004() -> None:
    macros = tags.parse_macros("CACHEBUSTER,ANCOST,REDIRECT_URL")
    url = tags.tracker_url("https://ib.example.com", 2766, "image", macros)
    # seed 004: imptr?id=2766&cachebuster=[CACHEBUSTER]&ancost=[ANCOST]&t=2&redir=[REDIRECT_URL]
    assert url == (
        "https://ib.example.com/imptr?id=2766&cachebuster=[CACHEBUSTER]&ancost=[ANCOST]"
        "&t=2&redir=[REDIRECT_URL]"
    )
    assert tags.tracker_tag("https://ib.example.com", 2766, "Test", "image", macros) == (
        f'<!-- Imp Tracker - Test - DO NOT MODIFY --> <img src="{url}" width="1" height="1" />'
        " <!-- End of Imp Tracker -->"
    )


def test_redir_always_last_and_js_is_t1() -> None:
    macros = tags.parse_macros("redirect_url, cachebuster")
    url = tags.tracker_url("http://t.example", 5, "js", macros)
    assert url == "http://t.example/imptr?id=5&cachebuster=[CACHEBUSTER]&t=1&redir=[REDIRECT_URL]"
    tag = tags.tracker_tag("http://t.example", 5, "x", "js", macros)
    assert f'<script src="{url}" type="text/javascript"></script>' in tag


def test_secure_is_https_and_defaults() -> None:
    url = tags.tracker_url("http://t.example/base", 531, "secure", tags.parse_macros(None))
    # seed 002's examples: id, cachebuster, ancost
    assert (
        url == "https://t.example/base/imptr?id=531&cachebuster=[CACHEBUSTER]&ancost=[ANCOST]&t=2"
    )
    assert tags.parse_macros("") == []


def test_bad_requests() -> None:
    with pytest.raises(tags.TagError, match="unknown macro"):
        tags.parse_macros("CACHEBUSTER,CLICK_URL")
    with pytest.raises(tags.TagError, match="format"):
        tags.tracker_url("http://t.example", 1, "flash", [])
    with pytest.raises(tags.TagError, match="subs"):
        tags.impression_link("http://t.example", 1, 2, subs=9)


def test_names_cannot_break_the_comment() -> None:
    tag = tags.tracker_tag("http://t.example", 1, "a --> <script>", "image", [])
    assert tag.count("-->") == 2


def test_affise_pixel_as_in_seed_000() -> None:
    # seed 000: <img src="http://rocketcompany.imp2aff.com/imp?aid=1&oid=102&sub1=...&sub3=...
    assert tags.impression_pixel("http://rocketcompany.imp2aff.com", 102, 1) == (
        '<img src="http://rocketcompany.imp2aff.com/imp?aid=1&oid=102'
        "&sub1={your_affiliate_macro1}&sub2={your_affiliate_macro2}&sub3={your_affiliate_macro3}"
        '" height="1" width="1" alt="">'
    )
    assert (
        tags.impression_link("http://t.example", 7, 8, subs=0) == "http://t.example/imp?aid=8&oid=7"
    )


def test_public_url_setting() -> None:
    from tracker.settings import Settings, SettingsError

    env = {"TRACKER_PUBLIC_URL": "https://t.example.com/x/"}
    assert Settings.from_env(env).public_url == "https://t.example.com/x"
    assert Settings.from_env({}).public_url == ""
    for bad in ("t.example.com", "ftp://t.example.com", "https://t.example.com/?a=1", "/rel"):
        with pytest.raises(SettingsError, match="TRACKER_PUBLIC_URL"):
            Settings.from_env({"TRACKER_PUBLIC_URL": bad})
