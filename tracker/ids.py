"""Identifiers: UUIDv7 event ids, and self-validating impression ids.

An impression id is ``<uuid7 hex, 32 chars><tag, 12 hex chars>``: time-ordered, unique, and
carrying a truncated HMAC-SHA256 tag under a server key, so a postback naming an id we never
issued (or a mangled one) is judged ``broken`` without a lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import zlib

import uuid_utils

IMPRESSION_ID_LENGTH = 44
_TAG_HEX = 12


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

    def _tag(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()[:_TAG_HEX]

    def mint(self) -> str:
        body = uuid_utils.uuid7().hex
        return body + self._tag(body)

    def verify(self, impression_id: str) -> bool:
        if len(impression_id) != IMPRESSION_ID_LENGTH:
            return False
        body, tag = impression_id[:-_TAG_HEX], impression_id[-_TAG_HEX:]
        try:
            int(body, 16)
        except ValueError:
            return False
        return hmac.compare_digest(tag, self._tag(body))


def stable_hash(value: str) -> int:
    """A hash that is the same in every process and version (unlike ``hash()``)."""
    return zlib.crc32(value.encode())
