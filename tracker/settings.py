"""Settings: read once from the environment at start, validated; nothing else reads os.environ."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, TypeVar
from urllib.parse import urlsplit

import msgspec

T = TypeVar("T")

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("auto", "json", "console")
APPENDFSYNC: Final = ("everysec", "always")
PRIVACY_POLICIES: Final = ("strict", "permissive")


class SettingsError(Exception):
    """A bad environment value; the message names the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    redis_url: str | None = None  # REDIS_URL; None = start the embedded redis-server
    partitions: int = 4  # TRACKER_PARTITIONS
    data_dir: Path = Path("var")  # TRACKER_DATA_DIR
    host: str = "127.0.0.1"  # TRACKER_HOST
    port: int = 8080  # TRACKER_PORT
    redis_port: int = 0  # TRACKER_REDIS_PORT: embedded server's TCP port; 0 = unix socket
    appendfsync: str = "everysec"  # TRACKER_APPENDFSYNC
    log_level: str = "info"  # TRACKER_LOG_LEVEL
    log_format: str = "auto"  # TRACKER_LOG_FORMAT
    idempotency_ttl_seconds: int = 7 * 24 * 3600  # TRACKER_IDEMPOTENCY_TTL_SECONDS
    batch_size: int = 500  # TRACKER_BATCH_SIZE: events per actor step / append script call
    public_url: str = ""  # TRACKER_PUBLIC_URL: base of exported tags; "" = http://HOST:PORT
    lookup_window_days: int = 30  # TRACKER_LOOKUP_WINDOW_DAYS: impression lookup entries' life
    secret_key: str = ""  # TRACKER_SECRET_KEY: signs impression ids; "" = one shared via Redis
    privacy_policy: str = "strict"  # TRACKER_PRIVACY_POLICY: strict | permissive
    # TRACKER_TRUST_FORWARDED: how many proxies in front append to X-Forwarded-For (0: none, the
    # peer is the client); the client IP is the entry that many from the right
    trust_forwarded: int = 0
    # TRACKER_PURE_PYTHON: leave the pixel path's C module unused (tracker.http.lean_speedups,
    # which reads it at import through pure_python_from_env)
    pure_python: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting; raise SettingsError naming the bad variable."""
        env = os.environ if environ is None else environ
        return cls(
            redis_url=_get(env, "REDIS_URL", _redis_url, None),
            partitions=_get(env, "TRACKER_PARTITIONS", _int_in(1, 1024), 4),
            data_dir=_get(env, "TRACKER_DATA_DIR", Path, Path("var")),
            host=_get(env, "TRACKER_HOST", str, "127.0.0.1"),
            port=_get(env, "TRACKER_PORT", _int_in(0, 65535), 8080),
            redis_port=_get(env, "TRACKER_REDIS_PORT", _int_in(0, 65535), 0),
            appendfsync=_get(env, "TRACKER_APPENDFSYNC", _choice(APPENDFSYNC), "everysec"),
            log_level=_get(env, "TRACKER_LOG_LEVEL", _choice(LOG_LEVELS), "info"),
            log_format=_get(env, "TRACKER_LOG_FORMAT", _choice(LOG_FORMATS), "auto"),
            idempotency_ttl_seconds=_get(
                env, "TRACKER_IDEMPOTENCY_TTL_SECONDS", _int_in(60, 365 * 24 * 3600), 7 * 24 * 3600
            ),
            batch_size=_get(env, "TRACKER_BATCH_SIZE", _int_in(1, 10_000), 500),
            public_url=_get(env, "TRACKER_PUBLIC_URL", _public_url, ""),
            lookup_window_days=_get(env, "TRACKER_LOOKUP_WINDOW_DAYS", _int_in(1, 365), 30),
            secret_key=_get(env, "TRACKER_SECRET_KEY", _secret, ""),
            privacy_policy=_get(env, "TRACKER_PRIVACY_POLICY", _choice(PRIVACY_POLICIES), "strict"),
            trust_forwarded=_get(env, "TRACKER_TRUST_FORWARDED", _hops, 0),
            pure_python=pure_python_from_env(env),
        )


def pure_python_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """TRACKER_PURE_PYTHON alone: read when the pixel modules are imported, before the other
    settings are (``Settings.from_env`` reads it too, so a bad value stops start-up)."""
    env = os.environ if environ is None else environ
    return _get(env, "TRACKER_PURE_PYTHON", _flag, False)


def _get(env: Mapping[str, str], name: str, parse: Callable[[str], T], default: T) -> T:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        # a URL may hold a password anywhere (user:pw@, ?password=): such values are not shown
        shown = " (its value not shown)" if name in _SECRET_NAMES else f"={raw!r}"
        raise SettingsError(f"{name}{shown}: {exc}") from None


_SECRET_NAMES: Final = frozenset({"TRACKER_SECRET_KEY", "REDIS_URL"})  # never echoed into a log


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return value

    return parse


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("expected a whole number") from None
        if not lo <= value <= hi:
            raise ValueError(f"expected {lo}..{hi}")
        return value

    return parse


def _redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    return raw


def _public_url(raw: str) -> str:
    """An absolute http(s) base URL without query or fragment; a trailing slash is dropped."""
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("expected an absolute http:// or https:// URL without query or fragment")
    return raw.strip().rstrip("/")


def _secret(raw: str) -> str:
    if len(raw) < 32:
        raise ValueError("expected at least 32 characters (e.g. `openssl rand -hex 32`)")
    return raw


_YES: Final = ("true", "yes", "on")
_NO: Final = ("false", "no", "off")


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value == "1" or value in _YES:
        return True
    if value == "0" or value in _NO:
        return False
    raise ValueError("expected 1 or 0 (or true/false)")


def _hops(raw: str) -> int:
    """A number of trusted proxies, 0..10; the flags true/yes/on and false/no/off mean 1 and 0."""
    value = raw.strip().lower()
    if value in _YES:
        return 1
    if value in _NO:
        return 0
    if not value.isdigit() or int(value) > 10:
        raise ValueError("expected the number of proxies in front, 0..10 (or true/false)")
    return int(value)
