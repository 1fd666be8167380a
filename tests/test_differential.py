"""Differential tests: the native C backend and the pure-Python reference produce identical bytes
and identical exception classes for the same inputs, valid, mutated, random or non-canonical.

The backends are called directly with *valid* arguments (their contract: twinlink/frame.py checks
arguments once, see tests/test_frame.py); everything about the frame itself (bytes out, parse
verdicts, signature and decryption failures, frame size) must agree.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl import bindings as nacl

from twinlink import _backend_pure as P
from twinlink import backends, cbor, errors, oscore
from twinlink.frametypes import ENC0_PROTECTED, MAX_FRAME, Parsed, enc_structure, sig_structure
from twinlink.replay import ReplayWindow
from twinlink.transport import framing


def _load_native():
    try:
        from twinlink import _backend_native
    except ImportError as exc:
        reason = backends.native_error() or f"{type(exc).__name__}: {exc}"
        if os.environ.get("TWINLINK_REQUIRE_NATIVE"):
            pytest.fail(f"native backend not built: {reason}", pytrace=False)
        pytest.skip(f"native backend not built: {reason}", allow_module_level=True)
    return _backend_native


N = _load_native()

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
MAX_SEQ = (1 << 40) - 1

PK, SK = nacl.crypto_sign_seed_keypair(bytes(range(32)))
KEY = bytes(range(100, 132))
IV = bytes(range(200, 212))
KID = b"\x0a\x0b"
STREAM = b"t"


def _err_class(exc: BaseException) -> type:
    for cls in type(exc).__mro__:
        if cls.__module__ == "twinlink.errors":
            return cls
    for cls in type(exc).__mro__:
        if cls.__module__ == "builtins":
            return cls
    return type(exc)


def _norm(value):
    if isinstance(value, Parsed):
        return value.fields()
    if isinstance(value, tuple):
        return tuple(_norm(v) for v in value)
    return value


def outcome(fn, *args):
    try:
        return ("ok", _norm(fn(*args)))
    except Exception as exc:  # the class is the result being compared
        return ("raise", _err_class(exc))


def same(name: str, *args):
    """Call ``name`` on both backends; assert identical results; return the outcome."""
    a = outcome(getattr(P, name), *args)
    b = outcome(getattr(N, name), *args)
    assert a == b, f"{name}: pure {a!r} != native {b!r}"
    return a


def same_open(frame, pk=PK, key=KEY, iv=IV, stream=STREAM):
    same("parse", frame)
    return same("open_frame", frame, pk, key, iv, stream)


# --------------------------------------------------------------------------------------------
# Sealing: identical bytes.

kids = st.binary(min_size=1, max_size=6)
seqs = st.one_of(st.integers(0, 300), st.integers(0, MAX_SEQ),
                 st.sampled_from([255, 256, 65535, 65536, 2**32 - 1, 2**32, MAX_SEQ]))
plaintexts = st.binary(max_size=1100)
streams = st.one_of(st.sampled_from([b"t", b"a", b""]), st.binary(max_size=40))


@SETTINGS
@given(seed=st.binary(min_size=32, max_size=32), kid=kids, key=st.binary(min_size=32, max_size=32),
       iv=st.binary(min_size=12, max_size=12), stream=streams, seq=seqs, pt=plaintexts)
def test_seal_identical(seed, kid, key, iv, stream, seq, pt):
    pk, sk = nacl.crypto_sign_seed_keypair(seed)
    kind, frame = same("seal", sk, kid, key, iv, stream, seq, pt)
    assert kind == "ok"
    same("seal_lite", kid, key, iv, stream, seq, pt)
    assert N.open_frame(frame, pk, key, iv, stream)[1] == pt


kid_contexts = st.one_of(st.none(), st.binary(min_size=1, max_size=16))


@SETTINGS
@given(kid=kids, kc=kid_contexts, seq=seqs, pt=plaintexts)
def test_seal_kid_context_identical(kid, kc, seq, pt):
    kind, frame = same("seal", SK, kid, KEY, IV, STREAM, seq, pt, kc)
    assert kind == "ok"
    kind, (parsed, out) = same_open(frame)
    assert kind == "ok" and out == pt
    assert parsed[Parsed.__slots__.index("kid_context")] == kc
    if kc is None:  # the base context: exactly the bytes without the argument
        assert frame == P.seal(SK, kid, KEY, IV, STREAM, seq, pt)


@SETTINGS
@given(kid=kids, seq=st.integers(0, MAX_SEQ - 20), pts=st.lists(plaintexts, max_size=12),
       kc=kid_contexts)
def test_seal_many_identical(kid, seq, pts, kc):
    same("seal_many", SK, kid, KEY, IV, STREAM, seq, pts)
    same("seal_many", SK, kid, KEY, IV, STREAM, seq, pts, kc)
    if pts:
        assert N.seal_many(SK, kid, KEY, IV, STREAM, seq, pts)[-1] == N.seal(
            SK, kid, KEY, IV, STREAM, seq + len(pts) - 1, pts[-1])


@pytest.mark.parametrize("seal_args", [
    (SK, KID, KEY, IV, STREAM, 1, bytes(65535)),          # frame too large
    (SK, b"123456", KEY, IV, STREAM, MAX_SEQ, bytes(65535 - 100)),
])
def test_seal_too_large(seal_args):
    kind, _ = same("seal", *seal_args)
    assert kind == "raise"
    same("seal_lite", *seal_args[1:])
    same("seal_many", *seal_args[:6], [seal_args[6]])


@pytest.mark.parametrize("kid", [b"\x01", b"123456"])
def test_seal_size_limit_identical(kid):
    """Around the largest frame: every length just below, at and above MAX_FRAME agrees."""
    base = len(P.seal(SK, kid, KEY, IV, STREAM, MAX_SEQ, b""))
    for n in range(MAX_FRAME - base - 6, MAX_FRAME - base + 2):
        pt = bytes(n)
        same("seal", SK, kid, KEY, IV, STREAM, MAX_SEQ, pt)
        same("seal_lite", kid, KEY, IV, STREAM, MAX_SEQ, pt)
        same("seal_many", SK, kid, KEY, IV, STREAM, MAX_SEQ - 1, [b"", pt])


def test_seal_many_edges():
    same("seal_many", SK, KID, KEY, IV, STREAM, MAX_SEQ - 1, [b"a", b"b"])
    same("seal_many", SK, KID, KEY, IV, STREAM, MAX_SEQ - 1, [b"a", b"b", b"c"])
    same("seal_many", SK, KID, KEY, IV, STREAM, 0, [])
    same("seal_many", SK, KID, KEY, IV, STREAM, 0, (b"a", b"bb"))
    same("seal_many", SK, KID, KEY, IV, STREAM, 0, [b"a", bytes(65535)])


# --------------------------------------------------------------------------------------------
# Opening: valid frames, every bit flip, every truncation, random bytes.

SIGNED = P.seal(SK, KID, KEY, IV, STREAM, 300, b"\xa1\x00\xf9\x3c\x00 reading")
LITE = P.seal_lite(KID, KEY, IV, STREAM, 7, b"lite reading")


@pytest.mark.parametrize("frame", [SIGNED, LITE], ids=["signed", "lite"])
def test_valid_frames_open_identically(frame):
    assert same_open(frame)[0] == "ok"
    assert same_open(bytearray(frame))[0] == "ok"
    assert same_open(memoryview(frame))[0] == "ok"
    for pk, key, iv, stream in [
        (None, KEY, IV, STREAM), (bytes(32), KEY, IV, STREAM), (b"\xff" * 32, KEY, IV, STREAM),
        (PK, bytes(32), IV, STREAM), (PK, KEY, bytes(12), STREAM), (PK, KEY, IV, b"a"),
        (PK, KEY, IV, b""), (PK, KEY, IV, b"t" * 300),
    ]:
        same_open(frame, pk, key, iv, stream)


@pytest.mark.parametrize("frame", [SIGNED, LITE], ids=["signed", "lite"])
def test_every_bit_flip(frame):
    for i in range(len(frame) * 8):
        mutated = bytearray(frame)
        mutated[i // 8] ^= 1 << (i % 8)
        kind, _ = same_open(bytes(mutated))
        assert kind == "raise", f"bit {i} flipped and the frame still opened"


@pytest.mark.parametrize("frame", [SIGNED, LITE], ids=["signed", "lite"])
def test_every_truncation_and_extension(frame):
    for n in range(len(frame)):
        assert same_open(frame[:n])[0] == "raise"
    for tail in (b"\x00", b"\xff", frame):
        assert same_open(frame + tail)[0] == "raise"


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes(data):
    same_open(data)


@SETTINGS
@given(st.sampled_from([SIGNED, LITE]), st.data())
def test_random_splices(frame, data):
    i = data.draw(st.integers(0, len(frame)))
    j = data.draw(st.integers(i, len(frame)))
    insert = data.draw(st.binary(max_size=12))
    same_open(frame[:i] + insert + frame[j:])


def test_not_bytes_and_oversized():
    for obj in (None, 42, "frame", [1, 2]):
        assert same("parse", obj) == ("raise", errors.MalformedFrame)
        assert same_open(obj)[0] == "raise"
    big = SIGNED + bytes(MAX_FRAME)
    assert same("parse", big) == ("raise", errors.MalformedFrame)


# --------------------------------------------------------------------------------------------
# Hand-made encodings: each differs from a valid frame in exactly one way, correctly signed.

def _signed(prot: bytes, enc0: bytes, *, kid=KID, piv=None, unprot=b"\xa0", sig_head=b"\x58\x40",
            tag=b"\xd2", arr=b"\x84", trailer=b""):
    """A Sign1 frame around ``enc0`` with a valid signature over whatever it contains."""
    piv = piv if piv is not None else b"\x01"
    tbs = sig_structure(prot, oscore.external_aad(kid, piv, STREAM), enc0)
    sig = nacl.crypto_sign(tbs, SK)[:64]
    return tag + arr + cbor.bstr(prot) + unprot + cbor.bstr(enc0) + sig_head + sig + trailer


def _enc0(piv=b"\x01", *, kid=KID, unprot=None, prot=ENC0_PROTECTED, tag=b"\xd0",
          arr=b"\x83", ct_head=None, pt=b"hello"):
    aad = enc_structure(ENC0_PROTECTED, oscore.external_aad(kid, piv, STREAM))
    n = oscore.nonce(IV, kid, piv) if len(piv) <= 5 and len(kid) <= 6 else bytes(12)
    ct = nacl.crypto_aead_chacha20poly1305_ietf_encrypt(pt, aad, n, KEY)
    unprot = unprot if unprot is not None else b"\xa1\x06" + cbor.bstr(piv)
    head = ct_head if ct_head is not None else cbor.head(cbor.BSTR, len(ct))
    return tag + arr + cbor.bstr(prot) + unprot + head + ct


PROT = P.outer_protected(KID)
GOOD = _signed(PROT, _enc0())
KC = bytes.fromhex("9a3f01c27d5e6b88")
KC_PROT = P.outer_protected(KID, -8, KC)
GOOD_KC = _signed(KC_PROT, _enc0())
_A, _K, _C = b"\x01\x27", b"\x04" + cbor.bstr(KID), b"\x0a" + cbor.bstr(KC)

NONCANONICAL = {
    "tag18-two-byte": _signed(PROT, _enc0(), tag=b"\xd8\x12"),
    "array4-two-byte": _signed(PROT, _enc0(), arr=b"\x98\x04"),
    "array-indefinite": b"\xd2\x9f" + GOOD[2:] + b"\xff",
    "array-5": _signed(PROT, _enc0(), arr=b"\x85", trailer=b"\x00"),
    "trailing-byte": GOOD + b"\x00",
    "unprot-nonempty": _signed(PROT, _enc0(), unprot=b"\xa1\x04\x41\x01"),
    "unprot-two-byte-head": _signed(PROT, _enc0(), unprot=b"\xb8\x00"),
    "sig-head-non-shortest": _signed(PROT, _enc0(), sig_head=b"\x59\x00\x40"),
    "sig-63": GOOD[:-1][:-65] + b"\x58\x3f" + GOOD[-64:-1],
    "sig-65": GOOD[:-66] + b"\x58\x41" + GOOD[-64:] + b"\x00",
    "prot-alg-minus7": _signed(b"\xa2\x01\x26\x04" + cbor.bstr(KID), _enc0()),
    "prot-alg-0": _signed(b"\xa2\x01\x00\x04" + cbor.bstr(KID), _enc0()),
    "prot-alg-24": _signed(b"\xa2\x01\x18\x18\x04" + cbor.bstr(KID), _enc0()),
    "prot-alg-minus19-long": _signed(b"\xa2\x01\x38\x12\x04" + cbor.bstr(KID), _enc0()),
    "prot-alg-minus8-long": _signed(b"\xa2\x01\x38\x07\x04" + cbor.bstr(KID), _enc0()),
    "prot-swapped": _signed(b"\xa2\x04" + cbor.bstr(KID) + b"\x01\x27", _enc0()),
    "prot-extra-entry": _signed(b"\xa3\x01\x27\x04" + cbor.bstr(KID) + b"\x05\x40", _enc0()),
    "prot-trailing": _signed(PROT + b"\x00", _enc0()),
    "prot-indefinite-map": _signed(b"\xbf\x01\x27\x04" + cbor.bstr(KID) + b"\xff", _enc0()),
    "kid-empty": _signed(P.outer_protected(b""), _enc0(kid=b""), kid=b""),
    "kid-7": _signed(P.outer_protected(b"1234567"), _enc0(kid=b"1234567"), kid=b"1234567"),
    "kid-indefinite": _signed(b"\xa2\x01\x27\x04\x5f\x42" + KID + b"\xff", _enc0()),
    "kid-two-byte-len": _signed(b"\xa2\x01\x27\x04\x58\x02" + KID, _enc0()),
    "piv-leading-zero": _signed(PROT, _enc0(b"\x00\x05"), piv=b"\x00\x05"),
    "piv-empty": _signed(PROT, _enc0(b""), piv=b""),
    "piv-6-bytes": _signed(PROT, _enc0(b"\x01" * 6), piv=b"\x01" * 6),
    "enc0-untagged": _signed(PROT, _enc0(tag=b"")),
    "enc0-tag-17": _signed(PROT, _enc0(tag=b"\xd1")),
    "enc0-tag-two-byte": _signed(PROT, _enc0(tag=b"\xd8\x10")),
    "enc0-array-4": _signed(PROT, _enc0(arr=b"\x84") + b"\x40"),
    "enc0-prot-alg-10": _signed(PROT, _enc0(prot=b"\xa1\x01\x0a")),
    "enc0-prot-empty": _signed(PROT, _enc0(prot=b"")),
    "enc0-unprot-kid-too": _signed(
        PROT, _enc0(unprot=b"\xa2\x04" + cbor.bstr(KID) + b"\x06\x41\x01")),
    "enc0-unprot-label-long": _signed(PROT, _enc0(unprot=b"\xa1\x18\x06\x41\x01")),
    "enc0-ct-head-long": _signed(PROT, _enc0(ct_head=b"\x59\x00\x15")),
    "enc0-ct-indefinite": _signed(PROT, _enc0(ct_head=b"\x5f\x55")[:-0] + b"\xff"),
    "enc0-ct-short": _signed(PROT, _enc0(pt=b"")[:-17] + b"\x4f" + bytes(15)),
    "enc0-trailing": _signed(PROT, _enc0() + b"\x00"),
    # the kid-context header: only {1, 4} or {1, 4, 10}, in that order, 1..16 bytes
    "kc-count-2": _signed(b"\xa2" + _A + _K + _C, _enc0()),
    "kc-count-4": _signed(b"\xa4" + _A + _K + _C, _enc0()),
    "kc-reordered-10-4": _signed(b"\xa3" + _A + _C + _K, _enc0()),
    "kc-reordered-10-first": _signed(b"\xa3" + _C + _A + _K, _enc0()),
    "kc-reordered-4-first": _signed(b"\xa3" + _K + _A + _C, _enc0()),
    "kc-duplicate-label-10": _signed(b"\xa4" + _A + _K + _C + _C, _enc0()),
    "kc-duplicate-label-4": _signed(b"\xa3" + _A + _K + _K, _enc0()),
    "kc-label-11": _signed(b"\xa3" + _A + _K + b"\x0b" + cbor.bstr(KC), _enc0()),
    "kc-label-minus-11": _signed(b"\xa3" + _A + _K + b"\x2a" + cbor.bstr(KC), _enc0()),
    "kc-label-long-head": _signed(b"\xa3" + _A + _K + b"\x18\x0a" + cbor.bstr(KC), _enc0()),
    "kc-empty": _signed(b"\xa3" + _A + _K + b"\x0a\x40", _enc0()),
    "kc-17-bytes": _signed(b"\xa3" + _A + _K + b"\x0a" + cbor.bstr(bytes(17)), _enc0()),
    "kc-uint": _signed(b"\xa3" + _A + _K + b"\x0a\x01", _enc0()),
    "kc-tstr": _signed(b"\xa3" + _A + _K + b"\x0a\x68" + KC, _enc0()),
    "kc-null": _signed(b"\xa3" + _A + _K + b"\x0a\xf6", _enc0()),
    "kc-array": _signed(b"\xa3" + _A + _K + b"\x0a\x81" + cbor.bstr(KC), _enc0()),
    "kc-head-non-shortest": _signed(b"\xa3" + _A + _K + b"\x0a\x58\x08" + KC, _enc0()),
    "kc-indefinite": _signed(b"\xa3" + _A + _K + b"\x0a\x5f" + cbor.bstr(KC) + b"\xff",
                             _enc0()),
    "kc-trailing": _signed(KC_PROT + b"\x00", _enc0()),
    "kc-truncated": _signed(KC_PROT[:-1], _enc0()),
    "kc-in-unprotected": _signed(PROT, _enc0(), unprot=b"\xa1" + _C),
    "kc-in-encrypt0": _signed(PROT, _enc0(unprot=b"\xa2\x06\x41\x01" + _C)),
    "kc-in-lite": b"\xd0\x83\x44\xa1\x01\x18\x18\xa3\x04" + cbor.bstr(KID) + b"\x06\x41\x07"
                  + _C + LITE[-(len(LITE) - 16 - len(KID)):],
    "kc-in-lite-2-entries": b"\xd0\x83\x44\xa1\x01\x18\x18\xa2\x04" + cbor.bstr(KID) + _C
                            + LITE[-(len(LITE) - 16 - len(KID)):],
    "lite-map-swapped": b"\xd0\x83\x44\xa1\x01\x18\x18\xa2\x06\x41\x07\x04" + cbor.bstr(KID)
                        + LITE[-(len(LITE) - 16 - len(KID)):],
    "lite-kid-missing": _enc0(b"\x07", unprot=b"\xa1\x06\x41\x07"),
    "tag-16-two-byte-lite": b"\xd8\x10" + LITE[1:],
    "tag-99": b"\xd8\x63" + GOOD[1:],
    "empty": b"",
    "break-only": b"\xff",
    "huge-length": b"\xd2\x84\x5b" + b"\xff" * 8,
}


def test_reference_frame_opens():
    assert same_open(GOOD)[0] == "ok"
    kind, (parsed, _) = same_open(GOOD_KC)
    assert kind == "ok" and parsed[Parsed.__slots__.index("kid_context")] == KC
    assert GOOD_KC == P.seal(SK, KID, KEY, IV, STREAM, 1, b"hello", KC)


def test_kid_context_is_signed():
    """Every bit flip inside the kid context parses but fails the signature: the context is
    covered by what the signature covers, so a public-key holder can tell contexts apart."""
    at = GOOD_KC.index(KC)
    for i in range(at * 8, (at + len(KC)) * 8):
        mutated = bytearray(GOOD_KC)
        mutated[i // 8] ^= 1 << (i % 8)
        assert same("parse", bytes(mutated))[0] == "ok"
        assert same_open(bytes(mutated)) == ("raise", errors.BadSignature)


@pytest.mark.parametrize("frame", [GOOD_KC], ids=["kid-context"])
def test_every_bit_flip_kid_context(frame):
    for i in range(len(frame) * 8):
        mutated = bytearray(frame)
        mutated[i // 8] ^= 1 << (i % 8)
        assert same_open(bytes(mutated))[0] == "raise", f"bit {i} flipped and it still opened"


@SETTINGS
@given(st.data())
def test_random_splices_kid_context(data):
    i = data.draw(st.integers(0, len(GOOD_KC)))
    j = data.draw(st.integers(i, len(GOOD_KC)))
    same_open(GOOD_KC[:i] + data.draw(st.binary(max_size=12)) + GOOD_KC[j:])


@pytest.mark.parametrize("name", sorted(NONCANONICAL))
def test_noncanonical_rejected(name):
    assert same_open(NONCANONICAL[name])[0] == "raise"
    assert same("parse", NONCANONICAL[name])[0] == "raise"


def test_alg_minus19_accepted():
    frame = _signed(P.outer_protected(KID, -19), _enc0())
    kind, (parsed, pt) = same_open(frame)
    assert kind == "ok" and pt == b"hello" and parsed[Parsed.__slots__.index("alg")] == -19


def test_verify_and_decrypt_on_parsed():
    signed, lite = P.parse(SIGNED), P.parse(LITE)
    for parsed in (signed, lite):
        same("verify", parsed, PK, STREAM)
        same("verify", parsed, bytes(32), STREAM)
        same("verify", parsed, PK, b"a")
        same("decrypt", parsed, KEY, IV, STREAM)
        same("decrypt", parsed, bytes(32), IV, STREAM)
        same("decrypt", parsed, KEY, bytes(12), STREAM)
        same("decrypt", parsed, KEY, IV, b"other")


# --------------------------------------------------------------------------------------------
# Extras: COBS/CRC against the transport's Python code, HKDF/derivation, the replay window.

@SETTINGS
@given(st.one_of(st.binary(max_size=700),
                 st.lists(st.sampled_from([b"\0", b"a" * 253, b"b" * 254, b"c"]), max_size=6)
                 .map(b"".join)))
def test_cobs_crc_match_transport(data):
    enc = framing.cobs_encode(data)
    assert N.cobs_encode(data) == enc
    assert N.cobs_decode(enc) == data
    assert N.crc16(data) == framing.crc16(data)


@SETTINGS
@given(st.binary(max_size=300))
def test_cobs_decode_random(data):
    assert outcome(framing.cobs_decode, data) == outcome(N.cobs_decode, data)


@SETTINGS
@given(secret=st.binary(min_size=1, max_size=64), salt=st.binary(max_size=32),
       sid=st.binary(max_size=6), ctx=st.one_of(st.none(), st.binary(max_size=64)),
       length=st.integers(1, 300))
def test_key_schedule_matches(secret, salt, sid, ctx, length):
    c = oscore.derive_context(secret, sid, salt, ctx)
    assert N.derive(secret, sid, salt, ctx) == (c.key, c.common_iv)
    info = oscore.hkdf_info(sid, ctx, 24, "Key", length)
    want = oscore.hkdf_sha256(salt, secret, info, length)
    assert N.hkdf_sha256(salt, secret, info, length) == want


ops = st.lists(st.tuples(st.sampled_from(["accept", "check", "update"]),
                         st.integers(0, 600)), max_size=60)


@SETTINGS
@given(size=st.sampled_from([8, 16, 32, 56, 64, 72, 128, 136, 256, 512]), ops=ops)
def test_window_matches_replay_window(size, ops):
    ref, win = ReplayWindow(size), N.Window(size)
    for op, seq in ops:
        if op == "update" and ref.top - seq >= size:  # update is only called after check passed
            continue
        r = outcome(getattr(ref, op), seq)
        assert outcome(getattr(win, op), seq) == r, (op, seq)
        assert win.top == ref.top
        assert win.to_bytes() == ref.to_bytes()
    restored = N.Window(size, ref.top, ref.to_bytes())
    assert restored.to_bytes() == ref.to_bytes()


# --------------------------------------------------------------------------------------------
# The same Parsed from both parsers, and each backend opens what the other sealed.

@SETTINGS
@given(kid=kids, seq=seqs, pt=plaintexts, stream=streams)
def test_cross_backend(kid, seq, pt, stream):
    for seal_be, open_be in ((P, N), (N, P)):
        f = seal_be.seal(SK, kid, KEY, IV, stream, seq, pt)
        assert open_be.open_frame(f, PK, KEY, IV, stream)[1] == pt
        lite = seal_be.seal_lite(kid, KEY, IV, stream, seq, pt)
        assert open_be.open_frame(lite, None, KEY, IV, stream)[1] == pt
    assert P.parse(f) == N.parse(f) and P.parse(lite) == N.parse(lite)


# --------------------------------------------------------------------------------------------
# The payload validator (docs/PROTOCOL.md §13): the same verdict and the same reason, always.

def same_payload(data: bytes) -> str:
    """Check ``data`` on both backends; assert the same verdict and reason; return the reason."""
    def verdict(be) -> str:
        try:
            be.check_payload(data)
        except errors.MalformedPayload as exc:
            return str(exc)
        return "ok"

    a, b = verdict(P), verdict(N)
    assert a == b, f"payload {data.hex()}: pure {a!r} != native {b!r}"
    if a == "ok":  # what passes, a general decoder takes whole, without surprises
        import io

        import cbor2

        fp = io.BytesIO(data)
        cbor2.CBORDecoder(fp).decode()
        assert fp.tell() == len(data)
    return a


R = cbor.PAYLOAD_REASONS
PAYLOAD_CASES = {
    "00": "ok", "1b7fffffffffffffff": "ok", "3b7fffffffffffffff": "ok",
    "1b8000000000000000": R[7], "3b8000000000000000": R[7], "1800": "ok", "5a0000000161": "ok",
    "6a68c3a9": R[2], "62c3a9": "ok", "62c0af": R[8], "63eda080": R[8], "64f4900000": R[8],
    "80": "ok", "a0": "ok", "a200010102": "ok", "a2000118000002": R[10], "a26161006161": R[2],
    "a261610078016101": R[10], "a200002000": "ok", "a1f400": R[9], "a14100": R[9],
    "a1c00000": R[9], "a1fb7ff800000000000000": R[9], "c11a00000000": R[6],
    "c249010000000000000000": R[6], "d81c80": R[6], "f4": "ok", "f5": "ok", "f6": "ok",
    "f7": R[11], "f0": R[11], "f820": R[11], "f93c00": "ok", "f97c00": R[12], "f9fc00": R[12],
    "f97e00": R[12], "fa7f800000": R[12], "fa47c35000": "ok", "fb7ff0000000000000": R[12],
    "fbfff8000000000000": R[12], "fb3ff0000000000000": "ok", "9f00ff": R[4], "5f4100ff": R[4],
    "ff": R[4], "1c": R[5], "": R[2], "19": R[2], "8200": R[2], "9bffffffffffffffff00": R[2],
    "0000": R[3], "8181818181818180": "ok", "818181818181818180": R[13],
    "a1008181818181818180": R[13], "82c000a10000": R[6], "a2000000c000": R[6],
    "a1a0a0": R[9], "a10180": "ok", "a2613100613200": "ok", "a2613100613100": R[10],
}


@pytest.mark.parametrize("hexdata", sorted(PAYLOAD_CASES), ids=lambda h: h or "empty")
def test_payload_cases(hexdata):
    assert same_payload(bytes.fromhex(hexdata)) == PAYLOAD_CASES[hexdata]


def test_payload_size_limit():
    inner = bytes(cbor.PAYLOAD_MAX - 3)
    assert same_payload(b"\x59" + len(inner).to_bytes(2, "big") + inner) == "ok"
    assert same_payload(b"\x59" + (len(inner) + 1).to_bytes(2, "big") + inner + b"\x00") == R[1]
    keys = b"".join(b"\x19" + i.to_bytes(2, "big") + b"\xf6" for i in range(4095))
    assert same_payload(b"\xb9\x0f\xff" + keys) == "ok"  # large maps: sorted keys, not O(n^2)
    assert same_payload(b"\xb9\x0f\xff" + keys[:-4] + b"\x19\x00\x00\xf6") == R[10]


# Values a reading may hold, as cbor2 (an independent encoder) writes them.
_keys = st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=8))
_leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
                    st.binary(max_size=20))


def _nested(depth: int):
    if depth == 0:
        return _leaves
    inner = _nested(depth - 1)
    return st.one_of(_leaves, st.lists(inner, max_size=4),
                     st.dictionaries(_keys, inner, max_size=4))


@SETTINGS
@given(_nested(7))
def test_payloads_in_the_domain_accepted(value):
    import cbor2

    data = cbor2.dumps(value)
    if len(data) <= cbor.PAYLOAD_MAX:
        assert same_payload(data) == "ok"


@SETTINGS
@given(st.sampled_from([float("nan"), float("inf"), -float("inf"), 2**63, -(2**63) - 1, 2**80,
                        {"a": float("nan")}, [1, [2, [3, 2**64]]]]))
def test_payloads_outside_the_domain_refused(value):
    import cbor2

    assert same_payload(cbor2.dumps(value)) != "ok"


@SETTINGS
@given(st.binary(max_size=300))
def test_payload_random_bytes(data):
    same_payload(data)


@SETTINGS
@given(_nested(4), st.data())
def test_payload_mutants(value, data):
    import cbor2

    raw = bytearray(cbor2.dumps(value))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        at = data.draw(st.integers(0, len(raw)))
        if op == "flip" and at < len(raw):
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "insert":
            raw[at:at] = bytes([data.draw(st.integers(0, 255))])
        elif at < len(raw):
            del raw[at]
    same_payload(bytes(raw))
