"""Deterministic CBOR (RFC 8949 §4.2.1) for SenML packs, byte-equal to ``twinlink.senml.encode``.

Floats take the shortest of half/single/double that keeps the value, exactly as cbor2's
canonical mode does; map keys are sorted by their encoding. Enough CBOR for telemetry, no more.
"""

import struct

# RFC 8428 §6 CBOR labels
BT, N, U, V, VS, VB, VD = -3, 0, 1, 2, 3, 4, 8


def head(major, n):
    """A CBOR head in shortest form."""
    mt = major << 5
    if n < 24:
        return bytes((mt | n,))
    if n < 0x100:
        return bytes((mt | 24, n))
    if n < 0x10000:
        return bytes((mt | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((mt | 26,)) + n.to_bytes(4, "big")
    if n < 0x10000000000000000:
        return bytes((mt | 27,)) + n.to_bytes(8, "big")
    raise ValueError("integer too large for CBOR major types 0/1")


def _half(bits):
    """IEEE half-precision bits for float32 ``bits`` if exact, else None."""
    sign = (bits >> 31) << 15
    e = (bits >> 23) & 0xFF
    m = bits & 0x7FFFFF
    if e == 0:
        return sign if m == 0 else None
    ex = e - 127
    if -14 <= ex <= 15:
        return None if m & 0x1FFF else sign | ((ex + 15) << 10) | (m >> 13)
    if -24 <= ex < -14:
        full = (1 << 23) | m
        shift = -(ex + 1)
        return None if full & ((1 << shift) - 1) else sign | (full >> shift)
    return None


def float_(x):
    """The shortest exact IEEE 754 encoding of a finite float."""
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError("SenML values must be finite")
    try:
        b4 = struct.pack(">f", x)
        single = struct.unpack(">f", b4)[0] == x
    except OverflowError:  # CPython refuses; MicroPython gives inf, which compares unequal
        single = False
    if not single:
        return b"\xfb" + struct.pack(">d", x)
    h = _half(int.from_bytes(b4, "big"))
    if h is not None:
        return bytes((0xF9, h >> 8, h & 0xFF))
    return b"\xfa" + b4


def dumps(obj):
    """Encode int, float, bool, None, str, bytes, list/tuple and dict deterministically."""
    if obj is True:
        return b"\xf5"
    if obj is False:
        return b"\xf4"
    if obj is None:
        return b"\xf6"
    if isinstance(obj, int):
        return head(0, obj) if obj >= 0 else head(1, -1 - obj)
    if isinstance(obj, float):
        return float_(obj)
    if isinstance(obj, str):
        raw = obj.encode()
        return head(3, len(raw)) + raw
    if isinstance(obj, (bytes, bytearray)):
        return head(2, len(obj)) + bytes(obj)
    if isinstance(obj, (list, tuple)):
        return head(4, len(obj)) + b"".join(dumps(v) for v in obj)
    if isinstance(obj, dict):
        # keys are unique, so sorting by (length, bytes) of the key alone is total
        items = sorted(((dumps(k), dumps(v)) for k, v in obj.items()),
                       key=lambda kv: (len(kv[0]), kv[0]))
        return head(5, len(items)) + b"".join(k + v for k, v in items)
    raise TypeError("cannot CBOR-encode " + type(obj).__name__)


def senml(pairs, time=None, units=None):
    """A SenML pack for ``pairs`` — a list of (name, value), in order (MicroPython dicts are
    unordered, so pass pairs to get the same bytes as ``twinlink.senml.encode`` on a dict)."""
    if hasattr(pairs, "items"):
        pairs = list(pairs.items())
    if not pairs:
        raise ValueError("a reading needs at least one value")
    if len(pairs) > 256:
        raise ValueError("too many values in one reading")
    pack = []
    for i, (name, value) in enumerate(pairs):
        if not isinstance(name, str) or not name:
            raise ValueError("SenML names must be non-empty strings")
        rec = {N: name}
        if i == 0 and time is not None:
            # twinlink.senml always encodes the base time as a float (shortest exact form).
            # Ports with single-precision floats (ESP8266, many Cortex-M builds) cannot hold
            # today's Unix time to the second in a float: send time=None there (README).
            rec[BT] = float(time)
        if isinstance(value, bool):
            rec[VB] = value
        elif isinstance(value, (int, float)):
            rec[V] = value
        elif isinstance(value, str):
            rec[VS] = value
        elif isinstance(value, (bytes, bytearray)):
            rec[VD] = bytes(value)
        else:
            raise TypeError(name + ": unsupported value type")
        if units and name in units:
            rec[U] = units[name]
        pack.append(rec)
    return dumps(pack)
