"""Hostile numbers, names and times: nothing crashes, no baseline is poisoned, memory is bounded.

A compromised device signs whatever it likes; everything here reaches the detectors as
authentic data.
"""

from __future__ import annotations

import math
import sys
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.detect_helpers import Feed
from twinlink.detect import FAIL, MISSING, NOT_EVALUATED, PASS, SUSPECT, DetectConfig, Detector

HOSTILE = [
    float("nan"), float("inf"), float("-inf"), 5e-324, -5e-324, 2.2250738585072014e-308, 1e308,
    -1e308, sys.float_info.max, 10**400, -(10**400), 2**64, -(2**64) - 1, "21.5", "", "x" * 5000,
    b"\x00\xff", bytearray(b"ab"), None, True, False, [1, 2], {"v": 1}, object(), 1j,
]


def _finite_state(f: Feed) -> None:
    s = f.det._devices[f.device].series["temp"]
    for name in ("a", "m", "mf", "spread", "a_prev"):
        v = getattr(s, name)
        assert v is None or math.isfinite(v), name
    assert all(math.isfinite(d) for d in s.ds)
    if s.clim is not None:
        assert all(math.isfinite(c) for c in s.clim)
    assert math.isfinite(s.scale()) and s.scale() > 0


def test_hostile_values_never_raise_and_never_poison_the_baseline():
    f = Feed()
    f.run(200)
    for value in HOSTILE:
        v = f.frame([("temp", value, "Cel", f.t)])
        assert v.flags[0] in (PASS, NOT_EVALUATED, SUSPECT, FAIL, MISSING)
        f.run(3)
        _finite_state(f)
    # the series still works: a clean spike is still found
    f.run(50)
    before = f.types().count("value.spike")
    f.temp(f.normal() + 3.0)
    f.temp()
    assert f.types().count("value.spike") == before + 1


def test_specific_flags_for_hostile_numbers():
    f = Feed()
    f.run(30)
    assert f.temp(float("nan")).flags == [MISSING]
    assert f.temp(float("inf")).tests == [("gross_range",)]
    assert f.temp(-float("inf")).flags == [FAIL]
    assert f.temp(10**400).flags == [FAIL]
    assert f.temp(1e308).flags == [FAIL]
    ev = next(e for e in f.events if e.type == "value.out_of_range")
    assert ev.detail["value"] == "inf"  # JSON-friendly, never a bare infinity
    assert f.frame([("temp", "21.5", "Cel", f.t)]).flags == [FAIL]  # text where numbers were
    assert f.frame([("temp", b"\x00", "Cel", f.t)]).flags == [FAIL]


def test_subnormals_are_numbers_and_the_scale_stays_positive():
    f = Feed()
    for k in range(300):
        f.frame([("tiny", 5e-324 * (k % 3), None, None)])
    s = f.det._devices["dev"].series["tiny"]
    assert s.scale() > 0 and math.isfinite(s.scale())


def test_unknown_unit_huge_values_stay_finite():
    f = Feed()
    for k in range(300):
        f.frame([("big", 1e18 * (1 + (k % 5) / 10), None, None)])
    f.frame([("big", -1.8e19, None, None)])
    s = f.det._devices["dev"].series["big"]
    assert math.isfinite(s.scale())


def test_hostile_names_units_and_record_shapes():
    f = Feed()
    v = f.frame([(None, 1.0, "Cel", None), (b"n", 1.0, None, None), ("", 1.0, None, None),
                 (5, 1.0, None, None), ("ok", 1.0, ["Cel"], None), ("u", 1.0, b"Cel", None)])
    assert v.flags[:4] == [FAIL] * 4
    v = f.det.observe("dev", f.seq, [None, 3, "abc", (), ("only-name",)], f.t, 10)
    assert len(v.flags) == 5
    f.seq += 1
    f.t += 60
    # a unit that changes mid-series is a syntax failure, not a new baseline
    f.frame([("ok", 1.0, "K", None)])
    assert f.verdicts[-1].tests == [("syntax",)]


def test_a_name_repeated_256_times_in_one_pack():
    f = Feed()
    f.run(30)
    recs = [("temp", 21.0, "Cel", f.t)] * 256
    v = f.frame(recs)
    assert v.flags[0] in (PASS, SUSPECT) and v.flags[1:] == [FAIL] * 255
    assert set(v.tests[1:]) == {("syntax",)}
    assert [e.type for e in v.events] == ["value.syntax"]  # one event, the rest counted
    # a batch with distinct times is a legitimate time series, evaluated in order
    recs = [("temp", 21.0 + (i % 2) * 0.01, "Cel", f.t - 60 + i / 10) for i in range(256)]
    v = f.frame(recs)
    assert FAIL not in v.flags


def test_a_million_distinct_series_names_are_capped_with_one_event_and_bounded_memory():
    det = Detector(DetectConfig(defaults={"max_series": 256}))
    t = 1_760_000_000.0
    seq = 0

    def pack(k: int) -> list[tuple[str, float, str, None]]:
        return [(f"s{k * 250 + i}", 1.0, "Cel", None) for i in range(250)]

    events = []
    for k in range(40):  # 10 000 names: the cap is reached, the state is built
        events += det.observe("dev", seq, pack(k), t + seq, 9000).events
        seq += 1
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    for k in range(40, 4000):  # 990 000 more names
        events += det.observe("dev", seq, pack(k), t + seq, 9000).events
        seq += 1
    now, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [e.type for e in events] == ["detect.series_cap"]
    assert events[0].detail == {"max_series": 256}
    st = det.state("dev")
    assert len(st["series"]) == 256 and st["series_refused"] == 1_000_000 - 256
    assert now - base < 256 * 1024, f"grew {now - base} bytes"


def test_memory_per_series_is_bounded_over_a_long_run():
    f = Feed(interval=30.0)
    f.run(3000)
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    f.events.clear()
    f.verdicts.clear()
    f.run(3000)
    f.verdicts.clear()
    now, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert now - base < 64 * 1024, f"grew {now - base} bytes"


def test_hostile_times_never_raise_and_are_reported_as_clock_skew():
    f = Feed()
    f.run(30)
    for t in (float("nan"), float("inf"), -float("inf"), 1e300, -1e300, 10**400, -5.0e9,
              "noon", b"\x01", True, 2**70):
        v = f.frame([("temp", f.normal(), "Cel", t)])
        assert v.flags[0] in (PASS, SUSPECT)
    assert f.types().count("device.clock_skew") == 1  # entered once, then counted
    f.run(5)
    assert f.types()[-1] == "device.clock_skew.cleared"
    _finite_state(f)


def test_negative_relative_time_is_the_past_not_an_error():
    f = Feed()
    f.run(30)
    v = f.frame([("temp", f.normal(), "Cel", -5.0)])  # five seconds ago (RFC 8428 relative)
    assert v.events == [] and v.flags == [PASS]


def test_hostile_frame_metadata():
    det = Detector()
    for seq, size, epoch in ((-1, 10, 0), ("7", 10, 0), (None, None, None), (2**80, -5, 0),
                             (1.5, 2**70, "e")):
        v = det.observe("dev", seq, [("temp", 21.0, "Cel", None)], 1_760_000_000.0, size,
                        epoch)
        assert len(v.flags) == 1
    v = det.observe("dev", 1, [("temp", 21.0, "Cel", None)], float("nan"), 10)
    assert len(v.flags) == 1
    assert isinstance(det.sweep(float("nan")), list)  # a NaN clock: the wall clock instead


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["a", "b", "c"]),
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(),
              st.text(max_size=3), st.none(), st.booleans(), st.binary(max_size=3)),
    st.sampled_from(["Cel", "%RH", None, "W", "count", "bogus"]),
    st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers())),
    min_size=1, max_size=8), st.integers(0, 3))
def test_any_pack_is_contained(records, gap):
    det = Detector()
    for k in range(25):  # a baseline first, then the hostile pack, then more baseline
        det.observe("d", k, [("a", 20.0 + (k % 3) * 0.1, "Cel", None)], 1.76e9 + 60 * k, 50)
    v = det.observe("d", 25 + gap, records, 1.76e9 + 60 * 25, 80)
    assert len(v.flags) == len(records) == len(v.tests)
    assert all(f in (1, 2, 3, 4, 9) for f in v.flags)
    for k in range(26 + gap, 60):
        det.observe("d", k, [("a", 20.0 + (k % 3) * 0.1, "Cel", None)], 1.76e9 + 60 * k, 50)
    s = det._devices["d"].series["a"]
    assert math.isfinite(s.scale()) and all(math.isfinite(x) for x in s.ds)
    det.sweep(1.76e9 + 60 * 70)
    assert isinstance(det.state("d"), dict)
