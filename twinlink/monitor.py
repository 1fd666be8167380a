"""The bench view of a serial line: per-device rate, sequence gaps, line noise vs attacks.

:class:`Monitor` turns the receiver's results (readings, refusals, line errors) into counters
and renders them as a live table (terminal) or one summary line (logs). ``twinlink monitor`` is
the CLI over it. ``record`` runs on the serial I/O thread, the renderers on the caller's thread;
one lock keeps them consistent.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
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
    last_values: Any = None
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=4096))

    def rate(self, now: float) -> float:
        while self.arrivals and self.arrivals[0] < now - RATE_WINDOW:
            self.arrivals.popleft()
        if not self.arrivals:
            return 0.0
        span = min(RATE_WINDOW, max(now - self.arrivals[0], 1.0))
        return len(self.arrivals) / span


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
                d.arrivals.append(now)
        return result_json(res)

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
                                "age": round(now - d.last_seen, 1), "last": d.last_values}
                            for n, d in sorted(self.devices.items())},
            }

    def summary_line(self) -> str:
        s = self.snapshot()
        devs = " ".join(f"{n}={d['frames']}@{d['rate']}/s seq={d['last_seq']} gaps={d['gaps']}"
                        for n, d in s["devices"].items())
        refused = ",".join(f"{k}={v}" for k, v in sorted(s["refused"].items())) or "0"
        return (f"t={s['elapsed']:.0f}s accepted={s['accepted']} line_errors={s['line_errors']} "
                f"refused={refused} {devs}").rstrip()

    def table(self, title: str = "", width: int = 100) -> str:
        s = self.snapshot()
        lines = [f"twinlink monitor {title}  —  {s['elapsed']:.0f} s, {s['records']} records",
                 "",
                 f"{'DEVICE':16} {'FRAMES':>7} {'RATE/s':>7} {'LAST SEQ':>9} {'GAPS':>5} "
                 f"{'AGE s':>6}  LAST VALUES"]
        for n, d in s["devices"].items():
            vals = json.dumps(d["last"], separators=(",", ":"))
            row = (f"{n[:16]:16} {d['frames']:>7} {d['rate']:>7.1f} {d['last_seq']!s:>9} "
                   f"{d['gaps']:>5} {d['age']:>6.1f}  ")
            lines.append(row + vals[: max(10, width - len(row))])
        if not s["devices"]:
            lines.append("(no accepted frames yet)")
        lines += ["", f"line errors (CRC/COBS, noise): {s['line_errors']}",
                  "security rejections: " + (", ".join(
                      f"{k} {v}" for k, v in sorted(s["refused"].items())) or "none")]
        return "\n".join(lines)
