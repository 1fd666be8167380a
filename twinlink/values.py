"""JSON renderings of decoded payload values (RFC 8259 text, never bare NaN/Infinity).

The payload decoder admits only what a SenML pack in CBOR needs (integers within 64 bits,
finite floats, text, bytes, booleans, null, arrays, maps with integer or text keys), so every
stored value has an exact JSON form: bytes become lowercase hex text, map keys become text.
:func:`to_json` also copes with anything else (a raw value from a caller), replacing what JSON
cannot hold instead of failing.
"""

from __future__ import annotations

import json
import math
from typing import Any


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    return repr(value)


_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":"), default=_default,
                         ensure_ascii=False)


def dumps_json(value: Any) -> str:
    """Compact JSON text of a decoded value (bytes as hex). Never raises for a decoded payload;
    for other input it falls back to :func:`to_json`."""
    try:
        return _JSON.encode(value)  # one shared encoder: the C fast path, no per-call setup
    except (ValueError, TypeError, RecursionError):  # NaN/infinity, odd keys, deep nesting
        return json.dumps(to_json(value), separators=(",", ":"), ensure_ascii=False)


def to_json(value: Any, _depth: int = 0) -> Any:
    """Make a value JSON-friendly: bytes -> hex text, keys -> text, non-finite floats -> None,
    anything else -> its repr; nesting deeper than 32 is cut off as ``"…"``."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if _depth > 32:
        return "…"
    if isinstance(value, dict):
        return {str(to_json(k, _depth + 1)): to_json(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v, _depth + 1) for v in value]
    return repr(value)
