"""The :class:`Detector`: routes each frame's records to per-series QC and the frame itself to
per-device stream checks, and bounds everything it keeps."""

from __future__ import annotations

import math
import time as _time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from .config import DetectConfig
from .events import FAIL, NOT_EVALUATED, DetectionEvent, Revision, Verdict, event
from .qc import _TEST_EVENT, WINDOW, SeriesQC
from .stream import DeviceStream

#: SenML times below 2**28 are relative to now (RFC 8428 §4.5.3).
RELATIVE_LIMIT = 2.0**28
#: Absolute SenML times beyond this (year 2100) or below 0 are invalid.
TIME_MAX = 4102444800.0
#: A record in a batch pack is placed at most this long before the pack's newest record.
MAX_SPAN = 86400.0

_EMPTY: tuple[str, ...] = ()
_TEST_NAMES = frozenset(_TEST_EVENT)


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

    # -- persistence ------------------------------------------------------------------------

    def export_state(self) -> dict[str, Any]:
        """Everything learned, JSON-friendly (a few kB per device), for :meth:`import_state`
        after a restart; parameters are not included (they come from the config)."""
        return {"version": STATE_VERSION, "devices": {
            name: {"stream": _dump(dev.stream, _STREAM_SCHEMA),
                   "series": {sn: _dump(s, _SERIES_SCHEMA) for sn, s in dev.series.items()},
                   "refused": dev.refused, "capped": dev.capped}
            for name, dev in self._devices.items()}}

    def import_state(self, obj: Any) -> int:
        """Restore :meth:`export_state` output; return how many devices were restored. A
        device whose saved state is damaged in any way starts afresh instead (its baselines
        are relearned); this never raises for bad content."""
        if not isinstance(obj, dict) or obj.get("version") != STATE_VERSION:
            return 0
        devices = obj.get("devices")
        if not isinstance(devices, dict):
            return 0
        restored = 0
        for name, data in devices.items():
            try:
                dev = self._restore(name, data)
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
                continue
            self._devices[name] = dev
            restored += 1
        return restored

    def _restore(self, name: Any, data: Any) -> _Device:
        if not isinstance(name, str) or not isinstance(data, dict):
            raise TypeError("bad device entry")
        stream = DeviceStream(name, self.config.device_params(name))
        _load(stream, data["stream"], _STREAM_SCHEMA)
        dev = _Device(stream)
        series = data["series"]
        if not isinstance(series, dict) or len(series) > stream.p.max_series:
            raise ValueError("bad series table")
        for sn, sd in series.items():
            if not isinstance(sn, str) or not isinstance(sd, dict):
                raise TypeError("bad series entry")
            unit = sd.get("unit")
            if unit is not None and not isinstance(unit, str):
                raise TypeError("bad unit")
            qc = SeriesQC(name, sn, unit, self.config.series_params(name, sn, unit))
            _load(qc, sd, _SERIES_SCHEMA)
            qc.ds = sorted(qc.dq)
            dev.series[sn] = qc
        dev.refused = _coerce("i", data.get("refused", 0))
        dev.capped = _coerce("b", data.get("capped", False))
        return dev

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


STATE_VERSION = 2

# what each saved field may hold: f float, f? optional float, i int, b bool, s? optional str,
# c? optional 24 floats, dq up to 32 floats, tt tuple of test names, ref 3 ints, act active
# value states, cnt counters, sact active stream states, agg folded counts, gap? a pending gap
_SERIES_SCHEMA = {
    "a": "f?", "a_prev": "f", "a_t": "f", "active": "act", "clim": "c?", "clim_ok": "b",
    "climw": "c?", "counts": "cnt", "dec": "i", "dq": "dq", "drift_since": "f",
    "drifting": "b", "inc": "i", "kind": "i", "last_commit": "f", "last_t": "f", "m": "f",
    "mf": "f", "n": "i", "nread": "i", "pend": "f?", "pend_cand": "i", "pend_flag": "i",
    "pend_ref": "ref", "pend_seq": "i", "pend_t": "f", "pend_tests": "tt", "quantum": "f",
    "run_hi": "i", "run_len": "i", "run_trip": "b", "run_v": "f", "spread": "f",
    "spread_w": "f", "unit": "s?",
}
_STREAM_SCHEMA = {
    "active": "sact", "agg": "agg", "counts": "cnt", "epoch": "i", "gap": "gap?",
    "interval": "f", "last_arrival": "f?", "last_seq": "i", "last_time": "f?", "n_int": "i",
    "n_off": "i", "n_size": "i", "offset": "f", "rate_t": "f", "short": "f", "silent": "b",
    "size_hi": "i",
    "size_lo": "i",
}


def _json_value(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (list, tuple, deque)):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    return v


def _dump(obj: Any, schema: dict[str, str]) -> dict[str, Any]:
    return {k: _json_value(getattr(obj, k)) for k in schema}


def _coerce(kind: str, v: Any) -> Any:
    """One saved field back to its Python form; raise ValueError/TypeError when it does not
    fit (the caller then drops the device's state)."""
    if kind.endswith("?"):
        if v is None:
            return None
        kind = kind[:-1]
    if kind == "f":
        if v == "inf":
            return math.inf
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError("not a finite number")
        return float(v)
    if kind == "i":
        if type(v) is not int or abs(v) > 2**63:
            raise ValueError("not an integer")
        return v
    if kind == "b":
        if type(v) is not bool:
            raise ValueError("not a bool")
        return v
    if kind == "s":
        if not isinstance(v, str):
            raise ValueError("not text")
        return v
    if kind == "c":
        if not isinstance(v, list) or len(v) != 24:
            raise ValueError("not a daily baseline")
        return [_coerce("f", x) for x in v]
    if kind == "dq":
        if not isinstance(v, list) or len(v) > WINDOW:
            raise ValueError("not a difference window")
        return deque(_coerce("f", x) for x in v)
    if kind == "tt":
        if not isinstance(v, list) or not all(x in _TEST_NAMES for x in v):
            raise ValueError("not test names")
        return tuple(v)
    if kind == "ref":
        if not isinstance(v, list) or len(v) != 3:
            raise ValueError("not a reference")
        return tuple(_coerce("i", x) for x in v)
    if kind == "act":
        if not isinstance(v, dict) or not set(v) <= _TEST_NAMES:
            raise ValueError("not value states")
        return {k: [_coerce("i", x[0]), _coerce("i", x[1])] for k, x in v.items()}
    if kind == "cnt":
        if not isinstance(v, dict) or len(v) > 16:
            raise ValueError("not counters")
        return {str(k): _coerce("i", x) for k, x in v.items()}
    if kind == "sact":
        if not isinstance(v, dict) or not set(v) <= {"clock_skew", "delayed", "rate", "size"}:
            raise ValueError("not stream states")
        return {k: _coerce("i", x) for k, x in v.items()}
    if kind == "agg":
        if not isinstance(v, dict) or not set(v) <= {"stream.seq_gap", "stream.seq_jump"}:
            raise ValueError("not folded counts")
        return {k: [_coerce("f", x) for x in a][:3] for k, a in v.items()}
    if kind == "gap":
        if not isinstance(v, list) or len(v) != 5:
            raise ValueError("not a gap")
        return [_coerce("i", v[0]), _coerce("i", v[1]), _coerce("i", v[2]), _coerce("f", v[3]),
                _coerce("i", v[4])]
    raise ValueError(f"unknown field kind {kind}")


def _load(obj: Any, data: Any, schema: dict[str, str]) -> None:
    if not isinstance(data, dict):
        raise TypeError("not a table")
    for key, kind in schema.items():
        if key in data:
            setattr(obj, key, _coerce(kind, data[key]))


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
