"""Seeded generator of labelled telemetry for the detection benchmark (issue 12).

Realistic normal streams per device — a daily cycle, slow weather, sensor noise and
quantisation, benign steps (a door opening cools a room for minutes; appliances switch a few
hundred to two thousand watts on and off), cumulative counters, network latency with a heavy
tail, send-interval jitter, and one benign security-context renewal per device (the sequence
restarts at 0) — with injected anomalies of ten classes, each a labelled :class:`Anomaly`:

  out_of_range  a sentinel or overflow value outside the unit's physical range (1-3 readings)
  spike         one reading 15-60 noise sigmas off (counters: a glitch of that many increments)
  flat_line     the sensor sticks at its value for 30-120 readings
  drift         a ramp to 1.5-5 degC / 8-20 %RH / 1500-4000 Pa over 6-24 h, held 6-12 h
  silence       the device stops sending for 5-20 intervals (numbering continues: it was off)
  seq_gap       one frame lost
  seq_jump      the sequence number leaps 5 000 - 1 000 000 ahead (burns the replay window)
  clock_skew    the device clock jumps 60 s - 2 h ahead or back for 10-40 frames, then resyncs
  rate_anomaly  a flood (8-30x the usual rate, 20-60 frames) or oversized frames (5-20 frames
                carrying a 300-1500 byte blob)
  delayed       every frame held back 45-150 s (at most 1.5 intervals) for 10-30 frames

:func:`generate` returns a :class:`Scenario`: frames sorted by arrival, each a
``(device, seq, records, arrival, frame_size, epoch)`` with ``reading``/``units``/``time``
kept so the same frame can be sealed for real (``senml.encode(reading, time, units)``), and
the anomalies with their windows. Frame sizes are the real SenML size plus the 107 bytes a
twinlink/1 frame adds.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from twinlink import senml

T0 = 1_760_000_000.0
DAY = 86400.0
FRAME_OVERHEAD = 107
CLASSES = ("out_of_range", "spike", "flat_line", "drift", "silence", "seq_gap", "seq_jump",
           "clock_skew", "rate_anomaly", "delayed")
VALUE_CLASSES = ("out_of_range", "spike", "flat_line", "drift")
STREAM_CLASSES = ("silence", "seq_gap", "seq_jump", "clock_skew", "rate_anomaly", "delayed")
DRIFTABLE = ("Cel", "%RH", "Pa")


@dataclass
class Anomaly:
    """One injected anomaly: its class, where, and the twin-time window it can be seen in."""

    id: int
    cls: str
    device: str
    series: str | None
    start: float
    end: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Frame:
    device: str
    seq: int
    records: list[tuple[str, Any, str | None, float | None]]
    arrival: float
    frame_size: int
    epoch: int
    reading: dict[str, Any]
    units: dict[str, str]
    time: float

    def as_tuple(self) -> tuple[str, int, list[Any], float, int, int]:
        return (self.device, self.seq, self.records, self.arrival, self.frame_size, self.epoch)


@dataclass
class Scenario:
    frames: list[Frame]
    anomalies: list[Anomaly]
    start: float
    end: float
    intervals: dict[str, float]


# -- normal signals -------------------------------------------------------------------------

class _AR:
    """Slow "weather": an AR(1) process with standard deviation ``sd`` and time constant
    ``tau`` seconds, smoothed over three hours (weather has no minute-scale jitter of its own),
    advanced by elapsed time."""

    SMOOTH = 3 * 3600.0

    def __init__(self, rnd: random.Random, sd: float, tau: float) -> None:
        self.rnd, self.sd, self.tau, self.x = rnd, sd, tau, rnd.gauss(0, sd)
        self.y = self.x

    def at(self, dt: float) -> float:
        a = math.exp(-dt / self.tau)
        self.x = a * self.x + self.rnd.gauss(0, self.sd * math.sqrt(1 - a * a))
        self.y += (self.x - self.y) * (1 - math.exp(-dt / self.SMOOTH))
        return self.y


class _Signal:
    """One series' true value over time: ``value(t, dt)``."""

    unit = ""
    noise = 0.0
    quantum = 0.0
    cumulative = False

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd

    def value(self, t: float, dt: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def q(self, x: float) -> float:
        return round(x / self.quantum) * self.quantum if self.quantum else x


class _Temp(_Signal):
    unit = "Cel"

    def __init__(self, rnd: random.Random) -> None:
        super().__init__(rnd)
        self.base = rnd.uniform(17, 24)
        self.amp = rnd.uniform(0.8, 4.0)
        self.phase = rnd.uniform(0, DAY)
        # quantised sensors flicker in their last digit (noise at least half a step); one that
        # does not repeats values for hours and its flat-line limit grows to match
        self.quantum = rnd.choice((0.01, 0.01, 0.0625, 0.1)) if rnd.random() < 0.5 else 0.0
        self.noise = max(rnd.uniform(0.02, 0.1), self.quantum / 2)
        self.weather = _AR(rnd, rnd.uniform(0.2, 0.5), DAY)
        self.door_rate = rnd.uniform(1, 6) / DAY  # door openings per second
        self.door = 0.0  # current door-induced offset
        self.door_target = 0.0
        self.door_left = 0.0

    def value(self, t: float, dt: float) -> float:
        if self.door_left <= 0 and self.rnd.random() < self.door_rate * dt:
            self.door_target = -self.rnd.uniform(0.8, 3.0)
            self.door_left = self.rnd.uniform(60, 600)
        if self.door_left > 0:  # cooling towards the target while the door is open
            self.door += (self.door_target - self.door) * (1 - math.exp(-dt / 90))
            self.door_left -= dt
        else:  # recovering
            self.door *= math.exp(-dt / 600)
        cycle = self.amp * math.sin(2 * math.pi * (t - self.phase) / DAY)
        return (self.base + cycle + self.weather.at(dt) + self.door
                + self.rnd.gauss(0, self.noise))


class _Hum(_Signal):
    unit = "%RH"

    def __init__(self, rnd: random.Random) -> None:
        super().__init__(rnd)
        self.base = rnd.uniform(35, 60)
        self.amp = rnd.uniform(2, 8)
        self.phase = rnd.uniform(0, DAY)
        self.quantum = rnd.choice((0.1, 0.5, 0.0))
        self.noise = max(rnd.uniform(0.2, 0.6), self.quantum / 2)
        self.weather = _AR(rnd, rnd.uniform(2, 4), DAY)

    def value(self, t: float, dt: float) -> float:
        cycle = self.amp * math.sin(2 * math.pi * (t - self.phase) / DAY)
        x = self.base + cycle + self.weather.at(dt) + self.rnd.gauss(0, self.noise)
        return min(100.0, max(0.0, x))


class _Pressure(_Signal):
    unit = "Pa"

    def __init__(self, rnd: random.Random) -> None:
        super().__init__(rnd)
        self.base = rnd.uniform(98000, 103000)
        self.noise = rnd.uniform(3, 10)
        self.quantum = 1.0
        self.weather = _AR(rnd, rnd.uniform(300, 600), 2 * DAY)

    def value(self, t: float, dt: float) -> float:
        tide = 100 * math.sin(4 * math.pi * t / DAY)  # the semi-diurnal atmospheric tide
        return self.base + tide + self.weather.at(dt) + self.rnd.gauss(0, self.noise)


class _Power(_Signal):
    unit = "W"

    def __init__(self, rnd: random.Random) -> None:
        super().__init__(rnd)
        self.base = rnd.uniform(40, 200)
        self.noise = rnd.uniform(2, 8)
        self.quantum = 0.1
        self.loads: list[list[float]] = []  # [watts, seconds left]
        self.rate = rnd.uniform(4, 12) / DAY

    def value(self, t: float, dt: float) -> float:
        hour = (t % DAY) / 3600
        busy = 2.0 if 7 <= hour <= 22 else 0.3
        if self.rnd.random() < self.rate * busy * dt:
            self.loads.append([self.rnd.uniform(300, 2000), self.rnd.uniform(300, 3600)])
        for load in self.loads:
            load[1] -= dt
        self.loads = [ld for ld in self.loads if ld[1] > 0]
        return max(0.0, self.base + sum(ld[0] for ld in self.loads)
                   + self.rnd.gauss(0, self.noise))


class _Counter(_Signal):
    """A cumulative count (packets, litres) with Poisson-like increments per second."""

    unit = "count"
    cumulative = True

    def __init__(self, rnd: random.Random) -> None:
        super().__init__(rnd)
        self.total = float(rnd.randrange(0, 10**6))
        self.per_s = rnd.uniform(0.3, 3.0)
        self.noise = math.sqrt(self.per_s * 60)

    def value(self, t: float, dt: float) -> float:
        lam = self.per_s * dt
        self.total += max(0, round(self.rnd.gauss(lam, math.sqrt(lam)))) if lam > 0 else 0
        return self.total


class _Energy(_Counter):
    unit = "Wh"

    def __init__(self, rnd: random.Random, power: _Power) -> None:
        super().__init__(rnd)
        self.power = power
        self.total = rnd.uniform(1e4, 1e6)
        self.last = power.base
        self.noise = power.noise

    def value(self, t: float, dt: float) -> float:
        self.total += self.last * dt / 3600
        return round(self.total, 1)


_PROFILES = (
    ("env", ("temp", "hum", "pressure")),
    ("room", ("temp", "hum")),
    ("probe", ("temp",)),
    ("meter", ("power", "energy", "temp")),
    ("traffic", ("packets", "temp", "hum", "pressure")),
)


def _make_series(rnd: random.Random, names: tuple[str, ...]) -> dict[str, _Signal]:
    out: dict[str, _Signal] = {}
    for name in names:
        if name == "temp":
            out[name] = _Temp(rnd)
        elif name == "hum":
            out[name] = _Hum(rnd)
        elif name == "pressure":
            out[name] = _Pressure(rnd)
        elif name == "power":
            out[name] = _Power(rnd)
        elif name == "energy":
            power = out["power"]
            assert isinstance(power, _Power)
            out[name] = _Energy(rnd, power)
        else:
            out[name] = _Counter(rnd)
    return out


# -- anomaly schedules ----------------------------------------------------------------------

def _out_of_range_value(rnd: random.Random, sig: _Signal) -> float:
    u = sig.unit
    if u == "Cel":
        return rnd.choice((-9999.0, -300.0, 1e5, 32767.0))
    if u == "%RH":
        return rnd.choice((-1.0, 101.5, 255.0, -9999.0))
    if u == "Pa":
        return rnd.choice((-1.0, -9999.0, 2e10))
    if u == "W":
        return rnd.choice((1e11, -9.9e10, 3.4e38))
    return rnd.choice((-1.0, -9999.0))  # counters never go negative


def _schedule(rnd: random.Random, start: float, end: float, classes: tuple[str, ...],
              rate_per_day: float, interval: float, guard: float) -> list[tuple[float, str]]:
    """Non-overlapping (start time, class) slots, drawn with a round-robin start so every class
    gets its share."""
    slots: list[tuple[float, str]] = []
    cursor = start
    k = rnd.randrange(len(classes))
    while True:
        cursor += rnd.expovariate(rate_per_day / DAY) + guard
        cls = classes[k % len(classes)]
        k += 1
        dur = _duration(rnd, cls, interval)
        if cursor + dur + guard >= end:
            return slots
        slots.append((cursor, cls))
        cursor += dur + guard


def _duration(rnd: random.Random, cls: str, interval: float) -> float:
    """A rough upper bound of how long an episode lasts (for spacing)."""
    return {
        "out_of_range": 3 * interval, "spike": interval, "flat_line": 120 * interval,
        "drift": 36 * 3600.0, "silence": 20 * interval, "seq_gap": 3 * interval,
        "seq_jump": interval, "clock_skew": 40 * interval, "rate_anomaly": 60 * interval,
        "delayed": 32 * interval,
    }[cls]


# -- the generator --------------------------------------------------------------------------

def generate(seed: int = 1, devices: int = 72, days: float = 11.0,
             warmup_days: float = 4.0, rate_per_day: float = 6.0) -> Scenario:
    """A labelled scenario: ``devices`` devices over ``days`` days, anomalies injected after
    ``warmup_days`` (drift needs a day of history for its daily baseline), about
    ``rate_per_day`` stream episodes per device and day and as many value episodes per device
    and day spread over its series."""
    rnd = random.Random(seed)
    start, end = T0, T0 + days * DAY
    frames: list[Frame] = []
    anomalies: list[Anomaly] = []
    intervals: dict[str, float] = {}
    for d in range(devices):
        name = f"dev-{d:03d}"
        _kind, names = _PROFILES[d % len(_PROFILES)]
        interval = rnd.choice((30.0, 60.0, 60.0, 120.0, 300.0))
        intervals[name] = interval
        sigs = _make_series(rnd, names)
        for sig in sigs.values():
            if type(sig) is _Counter:  # its noise is the spread of one interval's increment
                sig.noise = math.sqrt(sig.per_s * interval)
        anomalies_before = len(anomalies)
        frames.extend(_device_frames(rnd, name, interval, sigs, start, end,
                                     start + warmup_days * DAY, rate_per_day, anomalies))
        for a in anomalies[anomalies_before:]:
            a.detail["interval"] = interval
    frames.sort(key=lambda f: f.arrival)
    for i, a in enumerate(anomalies):
        a.id = i
    return Scenario(frames, anomalies, start, end, intervals)


def _device_frames(rnd: random.Random, device: str, interval: float, sigs: dict[str, _Signal],
                   start: float, end: float, inject_from: float, rate_per_day: float,
                   anomalies: list[Anomaly]) -> list[Frame]:
    guard = 40 * interval
    stream_slots = _schedule(rnd, inject_from, end, STREAM_CLASSES, rate_per_day, interval,
                             guard)
    # value episodes: per series, its own timeline (drift only where it is meaningful)
    value_slots: list[tuple[float, str, str]] = []
    per_series = rate_per_day / len(sigs)
    for sname, sig in sigs.items():
        # no spikes on power: a brief load is a genuine one-sample excursion there, so the
        # spike test is off for electrical loads by default
        classes = ("out_of_range", "flat_line") if sig.unit == "W" else VALUE_CLASSES[:3]
        for t, cls in _schedule(rnd, inject_from, end, classes, per_series, interval, guard):
            value_slots.append((t, cls, sname))
        if sig.unit in DRIFTABLE:  # drift lasts a day or more: its own timeline per series
            for t, cls in _schedule(rnd, inject_from, end, ("drift",), 1.0, interval, DAY / 2):
                value_slots.append((t, cls, sname + "\0drift"))
    value_slots.sort()
    stream_slots.sort()

    latency = rnd.uniform(0.02, 0.3)
    clock = rnd.uniform(-1.0, 1.0)  # the device clock's small constant error
    renewal = rnd.uniform(start + DAY * 0.5, end - DAY * 0.5)
    epoch, seq = 0, 0
    t = start + rnd.uniform(0, interval)
    frames: list[Frame] = []
    last_t = t - interval

    # episode state
    vs_i = ss_i = 0
    cur_stream: dict[str, Any] | None = None
    cur_value: dict[str, dict[str, Any]] = {}
    units = {n: s.unit for n, s in sigs.items()}

    while t < end:
        # begin episodes whose start has come
        while ss_i < len(stream_slots) and stream_slots[ss_i][0] <= t and cur_stream is None:
            cur_stream = _begin_stream(rnd, stream_slots[ss_i][1], device, interval, t,
                                       anomalies)
            ss_i += 1
        while vs_i < len(value_slots) and value_slots[vs_i][0] <= t:
            _, cls, key = value_slots[vs_i]
            vs_i += 1
            if key not in cur_value:
                cur_value[key] = _begin_value(rnd, cls, device, key.split("\0")[0], interval,
                                              t, anomalies)
        if epoch == 0 and t >= renewal:
            epoch, seq = 1, 0  # benign context renewal: numbering restarts

        step = interval * rnd.uniform(0.98, 1.02)
        kind = cur_stream["cls"] if cur_stream else None

        if kind == "silence" and cur_stream is not None and t < cur_stream["anomaly"].end:
            t = cur_stream["anomaly"].end  # the device was off: nothing sent, numbering waits
            cur_stream = None
            continue

        dt = t - last_t
        last_t = t
        reading: dict[str, Any] = {}
        truth: dict[str, float] = {}
        for sname, sig in sigs.items():
            if isinstance(sig, _Energy):  # the meter integrates the true power, not a glitch
                sig.last = truth.get("power", sig.last)
            x = truth[sname] = sig.value(t, dt)
            raw = False
            for key in (sname + "\0drift", sname):  # a drift, then anything on top of it
                ep = cur_value.get(key)
                if ep is not None:
                    x, done = _apply_value(rnd, ep, sig, x, t)
                    raw = raw or bool(ep.get("raw"))
                    if done:
                        del cur_value[key]
            reading[sname] = x if raw else sig.q(x)
        device_time = t + clock
        arrival = t + latency * rnd.lognormvariate(0, 0.5)
        if rnd.random() < 0.01:
            arrival += rnd.uniform(1, 8)  # an occasional slow delivery

        # stream episodes that change this frame
        send = True
        if cur_stream is not None:
            a = cur_stream["anomaly"]
            left = cur_stream["left"]
            cls = cur_stream["cls"]
            if cls == "seq_gap":
                send = False
            elif cls == "seq_jump":
                seq += cur_stream["jump"]
            elif cls == "clock_skew":
                device_time += cur_stream["skew"]
            elif cls == "delayed":
                arrival += cur_stream["delay"]
            elif cls == "rate_anomaly" and cur_stream["mode"] == "flood":
                step = interval / cur_stream["factor"]
            elif cls == "rate_anomaly":
                reading["blob"] = "x" * cur_stream["blob"]
            cur_stream["left"] = left - 1
            if cur_stream["left"] <= 0:
                a.end = arrival + (cur_stream["delay"] if cls == "delayed" else 0.0) + interval
                if cls == "clock_skew":
                    a.end += 3 * interval  # the resync is seen on the next frames
                cur_stream = None

        if send:
            time_ = round(device_time, 3)
            units_now = {k: v for k, v in units.items() if k in reading}
            size = len(senml.encode(reading, time_, units_now)) + FRAME_OVERHEAD
            records = [(n, v, units_now.get(n), time_) for n, v in reading.items()]
            frames.append(Frame(device, seq, records, arrival, size, epoch, reading, units_now,
                                time_))
        seq += 1
        t += step
    return frames


def _begin_stream(rnd: random.Random, cls: str, device: str, interval: float, t: float,
                  anomalies: list[Anomaly]) -> dict[str, Any]:
    a = Anomaly(0, cls, device, None, t, t + interval)
    ep: dict[str, Any] = {"cls": cls, "anomaly": a, "left": 1}
    if cls == "silence":
        a.end = t + rnd.uniform(5, 20) * interval
        a.detail["seconds"] = round(a.end - t, 1)
    elif cls == "seq_gap":
        # one lost frame: two in a row would leave three intervals without a frame, which is
        # (correctly) also a silence
        a.detail["missing"] = 1
    elif cls == "seq_jump":
        ep["jump"] = rnd.randrange(5000, 1_000_000)
        a.detail["jump"] = ep["jump"]
    elif cls == "clock_skew":
        ep["left"] = rnd.randrange(10, 41)
        ep["skew"] = rnd.choice((1, -1)) * rnd.uniform(60, 7200)
        a.detail["skew"] = round(ep["skew"], 1)
    elif cls == "rate_anomaly":
        if rnd.random() < 0.5:
            ep.update(mode="flood", left=rnd.randrange(20, 61), factor=rnd.uniform(8, 30))
            a.detail.update(mode="flood", factor=round(ep["factor"], 1))
        else:
            ep.update(mode="size", left=rnd.randrange(5, 21), blob=rnd.randrange(300, 1500))
            a.detail.update(mode="size", blob=ep["blob"])
    elif cls == "delayed":
        ep["left"] = rnd.randrange(10, 31)
        # held back by up to 1.5 intervals: longer would also be a (true) silence
        ep["delay"] = rnd.uniform(45, max(45.0, min(150.0, 1.5 * interval)))
        a.detail["delay"] = round(ep["delay"], 1)
    anomalies.append(a)
    return ep


def _begin_value(rnd: random.Random, cls: str, device: str, series: str, interval: float,
                 t: float, anomalies: list[Anomaly]) -> dict[str, Any]:
    a = Anomaly(0, cls, device, series, t, t + interval)
    ep: dict[str, Any] = {"cls": cls, "anomaly": a, "left": 1, "t0": t}
    if cls == "out_of_range":
        ep["left"] = rnd.randrange(1, 4)
    elif cls == "spike":
        ep["sigmas"] = rnd.uniform(15, 60) * rnd.choice((1, -1))
    elif cls == "flat_line":
        ep["left"] = rnd.randrange(30, 121)
    elif cls == "drift":
        ep["ramp"] = rnd.uniform(6, 24) * 3600
        ep["hold"] = rnd.uniform(6, 12) * 3600
        ep["sign"] = rnd.choice((1, -1))
    anomalies.append(a)
    return ep


def _apply_value(rnd: random.Random, ep: dict[str, Any], sig: _Signal, x: float,
                 t: float) -> tuple[float, bool]:
    """The injected value instead of (or on top of) the true ``x``; whether the episode ended."""
    a: Anomaly = ep["anomaly"]
    cls = ep["cls"]
    if cls == "out_of_range":
        ep["raw"] = True
        ep["left"] -= 1
        v = _out_of_range_value(rnd, sig)
        a.detail.setdefault("values", []).append(v)
        a.end = t + 1.0
        return v, ep["left"] <= 0
    if cls == "spike":
        mag = ep["sigmas"] * max(sig.noise, sig.quantum or 0.0)
        a.detail["magnitude"] = round(mag, 3)
        a.end = t + 1.0
        if sig.unit == "%RH":
            mag = max(-x, min(100 - x, mag)) if abs(mag) < 100 else mag
        return x + mag, True
    if cls == "flat_line":
        if "value" not in ep:
            ep["value"] = sig.q(x)
            if sig.cumulative:
                ep["value"] = x
        ep["left"] -= 1
        a.end = t + 1.0
        return ep["value"], ep["left"] <= 0
    # drift: a ramp, a hold, then the sensor is replaced (back to truth)
    if "size" not in ep:
        ep["size"] = {"Cel": rnd.uniform(1.5, 5.0), "%RH": rnd.uniform(8, 20),
                      "Pa": rnd.uniform(1500, 4000)}[sig.unit] * ep["sign"]
        a.detail["size"] = round(ep["size"], 2)
        a.detail["ramp_h"] = round(ep["ramp"] / 3600, 1)
    el = t - ep["t0"]
    if el >= ep["ramp"] + ep["hold"]:
        a.end = t
        return x, True
    a.end = t + 1.0
    return x + ep["size"] * min(1.0, el / ep["ramp"]), False
