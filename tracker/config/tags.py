"""Tag export: Xandr impression tracker tags (seed 004) and Affise impression pixels / links
(seed 000), built from the public base URL. Pure: no I/O.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit, urlunsplit

FORMATS: Final = ("js", "image", "secure")
# Export-dialog macro -> (query parameter, placeholder); ``redir`` is always placed last, since
# Xandr reads everything after ``redir=`` as the target.
MACROS: Final = {
    "CACHEBUSTER": "cachebuster",
    "ANCOST": "ancost",
    "REDIRECT_URL": "redir",
}
DEFAULT_MACROS: Final = ("CACHEBUSTER", "ANCOST")
MAX_SUBS: Final = 8


class TagError(ValueError):
    """A bad export request: the message says what to send instead."""


def secure(base_url: str) -> str:
    parts = urlsplit(base_url)
    return urlunsplit(("https", parts.netloc, parts.path, "", ""))


def parse_macros(raw: str | None) -> list[str]:
    if raw is None:
        return list(DEFAULT_MACROS)
    names = [m.strip().upper() for m in raw.split(",") if m.strip()]
    unknown = [m for m in names if m not in MACROS]
    if unknown:
        raise TagError(f"unknown macro {unknown[0]!r}: expected some of {', '.join(MACROS)}")
    return list(dict.fromkeys(names))


def _comment(name: str) -> str:
    """A name safe inside an HTML comment."""
    return name.replace("--", "- -").replace(">", "&gt;").replace("<", "&lt;")


def tracker_url(base_url: str, tracker_id: int, fmt: str, macros: list[str]) -> str:
    """``BASE/imptr?id=N&cachebuster=[CACHEBUSTER]&ancost=[ANCOST]&t=2&redir=[REDIRECT_URL]``."""
    if fmt not in FORMATS:
        raise TagError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    base = secure(base_url) if fmt == "secure" else base_url
    params = [f"id={tracker_id}"]
    params += [f"{MACROS[m]}=[{m}]" for m in macros if MACROS[m] != "redir"]
    params.append("t=1" if fmt == "js" else "t=2")
    params += [f"redir=[{m}]" for m in macros if MACROS[m] == "redir"]
    return f"{base}/imptr?{'&'.join(params)}"


def tracker_tag(base_url: str, tracker_id: int, name: str, fmt: str, macros: list[str]) -> str:
    """The HTML snippet to paste as a piggyback pixel, as Xandr's export writes it."""
    url = tracker_url(base_url, tracker_id, fmt, macros)
    if fmt == "js":
        tag = f'<script src="{url}" type="text/javascript"></script>'
    else:
        tag = f'<img src="{url}" width="1" height="1" />'
    return (
        f"<!-- Imp Tracker - {_comment(name)} - DO NOT MODIFY --> {tag} <!-- End of Imp Tracker -->"
    )


def impression_link(base_url: str, offer_id: int, affiliate_id: int, subs: int = 3) -> str:
    """Affise's impression link: ``BASE/imp?aid=A&oid=O&sub1={your_affiliate_macro1}...``."""
    if not 0 <= subs <= MAX_SUBS:
        raise TagError(f"subs: expected 0..{MAX_SUBS}")
    params = [f"aid={affiliate_id}", f"oid={offer_id}"]
    params += [f"sub{i}={{your_affiliate_macro{i}}}" for i in range(1, subs + 1)]
    return f"{base_url}/imp?{'&'.join(params)}"


def impression_pixel(base_url: str, offer_id: int, affiliate_id: int, subs: int = 3) -> str:
    """Affise's impression pixel for an affiliate's own page."""
    link = impression_link(base_url, offer_id, affiliate_id, subs)
    return f'<img src="{link}" height="1" width="1" alt="">'
