"""Oversize frames are their own refusal (``frame.oversize``) on every input — MQTT through a
real broker, serial through real ptys, the ``twinlink open`` CLI — aggregated like every
refusal; and a flood of refusals raises ``ingest.flood`` once per episode and
``ingest.flood.cleared`` when it ends, with counts that add up exactly."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import CLI, cli_env
from mosquitto import (  # noqa: F401
    broker_factory,
    publish,
    raw_client,
    requires_mosquitto,
    running_ingest,
    stored_count,
    twin_rig,
    wait_until,
)

from twinlink import Device, Twin
from twinlink.errors import FrameTooLarge, LineError
from twinlink.events import FLOOD_THRESHOLD, FloodWatch
from twinlink.frame import MAX_FRAME
from twinlink.ingest import SerialReceiver
from twinlink.store import Event, SQLiteStore
from twinlink.testing import VirtualCable
from twinlink.transport import framing
from twinlink.transport.mqtt import MAX_PACKET
from twinlink.transport.serial import SerialLink
from twinlink.twin import Reading


def _events(db: Path) -> list[dict]:
    with SQLiteStore(str(db), readonly=True) as store:
        return list(store.events(limit=1 << 20))


def _by_type(rows: list[dict], name: str) -> list[dict]:
    return [r for r in rows if r["type"] == name]


# -- MQTT ---------------------------------------------------------------------------------------

@pytest.mark.mqtt
@requires_mosquitto
def test_mqtt_oversize_messages_are_frame_oversize_with_the_topic_kid(
        tmp_path: Path, broker_factory) -> None:  # noqa: F811
    rig = twin_rig(tmp_path, ("pump",))  # kid 01
    broker = broker_factory(persistence=False)
    twin = Twin(rig.db, rig.twin_key)
    raw = raw_client(broker.port)
    pump = Device.load(rig.bundle("pump"), rig.state)
    # Above the twin's MAX_FRAME, below the packet size the ingest allows the broker to send.
    big = b"\xd2\x84" + bytes(MAX_FRAME + 100)
    assert len(big) + 64 < MAX_PACKET
    try:
        with running_ingest(broker.url, twin) as ing:
            for _ in range(30):
                publish(raw, "twinlink/01/t", big)  # a registered device's topic
            for _ in range(20):
                publish(raw, "twinlink/eeee/t", big)  # a made-up kid: attributed to no one
            # Larger than the ingest's Maximum Packet Size: the broker never forwards it.
            publish(raw, "twinlink/01/t", bytes(MAX_PACKET + 10))
            publish(raw, "twinlink/01/t", pump.seal({"temp": 21.5}))
            wait_until(lambda: stored_count(rig.db) == 1, 20, what="the genuine reading")
            assert ing.stats.refused == 50 and ing.stats.stored == 1
    finally:
        raw.loop_stop()
        pump.close()
    rows = _events(rig.db)
    refusals = [r for r in rows if r["outcome"] == "blocked"]
    assert {r["type"] for r in refusals} == {"frame.oversize"}  # never frame.malformed
    mine = [r for r in refusals if r["kid"] == "01"]
    others = [r for r in refusals if r["kid"] != "01"]
    assert [r["count"] for r in mine] == [1, 29]  # first alone, then one aggregate
    assert all(r["device"] == "pump" and r["source"] == "mqtt" for r in mine)
    assert [r["count"] for r in others] == [1, 19] and {r["kid"] for r in others} == {None}
    assert {r["transport"] for r in refusals} == {"mqtt"}
    assert not _by_type(rows, "ingest.flood")  # 30 and 20 stay below the threshold
    with twin:
        assert twin.store.status("pump")["refused"] == 30


# -- serial -------------------------------------------------------------------------------------

@pytest.mark.skipif(os.name != "posix", reason="needs POSIX ptys")
def test_serial_overlong_records_are_frame_oversize_and_a_flood(rig) -> None:
    n_long = FLOOD_THRESHOLD + 20
    results: list = []
    with VirtualCable() as cable, rig.twin() as twin:
        rx = SerialReceiver(cable.b, twin, on_result=results.append)  # max_frame 4096
        tx = SerialLink(cable.a, max_frame=MAX_FRAME)  # a sender that allows more
        dev = rig.device("pump")
        try:
            for i in range(n_long):
                # Both ways a frame is too long: past the decoder's record buffer, and a
                # record that decodes (CRC intact) to a frame one byte too long.
                tx.send(bytes(9000) if i % 2 else bytes(framing.DEFAULT_MAX_FRAME + 1))
            assert rx.wait_for(n_long, 20)  # before injecting: no record cut in two
            rec = bytearray(framing.wire(dev.seal({"temp": 3.0}), flush_prefix=True))
            rec[10] = rec[10] ^ 0x20 or 0x01
            cable.inject(bytes(rec))  # line noise stays line noise
            tx.send(dev.seal({"temp": 1.0}))
            assert rx.wait_for(n_long + 2, 20)
        finally:
            tx.close()
            rx.close()
            dev.close()
        assert rx.counts == {"too_large": n_long, "line": 1, "ok": 1}
        assert all(isinstance(r, FrameTooLarge) for r in results[:n_long])
        assert isinstance(results[n_long], LineError) and isinstance(results[-1], Reading)
        assert twin.store.count_readings("pump") == 1
    rows = _events(rig.db)
    oversize = _by_type(rows, "frame.oversize")
    assert sum(r["count"] for r in oversize) == n_long and len(oversize) == 2
    assert {r["source"] for r in oversize} == {f"serial:{cable.b}"}
    assert {r["transport"] for r in oversize} == {"serial"}
    floods = _by_type(rows, "ingest.flood")
    assert len(floods) == 1  # once per episode, not per frame
    f = floods[0]
    assert f["outcome"] == "detected" and f["kid"] is None and f["transport"] == "serial"
    assert "frame.oversize" in f["detail"] and f"threshold {FLOOD_THRESHOLD}" in f["detail"]
    assert f["id"] > oversize[0]["id"]  # raised after the refusals that make it


# -- twinlink open ------------------------------------------------------------------------------

def test_open_refuses_an_oversize_line_as_too_large(rig) -> None:
    dev = rig.device("pump")
    good = dev.seal({"temp": 1.0}).hex()
    dev.close()
    lines = [bytes(MAX_FRAME + 1).hex(), "ab" * (MAX_FRAME + 5), "zz", good]
    p = subprocess.run([*CLI, "open", "--db", str(rig.db), "--twin-key", str(rig.twin_key_path),
                        "--json"], input="\n".join(lines) + "\n", capture_output=True,
                       text=True, timeout=60, env=cli_env())
    out = [json.loads(x) for x in p.stdout.splitlines()]
    assert [o.get("error") or ("ok" if o["ok"] else "?") for o in out] == [
        "too_large", "too_large", "malformed", "ok"], p.stderr
    rows = _events(rig.db)
    assert sum(r["count"] for r in _by_type(rows, "frame.oversize")) == 2
    assert sum(r["count"] for r in _by_type(rows, "frame.malformed")) == 1


# -- flood episodes (the store's own clock: event times) -----------------------------------------

def _burst(n: int, at: float, kid: bytes | None = b"\x01", reason: str = "bad_signature",
           source: str = "mqtt:twinlink/01/t") -> list[Event]:
    return [Event(reason, "forged", kid, i, source, at=at + i * (5.0 / n)) for i in range(n)]


def test_flood_episode_raised_once_and_cleared_with_exact_totals(tmp_path: Path) -> None:
    t0 = 1_800_000_000.0
    with SQLiteStore(str(tmp_path / "t.db")) as store:
        for w in range(3):  # three windows of 150 refusals: one episode
            evs = _burst(150, t0 + 10 * w)
            for k in range(0, len(evs), 40):
                store.record_events(evs[k:k + 40])
        store.record_events(_burst(10, t0 + 31))  # a window below the threshold ...
        store.record_events(_burst(50, t0 + 31, kid=None, reason="unknown_device"))
        store.record_events(_burst(1, t0 + 45))  # ... is over once the next refusal comes
        store.record_events(_burst(120, t0 + 200))  # a new episode
        store.record_events(_burst(1, t0 + 300, kid=None, reason="unknown_device"))
        rows = list(store.events(limit=1000))
    floods = _by_type(rows, "ingest.flood")
    cleared = _by_type(rows, "ingest.flood.cleared")
    assert len(floods) == 2 and all(f["kid"] == "01" for f in floods)
    assert [c["kid"] for c in cleared] == ["01", "01"]
    assert "460 refusals" in cleared[0]["detail"]  # 3 x 150 + 10: the whole episode
    assert "120 refusals" in cleared[1]["detail"]  # ended by another key's refusal
    assert floods[0]["id"] < cleared[0]["id"] < floods[1]["id"] < cleared[1]["id"]
    assert cleared[0]["outcome"] == "info" and floods[0]["severity"] == 7
    blocked = [r for r in rows if r["outcome"] == "blocked"]
    assert sum(r["count"] for r in blocked if r["type"] == "frame.bad_signature") == 581
    assert sum(r["count"] for r in blocked if r["type"] == "frame.unknown_device") == 51


def test_flood_watch_is_bounded_and_quiet_below_the_threshold() -> None:
    w = FloodWatch(threshold=3, window=10.0)
    assert w.observe(("mqtt", "frame.malformed"), 2, 0.0, 1.0, "mqtt:x") == []
    assert w.observe(("mqtt", "frame.malformed"), 2, 11.0, 12.0, "mqtt:x") == []  # new window
    n = w.observe(("mqtt", "frame.malformed"), 1, 13.0, 13.0, "mqtt:x")
    assert [x.type for x in n] == ["ingest.flood"] and "3 frame.malformed" in n[0].detail
    assert w.observe(("mqtt", "frame.malformed"), 50, 14.0, 15.0, "mqtt:x") == []  # once
    for i in range(1000):  # many keys, none flooding
        w.observe((bytes([i % 256, i // 256]), "frame.replay"), 1, 16.0, 16.0, "mqtt:y")
    assert [x.type for x in w.expire(10_000.0)] == ["ingest.flood.cleared"]
    assert w.expire(10_000.5) == []  # at most once a second
    assert not w._keys  # idle keys forgotten
    with pytest.raises(ValueError):
        FloodWatch(threshold=0)
