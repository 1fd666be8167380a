"""The pure-Python backend: the reference implementation of twinlink/1 on PyNaCl.

Implements :class:`twinlink.frametypes.FrameBackend`; the C core (``twinlink._backend_native``)
matches it byte for byte and exception for exception (``tests/test_differential.py``). Callers
use :mod:`twinlink.frame`, which checks arguments once and picks a backend; arguments here are
valid by contract.

Frame layout (see docs/PROTOCOL.md)::

    18([ prot, {}, 16([h'A1011818', {6: PIV}, ct||tag]), sig ])   twinlink/1, where prot is
        h'A2 01 27 04 <kid>' or, with an ID Context, h'A3 01 27 04 <kid> 0A <kid_context>'
    16([ h'A1011818', {4: kid, 6: PIV}, ct||tag ])                lite profile
"""

from __future__ import annotations

from collections.abc import Sequence

from nacl import bindings as _nacl
from nacl.exceptions import BadSignatureError, CryptoError

from . import cbor
from .cbor import ARRAY, MAP, NINT, TAG, UINT, Reader
from .errors import BadSignature, DecryptionFailed, MalformedFrame
from .frametypes import (
    ENC0_PROTECTED,
    KIND_LITE,
    KIND_SIGNED,
    MAX_FRAME,
    MAX_KID_CONTEXT,
    MAX_PROTECTED,
    SIG_LEN,
    TAG_LEN,
    Parsed,
    sig_structure,
)
from .oscore import MAX_KID_LEN, external_aad, nonce, piv_bytes

NAME = "python"

_ENC0_AAD_PREFIX = b"\x83\x68Encrypt0" + cbor.bstr(ENC0_PROTECTED)  # Enc_structure head


def outer_protected(kid: bytes, alg: int = -8, kid_context: bytes | None = None) -> bytes:
    """The Sign1 protected header bytes {1: alg, 4: kid} or {1: alg, 4: kid, 10: kid_context}."""
    if kid_context is None:
        return b"\xa2\x01" + cbor.int_(alg) + b"\x04" + cbor.bstr(kid)
    return (b"\xa3\x01" + cbor.int_(alg) + b"\x04" + cbor.bstr(kid) + b"\x0a"
            + cbor.bstr(kid_context))


def _encrypt0(
    ctx_key: bytes, common_iv: bytes, kid: bytes, piv: bytes, stream: bytes, plaintext: bytes
) -> tuple[bytes, bytes]:
    aad_ext = external_aad(kid, piv, stream)
    aad = _ENC0_AAD_PREFIX + cbor.bstr(aad_ext)
    ct = _nacl.crypto_aead_chacha20poly1305_ietf_encrypt(
        plaintext, aad, nonce(common_iv, kid, piv), ctx_key
    )
    return aad_ext, ct


def _bounded(frame: bytes) -> bytes:
    if len(frame) > MAX_FRAME:
        raise ValueError("frame would exceed the maximum frame size")
    return frame


def seal(
    sign_sk: bytes,
    kid: bytes,
    key: bytes,
    common_iv: bytes,
    stream: bytes,
    seq: int,
    plaintext: bytes,
    kid_context: bytes | None = None,
) -> bytes:
    """Seal ``plaintext`` as a twinlink/1 frame with sequence number ``seq``.

    ``sign_sk`` is the 64-byte libsodium Ed25519 secret key (seed || public key);
    ``kid_context`` the ID Context to name in the protected header (None: base context).
    """
    piv = piv_bytes(seq)
    aad_ext, ct = _encrypt0(key, common_iv, kid, piv, stream, plaintext)
    enc0 = b"\xd0\x83\x44" + ENC0_PROTECTED + b"\xa1\x06" + cbor.bstr(piv) + cbor.bstr(ct)
    prot = outer_protected(kid, -8, kid_context)
    sig = _nacl.crypto_sign(sig_structure(prot, aad_ext, enc0), sign_sk)[:SIG_LEN]
    return _bounded(b"\xd2\x84" + cbor.bstr(prot) + b"\xa0" + cbor.bstr(enc0) + b"\x58\x40" + sig)


def seal_many(
    sign_sk: bytes,
    kid: bytes,
    key: bytes,
    common_iv: bytes,
    stream: bytes,
    first_seq: int,
    plaintexts: Sequence[bytes],
    kid_context: bytes | None = None,
) -> list[bytes]:
    """Seal ``plaintexts`` with consecutive sequence numbers starting at ``first_seq``."""
    return [
        seal(sign_sk, kid, key, common_iv, stream, first_seq + i, p, kid_context)
        for i, p in enumerate(plaintexts)
    ]


def seal_lite(
    kid: bytes, key: bytes, common_iv: bytes, stream: bytes, seq: int, plaintext: bytes
) -> bytes:
    """Seal ``plaintext`` as a lite-profile frame (COSE_Encrypt0 only, kid unprotected)."""
    piv = piv_bytes(seq)
    _, ct = _encrypt0(key, common_iv, kid, piv, stream, plaintext)
    return _bounded(
        b"\xd0\x83\x44"
        + ENC0_PROTECTED
        + b"\xa2\x04"
        + cbor.bstr(kid)
        + b"\x06"
        + cbor.bstr(piv)
        + cbor.bstr(ct)
    )


def _piv_to_seq(piv: bytes) -> int:
    if len(piv) > 1 and piv[0] == 0:
        raise MalformedFrame("partial IV has a leading zero")
    return int.from_bytes(piv, "big")


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
        kid, piv, ct = _parse_enc0_body(r, lite=True)
        r.done("frame")
        return Parsed(KIND_LITE, kid, piv, _piv_to_seq(piv), 24, b"", frame, ct, b"", None)
    r.expect(ARRAY, 4, "Sign1 array")
    prot = r.bytes_("Sign1 protected", 1, MAX_PROTECTED)
    # Exactly {1: alg, 4: kid} or {1: alg, 4: kid, 10: kid_context}, in that order.
    p = Reader(prot)
    major, entries = p.head("Sign1 protected map")
    if major != MAP or entries not in (2, 3):
        raise MalformedFrame("Sign1 protected header is not {1: alg, 4: kid[, 10: kid_context]}")
    p.expect(UINT, 1, "alg label")
    major, arg = p.head("alg")
    if major != NINT or arg not in (7, 18):  # -8 EdDSA, -19 Ed25519
        raise MalformedFrame("signature algorithm is not EdDSA/Ed25519")
    p.expect(UINT, 4, "kid label")
    kid = p.bytes_("kid", 1, MAX_KID_LEN)
    kid_context = None
    if entries == 3:
        p.expect(UINT, 10, "kid context label")
        kid_context = p.bytes_("kid context", 1, MAX_KID_CONTEXT)
    p.done("Sign1 protected map")
    r.expect(MAP, 0, "Sign1 unprotected")
    enc0 = r.bytes_("Sign1 payload")
    sig = r.bytes_("signature", SIG_LEN, SIG_LEN)
    r.done("frame")
    e = Reader(enc0)
    e.expect(TAG, 16, "Encrypt0 tag")
    _, piv, ct = _parse_enc0_body(e, lite=False)
    e.done("Encrypt0")
    return Parsed(KIND_SIGNED, kid, piv, _piv_to_seq(piv), -1 - arg, prot, enc0, ct, sig,
                  kid_context)


def verify(parsed: Parsed, sign_pk: bytes, stream: bytes) -> None:
    """Check the Ed25519 signature of a parsed twinlink/1 frame; raise :class:`BadSignature`."""
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


def check_payload(plaintext: bytes) -> None:
    """Refuse a payload outside the CBOR a reading may hold; raise :class:`MalformedPayload`."""
    cbor.check_item(plaintext)


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
