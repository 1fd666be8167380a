"""Syslog, RFC 5424, with the event's fields as structured data.

``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [twinlink@32473 k="v" ...] BOM MSG``

- PRI = facility x 8 + severity; the severity comes from the catalogue (9-10 crit, 7-8 err,
  4-6 warning, 1-3 notice, 0 info); the facility is configurable (default 10, authpriv).
- TIMESTAMP is UTC with milliseconds; HOSTNAME, APP-NAME, PROCID and MSGID are printable
  US-ASCII (33-126) cut to their RFC lengths (255, 48, 128, 32), any other character becomes
  ``_``, an empty value ``-``. MSGID is the event type (type names are at most 32 characters).
- One SD element, SD-ID ``twinlink@32473`` (32473 is the example Private Enterprise Number of
  RFC 5424 itself; a deployment with its own PEN changes :data:`SD_ID`). PARAM-VALUEs escape
  ``"``, ``\\`` and ``]`` with a backslash (RFC 5424 §6.3.3); unsafe characters (controls,
  line breaks, bidi marks) are written as visible ``\\xNN``/``\\uNNNN`` text, so a value can
  never end the SD element or the line.
- MSG is a one-line human summary in UTF-8, preceded by the UTF-8 BOM as RFC 5424 §6.4 asks
  for UTF-8 MSG text (``Options(bom=False)`` leaves it out for collectors that display it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .. import events as _events
from . import Options, escape, message, rfc3339

SD_ID = "twinlink@32473"
#: MSG is a summary (the full detail is in the SD): at most this many characters after escaping.
MAX_MSG = 512
BOM = "\ufeff"

_SD_SPECIALS = {'"': '\\"', "\\": "\\\\", "]": "\\]"}
_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")


def header_field(value: str, limit: int) -> str:
    """A header field: printable US-ASCII only (others become ``_``), at most ``limit``
    characters, ``-`` (NILVALUE) when empty."""
    text = _NOT_PRINTUSASCII.sub("_", value)[:limit]
    return text or "-"


def param_value(value: Any, limit: int | None = None) -> str:
    """A PARAM-VALUE, escaped per RFC 5424 6.3.3 plus visible escapes for unsafe text, cut
    at ``limit`` escaped characters."""
    return escape(str(value), _SD_SPECIALS, backslash="\\\\", limit=limit)


def structured_data(ev: Mapping[str, Any], opts: Options) -> str:
    """The one SD element carrying the event record's fields."""
    params: list[tuple[str, Any]] = [
        ("id", ev["id"]), ("type", ev["type"]), ("outcome", ev["outcome"]),
        ("severity", ev["severity"]), ("rule", ev["rule"]), ("reason", ev["reason"]),
        ("count", ev["count"]), ("first", rfc3339(ev["first_time"])),
        ("last", rfc3339(ev["last_time"])),
    ]
    for key in ("device", "kid", "seq", "transport"):
        if ev[key] is not None:
            params.append((key, ev[key]))
    if ev["source"]:
        params.append(("source", ev["source"]))
    body = " ".join(f'{k}="{param_value(v, 256)}"' for k, v in params)
    body += f' detail="{param_value(ev["detail"], opts.max_detail)}"'
    return f"[{SD_ID} {body}]"


def render(ev: Mapping[str, Any], opts: Options) -> str:
    """One RFC 5424 message (no trailing newline; transports add their own framing)."""
    pri = opts.facility * 8 + _events.syslog_severity(ev["severity"])
    msg = escape(message(ev), {}, limit=MAX_MSG)
    return (f"<{pri}>1 {rfc3339(ev['time'])} {header_field(opts.hostname, 255)} "
            f"{header_field(opts.app_name, 48)} {header_field(opts.procid, 128)} "
            f"{header_field(ev['type'], 32)} {structured_data(ev, opts)} "
            f"{BOM if opts.bom else ''}{msg}")
