"""The twin→device Encrypt0 envelope that acks (PROTOCOL §15) and downlink frames (§20) share.

::

    16([h'A1011818', {4: sender_id, 6: PIV, ? 10: kid_context}, ciphertext])
    AAD   = ["Encrypt0", h'A1011818', [1, [24, -8], device_kid, PIV, stream]]
    nonce = CommonIV XOR (Sender ID, PIV)                                   ; RFC 8613 §5.2

The two differ only in the Sender ID (an ingest's random 6 bytes for acks, h'' for downlink)
and the stream byte in the external AAD (``"a"`` or ``"c"``), so one frame can never pass for
the other. This module seals, parses strictly (shortest heads, keys 4, 6, 10 in order, no
leading zero in the PIV) and decrypts; what the plaintext means is the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass

from nacl import bindings as _nacl
from nacl.exceptions import CryptoError

from . import cbor
from .cbor import ARRAY, MAP, TAG, UINT, Reader
from .errors import DecryptionFailed, MalformedFrame
from .frametypes import ENC0_PROTECTED, MAX_KID_CONTEXT, TAG_LEN, enc_structure
from .oscore import Context, external_aad, nonce, piv_bytes

__all__ = ["Envelope", "aad", "decrypt", "parse", "seal"]


@dataclass(frozen=True)
class Envelope:
    """An envelope's header values, parsed strictly but not authenticated."""

    sender_id: bytes
    piv: bytes
    seq: int
    kid_context: bytes | None
    ciphertext: bytes


def aad(kid: bytes, piv: bytes, stream: bytes) -> bytes:
    """The Enc_structure for a frame to device ``kid`` on ``stream``."""
    return enc_structure(ENC0_PROTECTED, external_aad(kid, piv, stream))


def seal(ctx: Context, kid: bytes, piv_seq: int, plaintext: bytes, stream: bytes,
         kid_context: bytes | None = None) -> bytes:
    """Encrypt ``plaintext`` for device ``kid`` under ``ctx`` (its Sender ID goes in the header)
    with Partial IV ``piv_seq``, which the caller guarantees never repeats for ``ctx``. Raises
    ValueError for a kid context that is not 1..16 bytes."""
    if kid_context is not None and not 0 < len(kid_context) <= MAX_KID_CONTEXT:
        raise ValueError("kid context must be 1 to 16 bytes")
    sid, piv = ctx.sender_id, piv_bytes(piv_seq)
    ct = _nacl.crypto_aead_chacha20poly1305_ietf_encrypt(
        plaintext, aad(kid, piv, stream), nonce(ctx.common_iv, sid, piv), ctx.key)
    unprot = (b"\xa3" if kid_context is not None else b"\xa2") + b"\x04" + cbor.bstr(sid) + \
        b"\x06" + cbor.bstr(piv)
    if kid_context is not None:
        unprot += b"\x0a" + cbor.bstr(kid_context)
    return b"\xd0\x83" + cbor.bstr(ENC0_PROTECTED) + unprot + cbor.bstr(ct)


def parse(data: bytes | bytearray, what: str, sid_len: int, max_size: int) -> Envelope:
    """Strictly parse an envelope whose Sender ID is exactly ``sid_len`` bytes and whose whole
    size is at most ``max_size``; raise :class:`MalformedFrame` (naming ``what``) otherwise.
    Nothing is authenticated."""
    if not isinstance(data, (bytes, bytearray)) or len(data) > max_size:
        raise MalformedFrame(f"{what} is not bytes or exceeds the maximum size")
    r = Reader(bytes(data))
    r.expect(TAG, 16, f"{what} Encrypt0 tag")
    r.expect(ARRAY, 3, f"{what} Encrypt0 array")
    if r.bytes_(f"{what} protected") != ENC0_PROTECTED:
        raise MalformedFrame(f"{what} protected header is not {{1: 24}}")
    major, n = r.head(f"{what} unprotected")
    if major != MAP or n not in (2, 3):
        raise MalformedFrame(f"{what} unprotected header is not {{4, 6[, 10]}}")
    r.expect(UINT, 4, f"{what} Sender ID label")
    sid = r.bytes_(f"{what} Sender ID", sid_len, sid_len)
    r.expect(UINT, 6, f"{what} Partial IV label")
    piv = r.bytes_(f"{what} Partial IV", 1, 5)
    if len(piv) > 1 and piv[0] == 0:
        raise MalformedFrame(f"{what} partial IV has a leading zero")
    kid_context = None
    if n == 3:
        r.expect(UINT, 10, f"{what} kid context label")
        kid_context = r.bytes_(f"{what} kid context", 1, MAX_KID_CONTEXT)
    ct = r.bytes_(f"{what} ciphertext", TAG_LEN)
    r.done(what)
    return Envelope(sid, piv, int.from_bytes(piv, "big"), kid_context, ct)


def decrypt(ctx: Context, kid: bytes, env: Envelope, stream: bytes, what: str) -> bytes:
    """Authenticate ``env`` as addressed to device ``kid`` on ``stream`` under ``ctx`` and
    return the plaintext. Raises :class:`DecryptionFailed` (forged, altered, for another device,
    stream or context)."""
    try:
        return _nacl.crypto_aead_chacha20poly1305_ietf_decrypt(
            env.ciphertext, aad(kid, env.piv, stream), nonce(ctx.common_iv, env.sender_id,
                                                              env.piv), ctx.key)
    except (CryptoError, ValueError):
        raise DecryptionFailed(f"{what} AEAD tag does not verify") from None
