"""The durable outbox: bounded, all-or-none, survives reopening, one process at a time."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from mosquitto import twin_rig

from twinlink import Device, errors
from twinlink.outbox import Outbox, OutboxFull


@pytest.fixture
def dev(tmp_path: Path):
    rig = twin_rig(tmp_path)
    d = Device.load(rig.bundle("pump"), rig.state)
    yield d
    d.close()


def test_put_release_and_reopen(dev: Device, tmp_path: Path) -> None:
    frames = dev.seal_many([{"i": i} for i in range(20)])
    path = tmp_path / "o.outbox"
    with Outbox(path, capacity=50) as box:
        assert box.put(frames) == 20
        assert box.put(frames[:5]) == 0  # re-queuing is a no-op
        assert len(box) == 20 and box.room() == 30
        assert box.release(dev.kid, [(0, 4), (10, 10)]) == 6
        assert [s for s, _ in box.head(dev.kid, 8)] == [5, 6, 7, 8, 9, 11, 12]
    with Outbox(path, capacity=50) as box:
        assert len(box) == 14
        got = dict(box.head(dev.kid, 100))
        assert got[5] == frames[5]  # the original bytes, never re-sealed
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_full_outbox_refuses_the_whole_batch(dev: Device, tmp_path: Path) -> None:
    frames = dev.seal_many([{"i": i} for i in range(12)])
    with Outbox(tmp_path / "o.outbox", capacity=10) as box:
        box.put(frames[:8])
        with pytest.raises(OutboxFull) as ei:
            box.put(frames[8:])
        assert isinstance(ei.value, errors.TransportError) and ei.value.reason == "outbox_full"
        assert len(box) == 8  # nothing of the refused batch, nothing old evicted
        box.release(dev.kid, [(0, 1)])
        assert box.put(frames[8:]) == 4 and len(box) == 10


def test_not_a_frame_is_refused(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.outbox") as box, pytest.raises(errors.MalformedFrame):
        box.put([b"\x00garbage"])


def test_one_process_per_outbox(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.outbox"), pytest.raises(errors.StateLocked):
        Outbox(tmp_path / "o.outbox")
