"""Identifiers: UUIDv7 event ids, and self-validating impression ids.

An impression id is ``<uuid7 hex, 32 chars><tag, 12 hex chars>``: time-ordered, unique, and
carrying a truncated HMAC-SHA256 tag under a server key, so a postback naming an id we never
issued (or a mangled one) is judged ``broken`` without a lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import re
import zlib
from collections.abc import Callable

import uuid_utils

IMPRESSION_ID_LENGTH = 44
# RFC 3986's reserved characters, "%" and "\\" (browsers read it as "/" in http(s) URLs):
# escaped, they mean something else than typed (``%26`` in a value is not a parameter
# separator, ``%5C@`` is no host boundary), so ``signing_form`` keeps their escapes
_DELIMITERS = frozenset(":/?#[]@!$&'()*+,;=%\\")
_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_TAG_HEX = 12
_ROUTE_SLICE = slice(20, 32)  # the low 48 random bits of the uuid7 body
_HEX = "0123456789abcdef"


def _copyable_sha256() -> Callable[[bytes], hashlib._Hash]:
    """CPython's own SHA-256 (``_sha256``, ``_sha2`` from 3.12) where there is one: its
    ``copy()`` is a plain struct copy, where OpenSSL's duplicates an EVP context. A tag costs
    about 0.7 us instead of 1.0 (both keyed states are copied per tag); the digest is the same."""
    for module in ("_sha256", "_sha2"):
        try:
            return importlib.import_module(module).sha256  # type: ignore[no-any-return]
        except (ImportError, AttributeError):
            continue
    return hashlib.sha256


def new_event_id() -> str:
    return str(uuid_utils.uuid7())


def new_uuid7_hex() -> str:
    return uuid_utils.uuid7().hex


class ImpressionIds:
    """Mints and verifies impression ids under one server key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("impression id key must be at least 16 bytes")
        self._key = key
        # HMAC-SHA256 with its two keyed states computed once (RFC 2104): a tag is then two
        # hash copies instead of a fresh HMAC (1.9 us), see _copyable_sha256
        block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
        sha256 = _copyable_sha256()
        self._inner = sha256(bytes(b ^ 0x36 for b in block))
        self._outer = sha256(bytes(b ^ 0x5C for b in block))
        self._last_digit: dict[tuple[int, int], dict[str, str]] = {}  # see _routed

    def _tag(self, body: str) -> str:
        inner = self._inner.copy()
        inner.update(body.encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[: _TAG_HEX // 2].hex()

    def mint(self, route: int | None = None, partitions: int = 1) -> str:
        """A new id; with ``route``, one whose partition (``route_of``) is ``route``.

        Routing lets an event with an idempotency key land in the key's partition (where its
        idempotency key lives) while a conversion naming the id still finds the impression's.
        """
        body = uuid_utils.uuid7().hex
        if route is not None:
            last = self._last_digit.get((partitions, route))
            body = (
                body[:-1] + last[body[-1]]
                if last is not None
                else self._routed(body, route, partitions)
            )
        return body + self._tag(body)

    def _routed(self, body: str, route: int, partitions: int) -> str:
        if not 0 <= route < partitions:
            raise ValueError(f"route {route} is not a partition number below {partitions}")
        if 16 % partitions == 0:
            # n divides 16, so the last hex digit alone decides low % n: only it changes, by a
            # table made once per (n, route)
            last = {c: _HEX[d - d % partitions + route] for d, c in enumerate(_HEX)}
            self._last_digit[partitions, route] = last
            return body[:-1] + last[body[-1]]
        low = int(body[_ROUTE_SLICE], 16)
        low = low - low % partitions + route
        if low >= 1 << 48:
            low -= partitions
        return body[: _ROUTE_SLICE.start] + f"{low:012x}"

    def sign_redirect(self, tenant: str, target: str) -> str:
        """A signature letting ``/imptr`` redirect to ``target`` (``sig=`` before ``redir=``) on
        ``tenant``'s trackers only: one tenant's admin cannot open a redirect on another's.
        Signed in ``signing_form``: the target as typed and as an ad server percent-encodes it
        (``{impression_id}`` or ``%7Bimpression_id%7D``) share one signature."""
        form = signing_form(target)
        message = b"redir\x00" + tenant.encode() + b"\x00" + form.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]

    def verify_redirect(self, tenant: str, target: str, signature: str) -> bool:
        expected = self.sign_redirect(tenant, target)
        return hmac.compare_digest(signature.encode(), expected.encode())

    def verify(self, impression_id: str) -> bool:
        """Whether this key minted ``impression_id``; False (never an error) for any other text."""
        if len(impression_id) != IMPRESSION_ID_LENGTH or not impression_id.isascii():
            return False  # compare_digest refuses non-ASCII text
        body, tag = impression_id[:-_TAG_HEX], impression_id[-_TAG_HEX:]
        try:
            int(body, 16)
        except ValueError:
            return False
        return hmac.compare_digest(tag, self._tag(body))


def stable_hash(value: str) -> int:
    """A hash that is the same in every process and version (unlike ``hash()``)."""
    return zlib.crc32(value.encode())


def route_of(impression_id: str, partitions: int) -> int:
    """The partition number of an impression id: from its random bits when it is one of ours
    (so ``ImpressionIds.mint(route=...)`` can choose it), else a stable hash of the whole string."""
    if len(impression_id) == IMPRESSION_ID_LENGTH:
        try:
            return int(impression_id[_ROUTE_SLICE], 16) % partitions
        except ValueError:
            pass
    return stable_hash(impression_id) % partitions


def signing_form(url: str) -> str:
    """``url`` with every percent-escape decoded except those of delimiters: one form for a
    target typed with ``{``, ``|``, a space or non-ASCII characters and for the same target as
    ``/imptr`` reads it (re-encoded: ``%7B``, ``%7C``, ``%20``, UTF-8 escapes). Escaped bytes
    that are not UTF-8 stay as they are."""

    def decoded(run: re.Match[str]) -> str:
        escaped = run.group()
        text = bytes.fromhex(escaped.replace("%", "")).decode("utf-8", "surrogateescape")
        out, at = [], 0
        for char in text:
            if "\udc80" <= char <= "\udcff":  # a byte that is not UTF-8
                out.append(escaped[at : at + 3])
                at += 3
                continue
            width = len(char.encode("utf-8")) * 3
            out.append(escaped[at : at + width] if char in _DELIMITERS else char)
            at += width
        return "".join(out)

    return _ESCAPES.sub(decoded, url)
