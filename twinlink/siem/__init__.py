"""One security event, four renderings a SIEM reads with no glue.

- ``jsonl``: the twinlink event record itself (docs/EVENTS.md), one JSON object per line;
- ``ecs``: Elastic Common Schema JSON lines (:mod:`.ecs`);
- ``rfc5424``: syslog with structured data under ``twinlink@32473`` (:mod:`.syslog`);
- ``cef``: ArcSight Common Event Format (:mod:`.cef`);
- ``ocsf``: OCSF Detection Finding / Entity Management JSON (:mod:`.ocsf`).

Every renderer takes a normalised record (:func:`twinlink.events.normalise`; a raw store row is
normalised on the way in) and returns one line of text with no line break in it: device names,
SenML names and details are attacker-influenced, so each format escapes them by its own rules,
and a character the format cannot carry safely (control characters, line and paragraph
separators, bidi overrides, lone surrogates) is replaced by a visible ``\\xNN``/``\\uNNNN``
escape or U+FFFD — it can never start a new line or a new field.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import events as _events

FORMATS = ("jsonl", "ecs", "rfc5424", "cef", "ocsf")

#: Detail text is cut (with a marker) at this many bytes once escaped, and the one-line
#: summary (``message``) carries at most :data:`MAX_SUMMARY` of it, so one rendered event stays
#: under about 4 KiB in every format (rsyslog's default message limit is 8 KiB; an ordinary
#: event is a few hundred bytes, under the 2048 octets RFC 5426 asks UDP receivers to take).
MAX_DETAIL = 1024
MAX_SUMMARY = 256

#: Characters no rendering carries raw: C0 and C1 controls, DEL, line/paragraph separators,
#: NEL, and the bidi embedding/override/isolate marks (they reorder what an analyst sees).
UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def visible(ch: str) -> str:
    """The visible escape of one unsafe character: ``\\x0a``, ``\\u202e``."""
    o = ord(ch)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def clean(value: Any) -> str:
    """``value`` as text with lone surrogates (undecodable bytes) replaced by U+FFFD, so it
    always encodes as UTF-8."""
    text = value if isinstance(value, str) else str(value)
    return _SURROGATE.sub("\ufffd", text)


def escape(text: str, specials: Mapping[str, str], backslash: str | None = None,
           limit: int | None = None) -> str:
    """Escape ``text`` for one format in a single pass: characters in ``specials`` become their
    mapped form; any other unsafe character becomes its visible escape, whose backslash is
    written as ``backslash`` (the format's escaped backslash) so a parser that unescapes the
    value gets the visible text back. With ``limit``, the *escaped* text is cut at a character
    boundary (never inside an escape) once it would pass ``limit`` characters, and a marker
    says how many input characters were left out."""
    out: list[str] = []
    size = 0
    bs = "\\" if backslash is None else backslash
    src = clean(text)
    for i, ch in enumerate(src):
        rep = specials.get(ch)
        if rep is None:
            rep = bs + visible(ch)[1:] if UNSAFE.match(ch) else ch
        if limit is not None and size + len(rep) > limit:
            marker = f"…({len(src) - i} more characters)"
            out.append("".join(specials.get(c, c) for c in marker))
            break
        out.append(rep)
        size += len(rep)
    return "".join(out)


def _weight(ch: str) -> int:
    """Bytes ``ch`` takes once escaped in the widest of the formats (a JSON ``\\uXXXX``, a
    visible ``\\\\u202e`` in syslog, or its UTF-8 bytes)."""
    if UNSAFE.match(ch) or _SURROGATE.match(ch):
        return 7
    if ch in '"\\]=|':
        return 2
    return len(ch.encode("utf-8"))


def shorten(text: str, limit: int = MAX_DETAIL) -> str:
    """``text`` cut so that its escaped form stays within about ``limit`` bytes (characters
    that need escaping count for what they become), with a marker saying how much was cut."""
    size = 0
    for i, ch in enumerate(text):
        size += _weight(ch)
        if size > limit:
            return f"{text[:i]}…({len(text) - i} more characters)"
    return text


def rfc3339(t: float) -> str:
    """UTC time as RFC 3339 with milliseconds: ``2024-05-01T12:00:00.123Z``."""
    ms = round(t * 1000)
    d = _dt.datetime.fromtimestamp(ms // 1000, _dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def epoch_ms(t: float) -> int:
    return round(t * 1000)


def json_line(obj: Any) -> str:
    """Compact JSON on one line: UTF-8 text kept readable, but line/paragraph separators,
    NEL and bidi marks written as ``\\uXXXX`` escapes (lossless: a JSON parser gets the exact
    string back; ``str.splitlines`` and terminals see no break or reordering)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    # json.dumps escapes C0 controls already; these are the rest of UNSAFE. A lone surrogate
    # (undecodable input) has no UTF-8 form: it becomes U+FFFD.
    text = _SURROGATE.sub("\ufffd", text)
    return UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


@dataclass(frozen=True)
class Options:
    """Rendering settings shared by the formats.

    ``hostname`` names this twin (syslog HOSTNAME, ECS observer.hostname, part of OCSF
    finding uids so two twins feeding one SIEM never collide); ``facility`` is the syslog
    facility number (default 10, authpriv: security messages); ``bom`` starts the syslog MSG
    with a UTF-8 BOM as RFC 5424 asks for UTF-8 text.
    """

    hostname: str = field(default_factory=socket.gethostname)
    app_name: str = "twinlink"
    procid: str = field(default_factory=lambda: str(os.getpid()))
    facility: int = 10
    bom: bool = True
    max_detail: int = MAX_DETAIL
    version: str = ""

    def __post_init__(self) -> None:
        if type(self.facility) is not int or not 0 <= self.facility <= 23:
            raise ValueError("syslog facility must be 0..23")
        if not self.version:
            from .. import __version__

            object.__setattr__(self, "version", __version__)


#: syslog facility names (RFC 5424 table 1, with the usual names) -> numbers.
FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13,
    "console": 14, "solaris-cron": 15, **{f"local{i}": 16 + i for i in range(8)},
}


def facility(value: str | int) -> int:
    """A facility number from a name (``authpriv``, ``local0``) or a number 0..23; ValueError
    otherwise."""
    if isinstance(value, int) or str(value).isdigit():
        n = int(value)
        if 0 <= n <= 23:
            return n
    elif str(value).lower() in FACILITIES:
        return FACILITIES[str(value).lower()]
    raise ValueError(f"unknown syslog facility {value!r}: give a number 0..23 or one of "
                     + ", ".join(FACILITIES))


def message(ev: Mapping[str, Any], limit: int = MAX_SUMMARY) -> str:
    """A one-line human summary: ``frame.replay device pump-17 seq 42 (x3): <detail>``
    (raw text: each format escapes it)."""
    who = ev.get("device") or (f"kid {ev['kid']}" if ev.get("kid") else None)
    parts = [str(ev["type"])]
    if who:
        parts.append(f"device {who}")
    if ev.get("seq") is not None:
        parts.append(f"seq {ev['seq']}")
    if ev.get("count", 1) > 1:
        parts.append(f"(x{ev['count']})")
    text = " ".join(parts)
    detail = shorten(clean(ev.get("detail") or ""), limit)
    return f"{text}: {detail}" if detail else text


def record(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` as a full event record (:func:`~twinlink.events.normalise` is idempotent, so a
    record passes through unchanged)."""
    return _events.normalise(row)


def render_jsonl(ev: Mapping[str, Any], opts: Options) -> str:
    """The event record as one JSON line, times as RFC 3339 with milliseconds."""
    out = {k: ev[k] for k in _events.RECORD_KEYS}
    for k in ("time", "first_time", "last_time"):
        out[k] = rfc3339(ev[k])
    out["detail"] = shorten(clean(ev["detail"]), opts.max_detail)
    return json_line(out)


def renderer(fmt: str) -> Callable[[Mapping[str, Any], Options], str]:
    """The render function of a format name (see :data:`FORMATS`); ValueError if unknown."""
    from . import cef, ecs, ocsf, syslog

    table: dict[str, Callable[[Mapping[str, Any], Options], str]] = {
        "jsonl": render_jsonl, "ecs": ecs.render, "rfc5424": syslog.render,
        "cef": cef.render, "ocsf": ocsf.render,
    }
    try:
        return table[fmt]
    except KeyError:
        raise ValueError(f"unknown event format {fmt!r}: choose one of "
                         + ", ".join(FORMATS)) from None


def render(row: Mapping[str, Any], fmt: str, opts: Options | None = None) -> str:
    """One event (a store row or a record) as one line of ``fmt``, without a line break."""
    return renderer(fmt)(record(row), opts or Options())


__all__ = ["FACILITIES", "FORMATS", "MAX_DETAIL", "Options", "clean", "escape", "facility",
           "json_line", "message", "record", "render", "renderer", "rfc3339", "shorten"]
