"""ArcSight Common Event Format (CEF 0), read by ArcSight, QRadar, Sentinel and others.

``CEF:0|twinlink|twinlink|VERSION|RULE|NAME|SEVERITY|key=value ...``

Header fields escape ``\\`` and ``|``; extension values escape ``\\`` and ``=`` and write CR/LF
as ``\\r``/``\\n`` (the CEF spec's rules). Any other unsafe character (controls, bidi marks,
line separators) becomes visible ``\\xNN``/``\\uNNNN`` text, so no value can start a field,
an extension key or a line. Signature ID is the rule id, Name the event type, Severity the
catalogue's 0-10. Extensions use CEF's dictionary where one fits (rt, start, end, cnt, act,
outcome, reason, msg, externalId, deviceExternalId, cat, dvchost, deviceProcessName) and
labelled custom strings/numbers for the rest (cs1 kid, cs2 transport, cs3 source, cs4 legacy
reason, cn1 seq).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import events as _events
from . import Options, epoch_ms, escape, message

_HEADER_SPECIALS = {"\\": "\\\\", "|": "\\|"}
_EXT_SPECIALS = {"\\": "\\\\", "=": "\\=", "\n": "\\n", "\r": "\\r"}


#: Escaped length cap of a header field or an extension value (the detail has its own).
MAX_FIELD = 256
MAX_MSG = 512


def header(value: Any) -> str:
    return escape(str(value), _HEADER_SPECIALS, backslash="\\\\", limit=MAX_FIELD)


def ext(value: Any, limit: int = MAX_FIELD) -> str:
    return escape(str(value), _EXT_SPECIALS, backslash="\\\\", limit=limit)


def render(ev: Mapping[str, Any], opts: Options) -> str:
    """One CEF line (no trailing newline)."""
    et = _events.get(ev["type"])
    pairs: list[tuple[str, Any]] = [
        ("rt", epoch_ms(ev["time"])),
        ("start", epoch_ms(ev["first_time"])),
        ("end", epoch_ms(ev["last_time"])),
        ("cnt", ev["count"]),
        ("externalId", ev["id"]),
        ("cat", et.namespace),
        ("act", ev["outcome"]),
        ("outcome", et.ecs_outcome),
        ("dvchost", opts.hostname),
        ("deviceProcessName", opts.app_name),
        ("cs4Label", "reason"), ("cs4", ev["reason"]),
    ]
    if ev["device"] is not None:
        pairs.append(("deviceExternalId", ev["device"]))
    if ev["kid"] is not None:
        pairs += [("cs1Label", "kid"), ("cs1", ev["kid"])]
    if ev["transport"] is not None:
        pairs += [("cs2Label", "transport"), ("cs2", ev["transport"])]
    if ev["source"]:
        pairs += [("cs3Label", "source"), ("cs3", ev["source"])]
    if ev["seq"] is not None:
        pairs += [("cn1Label", "seq"), ("cn1", ev["seq"])]
    head = "|".join(header(v) for v in ("twinlink", "twinlink", opts.version, ev["rule"],
                                        et.name, ev["severity"]))
    return (f"CEF:0|{head}|" + " ".join(f"{k}={ext(v)}" for k, v in pairs)
            + f" reason={ext(ev['detail'], opts.max_detail)}"
            + f" msg={ext(message(ev), MAX_MSG)}")
