"""The durable outbox: bounded, all-or-none, keyed by (kid, context, seq), survives reopening,
one process at a time, migrates a version-1 outbox, keeps dead letters."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from mosquitto import twin_rig

from twinlink import Device, ack, errors
from twinlink.frame import parse
from twinlink.outbox import Outbox, OutboxFull


@pytest.fixture
def dev(tmp_path: Path):
    rig = twin_rig(tmp_path)
    d = Device.load(rig.bundle("pump"), rig.state)
    yield d
    d.close()


def _keys(dev: Device, frames: list[bytes]) -> list[tuple[bytes, bytes, int]]:
    return [(dev.kid, dev.id_context or b"", parse(f).seq) for f in frames]


def test_put_release_and_reopen(dev: Device, tmp_path: Path) -> None:
    frames = dev.seal_many([{"i": i} for i in range(20)])
    path = tmp_path / "o.outbox"
    with Outbox(path, capacity=50) as box:
        assert box.put(frames) == 20
        assert box.put(frames[:5]) == 0  # re-queuing is a no-op
        assert len(box) == 20 and box.room() == 30
        assert box.release(_keys(dev, frames[:5] + frames[10:11])) == 6
        assert [q.seq for q in box.head(dev.kid, 8)] == [5, 6, 7, 8, 9, 11, 12]
        assert {q.ctx for q in box.head(dev.kid, 8)} == {dev.id_context}
    with Outbox(path, capacity=50) as box:
        assert len(box) == 14
        got = {q.seq: q.frame for q in box.head(dev.kid, 100)}
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
        box.release(_keys(dev, frames[:2]))
        assert box.put(frames[8:]) == 4 and len(box) == 10


def test_two_contexts_are_queued_apart_and_the_oldest_goes_first(tmp_path: Path) -> None:
    """A device that renewed its context has frames of both queued, with the same seqs; the
    head is the older context's until every frame of it has left the outbox."""
    rig = twin_rig(tmp_path)
    first = Device.load(rig.bundle("pump"), rig.state)
    old = first.seal_many([{"old": i} for i in range(3)])
    first.close()
    for p in rig.state.glob("*.seq.*"):  # the sequence state is lost; the outbox is not
        p.unlink()
    second = Device.load(rig.bundle("pump"), rig.state)
    try:
        new = second.seal_many([{"new": i} for i in range(3)])
        assert second.id_context != first.id_context and second.renewed
        assert [parse(f).seq for f in new] == [parse(f).seq for f in old] == [0, 1, 2]
        with Outbox(tmp_path / "o.outbox") as box:
            assert box.put(old) == 3 and box.put(new) == 3  # the same seqs, both kept
            assert box.contexts(first.kid) == [first.id_context, second.id_context]
            assert [q.frame for q in box.head(first.kid, 64)] == old
            assert box.release(_keys(first, old[:2])) == 2
            assert [q.frame for q in box.head(first.kid, 64)] == old[2:]  # still the old one
            d = [ack.digest(f) for f in new]
            # An ack for the new context works whenever it comes (digests name frames)...
            done = box.settle(first.kid, second.id_context, [(0, d[0])])
            assert done.released == [0]
            # ...but the new context is sent only once the old one is empty.
            box.settle(first.kid, first.id_context, (), [(2, ack.digest(old[2]), "too_old")])
            assert [q.frame for q in box.head(first.kid, 64)] == new[1:]
            assert box.pending_by_context() == {(first.kid, second.id_context): 2}
    finally:
        second.close()


def test_a_version_1_outbox_is_migrated(dev: Device, tmp_path: Path) -> None:
    frames = dev.seal_many([{"i": i} for i in range(4)])
    path = tmp_path / "v1.outbox"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE frames (kid BLOB NOT NULL, seq INTEGER NOT NULL, frame BLOB NOT NULL,
                             added REAL NOT NULL, PRIMARY KEY (kid, seq)) WITHOUT ROWID;
        CREATE TABLE ack_window (kid BLOB PRIMARY KEY, top INTEGER NOT NULL, bits BLOB NOT NULL);
    """)
    con.executemany("INSERT INTO frames VALUES (?,?,?,?)",
                    [(dev.kid, parse(f).seq, f, time.time()) for f in frames])
    con.execute("INSERT INTO ack_window VALUES (?, 9, x'00')", (dev.kid,))
    con.commit()
    con.close()
    with Outbox(path) as box:
        assert len(box) == 4 and [q.frame for q in box.head(dev.kid, 64)] == frames
        done = box.settle(dev.kid, dev.id_context, [(parse(frames[0]).seq,
                                                     ack.digest(frames[0]))])
        assert done.released == [0] and len(box) == 3
    con = sqlite3.connect(path)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "ack_window" not in tables and "dead_letters" in tables
    assert con.execute("PRAGMA user_version").fetchone()[0] == 2
    con.close()
    # A newer outbox than this program understands is refused, not rewritten.
    shutil.copy(path, tmp_path / "v9.outbox")
    con = sqlite3.connect(tmp_path / "v9.outbox")
    con.execute("PRAGMA user_version=9")
    con.close()
    with pytest.raises(errors.TwinlinkError, match="newer"):
        Outbox(tmp_path / "v9.outbox")


def test_not_a_frame_is_refused(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.outbox") as box, pytest.raises(errors.MalformedFrame):
        box.put([b"\x00garbage"])


def test_one_process_per_outbox(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.outbox"), pytest.raises(errors.StateLocked):
        Outbox(tmp_path / "o.outbox")
