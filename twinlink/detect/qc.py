"""Per-series value QC: gross range, spike, rate of change, flat line and slow drift.

One :class:`SeriesQC` per (device, series name), a few dozen floats of state:

- **gross range**: outside the unit's physical bounds (or configured ``min``/``max``) fails
  (flag 4); outside an operator span (``suspect_min``/``suspect_max``) is suspect (3). Needs no
  baseline. A failed value never enters any baseline.
- **spike**: the QARTOD spike statistic on a reading and both its neighbours,
  ``|x - (a + b) / 2| - |b - a - 2u| / 2`` (``u`` the usual step: zero but for counters),
  against ``spike_k`` robust sigmas of the first differences (1.4826 x the MAD of the last 64
  first differences about their median). The neighbourhood must be steady: the neighbours close
  together next to the excursion, the left one in line with its own predecessor, alike
  spacings; so a step (a door opening, a load switching), a door's V-shaped dip, a counter's
  rate change and the reading after a lost frame are no spikes. The right neighbour is the
  *next* reading: a departing reading is flagged suspect as a candidate at once and settled by
  the next one (:attr:`Verdict.revisions`); the event fires on confirmation. A confirmed spike
  never enters the baselines.
- **rate of change**: a change faster than ``max_rate`` (units/s; per-unit physical defaults,
  none for quantities that legitimately step) that *persists* into the next reading.
- **flat line**: a run of readings within ``flat_eps`` of each other at least
  ``max(flat_count, 2 x the longest run this series had before + 1)`` long: suspect at that
  length, fail at twice it. Quantised sensors that repeat values normally learn a longer limit;
  repeats beyond the learned run stay out of the spike scale (a stuck sensor would shrink it).
- **drift**: an hour-of-day baseline (24 bins, each a kernel-weighted running mean over about
  four days, linearly interpolated) removes the daily cycle; the residual is smoothed (EWMA,
  three hours) and compared with its own learned spread (EWMA of its magnitude over a week,
  first learned for 2.5 days): beyond ``drift_k`` spreads is drift. It clears when an eight
  times faster smoothing is back within half the limit, and a level still off after a day is
  adopted as the new baseline. Off by default for units whose level follows usage; skipped for
  cumulative counters.

Events fire on *entering* a state; repeats while in it only count; ``<type>.cleared`` (info)
fires after :data:`CLEAR_AFTER` clean readings. The first ``baseline`` readings are flagged 2
(not evaluated) except by gross range. Non-finite and oversized numbers are contained: every
learned quantity is fed clamped, finite numbers only, so no NaN or infinity can enter a baseline.
"""

from __future__ import annotations

import math
from bisect import bisect_left
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
WINDOW = 64              # first differences kept for the robust scale
MAD_TO_SIGMA = 1.4826
DAY, HOUR = 86400.0, 3600.0
CLIM_MEMORY = 4 * HOUR   # seconds of data per hour bin (about four days of that hour)
CLIM_READY = 1200.0      # seconds of data every bin needs before drift is evaluated
DRIFT_TAU = 3 * HOUR     # smoothing of the residual
SPREAD_TAU = 7 * DAY     # learning of the residual's spread
SPREAD_READY = 60 * HOUR  # seconds of spread learning before drift is evaluated
DRIFT_HOLD = DAY         # a drift state older than this is adopted as the new baseline
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


def _learn_bin(c: list[float], w: list[float], k: int, share: float, x: float) -> None:
    """Move hour bin ``k`` towards ``x`` as a running mean weighted by ``share`` seconds of
    data, capped at :data:`CLIM_MEMORY` (then an exponential forgetting)."""
    wk = w[k]
    if wk <= 0:
        c[k] = x
    wk += share
    w[k] = wk = wk if wk < CLIM_MEMORY else CLIM_MEMORY
    if wk > 0:
        c[k] += share / wk * (x - c[k])


class SeriesQC:
    """The QC state of one series; :meth:`observe` is the per-reading entry point."""

    __slots__ = (
        "a",
        "a_prev",
        "a_t",
        "active",
        "clim",
        "clim_ok",
        "climw",
        "counts",
        "dec",
        "device",
        "dq",
        "drift_since",
        "drifting",
        "ds",
        "has_span",
        "inc",
        "kind",
        "last_commit",
        "last_t",
        "m",
        "mad",
        "mf",
        "n",
        "name",
        "nread",
        "on_drift",
        "on_flat",
        "on_range",
        "on_roc",
        "on_spike",
        "p",
        "pend",
        "pend_cand",
        "pend_flag",
        "pend_ref",
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
        self.device, self.name, self.unit = device, name, unit
        self.kind = UNKNOWN
        self.n = 0                      # committed numeric readings
        self.a: float | None = None     # last committed value (the left neighbour)
        self.a_t = 0.0
        self.a_prev = 0.0                # the committed value before ``a``
        self.last_commit = 0.0
        self.pend: float | None = None  # newest reading, awaiting its right neighbour
        self.pend_t = 0.0
        self.pend_seq = 0
        self.pend_ref = (0, 0, 0)
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
        self.mf = 0.0                    # the same, smoothed eight times faster
        self.spread = 0.0
        self.spread_w = 0.0
        self.drifting = False
        self.drift_since = 0.0
        self.clim_ok = False
        self.active: dict[str, list[int]] = {}  # test -> [occurrences, clean readings since]
        self.last_t = 0.0
        self.nread = 0
        self.counts = {"fail": 0, "suspect": 0, "missing": 0}
        self.bind(params)

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
        # the data's resolution: the smallest clear gap between two differences seen (gaps
        # below a relative 1e-9 are float round-off, not resolution)
        q = self.quantum
        if i > 0:
            g = d - ds[i - 1]
            if 0.0 < g < q and g > 1e-9 * (abs(self.a or 0.0) + abs(d)):
                self.quantum = q = g
        if i < len(ds):
            g = ds[i] - d
            if 0.0 < g < q and g > 1e-9 * (abs(self.a or 0.0) + abs(d)):
                self.quantum = g
        ds.insert(i, d)
        dq = self.dq
        dq.append(d)
        if len(dq) > WINDOW:
            del ds[bisect_left(ds, dq.popleft())]
        self.mad = -1.0

    # -- the entry point --------------------------------------------------------------------

    def bind(self, params: SeriesParams) -> None:
        """Adopt (new) parameters; the switches are cached for the per-reading path."""
        self.p = params
        tests = params.tests
        self.on_range = "gross_range" in tests
        self.on_spike = "spike" in tests
        self.on_roc = "rate_of_change" in tests and params.max_rate is not None
        self.on_flat = "flat_line" in tests
        self.on_drift = "drift" in tests
        self.has_span = params.suspect_min is not None or params.suspect_max is not None

    def observe(self, value: Any, t: float, seq: int, ref: tuple[int, int, int],
                events: list[DetectionEvent],
                revisions: list[Revision]) -> tuple[int, tuple[str, ...]]:
        """QC one reading taken at twin time ``t``; return (flag, tests that tripped). ``ref``
        (context epoch, seq, record index) names the reading in a later revision. Appends
        events and revisions of the previous reading's flag. Never raises for any value."""
        self.nread += 1
        x = value if type(value) is float else as_number(value)
        if x is None:
            return self._other(value, seq, t, events)
        if self.kind != NUMERIC:
            if self.kind == OTHER:
                return self._syntax(seq, t, events, "number where text was")
            self.kind = NUMERIC
        p = self.p
        if x != x or (self.on_range and (x < p.min or x > p.max)) or x - x != 0.0:
            return self._bad_number(x, seq, t, events)  # NaN, out of range, or infinite
        if t < self.last_t:  # twin clock went back (or a batch out of order): keep monotone
            t = self.last_t
        self.last_t = t

        if self.pend is not None:
            if self.pend_cand:
                self._resolve(x, t, events, revisions)
            else:
                self._commit(self.pend, self.pend_t, self.pend_seq, events)
            self.pend = None

        n = self.n
        flag = PASS if n >= p.baseline else NOT_EVALUATED
        other: tuple[str, ...] = ()
        if self.has_span and ((p.suspect_min is not None and x < p.suspect_min) or (
                p.suspect_max is not None and x > p.suspect_max)):
            other, flag = ("gross_range",), SUSPECT
        if self.on_flat:  # judged at once: it needs no right neighbour
            rl = self.run_len
            rv = self.run_v
            if rl and -p.flat_eps <= x - rv <= p.flat_eps:
                rl += 1
            else:
                if rl and not self.run_trip and rl > self.run_hi:
                    self.run_hi = rl
                self.run_v, rl, self.run_trip = x, 1, False
            self.run_len = rl
            if rl >= p.flat_count and rl > 2 * self.run_hi and n >= p.baseline:
                ff = self._flat(seq, t, events)
                other += ("flat_line",)
                if ff > flag:
                    flag = ff
        if self.drifting:
            other += ("drift",)
            if flag < SUSPECT:
                flag = SUSPECT
        cand = 0
        tripped = other
        other_flag = flag
        a = self.a
        if a is not None and n >= p.baseline and len(self.ds) >= 4:
            d = x - a
            if self.on_spike:
                dev = d - self.ds[len(self.ds) >> 1]  # off the usual step (counters step)
                if self._departs(dev if dev >= 0 else -dev, p.spike_k):
                    cand = 1
                    tripped += ("spike",)
            dt = t - self.a_t
            if self.on_roc and dt >= 1.0:  # within a second the twin cannot tell a rate
                limit = p.max_rate * dt  # type: ignore[operator]
                if (d if d >= 0 else -d) > limit:
                    cand |= 2
                    tripped += ("rate_of_change",)
            if cand and flag < SUSPECT:
                flag = SUSPECT
        self.pend, self.pend_t, self.pend_seq, self.pend_ref = x, t, seq, ref
        self.pend_cand, self.pend_flag, self.pend_tests = cand, other_flag, other
        if flag >= SUSPECT:
            self.counts["fail" if flag == FAIL else "suspect"] += 1
        if self.active:
            self._settle(tripped, seq, t, events)
        return flag, tripped

    def _bad_number(self, x: float, seq: int, t: float,
                    events: list[DetectionEvent]) -> tuple[int, tuple[str, ...]]:
        if x != x:  # NaN: QARTOD "missing"
            self.counts["missing"] += 1
            return MISSING, ()
        self.counts["fail"] += 1
        p = self.p
        if self.on_range and (x < p.min or x > p.max):
            bound = "min" if x < p.min else "max"
            shown: Any = x if math.isfinite(x) else ("inf" if x > 0 else "-inf")
            self._trip("gross_range", seq, t, events,
                       {"bound": bound, "limit": p.min if bound == "min" else p.max,
                        "value": shown})
            return FAIL, ("gross_range",)
        return FAIL, ("syntax",)  # gross range switched off: still never learn infinity

    # -- pieces -----------------------------------------------------------------------------

    def _other(self, value: Any, seq: int, t: float,
               events: list[DetectionEvent]) -> tuple[int, tuple[str, ...]]:
        """A non-numeric value: not evaluated, or a syntax failure in a numeric series."""
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

    def _flat(self, seq: int, t: float, events: list[DetectionEvent]) -> int:
        """The run of repeats reached the flat-line limit: trip (once per run) and give the
        flag: suspect, fail at twice the limit."""
        limit = max(self.p.flat_count, 2 * self.run_hi + 1)
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
        if cand:
            a = self.a
            assert a is not None
            # QARTOD's spike statistic; the neighbours must also be close together next to the
            # excursion (the next reading came back): a step or a slow recovery is no spike
            # (both detrended by the usual step, which is zero but for counters). And the
            # neighbourhood must be steady: the left neighbour in line with its own
            # predecessor (else the series is mid-event: a door opening's V, a counter's rate
            # change) and the two spacings alike (after a lost frame the midpoint is no
            # prediction).
            mu = self.ds[len(self.ds) >> 1]
            off = abs(x - (a + b) * 0.5)
            half = abs(b - a - 2.0 * mu) * 0.5
            s = off - half
            scale = self.scale()
            k = self.p.spike_k
            dt1, dt2 = self.pend_t - self.a_t, t - self.pend_t
            if (cand & 1 and s > k * scale and half <= SPIKE_SPREAD * off
                    and abs(a - self.a_prev - mu) <= 0.5 * k * scale
                    and dt1 <= 1.5 * dt2 and dt2 <= 1.5 * dt1):
                z = s / scale
                self._trip("spike", seq, self.pend_t, events,
                           {"robust_sigmas": round(z if z < Z_CLAMP else Z_CLAMP, 1),
                            "threshold": self.p.spike_k})
                if cand & 2:  # the spike explains the fast change
                    revisions.append((*self.pend_ref, max(self.pend_flag, SUSPECT),
                                      (*self.pend_tests, "spike")))
                return  # a spike never enters the baselines
            if cand & 2:  # the fast change persisted: a real rate-of-change violation
                self._trip("rate_of_change", seq, self.pend_t, events,
                           {"max_rate": self.p.max_rate})
                if cand & 1:
                    revisions.append((*self.pend_ref, max(self.pend_flag, SUSPECT),
                                      (*self.pend_tests, "rate_of_change")))
            else:  # a step, not a spike: the reading was fine after all
                revisions.append((*self.pend_ref, self.pend_flag, self.pend_tests))
        self._commit(x, self.pend_t, seq, events)

    def _commit(self, x: float, t: float, seq: int, events: list[DetectionEvent]) -> None:
        """Take a settled reading into the baselines."""
        a = self.a
        self.a, self.a_t = x, t
        self.n += 1
        if a is None:
            self.a_prev = x
            return
        self.a_prev = a
        d = x - a
        # a run of repeats longer than this series ever had (a stuck sensor) would collapse
        # the scale to nothing and make the next honest readings look like spikes
        if d > self.p.flat_eps or -d > self.p.flat_eps or self.run_len <= self.run_hi + 1:
            self._push_diff(d)
        if d > 0:
            self.inc += 1
        elif d < 0:
            self.dec += 1
        if self.on_drift:
            dt = t - self.last_commit
            self.last_commit = t
            if dt > 0:
                self._drift(x, t, dt if dt < MAX_DT else MAX_DT, seq, events)

    def _drift(self, x: float, t: float, dt: float, seq: int,
               events: list[DetectionEvent]) -> None:
        ph = (t % DAY) * (1.0 / HOUR) + 23.5  # shifted by a day: never negative
        i = int(ph)
        f = ph - i
        i %= 24
        j = i + 1 if i < 23 else 0
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
            _learn_bin(c, w, i, (1.0 - f) * dt, xl)
            _learn_bin(c, w, j, f * dt, xl)
        if not self.clim_ok:
            if min(w) < CLIM_READY:
                return
            self.clim_ok = True
        if (self.inc > 100 * self.dec or self.dec > 100 * self.inc) and self.n > 100:
            return  # a cumulative counter: its level has no daily baseline
        alpha = dt / DRIFT_TAU
        self.m += (alpha if alpha < 1.0 else 1.0) * (r - self.m)
        alpha *= 8.0
        self.mf += (alpha if alpha < 1.0 else 1.0) * (r - self.mf)
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
            self.drift_since = t
            self._trip("drift", seq, t, events,
                       {"sigmas": round(min(am / sd, Z_CLAMP), 1) if sd > 0 else None,
                        "threshold": self.p.drift_k})
        elif self.drifting and abs(self.mf) < 0.5 * limit:
            # judged on the faster smoothing, which the slow one then adopts: a sensor swap
            # clears within the hour instead of re-entering while the slow one decays
            self.drifting = False
            self.m = self.mf
        elif self.drifting and t - self.drift_since > DRIFT_HOLD:
            # a day on, the level is what it is: adopt it as the baseline (the state clears;
            # a further drift from here is a new event) rather than flag every reading forever
            shift = self.m
            for k in range(24):
                c[k] += shift
            self.m = self.mf = 0.0
            self.drifting = False

    # -- views ------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """JSON-friendly QC state (no raw baseline values beyond the learned scale)."""
        out: dict[str, Any] = {
            "unit": self.unit,
            "kind": ("unknown", "numeric", "other")[self.kind],
            "baseline": self.n >= self.p.baseline,
            "open": sorted(_TEST_EVENT[k] for k in self.active),
            "readings": self.nread,
            **self.counts,
        }
        if self.kind == NUMERIC and self.ds:
            out["scale"] = self.scale()
        if self.clim is not None and self.climw is not None:
            out["drift_ready"] = (min(self.climw) >= CLIM_READY
                                  and self.spread_w >= SPREAD_READY)
        return out
