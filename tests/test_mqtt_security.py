"""Attacks over a real broker: forged, replayed and cross-topic frames published by a raw paho
client are refused and logged as security events; forged and replayed acks change nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from mosquitto import broker_factory, events, requires_mosquitto, stored_count, twin_rig, wait_until  # noqa: F401
from paho.mqtt.enums import CallbackAPIVersion

from twinlink import Device, Twin, ack
from twinlink.ingest import MqttIngest
from twinlink.mqtt_link import for_device

pytestmark = [pytest.mark.mqtt, requires_mosquitto]


def _raw(url_port: int) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="attacker", protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", url_port)
    c.loop_start()
    return c


def _pub(c: mqtt.Client, topic: str, payload: bytes) -> None:
    c.publish(topic, payload, qos=1).wait_for_publish(10)


def test_forged_replayed_and_cross_topic_frames(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    rig = twin_rig(tmp_path, ("pump", "valve"))
    broker = broker_factory(persistence=False)
    twin = Twin(rig.db, rig.twin_key)
    ing = MqttIngest(broker.url, twin)
    stop = threading.Event()
    t = threading.Thread(target=ing.run, args=(stop,))
    t.start()
    raw = _raw(broker.port)
    try:
        assert ing.subscribed.wait(10)
        pump = Device.load(rig.bundle("pump"), rig.state)
        valve = Device.load(rig.bundle("valve"), rig.state)
        good = pump.seal_many([{"i": i} for i in range(5)])
        v = valve.seal({"open": True})
        for f in good:
            _pub(raw, "twinlink/01/t", f)
        wait_until(lambda: stored_count(rig.db) == 5, 10, what="5 genuine readings")
        bad_sig = bytearray(pump.seal({"i": 99}))
        bad_sig[-1] ^= 1
        bad_ct = bytearray(pump.seal({"i": 98}))
        bad_ct[30] ^= 0x40
        attacks = [
            ("twinlink/01/t", good[0], "replay"),
            ("twinlink/01/t", bytes(bad_sig), "bad_signature"),
            ("twinlink/01/t", bytes(bad_ct), "bad_signature"),
            ("twinlink/01/t", v, "topic_mismatch"),  # the valve's frame on the pump's topic
            ("twinlink/zz/t", good[1], "topic_mismatch"),
            ("twinlink/01/t", b"\xd2\x84garbage", "malformed"),
            ("twinlink/09/t", b"\xd2\x84garbage", "malformed"),
        ]
        for topic, payload, _ in attacks:
            _pub(raw, topic, payload)
        wait_until(lambda: len(events(rig.db)) >= len(attacks), 10, what="security events")
        assert [r for r, _ in events(rig.db)] == [a[2] for a in attacks]
        assert stored_count(rig.db) == 5
        # The mismatch touched no window: the valve's frame on its own topic is stored.
        _pub(raw, "twinlink/02/t", v)
        wait_until(lambda: stored_count(rig.db) == 6, 10, what="the valve's reading")
        pump.close()
        valve.close()
    finally:
        raw.loop_stop()
        stop.set()
        t.join(10)
        twin.close()
    assert ing.stats.duplicates == 1  # the replayed genuine frame was re-acknowledged


def test_forged_and_replayed_acks_change_nothing(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    rig = twin_rig(tmp_path, ("pump", "valve"))
    broker = broker_factory(persistence=False)
    twin = Twin(rig.db, rig.twin_key)
    dev = Device.load(rig.bundle("pump"), rig.state)
    link = for_device(dev, broker.url, timeout=5)  # no ingest runs: only our acks arrive
    raw = _raw(broker.port)
    try:
        assert link.ack_subscribed.wait(10)
        frames = dev.seal_many([{"i": i} for i in range(10)])
        link.send_many(frames)

        def genuine(ranges: list[tuple[int, int]], kid: bytes = dev.kid) -> bytes:
            return ack.seal_ack(twin.ack_context(kid), kid, twin.store.take_ack_seq(kid), ranges)

        first = genuine([(0, 4)])
        _pub(raw, "twinlink/01/a", first)
        wait_until(lambda: link.pending() == 5, 10, what="the genuine ack to release 0..4")
        link.send_many(frames[:5])  # the same frames queued again
        assert link.pending() == 10
        _pub(raw, "twinlink/01/a", first)  # replayed ack
        wait_until(lambda: link.stats.replayed_acks == 1, 10, what="the replay to be seen")
        forged = bytearray(genuine([(0, 9)]))
        forged[-3] ^= 1
        _pub(raw, "twinlink/01/a", bytes(forged))
        _pub(raw, "twinlink/01/a", genuine([(0, 9)], kid=b"\x02"))  # the valve's ack, re-addressed
        _pub(raw, "twinlink/01/a", b"\xd0\x83junk")
        wait_until(lambda: link.stats.forged_acks == 3, 10, what="the forgeries to be seen")
        assert link.pending() == 10 and link.stats.acks == 1
        _pub(raw, "twinlink/01/a", genuine([(0, 9)]))
        wait_until(lambda: link.pending() == 0, 10, what="a fresh genuine ack to release all")
    finally:
        raw.loop_stop()
        link.close()  # the link is not attached to dev: close it, or its thread outlives the test
        dev.close()
        twin.close()
