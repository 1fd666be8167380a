"""Backend selection: the C core (``native``) when it is built, else the pure-Python reference.

``TWINLINK_BACKEND=python|native`` forces one at import; :func:`use` switches at run time (tests
run the whole suite under both). Both backends expose the same functions with the same
arguments, bytes and exceptions; see :mod:`twinlink._backend_pure` for the reference surface.
"""

from __future__ import annotations

import os
from types import ModuleType

from . import _backend_pure

_current: ModuleType = _backend_pure
_why = "pure-Python path"
_native_error: str | None = None


def _load_native() -> ModuleType:
    global _native_error
    try:
        from . import _backend_native  # type: ignore[attr-defined]
    except ImportError as exc:  # the extension was not built (no compiler) or cannot load
        _native_error = f"{type(exc).__name__}: {exc}"
        raise
    return _backend_native  # type: ignore[no-any-return]


def use(name: str) -> None:
    """Switch to ``"native"`` or ``"python"``; raise ImportError if that one is unavailable."""
    global _current, _why
    if name == "python":
        _current, _why = _backend_pure, "selected"
    elif name == "native":
        _current, _why = _load_native(), "selected"
    else:
        raise ValueError("backend must be 'native' or 'python'")


def current() -> ModuleType:
    """The active backend module."""
    return _current


def name() -> str:
    """``"native"`` or ``"python"``."""
    return str(_current.NAME)


def explain() -> str:
    """One line: which backend is active and why."""
    return f"{name()} ({_why})"


def native_error() -> str | None:
    """Why the native backend could not be loaded, if it was tried and failed."""
    return _native_error


def _init() -> None:
    global _current, _why
    forced = os.environ.get("TWINLINK_BACKEND", "").strip().lower()
    if forced == "python":
        _current, _why = _backend_pure, "forced by TWINLINK_BACKEND=python"
        return
    try:
        _current = _load_native()
        _why = (
            "forced by TWINLINK_BACKEND=native"
            if forced == "native"
            else "C extension twinlink._native loaded"
        )
    except ImportError:
        if forced == "native":
            raise
        _current, _why = _backend_pure, f"C extension unavailable: {_native_error}"


_init()
