"""Query strings of the pixel endpoints (``/imp``, ``/imptr``), parsed from the raw string.

Pure: no I/O. Nothing here raises on any input: a bad parameter becomes a ``Malformed`` entry
(which parameter, which problem) in ``problems``, the parameters that were fine are still filled
in, and ``reason`` is the stable verdict code. Pass ``request.rel_url.raw_query_string`` (still
percent-encoded): ``redir`` must be cut from the raw string before anything is decoded.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final, Literal
from urllib.parse import quote, unquote_to_bytes

import msgspec

from tracker.http import lean_speedups
from tracker.http.pixel import is_safe_location

_lean = lean_speedups.module()

MALFORMED: Final = "malformed_parameters"  # the verdict reason for any problem below

MAX_ID_CHARS: Final = 128  # aid, oid, imp_id, env_id, dest_id, id, code
MAX_SUB_CHARS: Final = 512  # sub1..sub8
MAX_CONSENT_CHARS: Final = 4096  # a TCF string with many vendors runs to a few KB
MAX_REDIRECT_CHARS: Final = 4096

SUBS: Final = tuple(f"sub{i}" for i in range(1, 9))
_AFFISE: Final = ("aid", "oid")
_FRESHPAINT: Final = ("env_id", "dest_id")
_FRESHPAINT_SET: Final = frozenset(_FRESHPAINT)
_PRIVACY: Final = ("gdpr", "gdpr_consent")
_IMP_PARAMS: Final = frozenset((*_AFFISE, *_FRESHPAINT, "imp_id", *SUBS, *_PRIVACY))
# cachebuster only keeps caches away: it is not read (nor stored), so no value of it, however long
# or repeated, makes a hit malformed
_IMPTR_PARAMS: Final = frozenset(("id", "code", "t", "ancost", "sig", *_PRIVACY))
_LIMITS: Final = {
    **dict.fromkeys(SUBS, MAX_SUB_CHARS),
    "gdpr_consent": MAX_CONSENT_CHARS,
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# ancost: a plain non-negative decimal, stored as given; ".5" and "5." too (read as 0.5 and 5)
_DECIMAL = re.compile(r"[0-9]{1,12}(?:\.[0-9]{0,9})?|\.[0-9]{1,9}")  # ASCII digits only
# ... or one a program wrote from a float: more decimals ("0.30000000000000004"), an exponent
# (JavaScript writes 5e-7): read as the decimal it is, rounded to 9 places, below 10^12
_FLOAT = re.compile(r"(?:[0-9]{1,40}(?:\.[0-9]{0,40})?|\.[0-9]{1,40})(?:[eE][+-]?[0-9]{1,3})?")
_NANO: Final = Decimal("1e-9")
_MAX_COST: Final = Decimal("1e12")
_MACRO = re.compile(r"\[[A-Z_0-9]+\]|\$\{[A-Za-z_0-9]+\}|%%[A-Za-z_0-9]+%%|\{[a-z_0-9]+\}")
_REDIR: Final = "redir="

Problem = Literal["required", "too_long", "invalid_encoding", "invalid_value", "repeated"]


class Malformed(msgspec.Struct, frozen=True):
    parameter: str  # the query parameter's name
    problem: Problem


class _Parsed(msgspec.Struct, frozen=True, kw_only=True):
    gdpr: str = ""  # "1", "0", or "" when not said (see _gdpr)
    gdpr_consent: str = ""  # as given; tracker.privacy judges it
    problems: tuple[Malformed, ...] = ()

    @property
    def reason(self) -> str:
        """``malformed_parameters`` when anything was wrong, else ""."""
        return MALFORMED if self.problems else ""


class ImpQuery(_Parsed, frozen=True, kw_only=True):
    """``GET /imp``: Affise (``aid``, ``oid``, subs) or Freshpaint (``env_id``, ``dest_id``)."""

    dialect: Literal["affise", "freshpaint"]
    affiliate_id: str = ""  # aid
    offer_id: str = ""  # oid
    subs: dict[str, str] = {}  # sub1..sub8 that were given and non-empty
    env_id: str = ""
    dest_id: str = ""
    external_imp_id: str = ""  # imp_id: the affiliate's / partner's own id


class ImptrQuery(_Parsed, frozen=True, kw_only=True):
    """``GET /imptr``: the Xandr impression tracker URL."""

    tracker_id: str = ""  # id
    code: str = ""  # the tracker's custom code, an alternative to id
    javascript: bool = False  # t=1; t=2 (image) is the default
    t_given: str = ""  # t as given when valid ("1", "2"), "" when absent (or invalid)
    media_cost: str = ""  # ancost as a decimal string; "" when absent or an unexpanded macro
    redirect: str = ""  # everything after the first redir=, decoded once if wholly encoded
    redirect_sig: str = ""  # sig: our signature of the redirect target (allows it off-list)
    # Why a ``redir`` given was dropped ("invalid_encoding", "too_long", "invalid_value"); not
    # one of ``problems``: a bad target does not make the impression malformed.
    redirect_problem: str = ""


def _decode(raw: str) -> str | None:
    """Form-decode one name or value; None when it is not valid UTF-8."""
    if raw.isascii() and "%" not in raw and "+" not in raw:
        return raw
    try:
        return unquote_to_bytes(raw.replace("+", " ")).decode("utf-8")
    except UnicodeError:  # invalid UTF-8 after decoding, or lone surrogates in the input
        return None


def _split(raw: str, known: frozenset[str]) -> tuple[dict[str, str], list[Malformed]]:
    """Known parameters by name (decoded, checked); unknown ones are ignored. From the C parser
    where it reads the query (an ASCII one, the usual), else from ``split_py``."""
    if _lean is not None:
        split = _lean.split_query(raw, known, _LIMITS, MAX_ID_CHARS)
        if split is not NotImplemented:
            values, problems = split
            return values, [Malformed(name, problem) for name, problem in problems]
    return split_py(raw, known)


def split_py(raw: str, known: frozenset[str]) -> tuple[dict[str, str], list[Malformed]]:
    """``_split``'s reference: the C parser must read every query as this does."""
    values: dict[str, str] = {}
    problems: list[Malformed] = []
    for part in raw.split("&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition("=")
        name = raw_name  # the usual case: a plain known name needs no decoding
        if name not in known:
            decoded = _decode(raw_name)
            if decoded is None or decoded not in known:  # an undecodable name is no known one
                continue
            name = decoded
        if name in values:
            problems.append(Malformed(name, "repeated"))
            continue
        value = _decode(raw_value)
        if value is None:
            problems.append(Malformed(name, "invalid_encoding"))
        elif len(value) > _LIMITS.get(name, MAX_ID_CHARS):
            problems.append(Malformed(name, "too_long"))
        elif not value.isprintable() and _CONTROL.search(value):  # printable: no controls
            problems.append(Malformed(name, "invalid_value"))
        else:
            values[name] = value
    return values, problems


def _gdpr(values: dict[str, str], problems: list[Malformed]) -> str:
    """The gdpr flag: "1" (GDPR applies), "0" (it does not) or "" (not said: absent, empty,
    or a macro the ad server did not fill in). A signal that is there but unclear
    (``gdpr=0&gdpr=1``, a value that cannot be read, ``gdpr=maybe``) is taken as "1": the
    privacy-preserving reading."""
    flag = values.get("gdpr", "")
    if _bad(problems, "gdpr"):
        return "1"
    if not flag or _MACRO.fullmatch(flag):
        return ""
    return _GDPR_WORDS.get(flag.strip().lower(), "1")


_GDPR_WORDS: Final = {"1": "1", "true": "1", "yes": "1", "0": "0", "false": "0", "no": "0"}


def _bad(problems: list[Malformed], name: str) -> bool:
    return bool(problems) and any(p.parameter == name for p in problems)


def _require(values: dict[str, str], problems: list[Malformed], *names: str) -> None:
    for name in names:
        if not values.get(name) and not _bad(problems, name):
            problems.append(Malformed(name, "required"))


def parse_imp(raw: str) -> ImpQuery:
    """Parse ``/imp``: Freshpaint when ``env_id`` or ``dest_id`` is given, else Affise."""
    values, problems = _split(raw, _IMP_PARAMS)
    imp_id = values.get("imp_id")
    if imp_id and _MACRO.fullmatch(imp_id):  # an ad server left the macro unfilled:
        del values["imp_id"]  # no id, so no duplicate claim on the macro's text
    freshpaint = not _FRESHPAINT_SET.isdisjoint(values)
    if not freshpaint and problems:
        freshpaint = any(_bad(problems, n) for n in _FRESHPAINT)
    if freshpaint:
        _require(values, problems, *_FRESHPAINT, "imp_id")
    else:
        _require(values, problems, *_AFFISE)
    return ImpQuery(
        dialect="freshpaint" if freshpaint else "affise",
        affiliate_id=values.get("aid", ""),
        offer_id=values.get("oid", ""),
        subs={name: values[name] for name in SUBS if values.get(name)},
        env_id=values.get("env_id", ""),
        dest_id=values.get("dest_id", ""),
        external_imp_id=values.get("imp_id", ""),
        gdpr=_gdpr(values, problems),
        gdpr_consent=values.get("gdpr_consent", ""),
        problems=tuple(problems),
    )


def _split_redir(raw: str) -> tuple[str, str | None]:
    """(the parameters before ``redir``, the raw target after the first ``redir=``, or None)."""
    if raw.startswith(_REDIR):
        return "", raw[len(_REDIR) :]
    at = raw.find("&" + _REDIR)
    if at < 0:
        return raw, None
    return raw[:at], raw[at + 1 + len(_REDIR) :]


# What a decoded target keeps as it is: RFC 3986's reserved and unreserved characters and "%";
# anything else (a space, a non-ASCII character, a quote) is percent-encoded again (as UTF-8).
_URL_SAFE: Final = "!#$%&'()*+,-./:;=?@[]_~"


def _redirect(target: str) -> tuple[str, str]:
    """(the target, ""), or ("", the problem with it). A target wholly percent-encoded
    (``https%3A%2F%2F…``) is decoded once; then what a URL cannot hold as is (spaces, non-ASCII
    characters) is encoded again (a raw target only when it has non-ASCII: the lean path reads
    raw UTF-8). An ad server's unexpanded macro (``[REDIRECT_URL]``) is no target. A bad target
    never makes the hit malformed: the pixel answers instead of redirecting, and the event
    records why (``redirect_refused``)."""
    if _MACRO.fullmatch(target):
        return "", ""
    encode = not target.isascii()
    if target[:8].lower().startswith(("http%3a", "https%3a")):
        decoded = _decode(target)
        if decoded is None:
            return "", "invalid_encoding"
        target, encode = decoded, True
    if _CONTROL.search(target):  # e.g. an encoded CR/LF: header injection, never a URL
        return "", "invalid_value"
    if encode:
        try:
            target = quote(target, safe=_URL_SAFE)
        except UnicodeEncodeError:  # a lone surrogate: bytes that were not UTF-8
            return "", "invalid_encoding"
    if len(target) > MAX_REDIRECT_CHARS:
        return "", "too_long"
    if not is_safe_location(target):
        return "", "invalid_value"
    return target, ""


def _media_cost(values: dict[str, str], problems: list[Malformed]) -> str:
    cost = values.get("ancost", "")
    if not cost or _MACRO.fullmatch(cost):  # an ad server that did not fill [ANCOST] in
        return ""
    if not _DECIMAL.fullmatch(cost):
        value = Decimal(cost) if _FLOAT.fullmatch(cost) else _MAX_COST
        if value < _MAX_COST:  # before rounding: 10^999 has no 9 places in Decimal's precision
            value = value.quantize(_NANO, ROUND_HALF_EVEN)
        if value >= _MAX_COST:
            problems.append(Malformed("ancost", "invalid_value"))
            return ""
        return f"{value:f}".rstrip("0").removesuffix(".")
    if cost.startswith("."):
        return "0" + cost
    return cost.removesuffix(".")


def parse_imptr(raw: str) -> ImptrQuery:
    """Parse ``/imptr``; ``redir`` must come last, and everything after it is the target."""
    head, target = _split_redir(raw)
    values, problems = _split(head, _IMPTR_PARAMS)
    given = ("id", "code")
    if not any(values.get(n) or _bad(problems, n) for n in given):
        problems.append(Malformed("id", "required"))
    kind = values.get("t", "")
    if kind not in ("", "1", "2"):
        problems.append(Malformed("t", "invalid_value"))
    media_cost = _media_cost(values, problems)
    redirect, redirect_problem = _redirect(target) if target else ("", "")
    return ImptrQuery(
        tracker_id=values.get("id", ""),
        code=values.get("code", ""),
        javascript=kind == "1",
        t_given=kind if kind in ("1", "2") else "",
        media_cost=media_cost,
        redirect=redirect,
        redirect_problem=redirect_problem,
        redirect_sig=values.get("sig", ""),
        gdpr=_gdpr(values, problems),
        gdpr_consent=values.get("gdpr_consent", ""),
        problems=tuple(problems),
    )
