"""The end-to-end ack format (twinlink.ack) and the outbox's handling of acks, without a broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from mosquitto import twin_rig

from twinlink import Device, Twin, ack, errors
from twinlink.outbox import Outbox


@pytest.fixture
def pair(tmp_path: Path):
    rig = twin_rig(tmp_path, ("pump", "valve"))
    twin = Twin(rig.db, rig.twin_key)
    dev = Device.load(rig.bundle("pump"), rig.state)
    yield twin, dev, rig
    dev.close()
    twin.close()


def test_round_trip_and_ranges(pair) -> None:
    twin, dev, _ = pair
    ctx = twin.ack_context(dev.kid)
    data = ack.seal_ack(ctx, dev.kid, 7, [(5, 9), (0, 3), (4, 4), (20, 20)])
    a = ack.open_ack(dev.bundle.ack_context(), dev.kid, data)
    assert a.seq == 7 and a.ranges == ((0, 9), (20, 20))
    assert a.covers(9) and not a.covers(10) and a.count() == 11
    assert ack.to_ranges([3, 1, 2, 7, 8, 10]) == [(1, 3), (7, 8), (10, 10)]
    # The envelope is a COSE_Encrypt0 any COSE library can parse: 16([h'A1011818', {6: h'07'}, ct])
    assert data[:9] == bytes.fromhex("d08344a1011818a106") and data[9:11] == b"\x41\x07"


def test_every_single_byte_change_is_refused(pair) -> None:
    twin, dev, _ = pair
    data = ack.seal_ack(twin.ack_context(dev.kid), dev.kid, 1, [(0, 99)])
    ctx = dev.bundle.ack_context()
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= bit
            with pytest.raises(errors.TwinlinkError):
                ack.open_ack(ctx, dev.kid, bytes(bad))


def test_ack_for_another_device_or_direction_is_refused(pair) -> None:
    twin, dev, rig = pair
    valve = Device.load(rig.bundle("valve"), rig.state)
    try:
        for_valve = ack.seal_ack(twin.ack_context(valve.kid), valve.kid, 0, [(0, 10)])
        with pytest.raises(errors.DecryptionFailed):
            ack.open_ack(dev.bundle.ack_context(), dev.kid, for_valve)
        # The same bytes re-addressed to the pump's kid: the AAD binds the kid.
        with pytest.raises(errors.DecryptionFailed):
            ack.open_ack(valve.bundle.ack_context(), dev.kid, for_valve)
    finally:
        valve.close()
    # The device→twin key cannot seal an ack the device accepts.
    with pytest.raises(ValueError):
        ack.seal_ack(twin.device_context(dev.kid), dev.kid, 0, [(0, 1)])


LEADING_ZERO_PIV = b"\xd0\x83\x44\xa1\x01\x18\x18\xa1\x06\x42\x00\x01\x50" + bytes(16)


@pytest.mark.parametrize("junk", [b"", b"\xd0", b"\xd0\x83", bytes(64), b"\xa0" * 10,
                                  LEADING_ZERO_PIV])
def test_malformed_acks_raise_twinlink_errors(pair, junk: bytes) -> None:
    _, dev, _ = pair
    with pytest.raises(errors.TwinlinkError):
        ack.open_ack(dev.bundle.ack_context(), dev.kid, junk)


def test_replayed_or_forged_ack_releases_nothing(pair, tmp_path: Path) -> None:
    twin, dev, _ = pair
    frames = dev.seal_many([{"i": i} for i in range(10)])
    ctx = dev.bundle.ack_context()
    with Outbox(tmp_path / "o.outbox") as box:
        box.put(frames)
        a = ack.open_ack(ctx, dev.kid, ack.seal_ack(twin.ack_context(dev.kid), dev.kid,
                                                    twin.store.take_ack_seq(dev.kid), [(0, 4)]))
        assert box.release(dev.kid, a.ranges, a.seq) == 5
        box.put(frames)  # the same frames queued again: a replay must not release them
        assert len(box) == 10
        with pytest.raises(errors.Replay):
            box.release(dev.kid, a.ranges, a.seq)
        assert len(box) == 10
        # A newer genuine ack does release; an older PIV beyond the window is refused.
        b = ack.open_ack(ctx, dev.kid, ack.seal_ack(twin.ack_context(dev.kid), dev.kid,
                                                    a.seq + 1000, [(0, 9)]))
        assert box.release(dev.kid, b.ranges, b.seq) == 10
        box.put(frames)
        with pytest.raises(errors.TooOld):
            box.release(dev.kid, a.ranges, a.seq)
        assert len(box) == 10
    # The ack window is durable: a replay after a restart is still refused.
    with Outbox(tmp_path / "o.outbox") as box:
        with pytest.raises(errors.Replay):
            box.release(dev.kid, b.ranges, b.seq)
        assert len(box) == 10
