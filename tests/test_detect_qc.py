"""Per-series value QC: flags, tests, events on entering and clearing, revisions."""

from __future__ import annotations

import math

from tests.detect_helpers import Feed
from twinlink.detect import (
    FAIL,
    MISSING,
    NOT_EVALUATED,
    PASS,
    SUSPECT,
    DetectConfig,
    Detector,
)


def test_first_readings_are_not_evaluated_until_the_baseline_exists():
    f = Feed()
    flags = [f.temp().flags[0] for _ in range(40)]
    assert flags[:16] == [NOT_EVALUATED] * 16
    assert set(flags[16:]) == {PASS}
    assert f.events == []


def test_gross_range_fails_from_the_first_reading_with_one_event_and_a_clear():
    f = Feed()
    v = f.temp(-300.0)
    assert v.flags == [FAIL] and v.tests == [("gross_range",)]
    assert [e.type for e in v.events] == ["value.out_of_range"]
    e = v.events[0]
    assert e.outcome == "detected" and e.series == "temp" and e.seq == 0
    assert e.detail == {"bound": "min", "limit": -273.15, "value": -300.0}
    for _ in range(3):  # still out of range: counted, no new event
        assert f.temp(1e5).flags == [FAIL]
    assert f.types() == ["value.out_of_range"]
    f.run(5)
    assert f.types() == ["value.out_of_range", "value.out_of_range.cleared"]
    cleared = f.events[-1]
    assert cleared.outcome == "info" and cleared.count == 4


def test_bounds_come_from_the_unit():
    f = Feed()
    assert f.frame([("hum", 101.0, "%RH", None)]).flags == [FAIL]
    assert f.frame([("p", -1.0, "Pa", None)]).flags == [FAIL]
    assert f.frame([("n", -1, "count", None)]).flags == [FAIL]
    assert f.frame([("x", 1e12, None, None)]).flags == [NOT_EVALUATED]  # no unit: no bound
    assert f.frame([("x2", 1e20, None, None)]).flags == [FAIL]  # beyond 2**64


def test_an_isolated_spike_is_confirmed_by_the_next_reading():
    f = Feed()
    f.run(100)
    v = f.temp(f.normal() + 1.5)
    assert v.flags == [SUSPECT] and v.tests == [("spike",)]  # a candidate at once
    assert v.events == []
    spike_seq = f.seq - 1
    v = f.temp()
    assert [e.type for e in v.events] == ["value.spike"]
    assert v.events[0].seq == spike_seq and v.events[0].detail["robust_sigmas"] > 8
    assert v.flags == [PASS]
    assert v.revisions == []  # the cautious flag was right
    f.run(5)
    assert f.types() == ["value.spike", "value.spike.cleared"]


def test_a_step_is_not_a_spike_and_its_flag_is_revised():
    f = Feed()
    f.run(100)
    base = f.normal()
    v = f.temp(base + 5.0)  # a door opens and the room stays cold
    assert v.flags == [SUSPECT]
    first = f.seq - 1
    v = f.temp(base + 5.02)
    assert v.events == []
    assert v.revisions == [(0, first, 0, PASS, ())]
    f.run(30, value=None)
    assert "value.spike" not in f.types()


def test_rate_of_change_needs_a_persisting_change_faster_than_physics():
    f = Feed()
    f.run(100)
    f.temp(80.0)  # +59 degC within a minute, and it stays: 1 K/s > 0.5 K/s for Cel
    v = f.temp(80.1)
    assert [e.type for e in v.events] == ["value.rate_of_change"]
    assert v.events[0].detail == {"max_rate": 0.5}


def test_flat_line_trips_once_then_fails_then_clears():
    f = Feed()
    f.run(100)
    flags = [f.temp(20.0).flags[0] for _ in range(25)]
    assert f.types() == ["value.flatline"]
    assert flags[:9] == [PASS] * 9 or flags[0] in (SUSPECT,)  # the step into the flat is fine
    assert SUSPECT in flags and FAIL in flags  # suspect at 10 repeats, fail at 20
    ev = f.events[0]
    assert ev.detail == {"run": 10, "limit": 10}
    f.run(6)
    assert f.types() == ["value.flatline", "value.flatline.cleared"]


def test_quantised_series_learn_their_own_flat_line_limit():
    # a 0.5-step sensor in a quiet room repeats its value 12 times now and then: no alarm
    f = Feed()
    for _ in range(20):
        for v in [40.0] * 12 + [40.5] * 3:
            f.frame([("hum", v, "%RH", None)])
    assert "value.flatline" not in f.types()
    for _ in range(60):  # stuck for far longer than ever before
        f.frame([("hum", 40.0, "%RH", None)])
    assert f.types().count("value.flatline") == 1


def test_text_where_numbers_were_is_a_syntax_failure():
    f = Feed()
    f.run(20)
    v = f.frame([("temp", "hot", "Cel", f.t)])
    assert v.flags == [FAIL] and v.tests == [("syntax",)]
    assert [e.type for e in v.events] == ["value.syntax"]


def test_text_series_are_not_evaluated():
    f = Feed()
    for _ in range(20):
        v = f.frame([("door", "open", None, None), ("ok", True, None, None)])
        assert v.flags == [NOT_EVALUATED, NOT_EVALUATED]
    assert f.events == []


def test_none_and_nan_are_missing():
    f = Feed()
    f.run(30)
    assert f.temp(float("nan")).flags == [MISSING]
    assert f.frame([("temp", None, "Cel", f.t)]).flags == [MISSING]
    assert f.events == []


def test_operator_span_makes_readings_suspect():
    cfg = DetectConfig(series={"dev": {"temp": {"suspect_max": 25.0}}})
    f = Feed(Detector(cfg))
    f.run(20)
    v = f.temp(26.0)
    assert v.flags[0] == SUSPECT and "gross_range" in v.tests[0]


def test_drift_from_the_daily_baseline_is_detected_and_plain_days_are_not():
    f = Feed(interval=300.0)
    for _ in range(int(5 * 86400 / 300)):  # five ordinary days: the baseline and its spread
        f.temp()
    assert "value.drift" not in f.types()
    start = f.t
    while f.t < start + 12 * 3600:  # a sensor drifting by 3 degC over twelve hours
        f.temp(f.normal() + 3.0 * (f.t - start) / (12 * 3600))
    assert "value.drift" in f.types()
    ev = f.events[f.types().index("value.drift")]
    assert ev.series == "temp" and ev.detail["sigmas"] >= 4.5
    while f.t < start + 16 * 3600:  # the sensor is replaced
        f.temp()
    assert "value.drift.cleared" in f.types()


def test_counters_do_not_trip_spike_or_drift():
    f = Feed()
    total = 0
    for k in range(3000):
        total += 50 + (k % 7)
        f.frame([("packets", total, "count", None)])
    assert f.events == []
    v = f.frame([("packets", total + 5000, "count", None)])  # a glitch ...
    assert v.flags == [SUSPECT]
    f.frame([("packets", total + 56, "count", None)])  # ... and back in line
    assert f.types() == ["value.spike"]


def test_state_reports_series_and_open_detections():
    f = Feed()
    f.run(30)
    f.temp(-500.0)
    st = f.det.state("dev")
    assert st["series"]["temp"]["open"] == ["value.out_of_range"]
    assert st["series"]["temp"]["baseline"] is True
    assert "value.out_of_range temp" in st["open"]
    assert f.det.state("nobody") == {}
    assert math.isfinite(st["series"]["temp"]["scale"])
