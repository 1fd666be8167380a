"""Serial-line framing: COBS over (frame || CRC-16/CCITT-FALSE big-endian), delimited by 0x00.

The CRC tells line noise from tampering: a record whose COBS or CRC fails is *line damage*
(:class:`LineError`, counted, never shown to the twin); a record that passes both is handed to
the twin, where a bad signature means someone meant it. The decoder resynchronises at the next
0x00 and ignores empty records, so a sender may start each record with 0x00 to flush garbage.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterator

from ..errors import LineError, RecordTooLong

DELIMITER = b"\x00"
#: Largest frame carried (the twinlink/1 parser's own limit is 65535 bytes).
DEFAULT_MAX_FRAME = 4096


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final XOR."""
    return binascii.crc_hqx(data, 0xFFFF)


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: the output contains no 0x00 (same bytes as ``cobs``).

    Works on the zero-separated runs with slicing, not byte by byte: the per-frame cost in
    CPython is a handful of operations per 254-byte block, not per byte.
    """
    out = bytearray()
    runs = data.split(DELIMITER)
    last = len(runs) - 1
    for k, run in enumerate(runs):
        while len(run) >= 0xFE:
            out.append(0xFF)
            out += run[:0xFE]
            run = run[0xFE:]
            if not run and k == last:
                # The PyPI ``cobs`` package and native/tl_cobs.c end a trailing full block
                # without a 0x01 code byte: same bytes on every implementation.
                return bytes(out)
        out.append(len(run) + 1)
        out += run
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of :func:`cobs_encode`; raise :class:`LineError` on a malformed record."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0 or i + code > n:
            raise LineError("malformed COBS record")
        block = data[i + 1 : i + code]
        if 0 in block:
            raise LineError("malformed COBS record")
        out += block
        i += code
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_record(frame: bytes) -> bytes:
    """One wire record: COBS(frame || CRC16-BE) followed by the 0x00 delimiter."""
    return cobs_encode(frame + crc16(frame).to_bytes(2, "big")) + DELIMITER


def wire(frame: bytes, flush_prefix: bool = False) -> bytes:
    """Bytes to write for ``frame``; ``flush_prefix`` adds a leading 0x00 to end line garbage."""
    return (DELIMITER if flush_prefix else b"") + encode_record(frame)


def decode_record(record: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Decode one record (without its delimiter) to a frame; raise :class:`LineError`."""
    raw = cobs_decode(record)
    if len(raw) < 3:
        raise LineError("record too short for a frame and its CRC")
    frame, crc = raw[:-2], int.from_bytes(raw[-2:], "big")
    if crc16(frame) != crc:
        raise LineError("CRC mismatch")
    if len(frame) > max_frame:
        raise RecordTooLong(f"frame of {len(frame)} bytes exceeds the maximum of {max_frame}")
    return frame


class Decoder:
    """Incremental decoder: ``feed(bytes)`` yields frames (bytes) and :class:`LineError` items.

    Memory is bounded: a record longer than the largest legal encoding is discarded up to the
    next delimiter and reported once as a line error.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        # COBS adds one byte per 254 plus one; the CRC adds two.
        self.max_record = max_frame + 2 + (max_frame + 2) // 254 + 2
        self._buf = bytearray()
        self._overflow = False
        self.frames = 0
        self.line_errors = 0

    def feed(self, data: bytes) -> Iterator[bytes | LineError]:
        start = 0
        while True:
            end = data.find(DELIMITER, start)
            chunk = data[start:] if end < 0 else data[start:end]
            if not self._overflow:
                if len(self._buf) + len(chunk) > self.max_record:
                    self._overflow = True
                    self._buf.clear()
                else:
                    self._buf += chunk
            if end < 0:
                return
            start = end + 1
            if self._overflow:
                self._overflow = False
                self.line_errors += 1
                yield RecordTooLong(f"record longer than the maximum frame of {self.max_frame} "
                                    "bytes")
                continue
            if not self._buf:
                continue  # empty record: two delimiters in a row, or a flush prefix
            record = bytes(self._buf)
            self._buf.clear()
            try:
                frame = decode_record(record, self.max_frame)
            except LineError as exc:
                self.line_errors += 1
                yield exc
                continue
            self.frames += 1
            yield frame
