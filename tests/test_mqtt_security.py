"""Attacks over a real broker: forged, replayed and cross-topic frames published by a raw paho
client are refused and logged as security events; forged and replayed acks change nothing."""

from __future__ import annotations

from pathlib import Path

import cbor2
import pytest
from mosquitto import (  # noqa: F401
    broker_factory,
    events,
    publish,
    raw_client,
    requires_mosquitto,
    running_ingest,
    stored_count,
    twin_rig,
    wait_until,
)

from twinlink import Device, Twin, ack
from twinlink.frame import parse, seal
from twinlink.mqtt_link import for_device

pytestmark = [pytest.mark.mqtt, requires_mosquitto]


def test_forged_replayed_and_cross_topic_frames(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    rig = twin_rig(tmp_path, ("pump", "valve"))
    broker = broker_factory(persistence=False)
    twin = Twin(rig.db, rig.twin_key)
    raw = raw_client(broker.port)
    try:
        with running_ingest(broker.url, twin) as ing:
            _attack(rig, raw)
    finally:
        raw.loop_stop()
        twin.close()
    assert ing.stats.duplicates == 1  # the replayed genuine frame was re-acknowledged


def _attack(rig, raw) -> None:
    """Genuine frames, then forged, replayed and cross-topic ones, in one ingest session."""
    pump = Device.load(rig.bundle("pump"), rig.state)
    valve = Device.load(rig.bundle("valve"), rig.state)
    good = pump.seal_many([{"i": i} for i in range(5)])
    v = valve.seal({"open": True})
    for f in good:
        publish(raw, "twinlink/01/t", f)
    wait_until(lambda: stored_count(rig.db) == 5, 10, what="5 genuine readings")
    bad_sig = bytearray(pump.seal({"i": 99}))
    bad_sig[-1] ^= 1
    bad_ct = bytearray(pump.seal({"i": 98}))
    bad_ct[-70] ^= 0x40  # inside the ciphertext: the signature over it fails first
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
        publish(raw, topic, payload)
    wait_until(lambda: len(events(rig.db)) >= len(attacks), 10, what="security events")
    assert [r for r, _ in events(rig.db)] == [a[2] for a in attacks]
    assert stored_count(rig.db) == 5
    # The mismatch touched no window: the valve's frame on its own topic is stored.
    publish(raw, "twinlink/02/t", v)
    wait_until(lambda: stored_count(rig.db) == 6, 10, what="the valve's reading")
    pump.close()
    valve.close()


def test_forged_and_replayed_acks_change_nothing(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    rig = twin_rig(tmp_path, ("pump", "valve"))
    broker = broker_factory(persistence=False)
    twin = Twin(rig.db, rig.twin_key)
    dev = Device.load(rig.bundle("pump"), rig.state)
    link = for_device(dev, broker.url, timeout=5)  # no ingest runs: only our acks arrive
    raw = raw_client(broker.port)
    try:
        assert link.ack_subscribed.wait(10)
        frames = dev.seal_many([{"i": i} for i in range(10)])
        # The twin learns the device's (fresh) security context from a verified frame.
        assert twin.check(frames[0]).seq == 0 and twin.open(frames[0]).seq == 0
        link.send_many(frames)

        def genuine(ranges: list[tuple[int, int]], kid: bytes = dev.kid) -> bytes:
            return ack.seal_ack(twin.ack_context(kid), kid, twin.store.take_ack_seq(kid), ranges)

        first = genuine([(0, 4)])
        publish(raw, "twinlink/01/a", first)
        wait_until(lambda: link.pending() == 5, 10, what="the genuine ack to release 0..4")
        link.send_many(frames[:5])  # the same frames queued again
        assert link.pending() == 10
        publish(raw, "twinlink/01/a", first)  # replayed ack
        wait_until(lambda: link.stats.replayed_acks == 1, 10, what="the replay to be seen")
        forged = bytearray(genuine([(0, 9)]))
        forged[-3] ^= 1
        publish(raw, "twinlink/01/a", bytes(forged))
        # The valve's ack, re-addressed to the pump:
        publish(raw, "twinlink/01/a", genuine([(0, 9)], kid=b"\x02"))
        publish(raw, "twinlink/01/a", b"\xd0\x83junk")
        wait_until(lambda: link.stats.forged_acks == 3, 10, what="the forgeries to be seen")
        assert link.pending() == 10 and link.stats.acks == 1
        publish(raw, "twinlink/01/a", genuine([(0, 9)]))
        wait_until(lambda: link.pending() == 0, 10, what="a fresh genuine ack to release all")
    finally:
        raw.loop_stop()
        link.close()  # the link is not attached to dev: close it, or its thread outlives the test
        dev.close()
        twin.close()


def test_a_conflicting_frame_is_never_acknowledged(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    """A second frame under a stored sequence number with other content (a clone, or a device
    that lost its state) is refused as a conflict and not acknowledged; a byte-identical copy
    (a lost ack) is acknowledged again."""
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=False)
    pump = Device.load(rig.bundle("pump"), rig.state)
    original = pump.seal({"i": 1})
    seq = parse(original).seq
    assert pump.bundle.device_key is not None
    # Another content under the same key, context and sequence number: what a clone sharing
    # the device's state would send.
    clone = seal(pump.bundle.device_key.secret64, pump.bundle.context(pump.id_context), seq,
                 cbor2.dumps({"cloned": True}), kid_context=pump.id_context)
    pump.close()
    raw = raw_client(broker.port)
    try:
        with Twin(rig.db, rig.twin_key) as twin, running_ingest(broker.url, twin) as ing:
            publish(raw, "twinlink/01/t", original)
            wait_until(lambda: ing.stats.batches == 1, 10, what="the original")
            publish(raw, "twinlink/01/t", original)
            wait_until(lambda: ing.stats.batches == 2, 10, what="the copy")
            assert (ing.stats.duplicates, ing.stats.acks) == (1, 2)
            publish(raw, "twinlink/01/t", clone)
            wait_until(lambda: ing.stats.batches == 3, 10, what="the clone")
            assert (ing.stats.duplicates, ing.stats.acks, ing.stats.refused) == (1, 2, 1)
    finally:
        raw.loop_stop()
    assert [r for r, _ in events(rig.db)] == ["replay", "conflict"]
    assert stored_count(rig.db) == 1
