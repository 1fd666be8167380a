"""Time as twinlink shows and reads it: ISO 8601 UTC with milliseconds out, ISO 8601 or epoch
seconds in (the CLI, the dashboard and the JSON API share this one grammar)."""

from __future__ import annotations

from datetime import datetime, timezone

__all__ = ["iso", "parse_time"]


def iso(t: float | None) -> str | float | None:
    """``t`` (seconds since the epoch) as ISO 8601 UTC with milliseconds; None stays None."""
    if t is None:
        return None
    try:
        dt = datetime.fromtimestamp(float(t), timezone.utc)
    except (OverflowError, OSError, ValueError):
        return t
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> float:
    """Seconds since the epoch from ISO 8601 (``2026-11-30``, ``2026-11-30T16:38:27Z``,
    ``…+02:00``; no offset means UTC) or from a plain number of epoch seconds.
    Raises ValueError with what was expected."""
    s = text.strip()
    try:
        return float(s)
    except ValueError:
        pass
    iso_text = s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s
    try:
        dt = datetime.fromisoformat(iso_text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time or epoch seconds: {text!r} "
                         "(e.g. 2026-11-30, 2026-11-30T16:38:27Z, 1796056707)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()
