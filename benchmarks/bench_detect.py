"""Detection benchmark: precision and recall per anomaly class on the labelled streams of
``detect_gen``, false alarms per 10 000 normal readings, and the detectors' cost per reading.

Script mode (the full run: 72 devices over 11 days, about two minutes)::

    python -m benchmarks.bench_detect [--devices 72] [--days 11] [--seed 1] [--json]

pytest-benchmark (cost per reading, packs of 1 and 4 records, steady state)::

    pytest benchmarks/bench_detect.py --benchmark-only --benchmark-columns=median,ops

``tests/test_detect_benchmark.py`` runs a reduced scenario with the targets as assertions.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest

from benchmarks.detect_gen import CLASSES, T0, Anomaly, Scenario, generate
from twinlink.detect import DETECTED, DetectionEvent, Detector

#: event type -> the anomaly class it reports
TYPE_CLASS = {
    "value.out_of_range": "out_of_range", "value.spike": "spike", "value.flatline": "flat_line",
    "value.drift": "drift", "device.silent": "silence", "stream.seq_gap": "seq_gap",
    "stream.seq_jump": "seq_jump", "device.clock_skew": "clock_skew",
    "device.rate_anomaly": "rate_anomaly", "stream.delayed": "delayed",
}
VALUE_TYPES = {"value.out_of_range", "value.spike", "value.flatline", "value.drift",
               "value.rate_of_change", "value.syntax"}
SWEEP_EVERY = 5.0

# -- running --------------------------------------------------------------------------------


@dataclass
class Run:
    events: list[DetectionEvent]
    seconds: float  # CPU seconds in Detector.observe
    readings: int
    frames: int
    sweep_seconds: float  # CPU seconds in Detector.sweep
    sweeps: int
    #: final flags per frame, revisions applied: (device, epoch, seq) -> flags
    flags: dict[tuple[str, int, int], list[int]] = field(default_factory=dict)


def run(scenario: Scenario, detector: Detector | None = None,
        sweep_every: float = SWEEP_EVERY) -> Run:
    """Feed every frame to a Detector in arrival order, sweeping every ``sweep_every`` seconds
    of twin time; time only the detector calls."""
    det = detector or Detector()
    events: list[DetectionEvent] = []
    flags: dict[tuple[str, int, int], list[int]] = {}
    next_sweep = scenario.start
    spent = swept = 0.0
    readings = sweeps = 0
    clock = time.process_time  # CPU time: a loaded machine does not inflate it
    for f in scenario.frames:
        while next_sweep <= f.arrival:
            t0 = clock()
            events.extend(det.sweep(next_sweep))
            swept += clock() - t0
            sweeps += 1
            next_sweep += sweep_every
        t0 = clock()
        v = det.observe(f.device, f.seq, f.records, f.arrival, f.frame_size, f.epoch)
        spent += clock() - t0
        events.extend(v.events)
        flags[(f.device, f.epoch, f.seq)] = v.flags
        for epoch, seq, i, flag, _tests in v.revisions:
            flags[(f.device, epoch, seq)][i] = flag
        readings += len(f.records)
    events.extend(det.sweep(next_sweep))
    return Run(events, spent, readings, len(scenario.frames), swept, sweeps, flags)


class _Recording(Detector):
    """The twin's own detector, recording what it reports as it reports it (the twin stores
    the same events; the benchmark checks that too)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[DetectionEvent] = []
        self.spent = 0.0

    def observe(self, *a: Any, **kw: Any) -> Any:
        t0 = time.process_time()
        v = super().observe(*a, **kw)
        self.spent += time.process_time() - t0
        self.seen.extend(v.events)
        return v

    def sweep(self, now: float | None = None) -> list[DetectionEvent]:
        found = super().sweep(now)
        self.seen.extend(found)
        return found


def run_twin(scenario: Scenario, sweep_every: float = SWEEP_EVERY) -> tuple[Run, float]:
    """The same scenario through the real ingest: every frame sealed with its device's real key
    (a renewed context per scenario epoch, named in its kid context header), opened one by one
    by ``Twin.open_many`` on a SQLite store whose clock is the scenario's arrival time, with
    sweeps every ``sweep_every`` seconds of twin time. Flags are the ones the twin stored.
    Returns the run and the CPU seconds per frame of the whole ingest (open + store +
    detectors)."""
    import tempfile
    from pathlib import Path

    import twinlink
    from twinlink import frame, keys, senml
    from twinlink.provision import provision

    root = Path(tempfile.mkdtemp(prefix="twinlink-detect-"))
    tk = keys.TwinKey.generate()
    keys.write_private(root / "twin.key", tk.to_pem())
    keys.write_public(root / "twin.pub", tk.public_pem())
    db = str(root / "twin.db")
    bundles = {}
    for name in sorted({f.device for f in scenario.frames}):
        bundles[name] = provision(name, root / "twin.pub", root / "keys", db=db)
    ctxs: dict[tuple[str, int], Any] = {}
    det = _Recording()
    now = [scenario.start]
    twin = twinlink.Twin(db, root / "twin.key", workers=1, detect=det, clock=lambda: now[0])
    flags: dict[tuple[str, int, int], list[int]] = {}
    next_sweep = scenario.start
    readings = sweeps = 0
    cpu0 = time.process_time()
    for f in scenario.frames:
        while next_sweep <= f.arrival:
            twin.sweep(next_sweep)
            sweeps += 1
            next_sweep += sweep_every
        b = bundles[f.device]
        key = (f.device, f.epoch)
        if key not in ctxs:
            idc = None if f.epoch == 0 else b"ep" + f.epoch.to_bytes(4, "big")
            ctxs[key] = (b.context(idc), idc)
        ctx, idc = ctxs[key]
        plaintext = senml.encode(f.reading, f.time, f.units or None)
        fr = frame.seal(b.device_key.secret64, ctx, f.seq, plaintext, kid_context=idc)
        now[0] = f.arrival
        r = twin.open_many([fr])[0]
        if isinstance(r, twinlink.Reading):
            got = r.flags or {}
            flags[(f.device, f.epoch, f.seq)] = [got.get(rec[0], 2) for rec in f.records]
        readings += len(f.records)
    twin.sweep(next_sweep)
    per_frame = (time.process_time() - cpu0) / max(len(scenario.frames), 1)
    stored = sum(1 for e in twin.store.events(limit=1 << 30)
                 if e["type"] in TYPE_CLASS or e["type"] in VALUE_TYPES)
    twin.close()
    found = [e for e in det.seen if e.type in TYPE_CLASS or e.type in VALUE_TYPES]
    assert stored == len(found), f"the twin stored {stored} of {len(found)} detections"
    return Run(det.seen, det.spent, readings, len(scenario.frames), 0.0, sweeps, flags), per_frame


# -- scoring --------------------------------------------------------------------------------


def _slack(a: Anomaly) -> float:
    iv = float(a.detail.get("interval", 60.0))
    if a.cls == "drift":
        return 2 * 3600.0
    return 3 * iv + 2 * SWEEP_EVERY + 10


@dataclass
class Score:
    per_class: dict[str, dict[str, Any]]
    false_alarms: int
    misattributed: int
    normal_readings: int
    false_per_10k: float
    silence_latency: list[float]  # seconds from the last frame to device.silent, / interval
    false_by_type: Counter[str]
    flagged: Counter[int]  # final flags of the normal readings

    def table(self) -> str:
        rows = [f"{'class':14} {'injected':>8} {'recall':>7} {'precision':>9} {'events':>7}"]
        for cls in CLASSES:
            c = self.per_class[cls]
            rows.append(f"{cls:14} {c['injected']:8d} {c['recall']:7.3f} "
                        f"{c['precision']:9.3f} {c['events']:7d}")
        rows.append(f"false alarms: {self.false_alarms} on {self.normal_readings} normal "
                    f"readings = {self.false_per_10k:.2f} per 10 000 "
                    f"({dict(self.false_by_type) or 'none'}); events on another class's "
                    f"anomaly: {self.misattributed}")
        if self.flagged:
            total = sum(self.flagged.values())
            bad = self.flagged[3] + self.flagged[4]
            rows.append(f"final flags of normal readings: {dict(sorted(self.flagged.items()))}"
                        f" ({bad / total * 1e4:.1f} suspect or fail per 10 000)")
        if self.silence_latency:
            rows.append(f"silence raised after {max(self.silence_latency):.2f} x the interval "
                        f"at most (median {statistics.median(self.silence_latency):.2f})")
        return "\n".join(rows)


def score(scenario: Scenario, events: list[DetectionEvent],
          flags: dict[tuple[str, int, int], list[int]] | None = None) -> Score:
    """Match detected events to injected anomalies (same class, device, series for value
    classes, time within the anomaly's window plus a slack)."""
    by_key: dict[tuple[str, str, str | None], list[Anomaly]] = defaultdict(list)
    spans: dict[tuple[str, str | None], list[tuple[float, float]]] = defaultdict(list)
    for a in scenario.anomalies:
        by_key[(a.cls, a.device, a.series)].append(a)
        spans[(a.device, a.series)].append((a.start - 1.0, a.end + _slack(a)))
    for v in spans.values():
        v.sort()
    detected: set[int] = set()
    tp: Counter[str] = Counter()
    n_events: Counter[str] = Counter()
    false_by_type: Counter[str] = Counter()
    misattributed = 0
    latency: list[float] = []
    last_arrival: dict[str, list[float]] = defaultdict(list)
    for f in scenario.frames:
        last_arrival[f.device].append(f.arrival)

    def overlaps(device: str, series: str | None, t: float) -> bool:
        keys = [(device, None)] + ([(device, series)] if series is not None else [])
        if series is None:  # a device-level event during any episode of its series
            keys += [k for k in spans if k[0] == device and k[1] is not None]
        for k in keys:
            for lo, hi in spans.get(k, ()):
                if lo <= t <= hi:
                    return True
        return False

    for e in events:
        if e.outcome != DETECTED:
            continue
        t = e.time if e.time is not None else 0.0
        cls = TYPE_CLASS.get(e.type)
        series = e.series if e.type in VALUE_TYPES else None
        if cls is not None:
            n_events[cls] += 1
            hit = None
            for a in by_key.get((cls, e.device, series), ()):
                if a.start - 1.0 <= t <= a.end + _slack(a):
                    hit = a
                    break
            if hit is not None:
                tp[cls] += 1
                detected.add(id(hit))
                if cls == "silence":
                    arr = last_arrival[e.device]
                    i = bisect.bisect_left(arr, hit.start) - 1
                    if i >= 0:
                        latency.append((t - arr[i]) / float(hit.detail["interval"]))
                continue
        if overlaps(e.device, series, t):
            misattributed += 1
        else:
            false_by_type[e.type] += 1
    per_class: dict[str, dict[str, Any]] = {}
    for cls in CLASSES:
        injected = [a for a in scenario.anomalies if a.cls == cls]
        found = sum(1 for a in injected if id(a) in detected)
        per_class[cls] = {
            "injected": len(injected),
            "recall": found / len(injected) if injected else math.nan,
            "precision": tp[cls] / n_events[cls] if n_events[cls] else math.nan,
            "events": n_events[cls],
        }
    normal, flagged = _normal_readings(scenario, spans, flags)
    fa = sum(false_by_type.values())
    return Score(per_class, fa, misattributed, normal, fa / normal * 1e4 if normal else math.nan,
                 latency, false_by_type, flagged)


def _normal_readings(scenario: Scenario,
                     spans: dict[tuple[str, str | None], list[tuple[float, float]]],
                     flags: dict[tuple[str, int, int], list[int]] | None,
                     ) -> tuple[int, Counter[int]]:
    """How many readings lie outside every anomaly window, and their final flags."""
    starts = {k: [s for s, _ in v] for k, v in spans.items()}
    reach: dict[tuple[str, str | None], list[float]] = {}  # running max of the span ends
    for k, v in spans.items():
        hi, out = -math.inf, []
        for _, end in v:
            hi = max(hi, end)
            out.append(hi)
        reach[k] = out

    def inside(key: tuple[str, str | None], t: float) -> bool:
        st = starts.get(key)
        if not st:
            return False
        i = bisect.bisect_right(st, t) - 1
        return i >= 0 and reach[key][i] >= t

    n = 0
    flagged: Counter[int] = Counter()
    for f in scenario.frames:
        if inside((f.device, None), f.arrival):
            continue
        fl = flags.get((f.device, f.epoch, f.seq)) if flags else None
        for i, rec in enumerate(f.records):
            if not inside((f.device, rec[0]), f.arrival):
                n += 1
                if fl is not None:
                    flagged[fl[i]] += 1
    return n, flagged


# -- cost per reading -----------------------------------------------------------------------


def _steady_frames(records_per_frame: int, n: int = 4000) -> list[tuple[Any, ...]]:
    rnd = random.Random(7)
    names = [("temp", "Cel"), ("hum", "%RH"), ("pressure", "Pa"), ("power", "W")]
    out = []
    for k in range(n):
        t = T0 + 60.0 * k
        recs = [(nm, 20.0 + rnd.gauss(0, 0.1) + 3 * math.sin(t / 13751), u, t)
                for nm, u in names[:records_per_frame]]
        out.append(("bench", k, recs, t + 0.1, 60 + 12 * records_per_frame))
    return out


def cost_per_reading(records_per_frame: int, repeat: int = 5) -> float:
    """Median CPU seconds per reading of Detector.observe in steady state (baselines learned,
    every test evaluated), over ``repeat`` passes of 2000 frames."""
    frames = _steady_frames(records_per_frame)
    det = Detector()
    for f in frames[:2000]:  # warm up: baselines exist, drift still learning (its full cost)
        det.observe(*f)
    timed = frames[2000:]
    results = []
    for r in range(repeat):
        base = r * 10**6  # fresh, in-order sequence numbers each repeat
        # CPU time of this process: on a loaded machine wall time also counts other work
        t0 = time.process_time()
        for dev, seq, recs, arr, size in timed:
            det.observe(dev, seq + base, recs, arr + r * 86400.0 * 3, size)
        results.append((time.process_time() - t0) / (len(timed) * records_per_frame))
    return statistics.median(results)


def open_cost_per_frame(batches: int = 20, batch: int = 200) -> tuple[float, str]:
    """Median CPU seconds per frame of Twin.open_many (verify, decrypt, store) for the same
    4-value reading, on the active backend: the yardstick the detectors must stay under a
    quarter of. Returns (seconds, backend name)."""
    import tempfile
    from pathlib import Path

    import twinlink
    from twinlink import backends, keys
    from twinlink.provision import provision

    reading = {"temp": 21.5, "hum": 40.25, "pressure": 101325.0, "power": 230.5}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tk = keys.TwinKey.generate()
        keys.write_private(root / "twin.key", tk.to_pem())
        keys.write_public(root / "twin.pub", tk.public_pem())
        provision("bench", root / "twin.pub", root / "keys", db=str(root / "twin.db"))
        dev = twinlink.Device.load(root / "keys" / "bench.device", root / "state",
                                   chunk=1 << 20)
        twin = twinlink.Twin(root / "twin.db", root / "twin.key")
        try:
            sealed = [dev.seal_many([reading] * batch, time=T0) for _ in range(batches)]
            per = []
            for frames in sealed:
                t0 = time.process_time()
                twin.open_many(frames)
                per.append((time.process_time() - t0) / batch)
        finally:
            twin.close()
            dev.close()
    return statistics.median(per), backends.name()


@pytest.mark.parametrize("records", [1, 4])
@pytest.mark.benchmark(group="detect-per-frame")
def test_observe_cost(benchmark, records):
    frames = _steady_frames(records)
    det = Detector()
    for f in frames[:2000]:
        det.observe(*f)
    it = iter(range(10**9))

    def one():
        k = next(it)
        dev, _seq, recs, arr, size = frames[2000 + k % 2000]
        det.observe(dev, 10**6 + k, recs, arr + 60.0 * (k // 2000) * 2000, size)

    benchmark(one)


# -- script mode ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=72)
    ap.add_argument("--days", type=float, default=11.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--through-twin", action="store_true",
                    help="seal every frame and open it through Twin.open_many (slow: use "
                         "fewer devices and days)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    sc = generate(seed=args.seed, devices=args.devices, days=args.days)
    gen_s = time.perf_counter() - t0
    if args.through_twin:
        r, per_frame = run_twin(sc)
        s = score(sc, r.events, r.flags)
        print(f"through the real ingest (seal, Twin.open_many, SQLite, detectors): "
              f"{len(sc.frames)} frames, {per_frame * 1e6:.0f} us CPU per frame in all, "
              f"detectors {r.seconds / r.readings * 1e6:.2f} us per reading")
        print(s.table())
        return 0
    r = run(sc)
    s = score(sc, r.events, r.flags)
    c1, c4 = cost_per_reading(1), cost_per_reading(4)
    opened, backend = open_cost_per_frame()
    if args.json:
        json.dump({"per_class": s.per_class, "false_alarms": s.false_alarms,
                   "normal_readings": s.normal_readings, "false_per_10k": s.false_per_10k,
                   "misattributed": s.misattributed,
                   "silence_latency_max": max(s.silence_latency, default=None),
                   "us_per_reading_run": r.seconds / r.readings * 1e6,
                   "us_per_sweep": r.sweep_seconds / max(r.sweeps, 1) * 1e6,
                   "us_per_reading_pack1": c1 * 1e6, "us_per_reading_pack4": c4 * 1e6,
                   "us_open_many_per_frame": opened * 1e6, "backend": backend,
                   "frames": r.frames, "readings": r.readings}, sys.stdout, indent=1)
        print()
        return 0
    print(f"{args.devices} devices, {args.days:g} days, seed {args.seed}: {r.frames} frames, "
          f"{r.readings} readings, {len(sc.anomalies)} anomalies (generated in {gen_s:.1f} s)")
    print(s.table())
    print(f"cost (CPU time): {r.seconds / r.readings * 1e6:.2f} us per reading over the "
          f"whole run; steady state median {c1 * 1e6:.2f} us (packs of 1), {c4 * 1e6:.2f} us "
          f"(packs of 4); a sweep of {len(sc.intervals)} devices "
          f"{r.sweep_seconds / max(r.sweeps, 1) * 1e6:.1f} us")
    print(f"yardstick: Twin.open_many {opened * 1e6:.1f} us per 4-value frame ({backend} "
          f"backend); the detectors take {4 * c4 / opened * 100:.0f} % of that for the same "
          f"frame (target: at most 25 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
