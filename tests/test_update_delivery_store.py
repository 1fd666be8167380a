"""The twin store's update transfers (twinlink.store.downlink, PROTOCOL.md §21) on both stores,
a SQLite file and a fresh PostgreSQL database: the offer, the window of chunks and their bytes,
progress, gap and stall rewinds, the final events, a whole delivery through the real Downlinker,
and the v5 -> v6 SQLite migration."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from nacl import bindings as nacl
from pg import pg_server, pg_url, requires_postgres  # noqa: F401 - fixtures
from update_delivery_kit import CLASS, VENDOR, Installer, Wire
from update_kit import image_bytes

import twinlink
from twinlink import downlink, keys, update
from twinlink.downlink import UPDATE_CHUNK
from twinlink.provision import provision
from twinlink.store import SCHEMA_VERSION, open_store
from twinlink.store.downlink import UPDATE_WINDOW

SEED = b"\x42" * 32


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=requires_postgres)])
def fleet(request: pytest.FixtureRequest, tmp_path: Path):
    db = (str(tmp_path / "twin.db") if request.param == "sqlite"
          else str(request.getfixturevalue("pg_url")))
    tk = keys.TwinKey.generate()
    keys.write_private(tmp_path / "twin.key", tk.to_pem())
    keys.write_public(tmp_path / "twin.pub", tk.public_pem())
    settings = dict(update.add_update_trust(
        {}, [nacl.crypto_sign_seed_keypair(SEED)[0]], VENDOR, CLASS))
    with open_store(db) as store:
        provision("pump", tmp_path / "twin.pub", tmp_path / "keys", db=store, kid=b"\x01",
                  settings=settings)
    twin = twinlink.Twin(db, tk)
    dev = twinlink.Device.load(tmp_path / "keys" / "pump.device", tmp_path / "state")
    twin.open(dev.seal({"boot": 1}))
    yield twin, dev, tmp_path
    dev.close()
    twin.close()


def _manifest(seq: int, img: bytes) -> bytes:
    import hashlib

    vid = update.vendor_uuid(VENDOR)
    return update.make_manifest(SEED, seq=seq, vendor_id=vid,
                                class_id=update.class_uuid(vid, CLASS),
                                digest=hashlib.sha256(img).digest(), size=len(img))


def _report(twin: twinlink.Twin, dev: twinlink.Device, tid: bytes, status: str, offset: int,
            reason: str = "") -> None:
    twin.open(dev.seal(downlink.update_report(tid, status, offset, reason)))


def test_window_progress_gap_and_stall(fleet) -> None:
    twin, dev, _ = fleet
    s = twin.store
    # Reports are applied at the real time; the due calls pass times just after it, and a
    # resend period long enough that only the stall step below counts as stalled.
    R = 60.0
    size = 20 * UPDATE_CHUNK + 5
    img = image_bytes(4, size)
    raw = _manifest(4, img)
    tid = downlink.transfer_id(raw)
    now = time.time()
    s.offer_update("pump", raw, img, now=now)
    jobs = s.downlink_due(R, now=now)
    assert [(j.kind, j.data) for j in jobs] == [("offer", raw)]
    assert s.downlink_due(R, now=now + 1) == []  # the offer waits for its answer
    assert [j.kind for j in s.downlink_due(R, now=now + R + 1)] == ["offer"]  # resent
    _report(twin, dev, tid, "staging", 0)
    jobs = s.downlink_due(R, now=now + 7)
    assert [(j.kind, j.offset) for j in jobs] == [
        ("chunk", i * UPDATE_CHUNK) for i in range(UPDATE_WINDOW)]
    assert all(j.transfer == tid and j.data == img[j.offset:j.offset + UPDATE_CHUNK]
               for j in jobs)
    assert len({j.piv for j in jobs}) == len(jobs)
    assert s.downlink_due(R, now=now + 7.1) == []  # the window is full
    _report(twin, dev, tid, "staging", 4 * UPDATE_CHUNK)
    assert [j.offset for j in s.downlink_due(R, now=now + 8)] == [
        i * UPDATE_CHUNK for i in range(UPDATE_WINDOW, UPDATE_WINDOW + 4)]
    _report(twin, dev, tid, "staging", 2 * UPDATE_CHUNK)  # a late report: never goes back
    assert s.update_view("pump")["staged"] == 4 * UPDATE_CHUNK  # type: ignore[index]
    _report(twin, dev, tid, "gap", 5 * UPDATE_CHUNK)  # rewind to the device's offset
    assert [j.offset for j in s.downlink_due(R, now=now + 9)] == [
        i * UPDATE_CHUNK for i in range(5, 5 + UPDATE_WINDOW)]
    # No progress for resend_after: the offer again and the window from the staged offset.
    jobs = s.downlink_due(R, now=now + 3 * R)
    assert [j.kind for j in jobs] == ["offer"] + ["chunk"] * UPDATE_WINDOW
    assert jobs[1].offset == 5 * UPDATE_CHUNK
    view = s.update_view("pump")
    assert view is not None and view["status"] == "staging"
    assert view["sent"] == (UPDATE_WINDOW + 4 + UPDATE_WINDOW + UPDATE_WINDOW) * UPDATE_CHUNK
    # A report for another transfer changes nothing; the last chunk is short.
    _report(twin, dev, b"\x00" * 8, "applied", size)
    assert s.update_view("pump")["status"] == "staging"  # type: ignore[index]
    _report(twin, dev, tid, "staging", 19 * UPDATE_CHUNK)
    last = [j for j in s.downlink_due(R, now=now + 3 * R + 1) if j.kind == "chunk"][-1]
    assert (last.offset, last.data) == (20 * UPDATE_CHUNK, img[-5:])
    _report(twin, dev, tid, "applied", size)
    assert s.update_view("pump")["status"] == "applied"  # type: ignore[index]
    assert s.downlink_due(R, now=now + 3 * R + 2) == []
    _report(twin, dev, tid, "rejected", 0, "rollback")  # final: ignored
    assert s.update_view("pump")["status"] == "applied"  # type: ignore[index]
    types = [e["type"] for e in s.events("pump") if e["type"].startswith("update.")]
    assert types == ["update.offered", "update.applied"]


def test_unknown_transfer_is_offered_again_and_rejection_recorded(fleet) -> None:
    twin, dev, _ = fleet
    s = twin.store
    img = image_bytes(5, 3000)
    raw = _manifest(5, img)
    tid = downlink.transfer_id(raw)
    now = time.time()
    s.offer_update("pump", raw, img, now=now)
    s.downlink_due(5.0, now=now)
    _report(twin, dev, tid, "staging", 0)
    assert {j.kind for j in s.downlink_due(5.0, now=now + 1)} == {"chunk"}
    _report(twin, dev, tid, "resume", 0, "unknown_transfer")
    assert [j.kind for j in s.downlink_due(5.0, now=now + 2)] == ["offer"]
    _report(twin, dev, tid, "rejected", 0, "untrusted_key")
    view = s.update_view("pump")
    assert view is not None and (view["status"], view["reason"]) == ("rejected",
                                                                     "untrusted_key")
    ev = [e for e in s.events("pump") if e["type"] == "update.rejected"]
    assert len(ev) == 1 and "untrusted_key" in ev[0]["detail"]


def test_whole_delivery_through_the_downlinker(fleet) -> None:
    twin, dev, root = fleet
    inst = Installer(root / "installed.bin")
    dev.on_update(inst)
    img = image_bytes(6, 7 * UPDATE_CHUNK + 1)
    twin.store.offer_update("pump", _manifest(6, img), img)
    view = Wire(twin, dev).run("pump")
    assert view["status"] == "applied" and inst.out.read_bytes() == img


def test_v5_database_gains_the_updates_table(tmp_path: Path) -> None:
    db = tmp_path / "twin.db"
    open_store(str(db)).close()
    c = sqlite3.connect(db)
    c.execute("DROP TABLE updates")
    c.execute("PRAGMA user_version=5")
    c.commit()
    c.close()
    with open_store(str(db)) as s:
        assert s.update_view  # the store opens and migrates
    c = sqlite3.connect(db)
    assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    assert c.execute("SELECT COUNT(*) FROM updates").fetchone()[0] == 0
    c.close()
