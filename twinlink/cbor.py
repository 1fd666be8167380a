"""Minimal CBOR (RFC 8949) for twinlink: the deterministic heads of the fixed twinlink/1 shapes,
a strict reader for frames, and the strict validator for decrypted payloads.

The frame is built and parsed with these few helpers instead of a general decoder, so that the
pure path and the C core accept exactly the same bytes: shortest-form heads only, definite
lengths only, every length checked against what is left. Payloads are checked by
:func:`check_item` (the same rules as native/tl_cbor_check.c) before :mod:`cbor2` decodes them.
"""

from __future__ import annotations

from typing import NoReturn

from .errors import MalformedFrame, MalformedPayload

UINT, NINT, BSTR, TSTR, ARRAY, MAP, TAG, SIMPLE = range(8)


def head(major: int, value: int) -> bytes:
    """Encode a CBOR head of major type ``major`` with argument ``value`` in shortest form."""
    mt = major << 5
    if value < 24:
        return bytes((mt | value,))
    if value < 0x100:
        return bytes((mt | 24, value))
    if value < 0x10000:
        return bytes((mt | 25,)) + value.to_bytes(2, "big")
    if value < 0x100000000:
        return bytes((mt | 26,)) + value.to_bytes(4, "big")
    return bytes((mt | 27,)) + value.to_bytes(8, "big")


def bstr(data: bytes) -> bytes:
    """Encode a definite-length byte string."""
    return head(BSTR, len(data)) + data


def tstr(text: str) -> bytes:
    """Encode a definite-length UTF-8 text string."""
    raw = text.encode()
    return head(TSTR, len(raw)) + raw


def int_(value: int) -> bytes:
    """Encode an integer (major type 0 or 1)."""
    return head(UINT, value) if value >= 0 else head(NINT, -1 - value)


def read_head(buf: bytes, pos: int, end: int) -> tuple[int, int, int, int]:
    """The CBOR head at ``buf[pos]``: (major type, additional info, argument, next position).

    The one head decoder: callers raise their own errors. Next position -1: the head runs
    past ``end``. Additional info 28..31 (reserved, indefinite length) has argument 0. Any
    head length is accepted; shortest form is the caller's rule (frames require it, payloads
    do not).
    """
    if pos >= end:
        return 0, 0, 0, -1
    ib = buf[pos]
    major, ai = ib >> 5, ib & 0x1F
    if ai < 24:
        return major, ai, ai, pos + 1
    if ai > 27:
        return major, ai, 0, pos + 1
    n = 1 << (ai - 24)
    if end - pos - 1 < n:
        return major, ai, 0, -1
    return major, ai, int.from_bytes(buf[pos + 1 : pos + 1 + n], "big"), pos + 1 + n


class Reader:
    """A strict cursor over hostile bytes: every head minimal, every length bounded.

    Any violation raises :class:`MalformedFrame` with ``what`` naming the place.
    """

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def head(self, what: str) -> tuple[int, int]:
        """Read one head in shortest form; return (major type, argument)."""
        major, ai, value, nxt = read_head(self.buf, self.pos, self.end)
        if nxt < 0:
            raise MalformedFrame(f"truncated at {what}")
        if ai > 27:
            raise MalformedFrame(f"indefinite or reserved length at {what}")
        if ai >= 24 and value < (24 if ai == 24 else 1 << (4 << (ai - 24))):
            raise MalformedFrame(f"non-shortest integer encoding at {what}")
        self.pos = nxt
        return major, value

    def expect(self, major: int, value: int, what: str) -> None:
        """Read one head and require exactly (major, value)."""
        if self.head(what) != (major, value):
            raise MalformedFrame(f"unexpected item at {what}")

    def bytes_(self, what: str, min_len: int = 0, max_len: int | None = None) -> bytes:
        """Read a definite byte string whose length lies in [min_len, max_len]."""
        major, n = self.head(what)
        if major != BSTR:
            raise MalformedFrame(f"{what} is not a byte string")
        if n > self.end - self.pos:
            raise MalformedFrame(f"truncated in {what}")
        if n < min_len or (max_len is not None and n > max_len):
            raise MalformedFrame(f"{what} has a bad length ({n} bytes)")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(out)

    def done(self, what: str) -> None:
        """Require that nothing is left."""
        if self.pos != self.end:
            raise MalformedFrame(f"trailing bytes after {what}")


#: The payload rules (docs/PROTOCOL.md §13; native/tl_cbor_check.h is the same in C).
PAYLOAD_MAX = 16384
PAYLOAD_MAX_DEPTH = 8
#: Why a payload is refused, indexed like the C enum tl_payload_reason (0 is "ok").
PAYLOAD_REASONS = (
    "ok",
    "payload exceeds 16384 bytes",
    "truncated CBOR item",
    "bytes after the CBOR item",
    "indefinite-length item",
    "reserved CBOR head",
    "CBOR tag",
    "integer outside the 64-bit signed range",
    "text string is not valid UTF-8",
    "map key is not an integer or text string",
    "duplicate map key",
    "simple value other than false, true or null",
    "float is NaN or infinite",
    "nested more than 8 deep",
)
(_TOO_LONG, _TRUNCATED, _TRAILING, _INDEFINITE, _RESERVED, _TAG, _INT_RANGE, _UTF8, _KEY_TYPE,
 _DUPLICATE, _SIMPLE, _FLOAT, _DEPTH) = range(1, len(PAYLOAD_REASONS))
_INT_MAX = (1 << 63) - 1  # major 0 and 1: 2**63-1 and -1-(2**63-1) = -2**63, a SQL bigint
_NON_FINITE = {25: 0x7C00, 26: 0x7F800000, 27: 0x7FF0000000000000}  # exponent all ones


def check_item(data: bytes, max_depth: int = PAYLOAD_MAX_DEPTH) -> None:
    """Require ``data`` to be one payload item of the CBOR a reading may hold; raise
    :class:`MalformedPayload` with a short reason (the first violation in document order; a
    duplicate key when its map ends).

    Accepted: at most :data:`PAYLOAD_MAX` bytes holding exactly one item; definite lengths
    (heads need not be shortest); integers in [-2**63, 2**63-1]; byte strings; UTF-8 text;
    arrays; maps keyed by integers or text, no two keys equal as decoded values; false, true,
    null; finite half/single/double floats; arrays and maps nested at most ``max_depth`` deep.
    No tags. The same verdicts as the C core's tl_cbor_check (at the default depth).
    """
    if len(data) > PAYLOAD_MAX:
        _refuse(_TOO_LONG)
    if _check(data, 0, len(data), 0, max_depth, None) != len(data):
        _refuse(_TRAILING)


def _refuse(reason: int) -> NoReturn:
    raise MalformedPayload(PAYLOAD_REASONS[reason])


def _check(data: bytes, pos: int, end: int, depth: int, max_depth: int,
           keys: list[tuple[int, object]] | None) -> int:
    """Check the item at ``pos`` (``depth`` containers around it); return where it ends. A map
    key (``keys`` given) must be an integer or text and is appended, decoded, to ``keys``."""
    major, ai, arg, pos = read_head(data, pos, end)
    if pos < 0:
        _refuse(_TRUNCATED)
    if ai == 31:
        _refuse(_INDEFINITE)
    if ai > 27:
        _refuse(_RESERVED)
    if keys is not None and major not in (UINT, NINT, TSTR):
        _refuse(_KEY_TYPE)
    if major <= NINT:
        if arg > _INT_MAX:
            _refuse(_INT_RANGE)
        if keys is not None:
            keys.append((major, arg))
        return pos
    if major <= TSTR:
        if arg > end - pos:
            _refuse(_TRUNCATED)
        stop = pos + arg
        if major == TSTR:
            text = data[pos:stop]
            try:
                text.decode("utf-8")
            except UnicodeDecodeError:
                _refuse(_UTF8)
            if keys is not None:
                keys.append((major, text))
        return stop
    if major <= MAP:
        if depth >= max_depth:
            _refuse(_DEPTH)
        if arg > (end - pos if major == ARRAY else (end - pos) // 2):  # items take >= 1 byte
            _refuse(_TRUNCATED)
        if major == ARRAY:
            for _ in range(arg):
                pos = _check(data, pos, end, depth + 1, max_depth, None)
            return pos
        map_keys: list[tuple[int, object]] = []
        for _ in range(arg):
            pos = _check(data, pos, end, depth + 1, max_depth, map_keys)
            pos = _check(data, pos, end, depth + 1, max_depth, None)
        if len(set(map_keys)) != len(map_keys):
            _refuse(_DUPLICATE)
        return pos
    if major == TAG:
        _refuse(_TAG)
    if 20 <= ai <= 22:  # false, true, null
        return pos
    mask = _NON_FINITE.get(ai)
    if mask is None:
        _refuse(_SIMPLE)
    if arg & mask == mask:
        _refuse(_FLOAT)
    return pos
