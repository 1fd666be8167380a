"""Device names: one documented character set, and safe display of untrusted text.

A device name is 1 to 64 characters from ``A-Z a-z 0-9 . _ -``, starting with a letter or a
digit (:data:`NAME_RULE`). Names become file names (``NAME.device``, sequence state) and appear
in terminals, logs and SIEM lines, so nothing else is allowed: no path separators, no ``..``,
no spaces, no control characters. :func:`printable` makes any other untrusted text (SenML
names, string values, details) safe for one terminal line.
"""

from __future__ import annotations

import re

from .errors import TwinlinkError

NAME_RULE = "1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class InvalidName(TwinlinkError, ValueError):
    """A device name outside the documented character set."""

    reason = "invalid_name"


def check_device_name(name: object) -> str:
    """Return ``name`` if it is a valid device name; raise :class:`InvalidName` otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = printable(str(name))[:40] if isinstance(name, str) else type(name).__name__
        raise InvalidName(f"invalid device name {shown!r}: use {NAME_RULE}")
    return name


def is_device_name(name: object) -> bool:
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with control, bidi-override and line-separator characters escaped as ``\\xNN`` /
    ``\\uNNNN``: safe to print on one terminal line (no ANSI sequences, no fake lines)."""
    return _CONTROL.sub(lambda m: _escape(m.group()), text)


def _escape(ch: str) -> str:
    o = ord(ch)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"
