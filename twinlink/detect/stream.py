"""Per-device liveness and stream behaviour: silence, sequence gaps and jumps, delayed frames,
clock skew, and message rate or frame size far off the device's own baseline.

All times are the twin's clock (``arrival``, ``now``) except the SenML time a frame carries,
which is the device's claim and is only compared with arrival:

- **silence**: nothing for ``silent_factor`` x the interval (configured, else learned from the
  per-frame spacing ``(arrival - last arrival) / seq advance``, which losses do not distort);
  found by :meth:`DeviceStream.sweep`; ``device.back_online`` when a frame comes.
- **sequence**: a skip is a gap (``detail.missing``); an advance beyond ``jump`` numbers *and*
  beyond four times the frames the elapsed time explains is a jump. A new security context
  (``context_epoch`` grows) restarts numbering at 0: no gap, no jump. Repeats within
  ``hold_down`` seconds are counted into one event (emitted by the next sweep).
- **time**: ``offset = SenML time - arrival`` has a baseline (the device's usual latency and
  clock error, learned from the least-delayed early frames, then slowly). Ahead of arrival by
  more than ``skew``, a jump of the offset ahead by more than ``skew``, or a time going back
  while the sequence goes forward is clock skew; behind the baseline by more than ``delay``
  (with the time still moving forward) is a delayed frame.
- **rate**: a time-decayed count of frames (time constant ``RATE_SPAN`` usual intervals, at
  least ``RATE_TAU`` seconds) above ``rate_factor`` times what the usual interval predicts, with
  at least ``2 x rate_factor`` frames in it; it clears below twice the prediction. Counting
  over time, not per-frame spacing, keeps it steady when an ingest stamps a batch of frames at
  once; a
  frame
  larger than ``size_factor`` x the largest usual frame (+16 bytes) or smaller than the smallest
  usual one / ``size_factor``.
"""

from __future__ import annotations

import math
from typing import Any

from .config import DeviceParams
from .events import DetectionEvent, cleared, event

BASELINE_FRAMES = 8     # frames before rate, size and time baselines are used
RATE_TAU = 10.0         # seconds: the shortest time constant of the rate count
RATE_SPAN = 3.0         # usual intervals in the rate count's time constant
MIN_SPACING = 0.001     # seconds: closer arrivals are one ingest batch, not a sample of spacing
CLEAR_FRAMES = 3        # normal frames before a stream state clears
JUMP_FACTOR = 4.0


class DeviceStream:
    """The stream state of one device."""

    __slots__ = (
        "active",
        "agg",
        "counts",
        "device",
        "epoch",
        "gap",
        "interval",
        "last_arrival",
        "last_seq",
        "last_time",
        "n_int",
        "n_off",
        "n_size",
        "offset",
        "p",
        "rate_t",
        "short",
        "silent",
        "size_hi",
        "size_lo",
    )

    def __init__(self, device: str, params: DeviceParams) -> None:
        self.device, self.p = device, params
        self.epoch = 0
        self.last_seq = -1
        self.last_arrival: float | None = None
        self.interval = 0.0          # learned seconds per frame
        self.n_int = 0
        self.short = 0.0             # time-decayed count of recent frames (the rate check)
        self.rate_t = 0.0            # when ``short`` was last decayed
        self.size_lo = 0
        self.size_hi = 0
        self.n_size = 0
        self.offset = 0.0            # usual SenML time - arrival
        self.n_off = 0
        self.last_time: float | None = None
        self.silent = False
        self.active: dict[str, int] = {}  # state -> normal frames since it last tripped
        self.agg: dict[str, list[float]] = {}  # kind -> [last emitted, pending, missing]
        self.gap: list[Any] | None = None  # [lo, hi, still missing, found at, seq]
        self.counts = {"frames": 0, "late": 0, "gaps": 0, "missing": 0, "jumps": 0,
                       "reordered": 0}

    # -- helpers ----------------------------------------------------------------------------

    def expected_interval(self) -> float | None:
        """The interval silence is measured against: configured, else learned, else None."""
        if self.p.interval is not None:
            return self.p.interval
        return self.interval if self.n_int >= 4 and self.interval > 0 else None

    def _enter(self, state: str, kind: str, seq: int | None, now: float,
               events: list[DetectionEvent], detail: dict[str, Any]) -> None:
        if state not in self.active:
            events.append(event(kind, self.device, None, seq, now, detail))
        self.active[state] = 0

    def _normal(self, state: str, kind: str, seq: int | None, now: float,
                events: list[DetectionEvent]) -> None:
        n = self.active.get(state)
        if n is None:
            return
        if n + 1 >= CLEAR_FRAMES:
            del self.active[state]
            events.append(event(cleared(kind), self.device, None, seq, now,
                                {"metric": state} if kind == "device.rate_anomaly" else None))
        else:
            self.active[state] = n + 1

    def _count(self, kind: str, seq: int, now: float, events: list[DetectionEvent],
               missing: int, detail: dict[str, Any]) -> None:
        """An instantaneous event, with repeats inside hold_down folded into one."""
        ag = self.agg.get(kind)
        if ag is None or now - ag[0] >= self.p.hold_down:
            self.agg[kind] = [now, 0.0, 0.0]
            events.append(event(kind, self.device, None, seq, now, detail))
        else:
            ag[1] += 1
            ag[2] += missing

    # -- per frame --------------------------------------------------------------------------

    def observe(self, seq: Any, epoch: Any, arrival: float, size: Any, ftime: float | None,
                time_bad: bool, events: list[DetectionEvent]) -> bool:
        """Check one accepted frame; return whether it is *in order* (its readings may enter
        the value baselines). ``ftime`` is the newest valid absolute SenML time or None;
        ``time_bad`` says a record carried an invalid time."""
        tests = self.p.tests
        self.counts["frames"] += 1
        prev = self.last_arrival
        if self.silent:
            self.silent = False
            events.append(event("device.back_online", self.device, None,
                                seq if isinstance(seq, int) else None, arrival,
                                {"silent_for": round(arrival - prev, 3) if prev else None}))
            prev = None  # the silence is no sample of the device's spacing
            self.short = 0.0
        in_order, adv = True, 0
        if type(seq) is not int or seq < 0 or type(epoch) is not int:
            in_order = False
        elif epoch != self.epoch:
            if epoch > self.epoch or self.last_seq < 0:
                self.epoch, self.last_seq = epoch, seq  # new security context: numbering restarts
            else:
                in_order = False
        elif self.last_seq < 0:
            self.last_seq = seq
        elif seq > self.last_seq:
            adv = seq - self.last_seq
            if adv > 1:
                self._sequence(seq, adv, arrival, prev, events)
            self.last_seq = seq
        else:
            in_order = False
        gap = self.gap
        if gap is not None:
            if not in_order and type(seq) is int and gap[0] <= seq <= gap[1]:
                gap[2] -= 1  # a frame thought missing came late: reordered, not lost
                self.counts["reordered"] += 1
            if gap[2] <= 0:
                # Everything it missed has come: close it now, or a later gap merged into it
                # would inherit its start and be reported before its own grace is over.
                self.gap = None
            else:
                self._flush_gap(arrival, events)
        if not in_order:
            self.counts["late"] += 1
        else:
            self.last_arrival = arrival
        delayed = False
        if ftime is not None or time_bad:
            delayed = self._time(seq, adv, arrival, ftime, time_bad, events)
        if in_order and adv and prev is not None and not delayed and "rate" in tests:
            self._rate(seq, (arrival - prev) / adv, arrival, events)
        if type(size) is int and "rate" in tests:
            self._size(seq, size, arrival, events)
        return in_order

    def _sequence(self, seq: int, adv: int, arrival: float, prev: float | None,
                  events: list[DetectionEvent]) -> None:
        p = self.p
        iv = self.expected_interval()
        expected = (arrival - prev) / iv if (iv and prev is not None) else 0.0
        if adv > p.jump and adv > JUMP_FACTOR * expected + 16:
            self.counts["jumps"] += 1
            if "seq_jump" in p.tests:
                self._count("stream.seq_jump", seq, arrival, events, adv - 1,
                            {"ahead": adv - 1, "expected": round(expected)})
        elif "seq_gap" in p.tests:
            # held for a grace period: frames that arrive late (reordered) are not missing
            gap = self.gap
            lo, hi = self.last_seq + 1, seq - 1
            if gap is None:
                self.gap = [lo, hi, adv - 1, arrival, seq]
            else:
                gap[0], gap[1], gap[2], gap[4] = min(gap[0], lo), hi, gap[2] + adv - 1, seq

    def _flush_gap(self, now: float, events: list[DetectionEvent], force: bool = False) -> None:
        gap = self.gap
        assert gap is not None
        iv = self.expected_interval()
        grace = min(3.0 * iv, 600.0) if iv else 30.0
        if not force and now - gap[3] < grace:
            return
        self.gap = None
        missing = int(gap[2])
        if missing > 0:
            self.counts["gaps"] += 1
            self.counts["missing"] += missing
            self._count("stream.seq_gap", gap[4], now, events, missing, {"missing": missing})

    def _time(self, seq: Any, adv: int, arrival: float, ftime: float | None, time_bad: bool,
              events: list[DetectionEvent]) -> bool:
        p, tests = self.p, self.p.tests
        if time_bad or ftime is None:
            if "clock_skew" in tests:
                self._enter("clock_skew", "device.clock_skew", seq, arrival, events,
                            {"reason": "invalid time"})
            return False
        o = ftime - arrival
        last = self.last_time
        if adv > 0 or last is None:
            self.last_time = ftime
        if "clock_skew" in self.active:
            if self.n_off and abs(o - self.offset) <= p.skew:
                self._normal("clock_skew", "device.clock_skew", seq, arrival, events)
            else:
                self.active["clock_skew"] = 0
            return False
        base = self.n_off >= BASELINE_FRAMES
        future = o > p.skew
        back = last is not None and adv > 0 and ftime < last - p.skew
        ahead = base and o > self.offset + p.skew
        if (future or back or ahead) and "clock_skew" in tests:
            ref = self.offset if self.n_off else 0.0
            self._enter("clock_skew", "device.clock_skew", seq, arrival, events,
                        {"reason": "backwards" if back else "future",
                         "seconds": _rounded(o - ref)})
            return False
        if future or back or ahead:
            return False
        if base and o < self.offset - p.delay:
            if "delayed" in tests:
                self._enter("delayed", "stream.delayed", seq, arrival, events,
                            {"behind": _rounded(self.offset - o)})
            return True
        self._normal("delayed", "stream.delayed", seq, arrival, events)
        if adv > 0:  # learn only from frames in order: the least-delayed offsets early on
            if not base:
                self.offset = o if self.n_off == 0 or o > self.offset else self.offset
                self.n_off += 1
            elif abs(o - self.offset) <= 0.5 * min(p.skew, p.delay):
                self.offset += 0.05 * (o - self.offset)
        return False

    def _rate(self, seq: int, spacing: float, arrival: float,
              events: list[DetectionEvent]) -> None:
        p = self.p
        if spacing < 0:
            return
        if self.n_int < BASELINE_FRAMES:
            if spacing >= MIN_SPACING:  # frames stamped together say nothing of the spacing
                self.n_int += 1
                self.interval += (spacing - self.interval) / self.n_int
            self.short, self.rate_t = 0.0, arrival
            return
        usual = p.interval if p.interval is not None else self.interval
        tau = max(RATE_TAU, RATE_SPAN * usual)
        dt = max(0.0, arrival - self.rate_t)
        self.short = self.short * math.exp(-dt / tau) + 1.0
        self.rate_t = arrival
        expected = tau / max(usual, 1e-6)  # the count a steady stream settles at
        if self.short > p.rate_factor * expected and self.short >= 2 * p.rate_factor:
            self._enter("rate", "device.rate_anomaly", seq, arrival, events,
                        {"metric": "rate", "factor": _rounded(self.short / expected)})
            return
        if "rate" in self.active:
            if self.short <= 2 * expected:
                self._normal("rate", "device.rate_anomaly", seq, arrival, events)
            return
        # learn slowly from plausible spacings only: a flood or a pause does not move it
        iv = self.interval
        if spacing >= MIN_SPACING and 0.25 * iv <= spacing <= 4 * iv:
            self.interval += 0.02 * (spacing - iv)
            self.n_int += 1

    def _size(self, seq: Any, size: int, arrival: float,
              events: list[DetectionEvent]) -> None:
        p = self.p
        if self.n_size < BASELINE_FRAMES:
            self.size_lo = size if self.n_size == 0 else min(self.size_lo, size)
            self.size_hi = max(self.size_hi, size)
            self.n_size += 1
            return
        if size > self.size_hi * p.size_factor + 16 or size * p.size_factor < self.size_lo:
            self._enter("size", "device.rate_anomaly", seq, arrival, events,
                        {"metric": "size", "bytes": size, "usual": [self.size_lo, self.size_hi]})
            return
        self._normal("size", "device.rate_anomaly", seq, arrival, events)
        if size > self.size_hi:
            self.size_hi = size
        elif size < self.size_lo:
            self.size_lo = size
        self.n_size += 1

    # -- per sweep --------------------------------------------------------------------------

    def sweep(self, now: float, events: list[DetectionEvent]) -> None:
        """Raise ``device.silent`` if due; report gaps whose grace ended; flush folded gap/jump
        counts whose hold-down ended."""
        if self.gap is not None:
            self._flush_gap(now, events)
        if self.agg:
            for kind, ag in list(self.agg.items()):
                if now - ag[0] >= self.p.hold_down:
                    if ag[1] > 0:
                        detail = ({"missing": int(ag[2])} if kind == "stream.seq_gap"
                                  else {"ahead": int(ag[2])})
                        events.append(event(kind, self.device, None, None, now, detail,
                                            count=int(ag[1])))
                        self.agg[kind] = [now, 0.0, 0.0]
                    else:
                        del self.agg[kind]
        last = self.last_arrival
        if self.silent or last is None or "silence" not in self.p.tests:
            return
        iv = self.expected_interval()
        if iv is not None and now - last > self.p.silent_factor * iv:
            self.silent = True
            events.append(event("device.silent", self.device, None, self.last_seq, now,
                                {"interval": _rounded(iv), "silent_for": _rounded(now - last)}))

    def state(self) -> dict[str, Any]:
        """JSON-friendly stream state."""
        iv = self.expected_interval()
        return {
            "epoch": self.epoch, "last_seq": self.last_seq, "last_arrival": self.last_arrival,
            "interval": _rounded(iv) if iv is not None else None,
            "silent": self.silent,
            "open": sorted({_STATE_EVENT[s] for s in self.active}
                           | ({"device.silent"} if self.silent else set())),
            **self.counts,
        }


_STATE_EVENT = {"clock_skew": "device.clock_skew", "delayed": "stream.delayed",
                "rate": "device.rate_anomaly", "size": "device.rate_anomaly"}


def _rounded(x: float) -> float | None:
    return round(x, 3) if math.isfinite(x) else None
