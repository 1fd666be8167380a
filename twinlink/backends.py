"""Backend selection: the C core (``native``) when it is built, else the pure-Python reference.

``TWINLINK_BACKEND=python|native`` forces one at import; :func:`use` switches at run time (tests
run the whole suite under both). Both implement :class:`twinlink.frametypes.FrameBackend`;
:mod:`twinlink.frame` is the one caller and subscribes to switches (:func:`on_switch`) so that
it binds the active backend's functions once per switch, not once per frame.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from . import _backend_pure
from .frametypes import FrameBackend

_current: FrameBackend = _backend_pure
_why = "pure-Python path"
_native_error: str | None = None
_listeners: list[Callable[[FrameBackend], None]] = []

#: Written by setup.py next to the package when the C extension could not be built: its first
#: line says why (pip shows a build's output only when the build fails).
BUILD_ERROR_FILE = Path(__file__).with_name("_native_build_error.txt")


def _load_native() -> FrameBackend:
    global _native_error
    try:
        from . import _backend_native
    except ImportError as exc:  # the extension was not built (no compiler) or cannot load
        _native_error = f"{type(exc).__name__}: {exc}"
        build = build_error()
        if build:
            _native_error += f" (the C extension failed to build at install: {build})"
        raise
    return _backend_native


def _set(backend: FrameBackend, why: str) -> None:
    global _current, _why
    _current, _why = backend, why
    for fn in _listeners:
        fn(backend)


def use(name: str) -> None:
    """Switch to ``"native"`` or ``"python"``; raise ImportError if that one is unavailable."""
    if name == "python":
        _set(_backend_pure, "selected")
    elif name == "native":
        _set(_load_native(), "selected")
    else:
        raise ValueError("backend must be 'native' or 'python'")


def on_switch(fn: Callable[[FrameBackend], None]) -> None:
    """Call ``fn(backend)`` now and after every switch (how :mod:`twinlink.frame` rebinds)."""
    _listeners.append(fn)
    fn(_current)


def current() -> FrameBackend:
    """The active backend module."""
    return _current


def name() -> str:
    """``"native"`` or ``"python"``."""
    return _current.NAME


def explain() -> str:
    """One line: which backend is active and why."""
    return f"{name()} ({_why})"


def native_error() -> str | None:
    """Why the native backend could not be loaded, if it was tried and failed."""
    return _native_error


def build_error() -> str | None:
    """Why the C extension was not built at install time, if setup.py recorded a reason."""
    try:
        return BUILD_ERROR_FILE.read_text(encoding="utf-8").strip().splitlines()[0] or None
    except (OSError, IndexError):
        return None


def _init() -> None:
    forced = os.environ.get("TWINLINK_BACKEND", "").strip().lower()
    if forced == "python":
        _set(_backend_pure, "forced by TWINLINK_BACKEND=python")
        return
    try:
        native = _load_native()
    except ImportError:
        if forced == "native":
            raise
        _set(_backend_pure, f"C extension unavailable: {_native_error}")
        return
    _set(native, "forced by TWINLINK_BACKEND=native" if forced == "native"
         else "C extension twinlink._native loaded")


_init()
