"""The shape of everything the CLI prints: JSON objects, timestamps, terminal-safe text.

The library returns Python objects (:class:`~twinlink.twin.Reading`, refusals, store rows);
this module alone decides what ``twinlink`` prints for them, so the JSON of ``open``,
``monitor --json`` and ``serve --json`` is one shape (docs/CLI.md, "JSON output").

- Timestamps are ISO 8601 in UTC with milliseconds (``2026-11-30T16:38:27.123Z``), in JSON and
  in human output alike; a time outside years 1..9999 (a device may claim anything) stays the
  number it was.
- JSON is RFC 8259 text with non-ASCII escaped, so a hostile string cannot move a terminal's
  cursor even when JSON is printed on one.
- Human output passes every name and device-supplied text through
  :func:`twinlink.naming.printable`.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO, Union

from ..errors import TwinlinkError
from ..naming import printable
from ..store import DeviceRecord, DeviceStatus, EventRow, ReadingRow
from ..timefmt import iso, parse_time  # noqa: F401  (the CLI shapes and reads times here)
from ..twin import Reading, refusal_json
from ..values import to_json

Result = Union[Reading, TwinlinkError]


def dumps(obj: Any) -> str:
    """Compact RFC 8259 JSON, ASCII only (values that JSON cannot hold are made to fit)."""
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        return json.dumps(to_json(obj), separators=(",", ":"), allow_nan=False)


def emit(obj: Any, out: TextIO | None = None) -> None:
    """Write one JSON line and flush it (consumers read live)."""
    stream = out if out is not None else sys.stdout
    stream.write(dumps(obj) + "\n")
    stream.flush()


# -- frames: open, monitor, serve, inspect -----------------------------------------------------


def reading_json(r: Reading) -> dict[str, Any]:
    """An accepted frame: ``{"ok": true, "device", "seq", "payload", "provenance"[, "time"]}``;
    ``time`` is the reading's own (SenML) time when it carried one."""
    out: dict[str, Any] = {"ok": True, "device": r.device, "seq": r.seq,
                           "payload": to_json(r.payload), "provenance": r.provenance}
    if r.time is not None:
        out["time"] = iso(r.time)
    return out


def result_json(res: Result) -> dict[str, Any]:
    """One line of ``open``, ``monitor --json`` and ``serve --json``."""
    return reading_json(res) if isinstance(res, Reading) else refusal_json(res)


def verdict_json(res: Result) -> dict[str, Any]:
    """``inspect --db``'s verdict: what ``open`` would do with the frame, nothing stored."""
    if isinstance(res, Reading):
        return {"ok": True, "device": res.device, "status": "active", "window": "fresh",
                "plaintext": res.plaintext.hex(), "payload": to_json(res.payload)}
    return refusal_json(res)


# -- the registry and the store -----------------------------------------------------------------


def device_json(d: DeviceRecord) -> dict[str, Any]:
    """One registered device (``twin list``, and the admin commands with ``--json``)."""
    return {"name": d.name, "kid": d.kid.hex(), "profile": d.profile, "status": d.status,
            "fingerprint": d.fingerprint, "epoch": d.epoch,
            "registered_at": iso(d.registered_at)}


def status_json(st: DeviceStatus) -> dict[str, Any]:
    """``twin show``: the store's status with every timestamp in ISO form."""
    out: dict[str, Any] = dict(st)
    out["registered_at"] = iso(st["registered_at"])
    out["last_seen"] = iso(st["last_seen"])
    out["state"] = {n: {**s, "value": to_json(s["value"]), "time": iso(s["time"])}
                    for n, s in st["state"].items()}
    return out


def event_json(e: EventRow) -> dict[str, Any]:
    """``twin events``: one security or audit event."""
    return {**e, "at": iso(e["at"])}


def reading_row_json(row: ReadingRow, units: dict[str, str | None] | None = None
                     ) -> dict[str, Any]:
    """``twin readings --format jsonl``: one stored reading; ``units`` maps series names to
    the unit the twin's state holds for them (only series of this payload are listed)."""
    out: dict[str, Any] = {**row, "received_at": iso(row["received_at"]), "time": iso(row["time"]),
                           "payload": to_json(row["payload"])}
    payload = row["payload"]
    if units is not None and isinstance(payload, dict):
        out["units"] = {n: units.get(n) for n in payload}
    return out


# -- human output -------------------------------------------------------------------------------


def text(value: Any) -> str:
    """Any value as one terminal-safe string (None as ``-``)."""
    return "-" if value is None else printable(str(value))


def value_text(value: Any) -> str:
    """A payload value for a terminal: compact ASCII JSON (strings quoted, bytes as hex)."""
    return dumps(to_json(value))


def lines_printable(block: str) -> str:
    """A multi-line block from elsewhere (a rendered table) with each line made printable."""
    return "\n".join(printable(line) for line in block.split("\n"))
