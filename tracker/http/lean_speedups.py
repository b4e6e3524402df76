"""Whether the C parsers of the pixel path (``tracker/http/_lean.c``) are in use.

The package builds them when it is installed and a C compiler is there (setup.py); without one
the Python parsers, their reference, serve alone. ``TRACKER_PURE_PYTHON=1`` leaves the C module
unused (to compare, or to rule it out). ``./run test`` requires it built unless that is set:
a silently failed build must not pass for a tested one.
"""

from __future__ import annotations

from types import ModuleType

from tracker.settings import SettingsError, pure_python_from_env


def module() -> ModuleType | None:
    """The C module, or None when it is not built or ``TRACKER_PURE_PYTHON`` says not to use it.
    A bad value is not refused here, at import: ``Settings.from_env`` refuses it at start-up,
    naming the variable."""
    try:
        if pure_python_from_env():
            return None
    except SettingsError:
        pass
    try:
        from tracker.http import _lean
    except ImportError:
        return None
    return _lean


def in_use() -> bool:
    return module() is not None
