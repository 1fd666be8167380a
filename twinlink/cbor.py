"""Minimal deterministic CBOR heads (RFC 8949 §4.2.1) for the fixed shapes of twinlink/1.

The frame is built and parsed with these few helpers instead of a general decoder, so that the
pure path and the C core accept exactly the same bytes: shortest-form heads only, definite
lengths only, every length checked against what is left. Payloads use :mod:`cbor2`.
"""

from __future__ import annotations

from .errors import MalformedFrame

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


def check_item(data: bytes, max_depth: int = 16) -> None:
    """Require ``data`` to be exactly one well-formed CBOR item: definite lengths only, nesting
    at most ``max_depth``, no duplicate map keys, every length within the input.

    For decoders that cannot enforce these limits themselves (cbor2 before 6.0); raises
    :class:`MalformedFrame`. Shortest-form heads are *not* required here (payload rule).
    """
    end = _skip(data, 0, len(data), max_depth)
    if end != len(data):
        raise MalformedFrame("trailing bytes after the payload item")


def _skip(data: bytes, pos: int, end: int, depth: int) -> int:
    major, ai, arg, pos = read_head(data, pos, end)
    if pos < 0:
        raise MalformedFrame("truncated CBOR item")
    if ai > 27:
        raise MalformedFrame("indefinite-length or reserved CBOR head")
    if major in (BSTR, TSTR):
        if arg > end - pos:
            raise MalformedFrame("CBOR string runs past the end")
        return pos + arg
    if major in (ARRAY, MAP, TAG):
        if depth <= 0:
            raise MalformedFrame("CBOR nested too deeply")
        if major == TAG:
            return _skip(data, pos, end, depth - 1)
        if arg > end - pos:  # every element takes at least one byte
            raise MalformedFrame("CBOR container longer than the input")
        if major == ARRAY:
            for _ in range(arg):
                pos = _skip(data, pos, end, depth - 1)
            return pos
        seen = set()
        for _ in range(arg):
            key_at = pos
            pos = _skip(data, pos, end, depth - 1)
            key = data[key_at:pos]
            if key in seen:
                raise MalformedFrame("duplicate CBOR map key")
            seen.add(key)
            pos = _skip(data, pos, end, depth - 1)
        return pos
    return pos  # integers, simple values and floats: the head is the whole item
