"""SenML (RFC 8428) packs in CBOR with integer labels: what ``Device.send({...})`` puts in a frame.

A dict reading ``{"temp": 21.5, "door": "open"}`` becomes one record per name, the first carrying
the base time. Decoding resolves base values and returns the records plus a ``{name: value}``
view. The plaintext is authenticated but still untrusted input (a compromised device is a
hostile device): decoding is bounded and raises :class:`MalformedPayload` on anything odd.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

import cbor2

from .errors import MalformedPayload

# RFC 8428 §6 CBOR labels
BVER, BN, BT, BU, BV, BS = -1, -2, -3, -4, -5, -6
N, U, V, VS, VB, S, T, UT, VD = 0, 1, 2, 3, 4, 5, 6, 7, 8

Value = Union[float, int, str, bool, bytes]

_VALUE_LABELS = (V, VS, VB, VD)
_KNOWN = {BVER, BN, BT, BU, BV, BS, N, U, V, VS, VB, S, T, UT, VD}
MAX_PLAINTEXT = 16384
MAX_RECORDS = 256


@dataclass(frozen=True)
class Record:
    """One resolved SenML record."""

    name: str
    value: Value | None
    unit: str | None = None
    time: float | None = None
    sum: float | None = None


def encode(
    reading: Mapping[str, Any], time: float | None = None, units: Mapping[str, str] | None = None
) -> bytes:
    """Encode ``{name: value}`` (numbers, strings, booleans, bytes) as a CBOR SenML pack."""
    if not reading:
        raise ValueError("a reading needs at least one value")
    pack = []
    for i, (name, value) in enumerate(reading.items()):
        if not isinstance(name, str) or not name:
            raise ValueError("SenML names must be non-empty strings")
        rec: dict[int, Any] = {N: name}
        if i == 0 and time is not None:
            rec[BT] = time
        if isinstance(value, bool):
            rec[VB] = value
        elif isinstance(value, (int, float)):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name}: SenML values must be finite")
            rec[V] = value
        elif isinstance(value, str):
            rec[VS] = value
        elif isinstance(value, (bytes, bytearray)):
            rec[VD] = bytes(value)
        else:
            raise TypeError(f"{name}: unsupported value type {type(value).__name__}")
        if units and name in units:
            rec[U] = units[name]
        pack.append(rec)
    return cbor2.dumps(pack, canonical=True)


def loads(plaintext: bytes) -> Any:
    """Decode authenticated CBOR with tight bounds; raise :class:`MalformedPayload`."""
    if len(plaintext) > MAX_PLAINTEXT:
        raise MalformedPayload("payload exceeds the maximum size")
    try:
        return cbor2.loads(
            plaintext, max_depth=16, allow_indefinite=False, allow_duplicate_keys=False
        )
    except Exception as exc:  # cbor2 raises several types on hostile input
        raise MalformedPayload(f"payload is not valid CBOR ({type(exc).__name__})") from None


def is_pack(obj: Any) -> bool:
    """Whether a decoded payload has the shape of a SenML pack (a non-empty list of maps)."""
    return isinstance(obj, list) and bool(obj) and all(isinstance(r, dict) for r in obj)


def resolve(pack: list[dict[Any, Any]]) -> list[Record]:
    """Resolve base values (RFC 8428 §4.6) into full records; raise :class:`MalformedPayload`."""
    if len(pack) > MAX_RECORDS:
        raise MalformedPayload("too many SenML records")
    bn, bt, bu, bv, bs = "", 0, None, 0, 0
    timed = False  # whether any base time has been seen so far in the pack
    out: list[Record] = []
    for rec in pack:
        for label in rec:
            if not isinstance(label, int) or label not in _KNOWN:
                if isinstance(label, int) or (isinstance(label, str) and label.endswith("_")):
                    raise MalformedPayload(f"SenML record has an unknown label {label!r}")
        bn = _typed(rec, BN, str, bn)
        bt = _typed(rec, BT, (int, float), bt)
        timed = timed or BT in rec
        bu = _typed(rec, BU, str, bu)
        bv = _typed(rec, BV, (int, float), bv)
        bs = _typed(rec, BS, (int, float), bs)
        name = bn + _typed(rec, N, str, "")
        if not name:
            raise MalformedPayload("SenML record without a name")
        values = [label for label in _VALUE_LABELS if label in rec]
        if len(values) > 1:
            raise MalformedPayload(f"SenML record {name!r} has more than one value")
        value: Value | None = None
        if values:
            label = values[0]
            kinds = {V: (int, float), VS: str, VB: bool, VD: bytes}[label]
            value = _typed(rec, label, kinds, None)
            if label == V:
                value = bv + value  # type: ignore[operator]
        elif BV in rec:
            value = bv
        s = rec.get(S)
        if s is not None and (not isinstance(s, (int, float)) or isinstance(s, bool)):
            raise MalformedPayload("SenML sum is not a number")
        if value is None and s is None:
            raise MalformedPayload(f"SenML record {name!r} has no value")
        unit = _typed(rec, U, str, bu)
        t = bt + _typed(rec, T, (int, float), 0)
        out.append(
            Record(
                name,
                value,
                unit,
                t if (timed or T in rec) else None,
                None if s is None else bs + s,
            )
        )
    return out


def _typed(rec: Mapping[Any, Any], label: int, kinds: Any, default: Any) -> Any:
    if label not in rec:
        return default
    v = rec[label]
    if not isinstance(v, kinds) or (
        kinds is not bool
        and isinstance(v, bool)
        and bool not in (kinds if isinstance(kinds, tuple) else (kinds,))
    ):
        raise MalformedPayload(f"SenML label {label} has the wrong type")
    if isinstance(v, float) and not math.isfinite(v):
        raise MalformedPayload(f"SenML label {label} is not finite")
    return v
