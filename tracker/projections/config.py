"""ConfigState: the current configuration, folded from ``TrackerConfigured`` events.

Pure: no I/O, no clock, no logging. Unlike the other folds, ``apply`` updates the state in place
and returns it: a configuration holds many objects and one event touches one, so copying the
state per event would make a replay quadratic. The state is owned by one task (the config tail,
``tracker.config.live``); readers on the same event loop only ever see it between events.
"""

from __future__ import annotations

from typing import Any

from tracker.config import model
from tracker.config.model import Token, Tracker
from tracker.events import AnyEvent, ConversionReceived, ImpressionSeen, TrackerConfigured


class ConfigState:
    """Every configuration object by kind and id (deleted ones included), plus lookup indexes."""

    __slots__ = ("by_tenant", "events", "objects", "position", "tokens", "tracker_codes")

    def __init__(self) -> None:
        self.position = ""  # config stream entry id of the last event applied ('' = none)
        self.events = 0  # configuration events applied
        self.objects: dict[str, dict[int, Any]] = {
            kind: {} for kind in model.TYPES if kind != model.TOKEN
        }
        # (tenant, kind) -> id -> object, for listings; same objects as ``objects``
        self.by_tenant: dict[tuple[str, str], dict[int, Any]] = {}
        self.tokens: dict[str, Token] = {}  # token id -> token (revoked ones included)
        self.tracker_codes: dict[str, set[int]] = {}  # code -> ids of live trackers with it

    def get(self, kind: str, object_id: int) -> Any:
        """The object, or None when it never existed (deleted objects are returned)."""
        return self.objects[kind].get(object_id)

    def of_tenant(self, tenant: str, kind: str) -> dict[int, Any]:
        return self.by_tenant.get((tenant, kind), {})


def apply(state: ConfigState, event: AnyEvent, position: str = "") -> ConfigState:
    """Fold one event into ``state`` (in place; see the module docstring) and return it."""
    match event:
        case TrackerConfigured():
            _configure(state, event)
        case ImpressionSeen() | ConversionReceived():
            pass
    if position:
        state.position = position
    return state


def _configure(state: ConfigState, event: TrackerConfigured) -> None:
    state.events += 1
    obj = model.from_snapshot(event.kind, event.snapshot)
    if event.kind == model.TOKEN:
        previous_token = state.tokens.get(event.object_id)
        if previous_token is None or previous_token.version < event.version:
            state.tokens[event.object_id] = obj
        return
    by_id = state.objects[event.kind]
    object_id = int(event.object_id)
    previous = by_id.get(object_id)
    if previous is not None and previous.version >= event.version:
        return  # an older or repeated version: the newest wins, so replays are idempotent
    by_id[object_id] = obj
    state.by_tenant.setdefault((event.tenant, event.kind), {})[object_id] = obj
    if event.kind == model.TRACKER:
        _index_code(state, previous, obj)


def _index_code(state: ConfigState, previous: Tracker | None, tracker: Tracker) -> None:
    if previous is not None and previous.code:
        ids = state.tracker_codes.get(previous.code)
        if ids is not None:
            ids.discard(previous.id)
            if not ids:
                del state.tracker_codes[previous.code]
    if tracker.code and tracker.state != model.DELETED:
        state.tracker_codes.setdefault(tracker.code, set()).add(tracker.id)
