"""The attacker's workbench: surgery on captured twinlink/1 frames, and malformed CBOR.

Everything here works the way an attacker on the wire would: on the bytes of frames it saw, with
no key. Each function returns new bytes and never touches the input; :func:`layout` finds the
parts of a signed frame (``18([protected, {}, Encrypt0, signature])``) so a mutation can aim at
one of them. The malformed CBOR corpus follows RFC 8949 Appendix F.1 (not-well-formed examples),
plus the shapes a strict parser must refuse without allocating or recursing on their say-so:
indefinite lengths, duplicate map keys, deep nesting and huge declared lengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from .. import cbor

__all__ = ["Layout", "as_lite", "bare_encrypt0", "flip", "flip_ciphertext", "flip_signature",
           "layout", "malformed_corpus", "rewrite_protected", "rewrite_unprotected", "retag",
           "swap_kid", "truncations", "untagged"]


@dataclass(frozen=True)
class Layout:
    """Where the parts of a signed frame sit: ``(start, end)`` offsets into the frame."""

    protected: tuple[int, int]
    unprotected: int
    encrypt0: tuple[int, int]
    piv: tuple[int, int]
    ciphertext: tuple[int, int]
    signature: tuple[int, int]


def _bstr_at(buf: bytes, pos: int) -> tuple[int, int]:
    """(content start, content end) of the byte string whose head is at ``pos``."""
    major, _ai, n, start = cbor.read_head(buf, pos, len(buf))
    if major != cbor.BSTR or start < 0 or start + n > len(buf):
        raise ValueError(f"no byte string at offset {pos}")
    return start, start + n


def layout(frame: bytes) -> Layout:
    """Locate the parts of a well-formed signed frame; ValueError for anything else."""
    if frame[:2] != b"\xd2\x84":
        raise ValueError("not a tagged COSE_Sign1 array of four")
    prot = _bstr_at(frame, 2)
    if frame[prot[1]] != 0xA0:
        raise ValueError("unprotected header is not the empty map")
    enc0 = _bstr_at(frame, prot[1] + 1)
    sig = _bstr_at(frame, enc0[1])
    # Encrypt0: d0 83 44 a1011818 a1 06 <bstr piv> <bstr ciphertext>
    piv = _bstr_at(frame, enc0[0] + 9)
    ct = _bstr_at(frame, piv[1])
    return Layout(prot, prot[1], enc0, piv, ct, sig)


def _parts(frame: bytes) -> tuple[bytes, bytes, bytes]:
    lay = layout(frame)
    return (frame[slice(*lay.protected)], frame[slice(*lay.encrypt0)],
            frame[slice(*lay.signature)])


def _sign1(prot: bytes, unprot: bytes, enc0: bytes, sig: bytes, tag: bytes = b"\xd2") -> bytes:
    return tag + b"\x84" + cbor.bstr(prot) + unprot + cbor.bstr(enc0) + cbor.bstr(sig)


def flip(frame: bytes, offset: int, mask: int = 0x01) -> bytes:
    """The frame with the bits of ``mask`` flipped in byte ``offset``."""
    out = bytearray(frame)
    out[offset] ^= mask
    return bytes(out)


def flip_ciphertext(frame: bytes, mask: int = 0x40) -> bytes:
    """One bit flipped in the middle of the Encrypt0 ciphertext (covered by the signature)."""
    lo, hi = layout(frame).ciphertext
    return flip(frame, (lo + hi) // 2, mask)


def flip_signature(frame: bytes, mask: int = 0x01) -> bytes:
    """One bit flipped in the Ed25519 signature (its first byte: the R point)."""
    return flip(frame, layout(frame).signature[0], mask)


def truncations(frame: bytes) -> list[bytes]:
    """Every proper prefix of the frame, the empty one included."""
    return [frame[:k] for k in range(len(frame))]


def retag(frame: bytes, tag: int) -> bytes:
    """The frame under another CBOR tag (e.g. 98, COSE_Sign; 17, COSE_Mac0)."""
    return cbor.head(cbor.TAG, tag) + frame[1:]


def untagged(frame: bytes) -> bytes:
    """The frame without its leading CBOR tag 18."""
    return frame[1:]


def rewrite_protected(frame: bytes, change: dict[int, Any] | None = None,
                      drop: tuple[int, ...] = (), first: dict[int, Any] | None = None) -> bytes:
    """The frame with its protected header map rewritten (signature kept: an attacker has no
    key). ``change`` sets labels, ``drop`` removes them, ``first`` puts labels in front (a
    non-canonical key order)."""
    prot, enc0, sig = _parts(frame)
    header: dict[int, Any] = dict(first or {})
    for k, v in cbor2.loads(prot).items():
        if k not in drop and k not in header:
            header[k] = v
    header.update(change or {})
    return _sign1(cbor2.dumps(header), b"\xa0", enc0, sig)


def rewrite_unprotected(frame: bytes, header: dict[int, Any]) -> bytes:
    """The frame with a non-empty unprotected header (which the signature does not cover)."""
    prot, enc0, sig = _parts(frame)
    return _sign1(prot, cbor2.dumps(header), enc0, sig)


def swap_kid(frame: bytes, kid: bytes) -> bytes:
    """The frame relabelled with another device's kid (the signature is the original's)."""
    return rewrite_protected(frame, {4: kid})


def bare_encrypt0(frame: bytes) -> bytes:
    """The inner COSE_Encrypt0 on its own: the signature layer stripped (a downgrade)."""
    return _parts(frame)[1]


def as_lite(frame: bytes, kid: bytes) -> bytes:
    """The inner Encrypt0 rewrapped in the lite profile's shape ``16([h'A1011818',
    {4: kid, 6: piv}, ciphertext])``: an unsigned frame claiming a signed device."""
    lay = layout(frame)
    piv = frame[slice(*lay.piv)]
    ct = frame[slice(*lay.ciphertext)]
    return (b"\xd0\x83\x44\xa1\x01\x18\x18\xa2\x04" + cbor.bstr(kid) + b"\x06" + cbor.bstr(piv)
            + cbor.bstr(ct))


# -- malformed CBOR -----------------------------------------------------------------------------

#: RFC 8949 Appendix F.1: CBOR data items that are not well-formed, by kind (hex).
RFC8949_NOT_WELL_FORMED: dict[str, tuple[str, ...]] = {
    "end of input in a head": (
        "18", "19", "1a", "1b", "1901", "1a0102", "1b01020304050607", "38", "58", "78", "98",
        "9a01ff00", "b8", "d8", "f8", "f900", "fa0000", "fb000000"),
    "definite-length strings with short data": (
        "41", "61", "5affffffff00", "5bffffffffffffffff010203", "7affffffff00",
        "7b7fffffffffffffff010203"),
    "definite-length maps and arrays not closed with enough items": (
        "81", "818181818181818181", "8200", "a1", "a20102", "a100", "a2000000"),
    "tag number not followed by tag content": ("c0",),
    "indefinite-length strings not closed by a break": ("5f4100", "7f6100"),
    "indefinite-length maps and arrays not closed by a break": (
        "9f", "9f0102", "bf", "bf01020102", "819f", "9f8000", "9f9f9f9f9fffffffff",
        "9f819f819f9fffffff"),
    "reserved additional information values": (
        "1c", "1d", "1e", "3c", "3d", "3e", "5c", "5d", "5e", "7c", "7d", "7e", "9c", "9d", "9e",
        "bc", "bd", "be", "dc", "dd", "de", "fc", "fd", "fe"),
    "reserved two-byte encodings of simple values": ("f800", "f801", "f818", "f81f"),
    "indefinite-length string chunks of the wrong type": (
        "5f00ff", "5f21ff", "5f6100ff", "5f80ff", "5fa0ff", "5fc000ff", "5fe0ff", "7f4100ff"),
    "indefinite-length string chunks not of definite length": ("5f5f4100ffff", "7f7f6100ffff"),
    "break on its own": ("ff",),
    "break in a definite-length array, map or tag": (
        "81ff", "8200ff", "a1ff", "a1ff00", "a100ff", "a20000ff", "9f81ff", "9f829f819f9fffffffff"),
    "break in a map value position": ("bf00ff", "bf000000ff"),
    "major type 0, 1, 6 with additional information 31": ("1f", "3f", "df"),
}


def malformed_corpus(frame: bytes, depth: int = 1000) -> list[tuple[str, bytes]]:
    """(label, bytes) items a strict twinlink/1 parser must refuse, built around ``frame`` (a
    genuine signed frame, so that most items are one defect away from valid).

    RFC 8949 Appendix F.1 as it stands, each item also behind a valid tag 18 (so the parser
    must descend before it fails); the frame re-encoded with indefinite lengths; a protected
    header with a duplicate key; nesting ``depth`` deep; huge declared lengths; trailing bytes.
    Every item is at most ``2 * depth + len(frame) + 16`` bytes.
    """
    items: list[tuple[str, bytes]] = []
    for kind, hexes in RFC8949_NOT_WELL_FORMED.items():
        for h in hexes:
            raw = bytes.fromhex(h)
            items.append((f"RFC 8949 F.1 {kind}: {h}", raw))
            items.append((f"tag 18 + RFC 8949 F.1 {kind}: {h}", b"\xd2" + raw))
    prot, enc0, sig = _parts(frame)
    indef = b"\x5f" + cbor.bstr(prot) + b"\xff"
    items += [
        ("indefinite-length outer array", b"\xd2\x9f" + cbor.bstr(prot) + b"\xa0"
         + cbor.bstr(enc0) + cbor.bstr(sig) + b"\xff"),
        ("indefinite-length protected bstr", b"\xd2\x84" + indef + b"\xa0" + cbor.bstr(enc0)
         + cbor.bstr(sig)),
        ("indefinite-length unprotected map", b"\xd2\x84" + cbor.bstr(prot) + b"\xbf\xff"
         + cbor.bstr(enc0) + cbor.bstr(sig)),
        ("indefinite-length Encrypt0 array", _sign1(prot, b"\xa0", b"\xd0\x9f" + enc0[2:]
                                                    + b"\xff", sig)),
        ("duplicate key in the protected header",
         _sign1(b"\xa3\x01\x27\x01\x27" + prot[3:], b"\xa0", enc0, sig)),
        ("duplicate key in the unprotected header", _sign1(prot, b"\xa2\x04\x41\x01\x04\x41\x01",
                                                           enc0, sig)),
        ("non-shortest head for the protected bstr", b"\xd2\x84\x58" + bytes([len(prot)]) + prot
         + b"\xa0" + cbor.bstr(enc0) + cbor.bstr(sig)),
        (f"arrays nested {depth} deep", b"\x81" * depth + b"\x00"),
        (f"indefinite arrays nested {depth} deep", b"\x9f" * depth + b"\xff" * depth),
        (f"tags nested {depth} deep", b"\xd2" * depth + b"\x00"),
        ("huge declared signature length", b"\xd2\x84" + cbor.bstr(prot) + b"\xa0"
         + cbor.bstr(enc0) + b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff"),
        ("huge declared array length", b"\xd2\x9b\xff\xff\xff\xff\xff\xff\xff\xff"),
        ("huge declared map length", b"\xd2\x84" + cbor.bstr(prot) + b"\xbb" + b"\xff" * 8),
        ("huge declared Encrypt0 length", b"\xd2\x84" + cbor.bstr(prot) + b"\xa0\x5a\xff\xff\xff"
         b"\xff" + enc0),
        ("trailing byte after the frame", frame + b"\x00"),
        ("a second frame glued on", frame + frame),
    ]
    return items
