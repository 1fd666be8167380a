"""The OSCORE-derived symmetric layer (RFC 8613): key schedule, AEAD nonce and external_aad.

Where is the nonce built? Here, in :func:`nonce`. Where are keys derived? :func:`derive_context`.
Both the pure path and the C core implement these byte for byte; the RFC 8613 Appendix C
vectors pin them in ``tests/test_oscore.py``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from . import cbor

#: COSE algorithm numbers of profile twinlink/1.
ALG_CHACHA20_POLY1305 = 24
ALG_EDDSA = -8
ALG_ED25519 = -19  # RFC 9864 fully-specified Ed25519; accepted on input.

KEY_LEN = 32
IV_LEN = 12
MAX_KID_LEN = 6  # OSCORE limit for a 12-byte nonce: nonce length - 6
MAX_SEQ = (1 << 40) - 1  # Partial IV is at most 5 bytes

#: Stream names (bstr) bound into external_aad: telemetry, and the twin's acknowledgements.
STREAM_TELEMETRY = b"t"
STREAM_ACK = b"a"


def hkdf_sha256(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869) built on HMAC-SHA256; ``length`` at most 255 * 32."""
    if not 0 < length <= 255 * 32:
        raise ValueError("HKDF output length out of range")
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes((counter,)), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def hkdf_info(id_: bytes, id_context: bytes | None, alg_aead: int, kind: str, length: int) -> bytes:
    """The RFC 8613 §3.2.1 ``info`` array: [id, id_context, alg_aead, type, L] in CBOR."""
    ctx = cbor.bstr(id_context) if id_context is not None else b"\xf6"
    return (
        b"\x85" + cbor.bstr(id_) + ctx + cbor.int_(alg_aead) + cbor.tstr(kind) + cbor.int_(length)
    )


def derive_key(secret: bytes, salt: bytes, id_: bytes, id_context: bytes | None,
               alg_aead: int = ALG_CHACHA20_POLY1305, key_len: int = KEY_LEN) -> bytes:
    """Derive the Sender (or Recipient) Key of the endpoint whose Sender ID is ``id_``."""
    return _derive(secret, salt, id_, id_context, alg_aead, "Key", key_len)


def derive_common_iv(secret: bytes, salt: bytes, id_context: bytes | None,
                     alg_aead: int = ALG_CHACHA20_POLY1305, iv_len: int = IV_LEN) -> bytes:
    """Derive the Common IV shared by both directions of a context."""
    return _derive(secret, salt, b"", id_context, alg_aead, "IV", iv_len)


def _derive(secret: bytes, salt: bytes, id_: bytes, id_context: bytes | None, alg_aead: int,
            kind: str, length: int) -> bytes:
    return hkdf_sha256(salt, secret, hkdf_info(id_, id_context, alg_aead, kind, length), length)


def piv_bytes(seq: int) -> bytes:
    """Partial IV of ``seq``: big-endian, no leading zeros, 0 -> h'00'."""
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError("sequence number out of range")
    return seq.to_bytes(max(1, (seq.bit_length() + 7) // 8), "big")


def nonce(common_iv: bytes, sender_id: bytes, piv: bytes) -> bytes:
    """AEAD nonce (RFC 8613 §5.2): Common IV XOR (len(id) | padded id | padded PIV)."""
    n = len(common_iv)
    id_field = n - 6
    if len(sender_id) > id_field or len(piv) > 5:
        raise ValueError("sender id or partial IV too long for the nonce")
    block = bytes((len(sender_id),)) + sender_id.rjust(id_field, b"\0") + piv.rjust(5, b"\0")
    return bytes(a ^ b for a, b in zip(block, common_iv))


def external_aad(kid: bytes, piv: bytes, stream: bytes) -> bytes:
    """The CBOR array [1, [24, -8], kid, PIV, stream] that both COSE layers authenticate."""
    return b"\x85\x01\x82\x18\x18\x27" + cbor.bstr(kid) + cbor.bstr(piv) + cbor.bstr(stream)


@dataclass(frozen=True)
class Context:
    """One direction's symmetric keys of the pairwise device <-> twin context.

    ``sender_id`` is the kid for the device's direction and h'' for the twin's (acks).
    ``repr`` never shows key bytes.
    """

    sender_id: bytes
    key: bytes = field(repr=False)
    common_iv: bytes = field(repr=False)


def derive_context(
    master_secret: bytes,
    sender_id: bytes,
    master_salt: bytes = b"",
    id_context: bytes | None = None,
) -> Context:
    """Derive key and Common IV for messages sent by the endpoint ``sender_id``."""
    return Context(
        sender_id,
        derive_key(master_secret, master_salt, sender_id, id_context),
        derive_common_iv(master_secret, master_salt, id_context),
    )
