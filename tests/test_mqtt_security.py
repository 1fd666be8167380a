"""Attacks over a real broker: forged, replayed and cross-topic frames published by a raw paho
client are refused and logged as security events; forged and replayed acks change nothing."""

from __future__ import annotations

from pathlib import Path

import cbor2
import pytest
from mosquitto import (  # noqa: F401
    AckCapture,
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
from twinlink.delivery import AckOpener
from twinlink.frame import parse, seal
from twinlink.keys import Bundle
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


def test_forged_replayed_and_mismatched_acks_release_nothing_unstored(
        tmp_path: Path, broker_factory) -> None:  # noqa: F811
    rig = twin_rig(tmp_path, ("pump", "valve"))
    broker = broker_factory(persistence=False)
    twin = Twin(rig.db, rig.twin_key)
    dev = Device.load(rig.bundle("pump"), rig.state)
    link = for_device(dev, broker.url, timeout=5)  # no ingest runs: only our acks arrive
    raw = raw_client(broker.port)
    sid = bytes.fromhex("5151c0ffee00")
    try:
        assert link.ack_subscribed.wait(10)
        frames = dev.seal_many([{"i": i} for i in range(10)])
        seqs = [parse(f).seq for f in frames]

        def genuine(fs: list[bytes], kid: bytes = dev.kid, digests: list[bytes] | None = None,
                    piv: int = 0) -> bytes:
            entries = list(zip([parse(f).seq for f in fs],
                               digests or [ack.digest(f) for f in fs]))
            ctx = twin.ack_context(kid, sid, dev.id_context)
            return ack.seal_ack(ctx, kid, piv, entries, kid_context=dev.id_context)

        link.send_many(frames)
        first = genuine(frames[:5])
        publish(raw, "twinlink/01/a", first)
        wait_until(lambda: link.pending() == 5, 10, what="the genuine ack to release 0..4")
        # Replayed: still a true claim about those very frames, so it releases them if they
        # are queued again -- and nothing else.
        link.send_many(frames[:5])
        assert link.pending() == 10
        publish(raw, "twinlink/01/a", first)
        wait_until(lambda: link.pending() == 5, 10, what="the replayed ack")
        assert link.outbox.seqs(dev.kid, dev.id_context) == seqs[5:]
        forged = bytearray(genuine(frames[5:], piv=1))
        forged[-3] ^= 1
        publish(raw, "twinlink/01/a", bytes(forged))
        publish(raw, "twinlink/01/a", genuine(frames[5:], kid=b"\x02"))  # the valve's
        publish(raw, "twinlink/01/a", b"\xd0\x83junk")
        wait_until(lambda: link.stats.forged_acks == 3, 10, what="the forgeries to be seen")
        # Authentic, but naming other frames under these seqs (a clone's, a lost state's).
        publish(raw, "twinlink/01/a", genuine(frames[5:], digests=[bytes(8)] * 5, piv=2))
        wait_until(lambda: link.stats.conflicts == 5, 10, what="the conflicts to be seen")
        assert link.pending() == 5 and link.stats.released == 10
        publish(raw, "twinlink/01/a", genuine(frames[5:], piv=3))
        wait_until(lambda: link.pending() == 0, 10, what="a genuine ack to release the rest")
    finally:
        raw.loop_stop()
        link.close()  # the link is not attached to dev: close it, or its thread outlives the test
        dev.close()
        twin.close()


def test_a_conflicting_frame_is_never_acknowledged(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    """A second frame under a stored sequence number with other content (a clone, or a device
    that lost its state) is refused as a conflict and negatively acknowledged, never
    acknowledged as stored; a byte-identical copy (a lost ack) is acknowledged again."""
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
    acks = AckCapture(raw)
    try:
        with Twin(rig.db, rig.twin_key) as twin, running_ingest(broker.url, twin) as ing:
            publish(raw, "twinlink/01/t", original)
            wait_until(lambda: ing.stats.batches == 1, 10, what="the original")
            publish(raw, "twinlink/01/t", original)
            wait_until(lambda: ing.stats.batches == 2, 10, what="the copy")
            assert (ing.stats.duplicates, ing.stats.acks) == (1, 2)
            publish(raw, "twinlink/01/t", clone)
            wait_until(lambda: ing.stats.batches == 3, 10, what="the clone")
            assert (ing.stats.duplicates, ing.stats.refused, ing.stats.nacks) == (1, 1, 1)
            wait_until(lambda: len(acks.got) == 3, 10, what="three acks")
    finally:
        raw.loop_stop()
    opener = AckOpener(Bundle.load(rig.bundle("pump")))
    opened = [opener.open(a) for a in acks.got]
    stored_claims = {e for a in opened for e in a.stored}
    assert stored_claims == {(seq, ack.digest(original))}  # the clone is never "stored"
    assert [a.refused for a in opened if a.refused] == [((seq, ack.digest(clone), "conflict"),)]
    assert len({(a.sender_id, a.seq) for a in opened}) == 3  # never one nonce twice
    assert [r for r, _ in events(rig.db)] == ["replay", "conflict"]
    assert stored_count(rig.db) == 1
