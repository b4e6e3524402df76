"""Settings: defaults, and a clear error naming the variable for every bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracker.settings import Settings, SettingsError


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.redis_url, s.partitions, s.data_dir, s.port) == (None, 4, Path("var"), 8080)
    assert s.appendfsync == "everysec"


def test_values_are_read() -> None:
    s = Settings.from_env(
        {"REDIS_URL": "redis://h:1/0", "TRACKER_PARTITIONS": "8", "TRACKER_APPENDFSYNC": "ALWAYS"}
    )
    assert (s.redis_url, s.partitions, s.appendfsync) == ("redis://h:1/0", 8, "always")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REDIS_URL", "localhost:6379"),
        ("TRACKER_PARTITIONS", "0"),
        ("TRACKER_PARTITIONS", "four"),
        ("TRACKER_PORT", "70000"),
        ("TRACKER_APPENDFSYNC", "no"),
        ("TRACKER_LOG_LEVEL", "loud"),
        ("TRACKER_LOG_FORMAT", "xml"),
        ("TRACKER_IDEMPOTENCY_TTL_SECONDS", "5"),
        ("TRACKER_TRUST_FORWARDED", "maybe"),
        ("TRACKER_TRUST_FORWARDED", "11"),
        ("TRACKER_TRUST_FORWARDED", "-1"),
        ("TRACKER_PURE_PYTHON", "maybe"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    "url",
    [
        "http://user:hunter2@redis.example:6379/0",
        "unix:/var/run/redis.sock?password=hunter2",  # not unix://
        "redis:/hunter2@host",
    ],
)
def test_a_bad_redis_url_is_not_echoed(url: str) -> None:
    with pytest.raises(SettingsError, match="REDIS_URL") as info:
        Settings.from_env({"REDIS_URL": url})
    assert "hunter2" not in str(info.value)


def test_a_bad_secret_key_is_not_echoed() -> None:
    with pytest.raises(SettingsError, match="TRACKER_SECRET_KEY") as info:
        Settings.from_env({"TRACKER_SECRET_KEY": "hunter2-and-more"})
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("raw", "hops"), [("0", 0), ("1", 1), ("2", 2), ("true", 1), ("on", 1), ("false", 0)]
)
def test_trust_forwarded_is_a_number_of_proxies(raw: str, hops: int) -> None:
    assert Settings.from_env({"TRACKER_TRUST_FORWARDED": raw}).trust_forwarded == hops


@pytest.mark.parametrize(
    ("raw", "pure"), [("1", True), ("true", True), ("0", False), ("off", False), ("", False)]
)
def test_pure_python_is_a_flag(raw: str, pure: bool) -> None:
    assert Settings.from_env({"TRACKER_PURE_PYTHON": raw}).pure_python is pure
