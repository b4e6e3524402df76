"""TRACKER_PRIVACY_POLICY: strict unless the operator says otherwise, and nothing but a known
policy is accepted."""

from __future__ import annotations

import re
from typing import cast

import pytest

from tracker import privacy
from tracker.settings import Settings, SettingsError


def honours_do_not_track(policy: str) -> bool:
    """Whether a hit sending ``DNT: 1`` (no GDPR signal) is refused a visitor cookie."""
    decided = privacy.decide("203.0.113.7", "", "", {}, {"dnt": "1"}, cast(privacy.Policy, policy))
    return not decided.set_cookie


def test_the_policy_defaults_to_strict() -> None:
    assert Settings().privacy_policy == "strict"
    assert Settings.from_env({}).privacy_policy == "strict"
    assert Settings.from_env({"TRACKER_PRIVACY_POLICY": ""}).privacy_policy == "strict"


def test_the_default_policy_honours_do_not_track() -> None:
    """What strict means to a visitor: DNT gets no cookie and a truncated IP by default."""
    assert honours_do_not_track(Settings().privacy_policy)
    assert honours_do_not_track(Settings.from_env({}).privacy_policy)


@pytest.mark.parametrize(("raw", "policy"), [("permissive", "permissive"), ("Strict", "strict")])
def test_the_policy_is_read_from_the_environment(raw: str, policy: str) -> None:
    assert Settings.from_env({"TRACKER_PRIVACY_POLICY": raw}).privacy_policy == policy


def test_permissive_is_taken_when_asked_for() -> None:
    settings = Settings.from_env({"TRACKER_PRIVACY_POLICY": "permissive"})
    assert not honours_do_not_track(settings.privacy_policy)


@pytest.mark.parametrize("bad", ["lax", "none", "strict,permissive"])
def test_an_unknown_policy_is_refused_naming_the_variable(bad: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(f"TRACKER_PRIVACY_POLICY={bad!r}")) as raised:
        Settings.from_env({"TRACKER_PRIVACY_POLICY": bad})
    assert "strict" in str(raised.value)
    assert "permissive" in str(raised.value)
