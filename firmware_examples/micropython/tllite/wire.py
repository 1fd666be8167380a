"""Serial framing, as ``twinlink.transport.framing``: COBS(frame || CRC-16 BE) then 0x00.

CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final XOR.
"""

_TABLE = []
for _i in range(256):
    _c = _i << 8
    for _ in range(8):
        _c = ((_c << 1) ^ 0x1021) if _c & 0x8000 else (_c << 1)
    _TABLE.append(_c & 0xFFFF)


def crc16(data):
    crc = 0xFFFF
    t = _TABLE
    for b in data:
        crc = ((crc << 8) & 0xFF00) ^ t[(crc >> 8) ^ b]
    return crc


def cobs_encode(data):
    """Consistent Overhead Byte Stuffing: the output holds no 0x00."""
    out = bytearray(b"\x01")
    code_at = 0
    code = 1
    for b in data:
        if b:
            out.append(b)
            code += 1
        if not b or code == 0xFF:
            out[code_at] = code
            code_at = len(out)
            code = 1
            out.append(1)
    out[code_at] = code
    return bytes(out)


def record(frame, flush_prefix=False):
    """The bytes to write to the UART for one frame (optionally with a leading 0x00)."""
    c = crc16(frame)
    body = cobs_encode(frame + bytes((c >> 8, c & 0xFF))) + b"\x00"
    return b"\x00" + body if flush_prefix else body
