"""SenML (RFC 8428) packs in CBOR with integer labels: what ``Device.send({...})`` puts in a frame.

A dict reading ``{"temp": 21.5, "door": "open"}`` becomes one record per name, the first carrying
the base time. Decoding resolves base values and returns the records plus a ``{name: value}``
view. The plaintext is authenticated but still untrusted input (a compromised device is a
hostile device): decoding is bounded and raises :class:`MalformedPayload` on anything odd.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Mapping
from typing import Any, NamedTuple, Union

import cbor2

from . import cbor
from .errors import MalformedPayload

# RFC 8428 §6 CBOR labels
BVER, BN, BT, BU, BV, BS = -1, -2, -3, -4, -5, -6
N, U, V, VS, VB, S, T, UT, VD = 0, 1, 2, 3, 4, 5, 6, 7, 8

Value = Union[float, int, str, bool, bytes]

_VALUE_LABELS = (V, VS, VB, VD)
_KNOWN = {BVER, BN, BT, BU, BV, BS, N, U, V, VS, VB, S, T, UT, VD}
MAX_PLAINTEXT = 16384
MAX_RECORDS = 256


class Record(NamedTuple):
    """One resolved SenML record (a named tuple: cheap to build on the ingest hot path)."""

    name: str
    value: Value | None
    unit: str | None = None
    time: float | None = None
    sum: float | None = None


_HALF, _SINGLE, _DOUBLE = struct.Struct(">e"), struct.Struct(">f"), struct.Struct(">d")


def _float(value: float) -> bytes:
    # Preferred serialization (RFC 8949 §4.2.1): the shortest of half, single, double that
    # represents the value exactly. Most sensor decimals (21.37) need a double: test single
    # first, and half only when single already fits.
    if abs(value) <= 3.4028234663852886e38:
        single = _SINGLE.pack(value)
        if _SINGLE.unpack(single)[0] == value:
            if abs(value) <= 65504.0:
                half = _HALF.pack(value)
                if _HALF.unpack(half)[0] == value:
                    return b"\xf9" + half
            return b"\xfa" + single
    return b"\xfb" + _DOUBLE.pack(value)


_NAMES: dict[str, bytes] = {}


def _name(name: str) -> bytes:
    """``0: name`` encoded, cached: a device sends the same few names again and again."""
    enc = _NAMES.get(name)
    if enc is None:
        if not isinstance(name, str) or not name:
            raise ValueError("SenML names must be non-empty strings")
        enc = b"\x00" + cbor.tstr(name)
        if len(_NAMES) < 4096:
            _NAMES[name] = enc
    return enc


def _number(value: int | float) -> bytes:
    if isinstance(value, float):
        return _float(value)
    if -(2**64) <= value < 2**64:
        return cbor.int_(value)
    raise ValueError("SenML integer values must fit in 64 bits")


def encode(
    reading: Mapping[str, Any],
    time: float | None = None,
    units: Mapping[str, str] | None = None,
    base_name: str | None = None,
) -> bytes:
    """Encode ``{name: value}`` (numbers, strings, booleans, bytes) as a CBOR SenML pack.

    The first record carries the base name and base time when given. Deterministic encoding
    (RFC 8949 §4.2.1): map keys in bytewise order n(0) u(1) value(2/3/4/8) bn(-2) bt(-3),
    shortest integer and float forms — byte-identical to ``cbor2.dumps(..., canonical=True)``
    of the same pack, and several times faster.
    """
    if not reading:
        raise ValueError("a reading needs at least one value")
    if len(reading) > MAX_RECORDS:
        raise ValueError("too many values in one reading")
    parts = [cbor.head(cbor.ARRAY, len(reading))]
    for i, (name, value) in enumerate(reading.items()):
        unit = units.get(name) if units else None
        timed = i == 0 and time is not None
        based = i == 0 and base_name is not None
        parts.append(cbor.head(cbor.MAP, 2 + (unit is not None) + timed + based))
        parts.append(_name(name))
        if unit is not None:
            parts.append(b"\x01" + cbor.tstr(unit))
        if isinstance(value, bool):
            parts.append(b"\x04\xf5" if value else b"\x04\xf4")
        elif isinstance(value, (int, float)):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name}: SenML values must be finite")
            parts.append(b"\x02" + _number(value))
        elif isinstance(value, str):
            parts.append(b"\x03" + cbor.tstr(value))
        elif isinstance(value, (bytes, bytearray)):
            parts.append(b"\x08" + cbor.bstr(bytes(value)))
        else:
            raise TypeError(f"{name}: unsupported value type {type(value).__name__}")
        if based:
            parts.append(b"\x21" + cbor.tstr(base_name))  # type: ignore[arg-type]
        if timed:
            t = float(time)  # type: ignore[arg-type]
            if not math.isfinite(t):
                raise ValueError("SenML time must be finite")
            parts.append(b"\x22" + _float(t))
    return b"".join(parts)


def _strict_kwargs() -> dict[str, Any]:
    # cbor2 >= 6 enforces depth, definite lengths and unique keys itself; 5.x (the newest on
    # Python 3.9) takes none of these, and loads() then pre-checks with cbor.check_item.
    strict: dict[str, Any] = {
        "max_depth": 16,
        "allow_indefinite": False,
        "allow_duplicate_keys": False,
    }
    try:
        cbor2.loads(b"\x00", **strict)
    except TypeError:
        return {}
    return strict


_STRICT = _strict_kwargs()


def loads(plaintext: bytes) -> Any:
    """Decode authenticated CBOR with tight bounds; raise :class:`MalformedPayload`."""
    if len(plaintext) > MAX_PLAINTEXT:
        raise MalformedPayload("payload exceeds the maximum size")
    try:
        if not _STRICT:
            cbor.check_item(plaintext, 16)
        fp = io.BytesIO(plaintext)
        obj = cbor2.CBORDecoder(fp, **_STRICT).decode()
    except Exception as exc:  # cbor2 raises several types on hostile input
        raise MalformedPayload(f"payload is not valid CBOR ({type(exc).__name__})") from None
    if fp.tell() != len(plaintext):  # cbor2.loads would silently ignore what follows
        raise MalformedPayload("payload has bytes after its CBOR item")
    return obj


def is_pack(obj: Any) -> bool:
    """Whether a decoded payload has the shape of a SenML pack (a non-empty list of maps)."""
    return isinstance(obj, list) and bool(obj) and all(isinstance(r, dict) for r in obj)


_KNOWN_SET = frozenset(_KNOWN)
_NUM = (int, float)


def resolve(pack: list[dict[Any, Any]]) -> list[Record]:
    """Resolve base values (RFC 8428 §4.6) into full records; raise :class:`MalformedPayload`."""
    if len(pack) > MAX_RECORDS:
        raise MalformedPayload("too many SenML records")
    bn, bt, bu, bv, bs = "", 0, None, 0, 0
    timed = False  # whether any base time has been seen so far in the pack
    out: list[Record] = []
    for rec in pack:
        if not rec.keys() <= _KNOWN_SET:
            for label in rec:
                if isinstance(label, int) and label not in _KNOWN_SET:
                    raise MalformedPayload(f"SenML record has an unknown label {label!r}")
                if isinstance(label, str) and label.endswith("_"):
                    raise MalformedPayload(f"SenML record has an unknown label {label!r}")
            rec = {k: v for k, v in rec.items() if k in _KNOWN_SET}
        if len(rec) == 2:  # fast path for the common {n, value} record
            name, v = rec.get(N), None
            for label, kinds in _FAST:
                if label in rec:
                    v = rec[label]
                    if type(v) in kinds and type(name) is str and (name or bn):
                        if label == V:
                            if type(v) is float and not math.isfinite(v):
                                break
                            v = bv + v
                        out.append(Record(bn + name, v, bu, bt if timed else None, None))
                        v = _DONE
                    break
            if v is _DONE:
                continue
        if len(rec) > 2 or N not in rec or not (rec.keys() & _VALUE_SET):
            bn = _typed(rec, BN, str, bn)
            if BT in rec:
                bt, timed = _typed(rec, BT, _NUM, bt), True
            bu = _typed(rec, BU, str, bu)
            bv = _typed(rec, BV, _NUM, bv)
            bs = _typed(rec, BS, _NUM, bs)
        name = bn + _typed(rec, N, str, "")
        if not name:
            raise MalformedPayload("SenML record without a name")
        value: Value | None = None
        found = 0
        if V in rec:
            value, found = bv + _typed(rec, V, _NUM, 0), found + 1
        if VS in rec:
            value, found = _typed(rec, VS, str, None), found + 1
        if VB in rec:
            value, found = _typed(rec, VB, bool, None), found + 1
        if VD in rec:
            value, found = _typed(rec, VD, bytes, None), found + 1
        if found > 1:
            raise MalformedPayload(f"SenML record {name!r} has more than one value")
        if not found and BV in rec:
            value = bv
        s = rec.get(S)
        if s is not None and (not isinstance(s, _NUM) or isinstance(s, bool)):
            raise MalformedPayload("SenML sum is not a number")
        if value is None and s is None:
            raise MalformedPayload(f"SenML record {name!r} has no value")
        unit = _typed(rec, U, str, bu)
        t = bt + _typed(rec, T, _NUM, 0) if (timed or T in rec) else None
        out.append(Record(name, value, unit, t, None if s is None else bs + s))
    return out


_VALUE_SET = frozenset(_VALUE_LABELS)
_FAST = ((V, (int, float)), (VS, (str,)), (VB, (bool,)), (VD, (bytes,)))
_DONE = object()


_MISSING = object()


def _typed(rec: Mapping[Any, Any], label: int, kinds: Any, default: Any) -> Any:
    v = rec.get(label, _MISSING)
    if v is _MISSING:
        return default
    if (type(v) is bool and kinds is not bool) or not isinstance(v, kinds):
        raise MalformedPayload(f"SenML label {label} has the wrong type")
    if type(v) is float and not math.isfinite(v):
        raise MalformedPayload(f"SenML label {label} is not finite")
    return v
