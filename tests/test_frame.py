"""Frame seal/open on both backends: round trips, strictness, and every mutation refused."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinlink import backends, cbor, frame, keys, oscore
from twinlink.errors import BadSignature, DecryptionFailed, MalformedFrame, TwinlinkError

SEED = bytes(range(32))
DEV = keys.DeviceKey(SEED)
TWIN = keys.TwinKey(bytes(range(32, 64)))
KID = b"\x2a"
CTX = oscore.derive_context(keys.master_secret_device(DEV, TWIN.public), KID)
SK, PK = DEV.secret64, DEV.public
HYP = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _ctx(kid: bytes) -> oscore.Context:
    return oscore.derive_context(keys.master_secret_device(DEV, TWIN.public), kid)


def test_key_agreement_is_symmetric():
    assert keys.master_secret_device(DEV, TWIN.public) == keys.master_secret_twin(TWIN, PK)


def test_round_trip_and_layout(backend_name):
    f = frame.seal(SK, CTX, 5, b"\xa1\x01\x02")
    # d2 84 46 a2 01 27 04 41 2a a0 ...: tag 18, array 4, protected {1: -8, 4: h'2a'}, {}
    assert f[:10] == bytes.fromhex("d28446a20127044 12aa0".replace(" ", ""))
    parsed, pt = frame.open_frame(f, PK, CTX)
    assert (parsed.kid, parsed.seq, pt) == (KID, 5, b"\xa1\x01\x02")
    # enc0 = d0 83 | 44 a1011818 | a1 06 41 05 | 53 <3 ciphertext + 16 tag>: 31 bytes
    enc0_len = 2 + 5 + 4 + 1 + 3 + 16
    assert len(f) == 10 + 2 + enc0_len + 2 + 64


@given(
    kid=st.binary(min_size=1, max_size=6),
    seq=st.integers(0, 2**40 - 1),
    pt=st.binary(max_size=300),
    stream=st.sampled_from([b"t", b"a", b"cmd"]),
)
@settings(HYP)
def test_round_trip_property(backend_name, kid, seq, pt, stream):
    ctx = _ctx(kid)
    f = frame.seal(SK, ctx, seq, pt, stream)
    parsed, out = frame.open_frame(f, PK, ctx, stream)
    assert (parsed.kid, parsed.seq, out) == (kid, seq, pt)
    assert parsed.piv == oscore.piv_bytes(seq)


def test_stream_is_bound(backend_name):
    f = frame.seal(SK, CTX, 1, b"\x01")
    with pytest.raises(BadSignature):
        frame.open_frame(f, PK, CTX, b"a")


def test_wrong_device_key_is_bad_signature(backend_name):
    f = frame.seal(SK, CTX, 1, b"\x01")
    with pytest.raises(BadSignature):
        frame.open_frame(f, keys.DeviceKey(os.urandom(32)).public, CTX)


def test_wrong_context_is_decrypt_failure(backend_name):
    f = frame.seal(SK, CTX, 1, b"\x01")
    other = oscore.derive_context(os.urandom(32), KID)
    with pytest.raises(DecryptionFailed):
        frame.open_frame(f, PK, other)


def test_every_bit_flip_is_refused(backend_name):
    f = frame.seal(SK, CTX, 300, b"\xa2\x00\x61x\x02\xf9\x4d\x60")
    for i in range(len(f) * 8):
        bad = bytearray(f)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(TwinlinkError) as exc:
            frame.open_frame(bytes(bad), PK, CTX)
        assert isinstance(exc.value, (MalformedFrame, BadSignature, DecryptionFailed)), i


def test_every_truncation_and_extension_is_malformed(backend_name):
    f = frame.seal(SK, CTX, 7, b"hello")
    for n in range(len(f)):
        with pytest.raises(MalformedFrame):
            frame.parse(f[:n])
    with pytest.raises(MalformedFrame):
        frame.parse(f + b"\x00")


@given(st.binary(max_size=400))
@settings(HYP)
def test_random_bytes_raise_only_twinlink_errors(backend_name, data):
    try:
        frame.open_frame(data, PK, CTX)
    except TwinlinkError:
        pass


@given(st.binary(min_size=1, max_size=60), st.integers(0, 200), st.integers(0, 255))
@settings(HYP)
def test_spliced_garbage_raises_only_twinlink_errors(backend_name, junk, at, byte):
    f = bytearray(frame.seal(SK, CTX, 9, b"payload"))
    at %= len(f)
    f[at] = byte
    mutated = bytes(f[:at]) + junk + bytes(f[at:])
    with pytest.raises(TwinlinkError):
        frame.open_frame(mutated, PK, CTX)


def _resign(prot: bytes, kid: bytes, seq: int, pt: bytes) -> bytes:
    """Build a frame with a custom protected header, signed correctly (for alg tests)."""
    from nacl import bindings

    from twinlink import frametypes as ref

    piv = oscore.piv_bytes(seq)
    aad_ext = oscore.external_aad(kid, piv, b"t")
    ct = bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
        pt,
        ref.enc_structure(ref.ENC0_PROTECTED, aad_ext),
        oscore.nonce(CTX.common_iv, kid, piv),
        CTX.key,
    )
    enc0 = b"\xd0\x83\x44" + ref.ENC0_PROTECTED + b"\xa1\x06" + cbor.bstr(piv) + cbor.bstr(ct)
    sig = bindings.crypto_sign(ref.sig_structure(prot, aad_ext, enc0), SK)[:64]
    return b"\xd2\x84" + cbor.bstr(prot) + b"\xa0" + cbor.bstr(enc0) + b"\x58\x40" + sig


def test_alg_minus_19_is_accepted_other_algs_refused(backend_name):
    ok = _resign(b"\xa2\x01\x32\x04\x41\x2a", KID, 3, b"\x01")  # {1: -19, 4: h'2a'}
    parsed, pt = frame.open_frame(ok, PK, CTX)
    assert parsed.alg == -19 and pt == b"\x01"
    for alg in (b"\x26", b"\x38\x22", b"\x01", b"\x27\x27"):  # ES256, PS256, 1, trailing junk
        with pytest.raises(MalformedFrame):
            frame.parse(_resign(b"\xa2\x01" + alg + b"\x04\x41\x2a", KID, 3, b"\x01"))


def test_non_canonical_encodings_are_refused(backend_name):
    f = frame.seal(SK, CTX, 1, b"x")
    variants = [
        b"\xd8\x12" + f[1:],  # tag 18 in a one-byte argument
        b"\xd2\x98\x04" + f[2:],  # array length in a one-byte argument
        b"\xd2\x9f" + f[2:] + b"\xff",  # indefinite-length array
        b"\xd2\x84\x58\x06" + f[3:],  # protected bstr length in a one-byte argument
        f[:9] + b"\xa1\x04\x40" + f[10:],  # non-empty unprotected map
    ]
    for v in variants:
        with pytest.raises(MalformedFrame):
            frame.parse(v)


def test_piv_with_leading_zero_is_malformed(backend_name):
    f = frame.seal(SK, CTX, 5, b"x")
    i = f.index(b"\xa1\x06\x41\x05")
    bad = f[:i] + b"\xa1\x06\x42\x00\x05" + f[i + 4 :]
    with pytest.raises(MalformedFrame):
        frame.parse(bad)


def test_sequence_range(backend_name):
    top = frame.seal(SK, CTX, 2**40 - 1, b"x")
    assert frame.parse(top).seq == 2**40 - 1
    for bad in (-1, 2**40):
        with pytest.raises(ValueError):
            frame.seal(SK, CTX, bad, b"x")


def test_kid_length_limits(backend_name):
    for kid in (b"", b"1234567"):
        with pytest.raises(ValueError):
            frame.seal(SK, oscore.Context(kid, CTX.key, CTX.common_iv), 1, b"x")


def test_oversized_frame_is_malformed(backend_name):
    with pytest.raises(MalformedFrame):
        frame.parse(b"\xd2" + bytes(70000))


def test_lite_round_trip_and_describe(backend_name):
    f = frame.seal_lite(CTX, 12, b"\x01")
    assert f[:1] == b"\xd0"
    parsed, pt = frame.open_frame(f, None, CTX)
    assert (parsed.kind, parsed.kid, parsed.seq, pt) == (frame.KIND_LITE, KID, 12, b"\x01")
    d = frame.describe(f)
    assert d["profile"] == "lite" and d["seq"] == 12
    assert "16([" in frame.diagnostic(f)


def test_describe_signed(backend_name):
    f = frame.seal(SK, CTX, 256, b"\x01\x02")
    d = frame.describe(f)
    assert d["kid"] == "2a" and d["seq"] == 256 and d["partial_iv"] == "0100"
    assert d["size"] == len(f) and d["ciphertext_size"] == 2
    assert frame.diagnostic(f).startswith("18([h'a2012704412a'")


def test_backend_switch_reports_name(backend_name):
    assert backends.name() == backend_name


# -- argument validation: once, in frame.py, for every backend ---------------------------------
# A wrong type or size is a programming error: TypeError/ValueError, never a TwinlinkError (which
# would be logged as a security event).

def _programming_error(fn, *args, **kw) -> type:
    with pytest.raises((TypeError, ValueError)) as exc:
        fn(*args, **kw)
    assert not isinstance(exc.value, TwinlinkError), exc.value
    return type(exc.value)


def _variants(value: bytes) -> list:
    """Wrong-typed and wrong-sized stand-ins for a bytes argument."""
    return [bytearray(value), memoryview(value), value.hex(), len(value), None,
            value[:-1], value + b"\x00"]


def _ctxs() -> list[oscore.Context]:
    kids = [*_variants(KID)[:5], b"", b"1234567"]
    out = [oscore.Context(kid, CTX.key, CTX.common_iv) for kid in kids]
    out += [oscore.Context(KID, key, CTX.common_iv) for key in _variants(CTX.key)]
    out += [oscore.Context(KID, CTX.key, iv) for iv in _variants(CTX.common_iv)]
    return out


def test_seal_argument_errors(backend_name):
    for sk in _variants(SK):
        _programming_error(frame.seal, sk, CTX, 1, b"x")
        _programming_error(frame.seal_many, sk, CTX, 1, [b"x"])
    for ctx in _ctxs():
        _programming_error(frame.seal, SK, ctx, 1, b"x")
        _programming_error(frame.seal_many, SK, ctx, 1, [b"x"])
        _programming_error(frame.seal_lite, ctx, 1, b"x")
    for seq in (-1, 2**40, 2**70, None, "9", 9.0, True):
        _programming_error(frame.seal, SK, CTX, seq, b"x")
        _programming_error(frame.seal_many, SK, CTX, seq, [b"x"])
        _programming_error(frame.seal_lite, CTX, seq, b"x")
    for pt in (bytearray(b"x"), memoryview(b"x"), "text", 7, None):
        _programming_error(frame.seal, SK, CTX, 1, pt)
        _programming_error(frame.seal_many, SK, CTX, 1, [b"ok", pt])
        _programming_error(frame.seal_lite, CTX, 1, pt)
    for stream in (bytearray(b"t"), "t", None):
        _programming_error(frame.seal, SK, CTX, 1, b"x", stream)
        _programming_error(frame.seal_many, SK, CTX, 1, [b"x"], stream)
        _programming_error(frame.seal_lite, CTX, 1, b"x", stream)
    # seal_many checks the last seq of the run, and seals nothing if any argument is bad
    assert _programming_error(frame.seal_many, SK, CTX, 2**40 - 2, [b"a", b"b", b"c"]) is ValueError
    assert len(frame.seal_many(SK, CTX, 2**40 - 2, [b"a", b"b"])) == 2


def test_frame_too_large_is_value_error(backend_name):
    for seal in (lambda pt: frame.seal(SK, CTX, 1, pt), lambda pt: frame.seal_lite(CTX, 1, pt),
                 lambda pt: frame.seal_many(SK, CTX, 1, [b"", pt])):
        assert _programming_error(seal, bytes(frame.MAX_FRAME)) is ValueError
    # the largest plaintext that still fits is sealed; one byte more is refused
    n = frame.MAX_FRAME - len(frame.seal(SK, CTX, 1, b""))
    while True:
        try:
            f = frame.seal(SK, CTX, 1, bytes(n))
            break
        except ValueError:
            n -= 1
    assert frame.MAX_FRAME - 4 <= len(f) <= frame.MAX_FRAME
    assert _programming_error(frame.seal, SK, CTX, 1, bytes(n + 1)) is ValueError


def test_open_argument_errors(backend_name):
    f = frame.seal(SK, CTX, 1, b"x")
    parsed = frame.parse(f)
    for pk in [*_variants(PK), b""]:
        if pk is None:
            continue  # None means "lite frames only": a signed frame is then BadSignature
        _programming_error(frame.open_frame, f, pk, CTX)
        _programming_error(frame.verify, parsed, pk)
    for ctx in _ctxs()[7:]:  # key and IV variants (the kid comes from the frame)
        _programming_error(frame.open_frame, f, PK, ctx)
        _programming_error(frame.decrypt, parsed, ctx)
    for stream in (bytearray(b"t"), "t", None):
        _programming_error(frame.open_frame, f, PK, CTX, stream)
        _programming_error(frame.verify, parsed, PK, stream)
        _programming_error(frame.decrypt, parsed, CTX, stream)
    for not_parsed in (f, None, (1, 2)):
        _programming_error(frame.verify, not_parsed, PK)
        _programming_error(frame.decrypt, not_parsed, CTX)
    with pytest.raises(BadSignature):
        frame.open_frame(f, None, CTX)


def test_hostile_frames_are_malformed_whatever_their_type(backend_name):
    f = frame.seal(SK, CTX, 1, b"x")
    for obj in (None, 42, "frame", [1, 2], f.hex()):
        with pytest.raises(MalformedFrame):
            frame.parse(obj)  # type: ignore[arg-type]
        with pytest.raises(MalformedFrame):
            frame.open_frame(obj, PK, CTX)  # type: ignore[arg-type]
    for like in (bytearray(f), memoryview(f)):
        assert frame.open_frame(like, PK, CTX)[1] == b"x"  # type: ignore[arg-type]


def test_verify_and_decrypt_step_by_step(backend_name):
    f = frame.seal(SK, CTX, 9, b"reading")
    parsed = frame.parse(f)
    frame.verify(parsed, PK)
    assert frame.decrypt(parsed, CTX) == b"reading"
    with pytest.raises(BadSignature):
        frame.verify(parsed, PK, b"a")
    with pytest.raises(BadSignature):
        frame.verify(frame.parse(frame.seal_lite(CTX, 1, b"x")), PK)  # lite: nothing to verify
    with pytest.raises(DecryptionFailed):
        frame.decrypt(parsed, oscore.Context(KID, bytes(32), CTX.common_iv))


def test_seal_many_equals_seal(backend_name):
    pts = [b"", b"a", bytes(300)]
    frames = frame.seal_many(SK, CTX, 255, iter(pts))
    assert frames == [frame.seal(SK, CTX, 255 + i, p) for i, p in enumerate(pts)]
    assert frame.seal_many(SK, CTX, 0, []) == []


# -- kid context (COSE label 10): the ID Context named in the signed protected header -----------

KC = bytes.fromhex("9a3f01c27d5e6b88")


def test_kid_context_round_trip_and_layout(backend_name):
    f = frame.seal(SK, CTX, 5, b"\x01", kid_context=KC)
    # d2 84 50 a3 01 27 04 41 2a 0a 48 <8 bytes> a0: protected {1: -8, 4: h'2a', 10: KC}, {}
    assert f[:19] == bytes.fromhex("d28450a3012704412a0a48") + KC and f[19] == 0xA0
    parsed, pt = frame.open_frame(f, PK, CTX)
    assert (parsed.kid, parsed.kid_context, parsed.seq, pt) == (KID, KC, 5, b"\x01")
    assert frame.parse(frame.seal(SK, CTX, 5, b"\x01")).kid_context is None
    for kc in (b"\x00", bytes(16)):
        assert frame.parse(frame.seal(SK, CTX, 1, b"", kid_context=kc)).kid_context == kc
    many = frame.seal_many(SK, CTX, 7, [b"a", b"b"], kid_context=KC)
    assert many == [frame.seal(SK, CTX, 7, b"a", kid_context=KC),
                    frame.seal(SK, CTX, 8, b"b", kid_context=KC)]
    d = frame.describe(f)
    assert d["sign1_protected"]["kid_context"] == KC.hex()
    assert f"10: h'{KC.hex()}'" in frame.diagnostic(f)
    assert "kid_context" not in frame.describe(frame.seal(SK, CTX, 5, b"\x01"))["sign1_protected"]


def test_kid_context_argument_errors(backend_name):
    for kc in (b"", bytes(17), bytearray(KC), memoryview(KC), KC.hex(), 8):
        _programming_error(frame.seal, SK, CTX, 1, b"x", kid_context=kc)
        _programming_error(frame.seal_many, SK, CTX, 1, [b"x"], kid_context=kc)


# -- payload validation: the CBOR a reading may hold --------------------------------------------

def test_check_payload_accepts_what_devices_send(backend_name):
    from twinlink import senml

    for reading, t in [({"temp": 21.5, "rh": 48.25, "door": "open"}, 1700000000.0),
                       ({"ok": True, "n": -7, "blob": b"\x00\x01"}, None), ({"x": 0}, 0.0)]:
        frame.check_payload(senml.encode(reading, t))
    frame.check_payload(bytes.fromhex("a2617601617700"))  # raw CBOR payloads are allowed too


def test_check_payload_refuses_with_a_reason(backend_name):
    from twinlink.errors import MalformedPayload

    for data, reason in [(b"\xd8\x1c\x80", "CBOR tag"), (b"\xf9\x7e\x00", "NaN"),
                         (b"\x00\x00", "after"), (b"\xa2\x00\x00\x18\x00\x00", "duplicate")]:
        with pytest.raises(MalformedPayload, match=reason):
            frame.check_payload(data)
    for bad in (bytearray(b"\x00"), "00", None):
        _programming_error(frame.check_payload, bad)
