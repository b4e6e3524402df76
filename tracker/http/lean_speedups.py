"""Whether the C parsers of the pixel path (``tracker/http/_lean.c``) are in use.

The package builds them when it is installed and a C compiler is there (setup.py); without one
the Python parsers, their reference, serve alone. ``TRACKER_PURE_PYTHON=1`` leaves the C module
unused (to compare, or to rule it out). ``./run test`` requires it built unless that is set:
a silently failed build must not pass for a tested one.
"""

from __future__ import annotations

import os
from types import ModuleType

PURE_PYTHON_ENV = "TRACKER_PURE_PYTHON"


def module() -> ModuleType | None:
    """The C module, or None when it is not built or ``TRACKER_PURE_PYTHON=1``."""
    if os.environ.get(PURE_PYTHON_ENV, "") == "1":
        return None
    try:
        from tracker.http import _lean
    except ImportError:
        return None
    return _lean


def in_use() -> bool:
    return module() is not None
