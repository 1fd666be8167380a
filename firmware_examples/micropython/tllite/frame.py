"""The lite frame: twinlink/1's inner COSE_Encrypt0 with the kid moved to the unprotected map.

    16([ h'A1011818', {4: kid, 6: PIV}, ChaCha20-Poly1305(plaintext) || tag ])

Same nonce, same external_aad [1, [24, -8], kid, PIV, stream] and AAD
["Encrypt0", h'A1011818', external_aad] as twinlink/1, so the twin's decrypt path is shared.
"""

from . import aead

ENC0_PROTECTED = b"\xa1\x01\x18\x18"  # {1: 24} ChaCha20/Poly1305
MAX_SEQ = (1 << 40) - 1
STREAM_TELEMETRY = b"t"


def _bstr(b):
    n = len(b)
    if n < 24:
        return bytes((0x40 | n,)) + b
    if n < 0x100:
        return bytes((0x58, n)) + b
    if n < 0x10000:
        return bytes((0x59, n >> 8, n & 0xFF)) + b
    raise ValueError("byte string too long for a lite frame")


def piv(seq):
    """Partial IV: big-endian, no leading zeros, 0 -> h'00'."""
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError("sequence number out of range")
    n = 1
    while seq >> (8 * n):
        n += 1
    return seq.to_bytes(n, "big")


def external_aad(kid, p, stream=STREAM_TELEMETRY):
    return b"\x85\x01\x82\x18\x18\x27" + _bstr(kid) + _bstr(p) + _bstr(stream)


def nonce(common_iv, kid, p):
    """RFC 8613 §5.2: Common IV XOR (len(kid) || kid padded to 6 || PIV padded to 5)."""
    if not 1 <= len(kid) <= 6 or len(p) > 5 or len(common_iv) != 12:
        raise ValueError("kid must be 1-6 bytes, PIV at most 5, Common IV 12")
    block = bytes((len(kid),)) + bytes(6 - len(kid)) + kid + bytes(5 - len(p)) + p
    return bytes(a ^ b for a, b in zip(block, common_iv))


def seal_lite(key, common_iv, kid, seq, plaintext, stream=STREAM_TELEMETRY):
    """Seal ``plaintext`` (one CBOR item) as a lite frame with sequence number ``seq``."""
    p = piv(seq)
    aad = b"\x83\x68Encrypt0\x44" + ENC0_PROTECTED + _bstr(external_aad(kid, p, stream))
    ct = aead.encrypt(key, nonce(common_iv, kid, p), plaintext, aad)
    return (b"\xd0\x83\x44" + ENC0_PROTECTED + b"\xa2\x04" + _bstr(kid) + b"\x06" + _bstr(p)
            + _bstr(ct))
