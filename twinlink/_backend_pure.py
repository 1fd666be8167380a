"""The pure-Python backend: the reference implementation of twinlink/1 on PyNaCl.

The C core (``twinlink._backend_native``) exposes exactly these functions with the same
arguments, the same bytes out and the same exception classes; ``tests/test_differential.py``
holds them to it. Callers use :mod:`twinlink.frame`, which picks a backend.

Frame layout (see docs/PROTOCOL.md)::

    18([ h'A2 01 27 04 <kid>', {}, 16([h'A1011818', {6: PIV}, ct||tag]), sig ])   twinlink/1
    16([ h'A1011818', {4: kid, 6: PIV}, ct||tag ])                                 lite profile
"""

from __future__ import annotations

from nacl import bindings as _nacl
from nacl.exceptions import BadSignatureError, CryptoError

from . import cbor
from .cbor import ARRAY, MAP, NINT, TAG, UINT, Reader
from .errors import BadSignature, DecryptionFailed, MalformedFrame
from .oscore import MAX_KID_LEN, external_aad, nonce

NAME = "python"

ENC0_PROTECTED = b"\xa1\x01\x18\x18"  # {1: 24}  ChaCha20/Poly1305
_ENC0_AAD_PREFIX = b"\x83\x68Encrypt0\x44" + ENC0_PROTECTED
_SIG1_PREFIX = b"\x84\x6aSignature1"
TAG_LEN = 16
SIG_LEN = 64
#: Largest frame either backend will parse; bounds every allocation driven by a length field.
MAX_FRAME = 65535

KIND_SIGNED = 1
KIND_LITE = 2


def _piv_to_seq(piv: bytes) -> int:
    if len(piv) > 1 and piv[0] == 0:
        raise MalformedFrame("partial IV has a leading zero")
    return int.from_bytes(piv, "big")


def outer_protected(kid: bytes, alg: int = -8) -> bytes:
    """The Sign1 protected header bytes {1: alg, 4: kid}."""
    return b"\xa2\x01" + cbor.int_(alg) + b"\x04" + cbor.bstr(kid)


def sig_structure(protected: bytes, external_aad: bytes, payload: bytes) -> bytes:
    """RFC 9052 §4.4 ToBeSigned for COSE_Sign1: ["Signature1", protected, external_aad, payload]."""
    return _SIG1_PREFIX + cbor.bstr(protected) + cbor.bstr(external_aad) + cbor.bstr(payload)


def enc_structure(protected: bytes, external_aad: bytes) -> bytes:
    """RFC 9052 §5.3 AAD for COSE_Encrypt0: ["Encrypt0", protected, external_aad]."""
    return b"\x83\x68Encrypt0" + cbor.bstr(protected) + cbor.bstr(external_aad)


def _encrypt0(
    ctx_key: bytes, common_iv: bytes, kid: bytes, piv: bytes, stream: bytes, plaintext: bytes
) -> tuple[bytes, bytes]:
    aad_ext = external_aad(kid, piv, stream)
    aad = _ENC0_AAD_PREFIX + cbor.bstr(aad_ext)
    ct = _nacl.crypto_aead_chacha20poly1305_ietf_encrypt(
        plaintext, aad, nonce(common_iv, kid, piv), ctx_key
    )
    return aad_ext, ct


def _check_sizes(kid: bytes, key: bytes, common_iv: bytes, seq: int) -> None:
    # Checked here, not left to libsodium: PyNaCl passes short keys straight through to C.
    if not isinstance(seq, int):
        raise TypeError("sequence number must be an int")
    if not 1 <= len(kid) <= MAX_KID_LEN:
        raise ValueError("kid must be 1 to 6 bytes")
    if len(key) != 32 or len(common_iv) != 12:
        raise ValueError("key must be 32 bytes and common IV 12 bytes")
    if not isinstance(kid, (bytes, bytearray)):
        raise TypeError("kid must be bytes")


def _check_sk(sign_sk: bytes) -> None:
    if type(sign_sk) is not bytes:
        raise TypeError("sign_sk must be bytes")
    if len(sign_sk) != 64:
        raise ValueError("sign_sk must be the 64-byte libsodium Ed25519 secret key")


def seal(
    sign_sk: bytes,
    kid: bytes,
    key: bytes,
    common_iv: bytes,
    stream: bytes,
    seq: int,
    plaintext: bytes,
) -> bytes:
    """Seal ``plaintext`` as a twinlink/1 frame with sequence number ``seq``.

    ``sign_sk`` is the 64-byte libsodium Ed25519 secret key (seed || public key).
    """
    _check_sizes(kid, key, common_iv, seq)
    piv = _piv(seq)
    _check_sk(sign_sk)
    aad_ext, ct = _encrypt0(key, common_iv, kid, piv, stream, plaintext)
    enc0 = b"\xd0\x83\x44" + ENC0_PROTECTED + b"\xa1\x06" + cbor.bstr(piv) + cbor.bstr(ct)
    prot = outer_protected(kid)
    tbs = sig_structure(prot, aad_ext, enc0)
    sig = _nacl.crypto_sign(tbs, sign_sk)[:SIG_LEN]
    frame = b"\xd2\x84" + cbor.bstr(prot) + b"\xa0" + cbor.bstr(enc0) + b"\x58\x40" + sig
    if len(frame) > MAX_FRAME:
        raise ValueError("frame would exceed the maximum frame size")
    return frame


def seal_many(
    sign_sk: bytes,
    kid: bytes,
    key: bytes,
    common_iv: bytes,
    stream: bytes,
    first_seq: int,
    plaintexts: list[bytes],
) -> list[bytes]:
    """Seal ``plaintexts`` with consecutive sequence numbers starting at ``first_seq``."""
    return [
        seal(sign_sk, kid, key, common_iv, stream, first_seq + i, p)
        for i, p in enumerate(plaintexts)
    ]


def seal_lite(
    kid: bytes, key: bytes, common_iv: bytes, stream: bytes, seq: int, plaintext: bytes
) -> bytes:
    """Seal ``plaintext`` as a lite-profile frame (COSE_Encrypt0 only, kid unprotected)."""
    _check_sizes(kid, key, common_iv, seq)
    piv = _piv(seq)
    _, ct = _encrypt0(key, common_iv, kid, piv, stream, plaintext)
    frame = (
        b"\xd0\x83\x44"
        + ENC0_PROTECTED
        + b"\xa2\x04"
        + cbor.bstr(kid)
        + b"\x06"
        + cbor.bstr(piv)
        + cbor.bstr(ct)
    )
    if len(frame) > MAX_FRAME:
        raise ValueError("frame would exceed the maximum frame size")
    return frame


def _piv(seq: int) -> bytes:
    if not 0 <= seq <= (1 << 40) - 1:
        raise ValueError("sequence number out of range")
    return seq.to_bytes(max(1, (seq.bit_length() + 7) // 8), "big")


class Parsed:
    """Offsets and header values of a frame that passed strict structural parsing."""

    __slots__ = ("alg", "ct", "enc0", "kid", "kind", "piv", "prot", "seq", "sig")

    def __init__(
        self,
        kind: int,
        kid: bytes,
        piv: bytes,
        alg: int,
        prot: bytes,
        enc0: bytes,
        ct: bytes,
        sig: bytes,
    ) -> None:
        self.kind, self.kid, self.piv, self.alg = kind, kid, piv, alg
        self.seq = _piv_to_seq(piv)
        self.prot, self.enc0, self.ct, self.sig = prot, enc0, ct, sig


def _parse_enc0_body(r: Reader, lite: bool) -> tuple[bytes, bytes, bytes]:
    """Parse [h'A1011818', {6: piv} | {4: kid, 6: piv}, ct]; returns (kid, piv, ct)."""
    r.expect(ARRAY, 3, "Encrypt0 array")
    if r.bytes_("Encrypt0 protected") != ENC0_PROTECTED:
        raise MalformedFrame("Encrypt0 protected header is not {1: 24}")
    kid = b""
    if lite:
        r.expect(MAP, 2, "Encrypt0 unprotected")
        r.expect(UINT, 4, "kid label")
        kid = r.bytes_("kid", 1, MAX_KID_LEN)
    else:
        r.expect(MAP, 1, "Encrypt0 unprotected")
    r.expect(UINT, 6, "Partial IV label")
    piv = r.bytes_("Partial IV", 1, 5)
    ct = r.bytes_("ciphertext", TAG_LEN)
    return kid, piv, ct


def parse(frame: bytes) -> Parsed:
    """Strictly parse a twinlink/1 or lite frame; raise :class:`MalformedFrame` otherwise."""
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise MalformedFrame("frame must be bytes")
    frame = bytes(frame)
    if len(frame) > MAX_FRAME:
        raise MalformedFrame("frame exceeds the maximum frame size")
    r = Reader(frame)
    major, tag = r.head("tag")
    if major != TAG or tag not in (16, 18):
        raise MalformedFrame("not a tagged COSE_Sign1 or COSE_Encrypt0")
    if tag == 16:
        start = 0
        kid, piv, ct = _parse_enc0_body(r, lite=True)
        r.done("frame")
        return Parsed(KIND_LITE, kid, piv, 24, b"", frame[start:], ct, b"")
    r.expect(ARRAY, 4, "Sign1 array")
    prot = r.bytes_("Sign1 protected", 1, 16)
    p = Reader(prot)
    p.expect(MAP, 2, "Sign1 protected map")
    p.expect(UINT, 1, "alg label")
    major, arg = p.head("alg")
    if major != NINT or arg not in (7, 18):  # -8 EdDSA, -19 Ed25519
        raise MalformedFrame("signature algorithm is not EdDSA/Ed25519")
    p.expect(UINT, 4, "kid label")
    kid = p.bytes_("kid", 1, MAX_KID_LEN)
    p.done("Sign1 protected map")
    r.expect(MAP, 0, "Sign1 unprotected")
    enc0 = r.bytes_("Sign1 payload")
    sig = r.bytes_("signature", SIG_LEN, SIG_LEN)
    r.done("frame")
    e = Reader(enc0)
    e.expect(TAG, 16, "Encrypt0 tag")
    _, piv, ct = _parse_enc0_body(e, lite=False)
    e.done("Encrypt0")
    return Parsed(KIND_SIGNED, kid, piv, -1 - arg, prot, enc0, ct, sig)


def verify(parsed: Parsed, sign_pk: bytes, stream: bytes) -> None:
    """Check the Ed25519 signature of a parsed twinlink/1 frame; raise :class:`BadSignature`."""
    if type(sign_pk) is bytes and len(sign_pk) != 32:  # libsodium would read past it
        raise BadSignature("signature does not verify under the device key")
    aad_ext = external_aad(parsed.kid, parsed.piv, stream)
    tbs = sig_structure(parsed.prot, aad_ext, parsed.enc0)
    try:
        _nacl.crypto_sign_open(parsed.sig + tbs, sign_pk)
    except (BadSignatureError, CryptoError, ValueError):
        raise BadSignature("signature does not verify under the device key") from None


def decrypt(parsed: Parsed, key: bytes, common_iv: bytes, stream: bytes) -> bytes:
    """Decrypt the Encrypt0 layer; raise :class:`DecryptionFailed` if the tag does not verify."""
    aad = _ENC0_AAD_PREFIX + cbor.bstr(external_aad(parsed.kid, parsed.piv, stream))
    try:
        return _nacl.crypto_aead_chacha20poly1305_ietf_decrypt(
            parsed.ct, aad, nonce(common_iv, parsed.kid, parsed.piv), key
        )
    except (CryptoError, ValueError):
        raise DecryptionFailed("AEAD tag does not verify") from None


def open_frame(
    frame: bytes, sign_pk: bytes | None, key: bytes, common_iv: bytes, stream: bytes
) -> tuple[Parsed, bytes]:
    """Parse, verify (twinlink/1; skipped for lite when ``sign_pk`` is None) and decrypt."""
    parsed = parse(frame)
    if parsed.kind == KIND_SIGNED:
        if sign_pk is None:
            raise BadSignature("a signed frame needs the device's public key")
        verify(parsed, sign_pk, stream)
    return parsed, decrypt(parsed, key, common_iv, stream)
