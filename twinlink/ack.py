"""End-to-end acknowledgements: the twin tells a device, authenticated, what it has *stored*.

A broker's PUBACK only says the broker holds a frame; a broker restart without persistence still
drops it. So the twin answers on ``twinlink/<kid hex>/a`` with an ack sealed under the pairwise
context's twin→device direction (Sender ID h'', the twin's own sequence numbers), and the device's
outbox releases a frame only when such an ack covers it. Format (normative text: docs/MQTT.md)::

    ack          = 16([h'A1011818', {6: PIV}, ciphertext])    ; COSE_Encrypt0, tagged
    external_aad = [1, [24, -8], kid, PIV, h'61']              ; kid = the device's kid, stream "a"
    AEAD AAD     = ["Encrypt0", h'A1011818', external_aad]
    nonce        = CommonIV XOR (0x00 || zeros(6) || zeros(5-len(PIV)) || PIV)   ; Sender ID h''
    plaintext    = [* [lo, hi]]    ; inclusive ranges of stored seqs, sorted, disjoint, non-adjacent

An ack is a claim "these sequence numbers of this device are stored". It is true forever, so a
replayed ack could do no harm; the device still refuses any ack PIV it has seen (a replay window
over the twin's sequence numbers) so a replay changes nothing at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cbor2
from nacl import bindings as _nacl
from nacl.exceptions import CryptoError

from . import cbor, senml
from .cbor import ARRAY, MAP, TAG, UINT, Reader
from .errors import DecryptionFailed, MalformedFrame, MalformedPayload
from .frametypes import ENC0_PROTECTED, TAG_LEN, enc_structure
from .oscore import MAX_SEQ, STREAM_ACK, Context, external_aad, nonce, piv_bytes

#: Largest ack accepted on input; bounds the plaintext and the number of ranges.
MAX_ACK = 8192
MAX_RANGES = 512

Range = tuple[int, int]


@dataclass(frozen=True)
class Ack:
    """An opened, authenticated acknowledgement."""

    kid: bytes
    seq: int  # the twin's sequence number (PIV) of this ack
    ranges: tuple[Range, ...]

    def covers(self, seq: int) -> bool:
        return any(lo <= seq <= hi for lo, hi in self.ranges)

    def count(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.ranges)


def to_ranges(seqs: Iterable[int]) -> list[Range]:
    """Collapse sequence numbers into sorted, disjoint, non-adjacent inclusive ranges."""
    out: list[list[int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return [(lo, hi) for lo, hi in out]


def _aad(kid: bytes, piv: bytes) -> bytes:
    return enc_structure(ENC0_PROTECTED, external_aad(kid, piv, STREAM_ACK))


def seal_ack(ctx: Context, kid: bytes, ack_seq: int, ranges: Iterable[Range]) -> bytes:
    """Seal an ack of ``ranges`` for device ``kid`` with the twin's sequence number ``ack_seq``.

    ``ctx`` is the twin→device context (``Twin.ack_context(kid)``, Sender ID h''). ``ack_seq``
    must never repeat for one context: take it from ``TwinStore.take_ack_seq``.
    """
    if ctx.sender_id != b"":
        raise ValueError("acks are sealed with the twin→device context (Sender ID h'')")
    rs = _normalise(ranges)
    if len(rs) > MAX_RANGES:
        raise ValueError("too many ranges in one ack; split it")
    piv = piv_bytes(ack_seq)
    plaintext = cbor2.dumps([[lo, hi] for lo, hi in rs], canonical=True)
    ct = _nacl.crypto_aead_chacha20poly1305_ietf_encrypt(
        plaintext, _aad(kid, piv), nonce(ctx.common_iv, b"", piv), ctx.key)
    return b"\xd0\x83\x44" + ENC0_PROTECTED + b"\xa1\x06" + cbor.bstr(piv) + cbor.bstr(ct)


def _normalise(ranges: Iterable[Range]) -> list[Range]:
    items = sorted((int(lo), int(hi)) for lo, hi in ranges)
    out: list[list[int]] = []
    for lo, hi in items:
        if not 0 <= lo <= hi <= MAX_SEQ:
            raise ValueError(f"bad ack range [{lo}, {hi}]")
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


def parse_ack(data: bytes) -> tuple[bytes, int, bytes]:
    """Strictly parse an ack's envelope; return (PIV bytes, seq, ciphertext).

    Raises :class:`MalformedFrame` for anything but the exact shape above.
    """
    if not isinstance(data, (bytes, bytearray)) or len(data) > MAX_ACK:
        raise MalformedFrame("ack is not bytes or exceeds the maximum size")
    r = Reader(bytes(data))
    r.expect(TAG, 16, "ack Encrypt0 tag")
    r.expect(ARRAY, 3, "ack Encrypt0 array")
    if r.bytes_("ack protected") != ENC0_PROTECTED:
        raise MalformedFrame("ack protected header is not {1: 24}")
    r.expect(MAP, 1, "ack unprotected")
    r.expect(UINT, 6, "ack Partial IV label")
    piv = r.bytes_("ack Partial IV", 1, 5)
    if len(piv) > 1 and piv[0] == 0:
        raise MalformedFrame("ack partial IV has a leading zero")
    ct = r.bytes_("ack ciphertext", TAG_LEN)
    r.done("ack")
    return piv, int.from_bytes(piv, "big"), ct


def open_ack(ctx: Context, kid: bytes, data: bytes) -> Ack:
    """Parse, authenticate and decode an ack addressed to device ``kid``.

    ``ctx`` is the device's copy of the twin→device context (``Bundle.ack_context()``). Raises
    :class:`MalformedFrame`, :class:`DecryptionFailed` (forged, altered, or for another device)
    or :class:`MalformedPayload`. Freshness (PIV not seen before) is the caller's check.
    """
    piv, seq, ct = parse_ack(data)
    try:
        plaintext = _nacl.crypto_aead_chacha20poly1305_ietf_decrypt(
            ct, _aad(kid, piv), nonce(ctx.common_iv, b"", piv), ctx.key)
    except (CryptoError, ValueError):
        raise DecryptionFailed("ack AEAD tag does not verify") from None
    obj = senml.loads(plaintext)  # the bounded decoder for authenticated CBOR
    if not isinstance(obj, list) or len(obj) > MAX_RANGES:
        raise MalformedPayload("ack plaintext is not an array of at most 512 ranges")
    ranges: list[Range] = []
    for item in obj:
        if (not isinstance(item, list) or len(item) != 2
                or not all(type(x) is int for x in item)
                or not 0 <= item[0] <= item[1] <= MAX_SEQ):
            raise MalformedPayload("ack range is not [lo, hi] with 0 <= lo <= hi < 2^40")
        ranges.append((item[0], item[1]))
    return Ack(kid, seq, tuple(ranges))
