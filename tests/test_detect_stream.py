"""Per-device liveness and stream behaviour, on a controlled clock (sweep(now))."""

from __future__ import annotations

import pytest

from tests.detect_helpers import Feed
from twinlink.detect import DetectConfig, Detector


def _warm(f: Feed, n: int = 30) -> None:
    f.run(n)
    assert f.events == []


@pytest.mark.parametrize("interval", [10.0, 60.0, 300.0])
def test_silence_is_raised_within_three_intervals_and_back_online_clears_it(interval):
    f = Feed(interval=interval)
    _warm(f)
    last = f.t - interval  # arrival of the last frame
    assert f.sweep(last + 2.9 * interval) == []
    ev = f.sweep(last + 3.0 * interval + 0.5)  # the first sweep past 3 intervals
    assert [e.type for e in ev] == ["device.silent"]
    assert ev[0].detail["interval"] == pytest.approx(interval, rel=0.01)
    assert f.sweep(last + 10 * interval) == []  # raised once
    f.t = last + 12 * interval
    v = f.temp()
    assert [e.type for e in v.events] == ["device.back_online"]
    assert v.events[0].outcome == "info"
    assert v.events[0].detail["silent_for"] == pytest.approx(12 * interval)


def test_a_configured_interval_needs_no_learning():
    f = Feed(Detector(DetectConfig(device={"dev": {"interval": 5.0}})), interval=60.0)
    f.temp()
    assert [e.type for e in f.sweep(f.t - 60.0 + 15.5)] == ["device.silent"]


def test_no_silence_before_the_interval_is_known():
    f = Feed()
    f.temp()
    assert f.sweep(f.t + 86400) == []


def test_a_gap_is_reported_with_its_count_after_a_grace_period():
    f = Feed()
    _warm(f)
    f.seq += 3  # three frames lost
    v = f.temp()
    assert v.events == []  # they might still come late
    gap_seq = f.seq - 1
    f.run(2)
    assert f.events == []
    f.temp()  # three intervals on, still missing: reported (by a frame or a sweep)
    assert f.types() == ["stream.seq_gap"]
    assert f.events[0].detail == {"missing": 3} and f.events[0].seq == gap_seq


def test_reordered_frames_are_no_gap():
    f = Feed()
    _warm(f)
    s = f.seq
    f.temp(seq=s + 1)
    f.temp(seq=s, advance=False)  # the late one arrives
    f.seq = s + 2
    f.run(5)
    f.sweep(f.t + 600)
    assert "stream.seq_gap" not in f.types()
    assert f.det.state("dev")["stream"]["reordered"] == 1


def test_repeated_gaps_within_hold_down_fold_into_one_event_with_a_count():
    f = Feed(Detector(DetectConfig(defaults={"hold_down": 3600.0})), interval=10.0)
    _warm(f)
    for _ in range(5):
        f.seq += 1
        f.run(10)
    f.sweep(f.t)
    gaps = [e for e in f.events if e.type == "stream.seq_gap"]
    assert len(gaps) == 1 and gaps[0].count == 1
    f.sweep(f.t + 7200)
    gaps = [e for e in f.events if e.type == "stream.seq_gap"]
    assert len(gaps) == 2 and gaps[1].count == 4 and gaps[1].detail == {"missing": 4}


def test_a_jump_far_ahead_of_elapsed_time():
    f = Feed()
    _warm(f)
    f.seq += 100_000
    v = f.temp()
    assert [e.type for e in v.events] == ["stream.seq_jump"]
    assert v.events[0].detail["ahead"] == 100_000


def test_a_long_outage_is_a_gap_not_a_jump():
    f = Feed(interval=1.0)
    _warm(f)
    f.t += 86400  # a day offline; the device kept counting
    f.seq += 86400
    f.temp()
    f.sweep(f.t + 10)
    assert "stream.seq_jump" not in f.types() and "stream.seq_gap" in f.types()


def test_a_new_security_context_restarts_numbering_without_events():
    f = Feed()
    _warm(f)
    f.epoch, f.seq = 1, 0
    f.run(10)
    f.sweep(f.t + 30)
    assert f.events == []


def test_delayed_frames_and_their_clear():
    f = Feed()
    _warm(f)
    for _ in range(5):  # each held back 90 s on the way: stamped on time, arriving late
        f.frame([("temp", f.normal(), "Cel", f.t)], arrival=f.t + 90.0)
    assert [e.type for e in f.events] == ["stream.delayed"]
    assert f.events[0].detail["behind"] == pytest.approx(90.0, abs=0.5)
    f.t += 90.0  # the hold ends; the twin's clock never runs backwards
    f.run(3)
    assert f.types() == ["stream.delayed", "stream.delayed.cleared"]


@pytest.mark.parametrize("offset,reason", [(3600.0, "future"), (-3600.0, "backwards")])
def test_clock_skew_both_ways_and_the_resync(offset, reason):
    f = Feed()
    _warm(f)
    for _ in range(5):
        f.frame([("temp", f.normal(), "Cel", f.t + offset)])
    assert f.types() == ["device.clock_skew"]
    assert f.events[0].detail["reason"] == reason
    f.run(3)
    assert f.types() == ["device.clock_skew", "device.clock_skew.cleared"]
    assert "stream.delayed" not in f.types()


def test_a_flood_is_a_rate_anomaly():
    f = Feed()
    _warm(f)
    f.interval = 2.0
    f.run(20)
    ev = [e for e in f.events if e.type == "device.rate_anomaly"]
    assert len(ev) == 1 and ev[0].detail["metric"] == "rate" and ev[0].detail["factor"] > 4
    f.interval = 60.0
    f.run(10)
    assert "device.rate_anomaly.cleared" in f.types()


def test_oversized_frames_are_a_rate_anomaly():
    f = Feed()
    _warm(f)
    f.temp(size=900)
    assert [e.detail for e in f.events] == [{"metric": "size", "bytes": 900,
                                              "usual": [80, 80]}]
    f.run(3)
    assert f.types()[-1] == "device.rate_anomaly.cleared"


def test_stream_tests_can_be_switched_off():
    f = Feed(Detector(DetectConfig(device={"dev": {"disable": ["seq_jump", "rate"]}})))
    _warm(f)
    f.seq += 100_000
    f.temp(size=5000)
    assert f.events == []
