"""The bench view of a serial line: per-device rate, sequence gaps, line noise vs attacks.

:class:`Monitor` turns the receiver's results (readings, refusals, line errors) into counters
and renders them as a live table (terminal) or one summary line (logs). ``twinlink monitor`` is
the CLI over it. ``record`` runs on the serial I/O thread, the renderers on the caller's thread;
one lock keeps them consistent.

Everything a device sent is shown through :func:`show`: any value a reading may hold (bytes as
``h'…'``, nested maps and arrays, CBOR tags, non-finite floats) on one bounded line, with control
characters and escape sequences escaped, so a device cannot paint the operator's terminal.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import LineError, TwinlinkError
from .twin import Reading, refusal_json

#: Seconds over which the per-device rate is averaged.
RATE_WINDOW = 10.0


@dataclass
class DeviceView:
    """What the monitor knows about one device."""

    name: str
    frames: int = 0
    last_seq: int | None = None
    gaps: int = 0  # sequence numbers skipped (lost frames, or a sender restart's reserve)
    last_seen: float = 0.0
    last_values: Any = None  # as decoded (the table renders it with show())
    last_json: Any = None  # the same, JSON-friendly (bytes as hex), for snapshot()
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=4096))

    def rate(self, now: float) -> float:
        while self.arrivals and self.arrivals[0] < now - RATE_WINDOW:
            self.arrivals.popleft()
        if not self.arrivals:
            return 0.0
        span = min(RATE_WINDOW, max(now - self.arrivals[0], 1.0))
        return len(self.arrivals) / span


class _Full(Exception):
    """The rendering reached its length budget."""


#: Nesting shown before a branch is abbreviated to ``…``.
SHOW_DEPTH = 8


def escape(text: str) -> str:
    """``text`` with every non-printable character (C0/C1 controls such as ESC and CSI, DEL,
    bidi overrides and other format characters, unassigned code points) as a Python-style
    escape, and backslashes doubled: safe to write to a terminal, unambiguous to read."""
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        else:
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o < 0x100 else
                       f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out)


def show(value: Any, limit: int = 200) -> str:
    """One terminal-safe line for a decoded reading value, at most ``limit`` characters.

    JSON-like for maps, arrays, strings, numbers, booleans and null; bytes as ``h'0a1b…'``,
    CBOR tags as ``tag(value)``, NaN and infinities as ``NaN``/``Infinity``; anything else as its
    escaped ``repr``. Never raises for any value (cycles and deep nesting are cut at
    :data:`SHOW_DEPTH`); what does not fit ends in ``…``.
    """
    parts: list[str] = []
    room = [max(limit, 1)]

    def put(text: str) -> None:
        if len(text) >= room[0]:
            parts.append(text[: room[0] - 1])
            raise _Full
        parts.append(text)
        room[0] -= len(text)

    def walk(v: Any, depth: int) -> None:
        if depth > SHOW_DEPTH:
            put("…")
        elif v is None or isinstance(v, bool):
            put("null" if v is None else ("true" if v else "false"))
        elif isinstance(v, int):
            put(str(v) if v.bit_length() < 1024 else f"<{v.bit_length()}-bit integer>")
        elif isinstance(v, float):
            put(repr(v) if math.isfinite(v) else
                "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity"))
        elif isinstance(v, str):
            # Escape only what can still be shown: the work is bounded by the budget.
            put('"' + escape(v[: room[0]]).replace('"', '\\"') + '"')
        elif isinstance(v, (bytes, bytearray, memoryview)):
            n = len(v)
            if 2 * n + 3 <= room[0]:
                put(f"h'{bytes(v).hex()}'")
            else:  # keep the length visible when the bytes do not fit
                put(f"h'{bytes(v[: max(0, room[0] - 20) // 2]).hex()}…'({n} bytes)")
        elif isinstance(v, Mapping):
            put("{")
            for i, (k, x) in enumerate(list(v.items())):
                put("," if i else "")
                walk(k, depth + 1)
                put(":")
                walk(x, depth + 1)
            put("}")
        elif isinstance(v, (list, tuple)):
            put("[")
            for i, x in enumerate(list(v)):
                put("," if i else "")
                walk(x, depth + 1)
            put("]")
        elif isinstance(getattr(v, "tag", None), int) and hasattr(v, "value"):
            put(f"{v.tag}(")  # a CBOR tag, in CBOR diagnostic notation
            walk(v.value, depth + 1)
            put(")")
        else:
            try:
                text = repr(v)
            except Exception:  # a hostile value's repr must not take the table down
                text = f"<{type(v).__name__}>"
            put(escape(text[: room[0]]))

    try:
        walk(value, 0)
    except _Full:
        parts.append("…")
    return "".join(parts)


def result_json(res: Reading | TwinlinkError) -> dict[str, Any]:
    """The ``twinlink open`` shaped object for one result; line damage is ``error: "line"``."""
    return res.to_json() if isinstance(res, Reading) else refusal_json(res)


class Monitor:
    """Counters over a stream of receiver results."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceView] = {}
        self.line_errors = 0
        self.refusals: Counter[str] = Counter()
        self.records = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def record(self, res: Reading | TwinlinkError) -> dict[str, Any]:
        """Count one result; return its JSON object."""
        obj = result_json(res)
        now = time.monotonic()
        with self._lock:
            self.records += 1
            if isinstance(res, LineError):
                self.line_errors += 1
            elif isinstance(res, TwinlinkError):
                self.refusals[res.reason] += 1
            else:
                d = self.devices.get(res.device)
                if d is None:
                    d = self.devices[res.device] = DeviceView(res.device)
                d.frames += 1
                if d.last_seq is not None:
                    if res.seq > d.last_seq + 1:
                        d.gaps += res.seq - d.last_seq - 1
                    elif res.seq < d.last_seq and d.gaps:
                        d.gaps -= 1  # a late frame filled a gap (accepted inside the window)
                d.last_seq = res.seq if d.last_seq is None else max(d.last_seq, res.seq)
                d.last_seen = now
                d.last_values = res.payload
                d.last_json = obj.get("payload")
                d.arrivals.append(now)
        return obj

    def snapshot(self) -> dict[str, Any]:
        """Counters as a JSON-friendly dict (what the summary line and table show)."""
        now = time.monotonic()
        with self._lock:
            return {
                "elapsed": round(now - self.started, 3),
                "records": self.records,
                "accepted": sum(d.frames for d in self.devices.values()),
                "line_errors": self.line_errors,
                "refused": dict(self.refusals),
                "devices": {n: {"frames": d.frames, "rate": round(d.rate(now), 2),
                                "last_seq": d.last_seq, "gaps": d.gaps,
                                "age": round(now - d.last_seen, 1), "last": d.last_json}
                            for n, d in sorted(self.devices.items())},
            }

    def summary_line(self) -> str:
        """One plain line of counters (terminal-safe)."""
        s = self.snapshot()
        devs = " ".join(f"{escape(n)}={d['frames']}@{d['rate']}/s seq={d['last_seq']} "
                        f"gaps={d['gaps']}" for n, d in s["devices"].items())
        refused = ",".join(f"{escape(k)}={v}" for k, v in sorted(s["refused"].items())) or "0"
        return (f"t={s['elapsed']:.0f}s accepted={s['accepted']} line_errors={s['line_errors']} "
                f"refused={refused} {devs}").rstrip()

    def table(self, title: str = "", width: int = 100) -> str:
        """The live view: one row per device with its last values (:func:`show`), then the
        line-error and refusal counters. Terminal-safe whatever the devices sent."""
        s = self.snapshot()
        with self._lock:
            last = {n: d.last_values for n, d in self.devices.items()}
        lines = [f"twinlink monitor {escape(title)}  —  {s['elapsed']:.0f} s, "
                 f"{s['records']} records", "",
                 f"{'DEVICE':16} {'FRAMES':>7} {'RATE/s':>7} {'LAST SEQ':>9} {'GAPS':>5} "
                 f"{'AGE s':>6}  LAST VALUES"]
        for n, d in s["devices"].items():
            row = (f"{escape(n)[:16]:16} {d['frames']:>7} {d['rate']:>7.1f} "
                   f"{d['last_seq']!s:>9} {d['gaps']:>5} {d['age']:>6.1f}  ")
            lines.append(row + show(last.get(n), max(10, width - len(row))))
        if not s["devices"]:
            lines.append("(no accepted frames yet)")
        lines += ["", f"line errors (CRC/COBS, noise): {s['line_errors']}",
                  "security rejections: " + (", ".join(
                      f"{escape(k)} {v}" for k, v in sorted(s["refused"].items())) or "none")]
        return "\n".join(lines)
