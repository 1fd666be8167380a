"""The :class:`Detector`: routes each frame's records to per-series QC and the frame itself to
per-device stream checks, and bounds everything it keeps."""

from __future__ import annotations

import math
import time as _time
from collections.abc import Iterable, Sequence
from typing import Any

from .config import DetectConfig
from .events import FAIL, NOT_EVALUATED, DetectionEvent, Revision, Verdict, event
from .qc import SeriesQC
from .stream import DeviceStream

#: SenML times below 2**28 are relative to now (RFC 8428 §4.5.3).
RELATIVE_LIMIT = 2.0**28
#: Absolute SenML times beyond this (year 2100) or below 0 are invalid.
TIME_MAX = 4102444800.0
#: A record in a batch pack is placed at most this long before the pack's newest record.
MAX_SPAN = 86400.0

_EMPTY: tuple[str, ...] = ()


class _Device:
    __slots__ = ("capped", "refused", "series", "stream")

    def __init__(self, stream: DeviceStream) -> None:
        self.stream = stream
        self.series: dict[str, SeriesQC] = {}
        self.refused = 0
        self.capped = False


class Detector:
    """Detection engine for one twin. Not thread-safe: call it from the ingest's one thread
    (or hold a lock). Memory is bounded by devices x ``max_series`` x a fixed per-series size."""

    def __init__(self, config: DetectConfig | None = None) -> None:
        self.config = config if config is not None else DetectConfig()
        self._devices: dict[str, _Device] = {}

    def configure(self, config: DetectConfig) -> None:
        """Apply a new configuration; learned state is kept, parameters re-resolved."""
        self.config = config
        for name, dev in self._devices.items():
            dev.stream.p = config.device_params(name)
            for sname, s in dev.series.items():
                s.bind(config.series_params(name, sname, s.unit))

    def forget(self, device: str) -> None:
        """Drop everything learned about a device (removed, re-provisioned)."""
        self._devices.pop(device, None)

    def _device(self, device: str) -> _Device:
        dev = self._devices.get(device)
        if dev is None:
            if not isinstance(device, str):
                raise TypeError("device must be a str")
            dev = self._devices[device] = _Device(
                DeviceStream(device, self.config.device_params(device)))
        return dev

    # -- per frame --------------------------------------------------------------------------

    def observe(self, device: str, seq: int, records: Sequence[Any], arrival: float,
                frame_size: int, context_epoch: int = 0) -> Verdict:
        """QC one accepted frame's records and check the device's stream behaviour.

        ``records`` are ``(name, value, unit, time)`` tuples (``senml.Record`` works): ``time``
        absolute or SenML-relative (< 2**28, added to ``arrival``), or None. ``arrival`` is
        the twin's clock in Unix seconds. Returns one flag and tuple of tripped tests per
        record, plus events. Hostile names, values and times never raise; ``device`` must be
        a str (TypeError).
        """
        if not (isinstance(arrival, (int, float)) and math.isfinite(arrival)):
            arrival = _time.time()
        arrival = float(arrival)
        dev = self._device(device)
        events: list[DetectionEvent] = []
        revisions: list[Revision] = []
        n = len(records)
        # unpack once; the newest valid absolute time is the frame's time
        recs: list[tuple[Any, Any, Any, Any]] = []
        times: list[float | None] = []
        ftime: float | None = None
        bad = False
        for rec in records:
            if isinstance(rec, tuple) and len(rec) >= 4:
                name, value, unit, t = rec[0], rec[1], rec[2], rec[3]
            else:
                name, value, unit, t = (_rec_field(rec, 0), _rec_field(rec, 1),
                                        _rec_field(rec, 2), _rec_field(rec, 3))
            recs.append((name, value, unit, t))
            if t is not None:
                t = _abs_time(t, arrival)
                if t is None:
                    bad = True
                elif ftime is None or t > ftime:
                    ftime = t
            times.append(t)
        in_order = dev.stream.observe(seq, context_epoch, arrival, frame_size, ftime, bad,
                                      events)
        flags: list[int] = [NOT_EVALUATED] * n
        tests: list[tuple[str, ...]] = [_EMPTY] * n
        seen: set[tuple[str, float | None]] | None = set() if n > 1 else None
        sq = seq if type(seq) is int else -1
        epoch = context_epoch if type(context_epoch) is int else 0
        series = dev.series
        for i in range(n):
            name, value, unit, _ = recs[i]
            if type(name) is not str or not name:
                flags[i], tests[i] = FAIL, ("syntax",)
                continue
            t = times[i]
            # the twin's clock places the reading; the device's only says how far back in a batch
            tq = arrival
            if t is not None and ftime is not None:
                back = ftime - t
                tq = arrival - (back if back < MAX_SPAN else MAX_SPAN)
            s = series.get(name)
            if s is None:
                s = self._new_series(dev, device, name, unit, sq, arrival, events)
                if s is None:
                    continue
            if seen is not None:
                key = (name, t)
                if key in seen:
                    flags[i], tests[i] = s.duplicate(sq, tq, events)
                    continue
                seen.add(key)
            if unit != s.unit and not (s.unit is None and not isinstance(unit, str)):
                flags[i], tests[i] = s.mismatch(sq, tq, events)
            elif in_order:
                flags[i], tests[i] = s.observe(value, tq, sq, (epoch, sq, i), events,
                                               revisions)
            else:
                flags[i], tests[i] = s.late(value, sq, tq, events)
        return Verdict(flags, tests, events, revisions)

    def _new_series(self, dev: _Device, device: str, name: str, unit: Any, seq: int,
                    arrival: float, events: list[DetectionEvent]) -> SeriesQC | None:
        cap = dev.stream.p.max_series
        if len(dev.series) >= cap:
            dev.refused += 1
            if not dev.capped:
                dev.capped = True
                events.append(event("detect.series_cap", device, None, seq, arrival,
                                    {"max_series": cap}))
            return None
        u = unit if isinstance(unit, str) else None
        s = dev.series[name] = SeriesQC(device, name, u,
                                        self.config.series_params(device, name, u))
        return s

    # -- per sweep --------------------------------------------------------------------------

    def sweep(self, now: float | None = None) -> list[DetectionEvent]:
        """Liveness: ``device.silent`` for devices overdue by ``silent_factor`` intervals, and
        folded gap/jump counts whose hold-down ended. ``now`` defaults to the wall clock. Call
        it about once a second."""
        if now is None or not (isinstance(now, (int, float)) and math.isfinite(now)):
            now = _time.time()
        events: list[DetectionEvent] = []
        for dev in self._devices.values():
            dev.stream.sweep(float(now), events)
        return events

    # -- views ------------------------------------------------------------------------------

    def devices(self) -> Iterable[str]:
        return list(self._devices)

    def state(self, device: str) -> dict[str, Any]:
        """JSON-friendly view: the device's stream state, open detections, and per-series QC
        state. An unknown device gives ``{}``."""
        dev = self._devices.get(device)
        if dev is None:
            return {}
        stream = dev.stream.state()
        series = {name: s.state() for name, s in dev.series.items()}
        open_ = list(stream["open"])
        for name, st in series.items():
            open_.extend(f"{kind} {name}" for kind in st["open"])
        if dev.capped:
            open_.append("detect.series_cap")
        return {"stream": stream, "series": series, "open": open_,
                "series_refused": dev.refused}


def _abs_time(t: Any, arrival: float) -> float | None:
    """A record's SenML time as absolute Unix seconds, or None if it is invalid (not a
    number, not finite, before 1970 or after 2100)."""
    if type(t) is not float:
        if type(t) is bool or not isinstance(t, (int, float)):
            return None
        try:
            t = float(t)
        except OverflowError:
            return None
    if t - t != 0.0:  # NaN or infinite
        return None
    if -RELATIVE_LIMIT < t < RELATIVE_LIMIT:
        t += arrival
    if t < 0 or t > TIME_MAX:
        return None
    return t  # type: ignore[no-any-return]


def _rec_field(rec: Any, i: int) -> Any:
    try:
        return rec[i]
    except (IndexError, KeyError, TypeError):
        return None
