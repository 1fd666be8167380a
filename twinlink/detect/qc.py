"""Per-series value QC: gross range, spike, rate of change, flat line and slow drift.

One :class:`SeriesQC` per (device, series name), a few dozen floats of state:

- **gross range**: outside the unit's physical bounds (or configured ``min``/``max``) fails
  (flag 4); outside an operator span (``suspect_min``/``suspect_max``) is suspect (3). Needs no
  baseline. A failed value never enters any baseline.
- **spike**: the QARTOD spike statistic on a reading and both its neighbours,
  ``|x - (a + b) / 2| - |b - a| / 2``, against ``spike_k`` robust sigmas of the first
  differences (1.4826 x the median of the last 32 absolute differences: median/MAD about zero).
  A step (a door opening, a load switching) moves both neighbours and does not count. The right
  neighbour is the *next* reading, so a departing reading is flagged suspect as a candidate at
  once and settled by the next one (:attr:`Verdict.revisions`); the event fires on confirmation.
  A confirmed spike never enters the baselines.
- **rate of change**: a change faster than ``max_rate`` (units/s; per-unit physical defaults,
  none for quantities that legitimately step) that *persists* into the next reading.
- **flat line**: a run of readings within ``flat_eps`` of each other longer than
  ``max(flat_count, 2 x the longest run this series had before + 1)``: suspect at that length,
  fail at twice it. Quantised sensors that repeat values normally learn a longer threshold.
- **drift**: an hour-of-day baseline (24 bins, linearly interpolated, learned over about four
  days) removes the daily cycle; the residual is smoothed (EWMA, one hour) and compared with its
  own learned spread (EWMA of its magnitude, three days): beyond ``drift_k`` spreads is drift,
  back within half of it clears. Off by default for units whose level follows usage.

Events fire on *entering* a state; repeats while in it only count; ``<type>.cleared`` (info)
fires after :data:`CLEAR_AFTER` clean readings. The first ``baseline`` readings are flagged 2
(not evaluated) except by gross range. Non-finite and oversized numbers are contained: every
learned quantity is fed clamped, finite numbers only, so no NaN or infinity can enter a baseline.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from typing import Any

from .config import SeriesParams
from .events import (
    FAIL,
    MISSING,
    NOT_EVALUATED,
    PASS,
    SUSPECT,
    DetectionEvent,
    Revision,
    cleared,
    event,
)

CLEAR_AFTER = 5          # clean readings before a value state clears
WINDOW = 32              # first differences kept for the robust scale
MAD_TO_SIGMA = 1.4826
DAY, HOUR = 86400.0, 3600.0
CLIM_MEMORY = 4 * HOUR   # seconds of data per hour bin (about four days of that hour)
CLIM_READY = 1200.0      # seconds of data every bin needs before drift is evaluated
DRIFT_TAU = HOUR         # smoothing of the residual
SPREAD_TAU = 7 * DAY     # learning of the residual's spread
SPREAD_READY = 36 * HOUR  # seconds of spread learning before drift is evaluated
MAX_DT = 600.0           # one reading never weighs more than ten minutes of data
Z_CLAMP = 1e6
SPIKE_SPREAD = 0.3       # a spike's neighbours differ by at most this share of its excursion

# kinds of series
UNKNOWN, NUMERIC, OTHER = 0, 1, 2

_TEST_EVENT = {"gross_range": "value.out_of_range", "spike": "value.spike",
               "rate_of_change": "value.rate_of_change", "flat_line": "value.flatline",
               "drift": "value.drift", "syntax": "value.syntax"}


def as_number(value: Any) -> float | None:
    """A record value as a float for QC; ``None`` for non-numeric values (text, bytes, bools,
    None). Integers too large for a float become ±inf (and so fail gross range)."""
    t = type(value)
    if t is float:
        return value  # type: ignore[no-any-return]
    if t is int:
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, (int, float)) and not isinstance(value, bool):  # subclasses
        try:
            return float(value)
        except (OverflowError, ValueError, TypeError):
            return math.inf
    return None


class SeriesQC:
    """The QC state of one series; :meth:`observe` is the per-reading entry point."""

    __slots__ = (
        "a",
        "a_t",
        "active",
        "clim",
        "clim_ok",
        "climw",
        "counts",
        "dec",
        "device",
        "dq",
        "drifting",
        "ds",
        "inc",
        "kind",
        "last_t",
        "mad",
        "m",
        "n",
        "name",
        "p",
        "pend",
        "pend_cand",
        "pend_flag",
        "pend_idx",
        "pend_seq",
        "pend_t",
        "pend_tests",
        "quantum",
        "run_hi",
        "run_len",
        "run_trip",
        "run_v",
        "spread",
        "spread_w",
        "unit",
    )

    def __init__(self, device: str, name: str, unit: str | None, params: SeriesParams) -> None:
        self.device, self.name, self.unit, self.p = device, name, unit, params
        self.kind = UNKNOWN
        self.n = 0                      # committed numeric readings
        self.a: float | None = None     # last committed value (the left neighbour)
        self.a_t = 0.0
        self.pend: float | None = None  # newest reading, awaiting its right neighbour
        self.pend_t = 0.0
        self.pend_seq = 0
        self.pend_idx = 0
        self.pend_cand = 0              # bit 1: spike candidate, bit 2: rate candidate
        self.pend_flag = PASS           # flag from the other tests at observe time
        self.pend_tests: tuple[str, ...] = ()
        self.dq: deque[float] = deque()  # first differences, arrival order
        self.ds: list[float] = []        # the same, sorted
        self.quantum = math.inf          # the data's resolution, learned
        self.mad = -1.0                  # cached MAD of ds; -1: stale
        self.run_v = 0.0
        self.run_len = 0
        self.run_hi = 0                  # longest completed clean run
        self.run_trip = False
        self.inc = 0
        self.dec = 0
        self.clim: list[float] | None = None
        self.climw: list[float] | None = None
        self.m = 0.0
        self.spread = 0.0
        self.spread_w = 0.0
        self.drifting = False
        self.clim_ok = False
        self.active: dict[str, list[int]] = {}  # test -> [occurrences, clean readings since]
        self.last_t = 0.0
        self.counts = {"readings": 0, "fail": 0, "suspect": 0, "missing": 0}

    # -- events -----------------------------------------------------------------------------

    def _trip(self, test: str, seq: int, t: float, events: list[DetectionEvent],
              detail: dict[str, Any] | None = None) -> None:
        st = self.active.get(test)
        if st is None:
            self.active[test] = [1, 0]
            events.append(event(_TEST_EVENT[test], self.device, self.name, seq, t, detail))
        else:
            st[0] += 1
            st[1] = 0

    def _settle(self, tripped: tuple[str, ...], seq: int, t: float,
                events: list[DetectionEvent]) -> None:
        """Count one clean reading for every active state this reading did not trip."""
        done = None
        for test, st in self.active.items():
            if test in tripped or (test == "drift" and self.drifting):
                continue
            st[1] += 1
            if st[1] >= CLEAR_AFTER:
                done = [test] if done is None else [*done, test]
        if done:
            for test in done:
                occurrences = self.active.pop(test)[0]
                events.append(event(cleared(_TEST_EVENT[test]), self.device, self.name, seq, t,
                                    count=occurrences))

    # -- the robust scale of first differences ----------------------------------------------

    def _floor(self) -> float:
        """The smallest scale that means anything: the data's resolution, or a relative
        floor for continuous data that never changes."""
        q = self.quantum
        floor = 1e-9 * abs(self.a or 0.0)
        if floor < 1e-300:
            floor = 1e-300
        return q if q != math.inf and q > floor else floor

    def scale(self) -> float:
        """1.4826 x the MAD of the recent first differences (exact; cached until the next
        difference arrives), at least the data's resolution."""
        mad = self.mad
        if mad < 0:
            ds = self.ds
            n = len(ds)
            if not n:
                return self._floor()
            k, mid = n >> 1, n >> 1
            med = ds[mid]
            i, j, d = mid - 1, mid + 1, 0.0
            for _ in range(k):  # the k-th smallest |ds - med|: walk outwards from the median
                left = med - ds[i] if i >= 0 else math.inf
                right = ds[j] - med if j < n else math.inf
                if left <= right:
                    d, i = left, i - 1
                else:
                    d, j = right, j + 1
            mad = self.mad = d
        sc = MAD_TO_SIGMA * mad
        floor = self._floor()
        return sc if sc > floor else floor

    def _departs(self, dev: float, k: float) -> bool:
        """Whether a deviation exceeds ``k`` scales; the exact MAD only when the quartile
        bounds (MAD lies between the smaller and larger half-IQR) cannot tell."""
        ds = self.ds
        n = len(ds)
        med = ds[n >> 1]
        lo, hi = med - ds[n >> 2], ds[(3 * n) >> 2] - med
        if lo > hi:
            lo, hi = hi, lo
        floor = self._floor()
        lo *= MAD_TO_SIGMA
        hi *= MAD_TO_SIGMA
        if dev <= k * (lo if lo > floor else floor):
            return False
        if dev > k * (hi if hi > floor else floor):
            return True
        return dev > k * self.scale()

    def _push_diff(self, d: float) -> None:
        ds = self.ds
        i = bisect_left(ds, d)
        # the data's resolution: the smallest clear gap between two differences seen
        tol = 1e-9 * (abs(self.a or 0.0) + abs(d))
        if i > 0:
            g = d - ds[i - 1]
            if tol < g < self.quantum:
                self.quantum = g
        if i < len(ds):
            g = ds[i] - d
            if tol < g < self.quantum:
                self.quantum = g
        ds.insert(i, d)
        dq = self.dq
        dq.append(d)
        if len(dq) > WINDOW:
            del ds[bisect_left(ds, dq.popleft())]
        self.mad = -1.0

    # -- the entry point --------------------------------------------------------------------

    def observe(self, value: Any, t: float, seq: int, idx: int, events: list[DetectionEvent],
                revisions: list[Revision]) -> tuple[int, tuple[str, ...]]:
        """QC one reading taken at twin time ``t``; return (flag, tests that tripped). Appends
        events and revisions of the previous reading's flag. Never raises for any value."""
        self.counts["readings"] += 1
        x = as_number(value)
        if x is None:
            return self._other(value, seq, t, events)
        if self.kind == OTHER:
            return self._syntax(seq, t, events, "number where text was")
        self.kind = NUMERIC
        if x != x:  # NaN: QARTOD "missing"
            self.counts["missing"] += 1
            return MISSING, ()
        p = self.p
        tests = p.tests
        if "gross_range" in tests and (x < p.min or x > p.max):
            self.counts["fail"] += 1
            bound = "min" if x < p.min else "max"
            shown: Any = x if math.isfinite(x) else ("inf" if x > 0 else "-inf")
            self._trip("gross_range", seq, t, events,
                       {"bound": bound, "limit": p.min if bound == "min" else p.max,
                        "value": shown})
            return FAIL, ("gross_range",)
        if not math.isfinite(x):  # gross range switched off: still never learn infinity
            self.counts["fail"] += 1
            return FAIL, ("syntax",)
        if t < self.last_t:  # twin clock went back (or a batch out of order): keep monotone
            t = self.last_t
        self.last_t = t

        if self.pend is not None:
            self._resolve(x, t, events, revisions)

        flag, tripped = (PASS if self.n >= p.baseline else NOT_EVALUATED), []
        if (p.suspect_min is not None and x < p.suspect_min) or (
                p.suspect_max is not None and x > p.suspect_max):
            tripped.append("gross_range")
            flag = SUSPECT
        # flat line, judged at once (it needs no right neighbour)
        if "flat_line" in tests:
            ff = self._flat(x, seq, t, events)
            if ff:
                tripped.append("flat_line")
                flag = max(flag, ff)
        if self.drifting:
            tripped.append("drift")
            flag = max(flag, SUSPECT)
        other_flag, other_tests = flag, tuple(tripped)
        cand = 0
        a = self.a
        if a is not None and self.n >= p.baseline and len(self.ds) >= 4:
            d = x - a
            if d < 0:
                d = -d
            dev = x - a - self.ds[len(self.ds) >> 1]  # off the usual step (counters step)
            if "spike" in tests and self._departs(dev if dev >= 0 else -dev, p.spike_k):
                cand = 1
                tripped.append("spike")
            if p.max_rate is not None and "rate_of_change" in tests:
                dt = t - self.a_t
                if d > p.max_rate * (dt if dt > 1e-3 else 1e-3):
                    cand |= 2
                    tripped.append("rate_of_change")
            if cand and flag < SUSPECT:
                flag = SUSPECT
        self.pend, self.pend_t, self.pend_seq, self.pend_idx = x, t, seq, idx
        self.pend_cand, self.pend_flag, self.pend_tests = cand, other_flag, other_tests
        tup = tuple(tripped)
        if flag >= SUSPECT:
            self.counts["fail" if flag == FAIL else "suspect"] += 1
        if self.active:
            self._settle(tup, seq, t, events)
        return flag, tup

    # -- pieces -----------------------------------------------------------------------------

    def _other(self, value: Any, seq: int, t: float,
               events: list[DetectionEvent]) -> tuple[int, tuple[str, ...]]:
        if value is None:
            self.counts["missing"] += 1
            return MISSING, ()
        if self.kind == NUMERIC:
            return self._syntax(seq, t, events, "text where numbers were")
        self.kind = OTHER
        if self.active:
            self._settle((), seq, t, events)
        return NOT_EVALUATED, ()

    def _syntax(self, seq: int, t: float, events: list[DetectionEvent],
                why: str) -> tuple[int, tuple[str, ...]]:
        self.counts["fail"] += 1
        self._trip("syntax", seq, t, events, {"reason": why})
        return FAIL, ("syntax",)

    def duplicate(self, seq: int, t: float,
                  events: list[DetectionEvent]) -> tuple[int, tuple[str, ...]]:
        """A second record of this series with the same time in one pack: fail, not learned."""
        self.counts["fail"] += 1
        self._trip("syntax", seq, t, events, {"reason": "duplicate record in one pack"})
        return FAIL, ("syntax",)

    def mismatch(self, seq: int, t: float,
                 events: list[DetectionEvent]) -> tuple[int, tuple[str, ...]]:
        """A record whose unit differs from the series' first unit: fail, not learned."""
        self.counts["fail"] += 1
        self._trip("syntax", seq, t, events, {"reason": "unit changed"})
        return FAIL, ("syntax",)

    def late(self, value: Any, seq: int, t: float,
             events: list[DetectionEvent]) -> tuple[int, tuple[str, ...]]:
        """A reading from an out-of-order frame: only gross range applies (the learned tests
        need the series in order); it never enters a baseline."""
        x = as_number(value)
        if x is None:
            return (MISSING, ()) if value is None else (NOT_EVALUATED, ())
        p = self.p
        if x != x:
            return MISSING, ()
        if ("gross_range" in p.tests and (x < p.min or x > p.max)) or not math.isfinite(x):
            self.counts["fail"] += 1
            return FAIL, ("gross_range",)
        return NOT_EVALUATED, ()

    def _flat(self, x: float, seq: int, t: float, events: list[DetectionEvent]) -> int:
        p = self.p
        if self.run_len and abs(x - self.run_v) <= p.flat_eps:
            self.run_len += 1
        else:
            if self.run_len and not self.run_trip and self.run_len > self.run_hi:
                self.run_hi = self.run_len
            self.run_v, self.run_len, self.run_trip = x, 1, False
        if self.n < p.baseline:
            return 0
        limit = max(p.flat_count, 2 * self.run_hi + 1)
        if self.run_len < limit:
            return 0
        if not self.run_trip:
            self.run_trip = True
            self._trip("flat_line", seq, t, events, {"run": self.run_len, "limit": limit})
        else:
            self._trip("flat_line", seq, t, events)
        return FAIL if self.run_len >= 2 * limit else SUSPECT

    def _resolve(self, b: float, t: float, events: list[DetectionEvent],
                 revisions: list[Revision]) -> None:
        """Settle the pending reading now that its right neighbour ``b`` is known."""
        x, cand, seq = self.pend, self.pend_cand, self.pend_seq
        assert x is not None
        self.pend = None
        if cand:
            a = self.a
            assert a is not None
            # QARTOD's spike statistic; the neighbours must also be close together next to the
            # excursion (the next reading came back): a step or a slow recovery is no spike
            off = abs(x - (a + b) * 0.5)
            half = abs(b - a) * 0.5
            s = off - half
            scale = self.scale()
            if cand & 1 and s > self.p.spike_k * scale and half <= SPIKE_SPREAD * off:
                z = s / scale
                self._trip("spike", seq, self.pend_t, events,
                           {"robust_sigmas": round(z if z < Z_CLAMP else Z_CLAMP, 1),
                            "threshold": self.p.spike_k})
                if cand & 2:  # the spike explains the fast change
                    revisions.append((seq, self.pend_idx, max(self.pend_flag, SUSPECT),
                                      (*self.pend_tests, "spike")))
                return  # a spike never enters the baselines
            if cand & 2:  # the fast change persisted: a real rate-of-change violation
                self._trip("rate_of_change", seq, self.pend_t, events,
                           {"max_rate": self.p.max_rate})
                if cand & 1:
                    revisions.append((seq, self.pend_idx, max(self.pend_flag, SUSPECT),
                                      (*self.pend_tests, "rate_of_change")))
            else:  # a step, not a spike: the reading was fine after all
                revisions.append((seq, self.pend_idx, self.pend_flag, self.pend_tests))
        self._commit(x, self.pend_t, seq, events)

    def _commit(self, x: float, t: float, seq: int, events: list[DetectionEvent]) -> None:
        a = self.a
        dt = 0.0
        if a is not None:
            d = x - a
            # a run of repeats longer than this series ever had (a stuck sensor) would collapse
            # the scale to nothing and make the next honest readings look like spikes
            if abs(d) > self.p.flat_eps or self.run_len <= self.run_hi + 1:
                self._push_diff(d)
            if d > 0:
                self.inc += 1
            elif d < 0:
                self.dec += 1
            dt = t - self.a_t
            dt = MAX_DT if dt > MAX_DT else (dt if dt > 0 else 0.0)
        self.a, self.a_t = x, t
        self.n += 1
        if "drift" in self.p.tests and dt > 0:
            self._drift(x, t, dt, seq, events)

    def _monotone(self) -> bool:
        inc, dec = self.inc, self.dec
        return dec * 100 < inc or inc * 100 < dec

    def _drift(self, x: float, t: float, dt: float, seq: int,
               events: list[DetectionEvent]) -> None:
        ph = (t % DAY) / HOUR - 0.5
        i = math.floor(ph)
        f = ph - i
        i %= 24
        j = (i + 1) % 24
        if self.clim is None:
            self.clim, self.climw = [x] * 24, [0.0] * 24
        c, w = self.clim, self.climw
        assert w is not None
        wi, wj = w[i], w[j]
        if wi > 0 and wj > 0:
            pred = c[i] + f * (c[j] - c[i])
        elif wi > 0:
            pred = c[i]
        elif wj > 0:
            pred = c[j]
        else:
            pred = x
        r = x - pred
        ready = self.spread_w >= SPREAD_READY
        sd = 1.25 * self.spread if ready else 0.0
        # learn the daily baseline from a clamped residual: a drift is adopted only slowly
        rl = r
        if ready and sd > 0:
            lim = 4.0 * sd * math.sqrt(DRIFT_TAU / dt) if dt < DRIFT_TAU else 4.0 * sd
            rl = lim if r > lim else (-lim if r < -lim else r)
        if not self.drifting and "flat_line" not in self.active:
            # each bin is the share-weighted running mean of the readings around its hour (a
            # kernel estimate: stable, unlike fitting the interpolation itself)
            xl = pred + rl
            for k, share in ((i, 1.0 - f), (j, f)):
                wk = w[k]
                if wk <= 0:
                    c[k] = xl
                wk += share * dt
                if wk > CLIM_MEMORY:
                    wk = CLIM_MEMORY
                w[k] = wk
                if wk > 0:
                    c[k] += share * dt / wk * (xl - c[k])
        if not self.clim_ok:
            if min(w) < CLIM_READY:
                return
            self.clim_ok = True
        if self._monotone():
            return
        alpha = dt / DRIFT_TAU
        self.m += (alpha if alpha < 1.0 else 1.0) * (r - self.m)
        am = abs(self.m)
        if not self.drifting:
            # learn the spread of the smoothed residual, clamped so one episode cannot blow it up
            sw = self.spread_w
            if sw < SPREAD_READY:
                self.spread += dt / (sw + dt) * (am - self.spread)
            else:
                lim = 3.0 * self.spread
                self.spread += dt / SPREAD_TAU * ((am if am < lim else lim) - self.spread)
            self.spread_w = sw + dt
        if not ready or "flat_line" in self.active or "gross_range" in self.active:
            return
        floor = self.quantum if self.quantum != math.inf else 0.0
        limit = self.p.drift_k * sd
        if limit < floor:
            limit = floor
        if not self.drifting and am > limit and am > 0:
            self.drifting = True
            self._trip("drift", seq, t, events,
                       {"sigmas": round(min(am / sd, Z_CLAMP), 1) if sd > 0 else None,
                        "threshold": self.p.drift_k})
        elif self.drifting and am < 0.5 * limit:
            self.drifting = False

    # -- views ------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """JSON-friendly QC state (no raw baseline values beyond the learned scale)."""
        out: dict[str, Any] = {
            "unit": self.unit,
            "kind": ("unknown", "numeric", "other")[self.kind],
            "baseline": self.n >= self.p.baseline,
            "open": sorted(_TEST_EVENT[k] for k in self.active),
            **self.counts,
        }
        if self.kind == NUMERIC and self.ds:
            out["scale"] = self.scale()
        if self.clim is not None and self.climw is not None:
            out["drift_ready"] = (min(self.climw) >= CLIM_READY
                                  and self.spread_w >= SPREAD_READY)
        return out
