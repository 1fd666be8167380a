"""Firmware update delivery over the downlink (docs/PROTOCOL.md §21), in-process: a real twin
database, real device state and staging files, the real Downlinker sealing offers and chunks;
an in-process wire between them that can drop, duplicate, reorder and corrupt frames.

The transports (MQTT, a pty serial cable) and a real SIGKILL are in test_update_delivery_e2e.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import cbor2
import pytest
from update_delivery_kit import Installer, Wire, update_rig

from twinlink import Device, Twin, downlink, keys, update
from twinlink.downlink import UPDATE_CHUNK, Chunk, Offer
from twinlink.errors import MalformedPayload
from twinlink.store.downlink import UPDATE_WINDOW
from twinlink.update import delivery

SIZE = 9 * UPDATE_CHUNK + 345  # ten chunks, the last one short


@pytest.fixture
def setup(tmp_path: Path):
    ur = update_rig(tmp_path)
    twin = Twin(ur.rig.db, ur.rig.twin_key)
    dev = Device.load(ur.bundle("pump"), ur.rig.state)
    inst = Installer(tmp_path / "installed.bin")
    events: list[tuple[str, str]] = []
    dev.on_event = lambda k, d: events.append((k, d))
    twin.open(dev.seal({"boot": 1}))  # the twin learns the device's context
    yield ur, twin, dev, inst, events
    dev.close()
    twin.close()


def _types(twin: Twin) -> list[str]:
    return [e["type"] for e in twin.store.events("pump") if e["type"].startswith("update.")]


def test_full_update_is_staged_verified_recorded_and_installed(setup) -> None:
    ur, twin, dev, inst, events = setup
    dev.on_update(inst)
    img = ur.image(5, SIZE)
    view = twin.store.offer_update("pump", ur.manifest(5, img), img)
    assert view["status"] == "offered" and view["size"] == SIZE
    wire = Wire(twin, dev)
    view = wire.run("pump")
    assert view["status"] == "applied" and view["staged"] == SIZE
    assert inst.calls == [5] and inst.out.read_bytes() == img
    rec = update.RecordStore(ur.rig.state, dev.bundle).load()
    assert rec is not None and (rec.seq, rec.installed) == (5, True)
    assert view["sent"] == SIZE  # no loss: every byte sent once
    assert _types(twin) == ["update.offered", "update.applied"]
    assert [k for k, _ in events] == ["update.offered", "update.applied"]
    # The staging file and its manifest are gone; offering the same update again is a no-op.
    assert not list(ur.rig.state.glob("*.staging*"))
    twin.store.offer_update("pump", ur.manifest(5, img), img)
    assert wire.run("pump")["status"] == "applied" and inst.calls == [5]


def test_forged_manifest_is_refused_before_any_chunk(setup) -> None:
    """Signed by a key that is not an update key (the device's own key, a stranger's): refused
    on the offer; no chunk is sent, nothing changes on the device, the twin records why."""
    ur, twin, dev, inst, events = setup
    dev.on_update(inst)
    good = ur.image(3, SIZE)
    twin.store.offer_update("pump", ur.manifest(3, good), good)
    Wire(twin, dev).run("pump")
    before = ur.snapshot()
    assert inst.calls == [3]
    own = keys.Bundle.load(ur.bundle("pump")).device_key
    assert own is not None
    for seed, reason in ((own.seed, "untrusted_key"), (b"\x07" * 32, "untrusted_key")):
        img = ur.image(9, SIZE)
        twin.store.offer_update("pump", ur.manifest(9, img, seed=seed), img)
        view = Wire(twin, dev).run("pump")
        assert (view["status"], view["reason"], view["sent"]) == ("rejected", reason, 0)
        assert ur.snapshot() == before and inst.calls == [3]
    # A rollback (seq below the installed one) and another class are refused the same way.
    old = ur.image(2, SIZE)
    twin.store.offer_update("pump", ur.manifest(2, old), old)
    assert Wire(twin, dev).run("pump")["reason"] == "rollback"
    other = ur.manifest(10, good, class_id=update.class_uuid(ur.vendor_id, "valve-v1"))
    twin.store.offer_update("pump", other, good)
    assert Wire(twin, dev).run("pump")["reason"] == "wrong_class"
    assert ur.snapshot() == before and inst.calls == [3]
    rejected = [e for e in twin.store.events("pump") if e["type"] == "update.rejected"]
    # Refusals of one device within seconds are aggregated into one row with a count.
    assert sum(e["count"] for e in rejected) == 4 and "untrusted_key" in rejected[0]["detail"]
    assert [k for k, _ in events].count("update.rejected") == 4


def test_tampered_image_is_never_installed(setup) -> None:
    """A genuine manifest with other bytes of the same size: staged, then refused at the
    digest check; no installer call, the record unchanged, the staging file removed."""
    ur, twin, dev, inst, _ = setup
    dev.on_update(inst)
    img = ur.image(4, SIZE)
    bad = bytearray(img)
    bad[UPDATE_CHUNK + 7] ^= 0x40
    before = ur.snapshot()
    twin.store.offer_update("pump", ur.manifest(4, img), bytes(bad))
    view = Wire(twin, dev).run("pump")
    assert (view["status"], view["reason"]) == ("rejected", "digest_mismatch")
    assert inst.calls == [] and ur.snapshot() == before


def test_duplicated_reordered_and_corrupted_chunks_never_get_in(setup) -> None:
    """The wire duplicates every frame, swaps neighbours, and flips a bit of one chunk frame:
    duplicates are ignored, out-of-order chunks refused (gap, then resent), the corrupted frame
    fails its AEAD; the installed image is exactly the signed one."""
    ur, twin, dev, inst, _ = setup
    handler = dev.on_update(inst)
    corrupted: list[int] = []

    def tamper(frames: list[bytes]) -> list[bytes]:
        fs = list(frames)
        for i in range(0, len(fs) - 1, 2):
            fs[i], fs[i + 1] = fs[i + 1], fs[i]
        out = [f for f in fs for _twice in (0, 1)]
        if not corrupted and len(out) > 6:
            bad = bytearray(out[5])
            bad[len(bad) // 2] ^= 1
            out[5] = bytes(bad)
            corrupted.append(1)
        return out

    img = ur.image(6, SIZE)
    twin.store.offer_update("pump", ur.manifest(6, img), img)
    wire = Wire(twin, dev, tamper)
    view = wire.run("pump")
    assert view["status"] == "applied" and inst.out.read_bytes() == img
    assert handler.counts["gaps"] > 0  # swapped neighbours: refused, then resent
    assert "downlink_replay" in wire.refused and corrupted  # a frame twice: its PIV repeats
    assert "decrypt_failed" in wire.refused  # the flipped bit: its AEAD tag fails


def _direct(twin: Twin, dev: Device, tid: bytes, img: bytes) -> tuple[Any, Any]:
    """(send(plaintext), chunk(i)): seal frames as the twin would, each with a fresh PIV, and
    hand them straight to the device; both return the device's reports."""
    rec = twin.store.device("pump")
    ctx = twin.ack_context(dev.kid, b"", rec.id_context)
    piv = [downlink.next_piv(None)]

    def send(plaintext: bytes) -> dict:
        piv[0] += 1
        return dev.handle_downlink(downlink.seal_downlink(ctx, dev.kid, piv[0], plaintext,
                                                          rec.id_context))

    def chunk(i: int) -> dict:
        off = i * UPDATE_CHUNK
        return send(downlink.encode_chunk(tid, off, img[off:off + UPDATE_CHUNK]))

    return send, chunk


def test_resent_chunk_is_ignored_and_a_chunk_out_of_order_refused(setup) -> None:
    """At the staging level (each frame authentic with a fresh PIV, as a twin's resend is): a
    chunk already staged changes nothing, one past the staged offset is refused and reported
    once as a gap; the staged file only ever holds the image's own prefix."""
    ur, twin, dev, inst, _ = setup
    handler = dev.on_update(inst)
    img = ur.image(5, SIZE)
    raw = ur.manifest(5, img)
    tid = downlink.transfer_id(raw)
    send, chunk = _direct(twin, dev, tid, img)

    assert send(downlink.encode_offer(raw)) == downlink.update_report(tid, "staging", 0)
    chunk(0)
    staged = delivery.staging_path(dev.bundle, ur.rig.state)
    assert chunk(0) == {} and handler.counts["duplicates"] == 1
    assert chunk(2) == downlink.update_report(tid, "gap", UPDATE_CHUNK)
    assert chunk(3) == {}  # the same gap is reported once
    assert staged.read_bytes() == img[:UPDATE_CHUNK] and handler.offset == UPDATE_CHUNK
    # A chunk whose bytes were altered by the (authentic) sender: staged, then the digest
    # check refuses the whole image; nothing installed.
    bad = bytearray(img[UPDATE_CHUNK:2 * UPDATE_CHUNK])
    bad[0] ^= 1
    send(downlink.encode_chunk(tid, UPDATE_CHUNK, bytes(bad)))
    for i in range(2, 10):
        reports = chunk(i)
    assert reports == downlink.update_report(tid, "rejected", 0, "digest_mismatch")
    assert inst.calls == [] and not staged.exists()


def test_a_gap_right_after_a_progress_report_is_still_reported(setup) -> None:
    """The device reported 4000 bytes staged; the next chunk is lost: the one after it must
    still be answered with a gap (else the twin waits for its stall timer)."""
    ur, twin, dev, inst, _ = setup
    dev.on_update(inst)
    img = ur.image(5, SIZE)
    raw = ur.manifest(5, img)
    tid = downlink.transfer_id(raw)
    send, chunk = _direct(twin, dev, tid, img)

    send(downlink.encode_offer(raw))
    assert chunk(0) == {}
    assert chunk(1) == downlink.update_report(tid, "staging", 2 * UPDATE_CHUNK)
    assert chunk(3) == downlink.update_report(tid, "gap", 2 * UPDATE_CHUNK)
    assert chunk(4) == {}


def test_lost_chunks_are_resent_from_the_staged_offset(setup) -> None:
    ur, twin, dev, inst, _ = setup
    dev.on_update(inst)
    dropped: list[int] = []

    def drop_third(frames: list[bytes]) -> list[bytes]:
        if len(frames) > 3 and len(dropped) < 2:
            dropped.append(1)
            return frames[:2] + frames[3:]
        return frames

    img = ur.image(7, SIZE)
    twin.store.offer_update("pump", ur.manifest(7, img), img)
    view = Wire(twin, dev, drop_third).run("pump")
    assert view["status"] == "applied" and inst.out.read_bytes() == img
    # Go-back-N from the staged offset: each loss costs at most one window, never the image.
    assert SIZE < view["sent"] <= SIZE + 2 * UPDATE_WINDOW * UPDATE_CHUNK


def test_device_restart_resumes_from_the_staged_offset(setup) -> None:
    """The device goes away mid-transfer (its in-memory transfer lost); a new process resumes
    from what is staged on disk and reports it, so the twin continues from there."""
    ur, twin, dev, inst, _ = setup
    dev.on_update(inst)
    img = ur.image(8, SIZE)
    twin.store.offer_update("pump", ur.manifest(8, img), img)
    wire = Wire(twin, dev, lambda fs: fs[:4])  # a slow link: four frames per round
    while (twin.store.update_view("pump") or {})["staged"] < 4 * UPDATE_CHUNK:
        wire.step()
    dev.close()
    sent_before = (twin.store.update_view("pump") or {})["sent"]
    dev2 = Device.load(ur.bundle("pump"), ur.rig.state)
    try:
        staged = delivery.staging_path(dev2.bundle, ur.rig.state).stat().st_size
        assert staged >= 4 * UPDATE_CHUNK
        wire2 = Wire(twin, dev2)
        dev2.on_update(inst)  # reports "resume <staged>"
        view = wire2.run("pump")
        assert view["status"] == "applied" and inst.out.read_bytes() == img
        # Not restarted from 0: after the restart exactly the missing bytes were sent.
        assert view["sent"] - sent_before == SIZE - staged
    finally:
        dev2.close()


def test_device_without_update_handler_refuses(setup) -> None:
    ur, twin, dev, _inst, _ = setup
    dev.on_desired(lambda v: None)  # the downlink is on, updates are not
    img = ur.image(5, SIZE)
    twin.store.offer_update("pump", ur.manifest(5, img), img)
    view = Wire(twin, dev).run("pump")
    assert (view["status"], view["reason"], view["sent"]) == ("rejected", "no_updates", 0)


def test_offer_checks_the_image_size_and_the_manifest(setup) -> None:
    ur, twin, _dev, _inst, _ = setup
    img = ur.image(5, SIZE)
    with pytest.raises(ValueError, match="announces"):
        twin.store.offer_update("pump", ur.manifest(5, img), img[:-1])
    with pytest.raises(update.MalformedManifest):
        twin.store.offer_update("pump", b"\x00" * 40, img)


def test_update_plaintexts_are_deterministic_and_strict() -> None:
    tid = downlink.transfer_id(b"m")
    raw = downlink.encode_chunk(tid, 4000, b"x" * UPDATE_CHUNK)
    assert len(raw) <= downlink.MAX_PLAINTEXT
    assert downlink.decode(raw) == Chunk(tid, 4000, b"x" * UPDATE_CHUNK)
    assert downlink.decode(downlink.encode_offer(b"manifest")) == Offer(b"manifest")
    assert len(downlink.encode_chunk(b"\xff" * 8, (1 << 64) - 1, b"x" * UPDATE_CHUNK)) <= 2048
    bad = [
        cbor2.dumps({1: "chunk", 2: tid, 3: 0, 4: b"x" * (UPDATE_CHUNK + 1)}, canonical=True),
        cbor2.dumps({1: "chunk", 2: tid[:7], 3: 0, 4: b"x"}, canonical=True),
        cbor2.dumps({1: "chunk", 2: tid, 3: -1, 4: b"x"}, canonical=True),
        cbor2.dumps({1: "chunk", 2: tid, 3: 0, 4: b""}, canonical=True),
        cbor2.dumps({1: "chunk", 2: tid, 3: 0, 4: b"x", 5: 1}, canonical=True),
        cbor2.dumps({1: "update", 2: "text"}, canonical=True),
        cbor2.dumps({1: "update", 2: b"m" * 1025}, canonical=True),
        # Not deterministic: offset 5 with a one-byte head (0x18 0x05).
        bytes.fromhex("a401656368756e6b0248") + tid + bytes.fromhex("0318050441") + b"x",
    ]
    for b in bad:
        with pytest.raises(MalformedPayload):
            downlink.decode(b)
    for args in ((tid, 0, b""), (tid[:7], 0, b"x"), (tid, -1, b"x"),
                 (tid, 0, b"x" * (UPDATE_CHUNK + 1))):
        with pytest.raises(ValueError):
            downlink.encode_chunk(*args)


def test_protocol_examples() -> None:
    """The plaintexts shown in docs/PROTOCOL.md §21 are what the encoders produce."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md").read_text()
    tid = bytes.fromhex("0001020304050607")
    for raw in (downlink.encode_chunk(tid, 4000, b"hello"),
                downlink.encode_offer(bytes.fromhex("d28443a10127a0"))):
        assert f"  = {raw.hex()}\n" in text


def test_update_reports_parse_strictly() -> None:
    tid = hashlib.sha256(b"m").digest()[:8]
    rep = downlink.update_report(tid, "rejected", 0, "untrusted_key")
    assert downlink.parse_update_report(rep[downlink.UPDATE_REPORT]) == (
        tid, "rejected", 0, "untrusted_key")
    # A reason the twin would not parse is sent as "refused", never dropped.
    weird = downlink.update_report(tid, "rejected", 0, "Bad-Reason")[downlink.UPDATE_REPORT]
    assert downlink.parse_update_report(weird) == (tid, "rejected", 0, "refused")
    for bad in ("", "zz", tid.hex() + " done 0", tid.hex() + " staging -1",
                tid.hex() + " staging 01", tid.hex() + " staging 1 Bad", 5, None,
                tid.hex() + " staging " + "9" * 21):
        assert downlink.parse_update_report(bad) is None
