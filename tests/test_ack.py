"""The end-to-end ack format, version 2 (twinlink.ack), and the outbox's digest matching, without
a broker: real keys, a real twin's contexts, a real outbox."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cbor2
import pytest
from mosquitto import twin_rig

from twinlink import Device, Twin, ack, errors
from twinlink.delivery import AckOpener
from twinlink.frame import parse
from twinlink.oscore import derive_context
from twinlink.outbox import Outbox

SID = bytes.fromhex("a1b2c3d4e5f6")


@pytest.fixture
def pair(tmp_path: Path):
    rig = twin_rig(tmp_path, ("pump", "valve"))
    twin = Twin(rig.db, rig.twin_key)
    dev = Device.load(rig.bundle("pump"), rig.state)
    twin.open(dev.seal({"boot": 1}))  # the twin adopts the device's (fresh) context
    yield twin, dev, rig
    dev.close()
    twin.close()


def _seal(twin: Twin, dev: Device, piv: int, stored=(), refused=(), sid: bytes = SID) -> bytes:
    ctx = twin.ack_context(dev.kid, sid, dev.id_context)
    return ack.seal_ack(ctx, dev.kid, piv, stored, refused, dev.id_context)


def test_round_trip_names_frames_by_digest(pair) -> None:
    twin, dev, _ = pair
    frames = dev.seal_many([{"i": i} for i in range(3)])
    st = [(1, ack.digest(frames[1])), (0, ack.digest(frames[0]))]
    rf = [(2, ack.digest(frames[2]), "bad_payload")]
    data = _seal(twin, dev, 7, st, rf)
    a = AckOpener(dev.bundle).open(data)
    assert (a.kid, a.sender_id, a.seq, a.kid_context) == (dev.kid, SID, 7, dev.id_context)
    assert a.stored == tuple(sorted(st)) and a.refused == tuple(rf) and len(a) == 3
    assert ack.digest(frames[0]) == hashlib.sha256(frames[0]).digest()[:8]
    # The envelope: 16([h'A1011818', {4: sid, 6: h'07', 10: kid context}, ct])
    head = bytes.fromhex("d08344a1011818a30446") + SID + bytes.fromhex("064107")
    assert data.startswith(head + b"\x0a" + bytes([0x40 + len(dev.id_context)]) + dev.id_context)
    body = ack.open_ack(twin.ack_context(dev.kid, SID, dev.id_context), dev.kid, data)
    assert body == a


def test_base_context_ack_has_no_kid_context(pair) -> None:
    twin, dev, _ = pair
    ctx = twin.ack_context(dev.kid, SID, None)
    data = ack.seal_ack(ctx, dev.kid, 0, [(5, bytes(8))])
    assert data[7] == 0xA2  # {4, 6}: no label 10
    a = AckOpener(dev.bundle).open(data)
    assert a.kid_context is None and a.stored == ((5, bytes(8)),)


def test_every_single_bit_flip_is_refused(pair) -> None:
    twin, dev, _ = pair
    data = _seal(twin, dev, 1, [(0, bytes(8))], [(1, b"\x01" * 8, "too_old")])
    opener = AckOpener(dev.bundle)
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= bit
            with pytest.raises(errors.TwinlinkError):
                opener.open(bytes(bad))


def test_ack_for_another_device_context_or_sender_is_refused(pair) -> None:
    twin, dev, rig = pair
    valve = Device.load(rig.bundle("valve"), rig.state)
    try:
        twin.open(valve.seal({"boot": 1}))
        for_valve = ack.seal_ack(twin.ack_context(valve.kid, SID, valve.id_context), valve.kid,
                                 0, [(0, bytes(8))], kid_context=valve.id_context)
        with pytest.raises(errors.DecryptionFailed):
            AckOpener(dev.bundle).open(for_valve)  # the AAD binds the device's kid
    finally:
        valve.close()
    # Sealed under the base context but claiming the device's renewed one: the key differs.
    wrong = bytearray(ack.seal_ack(twin.ack_context(dev.kid, SID, None), dev.kid, 0,
                                   [(0, bytes(8))], kid_context=dev.id_context))
    with pytest.raises(errors.DecryptionFailed):
        AckOpener(dev.bundle).open(bytes(wrong))
    # The device→twin key (Sender ID = kid) can never seal an ack.
    with pytest.raises(ValueError):
        ack.seal_ack(twin.device_context(dev.kid), dev.kid, 0, [(0, bytes(8))])
    # Nor can a Sender ID equal to the kid reach a device: refused before any key is derived.
    six = b"\x01" * 6
    assert ack.sender_id_for(six, six) != six and ack.sender_id_for(six, b"\x01") == six
    data = _seal(twin, dev, 0, [(0, bytes(8))])
    env = ack.parse_ack(data)
    with pytest.raises(errors.MalformedFrame, match="equals the device's kid"):
        ack.open_ack(twin.ack_context(dev.kid, SID, dev.id_context), env.sender_id, data, env)


LEADING_ZERO_PIV = (bytes.fromhex("d08344a1011818a20446") + SID + b"\x06\x42\x00\x01\x50"
                    + bytes(16))
SHORT_SID = bytes.fromhex("d08344a1011818a20445") + SID[:5] + b"\x06\x41\x00\x50" + bytes(16)
V1_ACK = bytes.fromhex("d08344a1011818a1064107") + b"\x50" + bytes(16)  # the old {6: PIV} shape
EMPTY_KID_CTX = (bytes.fromhex("d08344a1011818a30446") + SID + b"\x06\x41\x00\x0a\x40\x50"
                 + bytes(16))
REORDERED = bytes.fromhex("d08344a1011818a2064100") + b"\x04\x46" + SID + b"\x50" + bytes(16)


@pytest.mark.parametrize("junk", [b"", b"\xd0", b"\xd0\x83", bytes(64), b"\xa0" * 10,
                                  LEADING_ZERO_PIV, SHORT_SID, V1_ACK, EMPTY_KID_CTX, REORDERED,
                                  b"\xd0\x83" * 9000])
def test_malformed_acks_raise_twinlink_errors(pair, junk: bytes) -> None:
    _, dev, _ = pair
    with pytest.raises(errors.MalformedFrame):
        AckOpener(dev.bundle).open(junk)


@pytest.mark.parametrize("body", [
    {}, {1: []}, {2: []}, {3: [[0, bytes(8)]]}, {1: [[0, bytes(7)]]}, {1: [[-1, bytes(8)]]},
    {1: [[1 << 40, bytes(8)]]}, {1: [[0, bytes(8), "x"]]}, {2: [[0, bytes(8)]]},
    {2: [[0, bytes(8), "Bad Reason"]]}, {2: [[0, bytes(8), 7]]}, [[0, 5]],
    {1: [[i, bytes(8)] for i in range(257)]}, {"1": [[0, bytes(8)]]},
])
def test_authentic_plaintext_of_the_wrong_shape_is_refused(pair, body: object) -> None:
    """Even a genuine twin key cannot make the device accept a malformed claim."""
    twin, dev, _ = pair
    ctx = twin.ack_context(dev.kid, SID, dev.id_context)
    from nacl import bindings as nacl

    from twinlink import cbor
    from twinlink.enc0 import aad
    from twinlink.oscore import STREAM_ACK, nonce

    piv = b"\x00"
    ct = nacl.crypto_aead_chacha20poly1305_ietf_encrypt(
        cbor2.dumps(body, canonical=True), aad(dev.kid, piv, STREAM_ACK),
        nonce(ctx.common_iv, SID, piv), ctx.key)
    data = (bytes.fromhex("d08344a1011818a30446") + SID + b"\x06\x41\x00\x0a"
            + cbor.bstr(dev.id_context)[0:1] + dev.id_context + cbor.bstr(ct))
    with pytest.raises(errors.MalformedPayload):
        AckOpener(dev.bundle).open(data)


def test_seal_refuses_what_the_device_would_refuse(pair) -> None:
    twin, dev, _ = pair
    ctx = twin.ack_context(dev.kid, SID, dev.id_context)
    for st, rf in (((), ()), ([(0, bytes(7))], ()), ((), [(0, bytes(8), "No")]),
                   ([(i, bytes(8)) for i in range(257)], ())):
        with pytest.raises(ValueError):
            ack.seal_ack(ctx, dev.kid, 0, st, rf)
    with pytest.raises(ValueError):  # a 5-byte Sender ID
        ack.seal_ack(twin.ack_context(dev.kid, SID[:5]), dev.kid, 0, [(0, bytes(8))])


def test_opener_derives_each_context_and_caches_a_few(pair) -> None:
    twin, dev, _ = pair
    opener = AckOpener(dev.bundle)
    for n in range(AckOpener.CACHE + 3):
        sid = os.urandom(6)
        a = opener.open(_seal(twin, dev, n, [(n, bytes(8))], sid=sid))
        assert a.sender_id == sid and a.stored == ((n, bytes(8)),)
    assert len(opener._cache) == AckOpener.CACHE
    # The twin's context and the device's own derivation agree (the same HKDF, both sides).
    secret = dev.bundle.device_key
    assert secret is not None
    ctx = opener.context(SID, dev.id_context)
    assert ctx == twin.ack_context(dev.kid, SID, dev.id_context)
    from twinlink.keys import master_secret_device
    assert ctx == derive_context(master_secret_device(secret, dev.bundle.twin_public), SID,
                                 dev.bundle.master_salt, dev.id_context)


def test_outbox_releases_only_matching_digests(pair, tmp_path: Path) -> None:
    """A replayed or mismatched ack releases nothing that was not stored; a refusal moves the
    frame to the dead letters; a digest mismatch is a conflict and changes nothing."""
    twin, dev, _ = pair
    frames = dev.seal_many([{"i": i} for i in range(6)])
    seqs = [parse(f).seq for f in frames]
    d = [ack.digest(f) for f in frames]
    opener = AckOpener(dev.bundle)
    with Outbox(tmp_path / "o.outbox") as box:
        box.put(frames)
        a = opener.open(_seal(twin, dev, 0, [(seqs[0], d[0]), (seqs[1], d[1])],
                              [(seqs[2], d[2], "bad_payload")]))
        done = box.settle(dev.kid, a.kid_context, a.stored, a.refused)
        assert (done.released, done.dead, done.conflicts) == (seqs[:2], [seqs[2]], [])
        assert len(box) == 3 and box.count_dead_letters() == 1
        (letter,) = box.dead_letters()
        assert (letter.seq, letter.reason, letter.frame, letter.kid_context) == (
            seqs[2], "bad_payload", frames[2], dev.id_context)
        # The same frames queued again and the same ack replayed: it is still true, so it
        # releases them again -- and nothing else.
        box.put(frames[:2])
        again = box.settle(dev.kid, a.kid_context, a.stored, a.refused)
        assert again.released == seqs[:2] and again.dead == [] and len(box) == 3
        # Another digest under a queued seq: a conflict, nothing released.
        bad = box.settle(dev.kid, a.kid_context, [(seqs[3], d[4])])
        assert bad.released == [] and bad.conflicts == [(seqs[3], d[3], d[4])] and len(box) == 3
        # The right digest under another context: nothing (frames are keyed by context).
        assert box.settle(dev.kid, None, [(seqs[3], d[3])]).released == []
        # One seq named twice (stored one frame, refused another): the queued digest decides.
        both = box.settle(dev.kid, a.kid_context, [(seqs[3], bytes(8))],
                          [(seqs[3], d[3], "conflict")])
        assert both.dead == [seqs[3]] and both.conflicts == []
    with Outbox(tmp_path / "o.outbox") as box:  # durable
        assert box.seqs(dev.kid, dev.id_context) == seqs[4:] and box.count_dead_letters() == 2


def test_the_twin_answers_only_what_the_store_holds_or_refused_for_good(pair) -> None:
    """The Acknowledger (every ingest's): a "duplicate" is acknowledged only if the store holds
    that very digest under its (kid, epoch, seq); refusals are answered only when the frame
    authenticated and the refusal is permanent."""
    from twinlink import errors as e
    from twinlink.ingest import Acknowledger
    from twinlink.twin import FrameInfo, Reading

    twin, dev, _ = pair
    frames = dev.seal_many([{"i": i} for i in range(3)])
    stored = [twin.open(f) for f in frames]
    epoch, ctx = stored[0].epoch, dev.id_context

    def refusal(err: e.TwinlinkError, seq: int, digest: bytes, **kw: object) -> e.TwinlinkError:
        err.frame = FrameInfo(kid=dev.kid, seq=seq, id_context=ctx, epoch=epoch,  # type: ignore[attr-defined]
                              digest=digest, **kw)  # type: ignore[arg-type]
        return err

    other = b"\x99" * 8
    results = [
        stored[0],                                                                # stored
        refusal(e.Replay("dup"), stored[1].seq, stored[1].digest, duplicate=True,
                authenticated=True),                                              # confirmed
        refusal(e.Replay("dup?"), stored[2].seq, other, duplicate=True,
                authenticated=True),                   # "duplicate" with other content: never
        refusal(e.MalformedPayload("bad"), 7, b"\x07" * 8, authenticated=True),  # NACK
        refusal(e.BadSignature("forged"), 8, b"\x08" * 8),                        # never
        refusal(e.TooOld("old"), 9, b"\x09" * 8),           # not authenticated: never
        refusal(e.InternalError("bug"), 10, b"\x0a" * 8, authenticated=True),  # not permanent
    ]
    assert isinstance(results[0], Reading)
    acker = Acknowledger(twin)
    ans = acker.answer(results)
    assert (ans.stored, ans.duplicates, ans.refused, ans.nacks) == (1, 2, 4, 1)
    (kid, data), = ans.acks
    a = AckOpener(dev.bundle).open(data)
    assert kid == dev.kid and a.sender_id == acker.sender_id and a.kid_context == ctx
    assert a.stored == ((stored[0].seq, stored[0].digest), (stored[1].seq, stored[1].digest))
    assert a.refused == ((7, b"\x07" * 8, "bad_payload"),)
    # Split at max_entries, each ack with its own PIV under this process's Sender ID.
    small = Acknowledger(twin, max_entries=1)
    pivs = [ack.parse_ack(d).seq for _, d in small.answer(results).acks]
    assert pivs == [0, 1, 2] and small.sender_id != acker.sender_id
    assert [ack.parse_ack(d).seq for _, d in small.answer(results[:1]).acks] == [3]
