"""gc_paused: the collector is off inside the block and back on after it, whatever happens."""

from __future__ import annotations

import gc

import pytest

from tracker.gcpause import gc_paused


def _fail_inside() -> None:
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():  # nested: the outer block re-enables it
            assert not gc.isenabled()
        assert not gc.isenabled()
        raise RuntimeError


def test_the_collector_is_paused_inside_and_restored_after_an_exception() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        _fail_inside()
    assert gc.isenabled()


def test_a_collector_paused_by_someone_else_stays_paused() -> None:
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
