"""What the dashboard shows, computed from a :class:`~twinlink.store.TwinStore` alone.

Pages, the JSON API and the stream all take their data from here, so the HTML and the JSON can
never disagree. Everything returned is JSON-ready (times are Unix seconds as floats, like the
store's rows). Only the store interface is used (no SQL), so a PostgreSQL store works as is.

Keys the detection work adds later are shown when present and never required: a reading's
``flags`` (``{series: QARTOD flag}``) and a status's ``qc`` and ``liveness``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any, Optional

from .. import events as _events
from ..store import ReadingRow, TwinStore

#: QARTOD flags (IOOS): what the dashboard calls them.
QC_LABELS = {1: "pass", 2: "not evaluated", 3: "suspect", 4: "fail", 9: "missing"}
#: How bad a flag is, for "the worst flag of a device" (missing is not worse than suspect).
_QC_RANK = {1: 0, 2: 1, 9: 2, 3: 3, 4: 4}

#: Device health, as the fleet page shows it.
HEALTH = ("online", "silent", "never_seen", "revoked", "window_lost")

#: How many events the filtered views scan at most (the store filters by device only; type,
#: outcome and time are filtered here).
SCAN_LIMIT = 20_000
PAGE_LIMIT = 1000


def _num(v: Any) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def qc_flag(value: Any) -> Optional[int]:
    """A QARTOD flag from what the store may give: an int, or a mapping with ``flag``."""
    if isinstance(value, Mapping):
        value = value.get("flag")
    if type(value) is int and value in QC_LABELS:
        return value
    return None


def worst_flag(flags: Iterable[Any]) -> Optional[int]:
    """The worst QARTOD flag among ``flags`` (None when none is known)."""
    worst: Optional[int] = None
    for f in flags:
        flag = qc_flag(f)
        if flag is not None and (worst is None or _QC_RANK[flag] > _QC_RANK[worst]):
            worst = flag
    return worst


def qc_summary(qc: Any) -> Optional[int]:
    """The device's worst current flag from a status's ``qc`` (``{series: flag}``, a flag, or
    a mapping with ``flag``/``worst``); None when the store has no QC state."""
    if qc is None:
        return None
    direct = qc_flag(qc)
    if direct is not None:
        return direct
    if isinstance(qc, Mapping):
        if "worst" in qc:
            return qc_flag(qc["worst"])
        series = qc.get("series")
        values = series.values() if isinstance(series, Mapping) else qc.values()
        return worst_flag(values)
    return None


def series_flags(status: Mapping[str, Any]) -> dict[str, int]:
    """``{series: flag}`` of a status's ``qc`` when it has per-series flags."""
    qc = status.get("qc")
    if not isinstance(qc, Mapping):
        return {}
    inner = qc.get("series")
    series: Mapping[Any, Any] = inner if isinstance(inner, Mapping) else qc
    out = {}
    for name, v in series.items():
        flag = qc_flag(v)
        if isinstance(name, str) and flag is not None:
            out[name] = flag
    return out


def health(status: Mapping[str, Any], now: float, silent_after: float) -> str:
    """online | silent | never_seen | revoked | window_lost.

    Revocation and a lost window come from the registry. Otherwise the store's ``liveness``
    (from the detection engine) decides when present; without it, a device is silent when its
    last accepted frame is older than ``silent_after`` seconds.
    """
    if status.get("status") == "revoked":
        return "revoked"
    if status.get("window_lost"):
        return "window_lost"
    live = status.get("liveness")
    if isinstance(live, Mapping):
        live = live.get("state")
    if live in ("online", "silent"):
        return str(live)
    last = _num(status.get("last_seen"))
    if last is None:
        return "never_seen"
    return "silent" if now - last > silent_after else "online"


def fleet_row(status: Mapping[str, Any], now: float, silent_after: float) -> dict[str, Any]:
    """One device as the fleet lists it."""
    row = {k: status.get(k) for k in ("name", "kid", "profile", "status", "fingerprint",
                                      "last_seen", "last_seq", "accepted", "refused",
                                      "window_lost", "epoch")}
    row["health"] = health(status, now, silent_after)
    row["qc"] = qc_summary(status.get("qc"))
    if "liveness" in status:
        row["liveness"] = status["liveness"]
    return row


def fleet(store: TwinStore, silent_after: float, now: Optional[float] = None
          ) -> list[dict[str, Any]]:
    """Every registered device, by name, with health, counters and QC state."""
    t = time.time() if now is None else now
    return [fleet_row(store.status(d.name), t, silent_after) for d in store.devices()]


def reading(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored reading as the API and the stream give it (the store row; ``flags`` kept)."""
    return dict(row)


def event(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored event as the API and the stream give it: the full catalogue record
    (docs/EVENTS.md) plus ``audit`` (an operator action or context change, not a refusal)."""
    rec = _events.normalise(row)
    try:
        rec["audit"] = _events.get(rec["type"]).audit
    except KeyError:
        rec["audit"] = False
    return rec


def device_detail(store: TwinStore, name: str, silent_after: float,
                  now: Optional[float] = None,
                  recent: Optional[list[ReadingRow]] = None) -> dict[str, Any]:
    """One device: registry entry, counters, window, health, QC, latest value per series (with
    unit and QC flag) and the provenance of its newest reading (the last of ``recent`` when
    the caller has read the device's newest readings already). Raises UnknownDevice."""
    t = time.time() if now is None else now
    st = store.status(name)
    out: dict[str, Any] = dict(st)
    out["health"] = health(st, t, silent_after)
    out["qc"] = qc_summary(st.get("qc"))
    flags = series_flags(st)
    latest = store.readings(name, 1) if recent is None else recent
    newest = latest[-1] if latest else None
    reading_flags = newest.get("flags") if newest is not None else None
    series = []
    for sname, s in sorted(st["state"].items()):
        flag = flags.get(sname)
        if flag is None and isinstance(reading_flags, Mapping):
            flag = qc_flag(reading_flags.get(sname))
        series.append({"name": sname, "value": s.get("value"), "unit": s.get("unit"),
                       "time": s.get("time"), "seq": s.get("seq"), "flag": flag})
    out["series"] = series
    out["provenance"] = None if newest is None else newest.get("provenance")
    out["source"] = None if newest is None else newest.get("source")
    out["latest_reading"] = None if newest is None else newest.get("id")
    return out


# -- events, filtered --------------------------------------------------------------------------


class EventFilter:
    """Which events a view wants: device (done by the store), types, outcomes, time
    [since, until) and whether audit events count."""

    def __init__(self, device: Optional[str] = None, types: Iterable[str] = (),
                 outcomes: Iterable[str] = (), since: Optional[float] = None,
                 until: Optional[float] = None, audit: bool = True) -> None:
        self.device = device
        self.types = frozenset(types)
        self.outcomes = frozenset(outcomes)
        self.since, self.until, self.audit = since, until, audit

    @property
    def local(self) -> bool:
        """Whether filtering beyond the device happens here (not in the store)."""
        return bool(self.types or self.outcomes or self.since is not None
                    or self.until is not None)

    def key(self) -> tuple[Any, ...]:
        return (self.device, self.types, self.outcomes, self.since, self.until, self.audit)

    def matches(self, record: Mapping[str, Any]) -> bool:
        if self.types and record["type"] not in self.types:
            return False
        if self.outcomes and record["outcome"] not in self.outcomes:
            return False
        t = record["time"]
        if self.since is not None and t < self.since:
            return False
        return not (self.until is not None and t >= self.until)


def newest_events(store: TwinStore, flt: EventFilter, limit: int,
                  scan: int = SCAN_LIMIT) -> tuple[list[dict[str, Any]], bool]:
    """The newest ``limit`` events matching ``flt``, oldest first, and whether every stored
    event of the device was looked at (False: only the newest ``scan`` were)."""
    rows = store.events(flt.device, scan if flt.local else limit, audit=flt.audit)
    complete = len(rows) < (scan if flt.local else limit) or not flt.local
    recs = [r for r in map(event, rows) if flt.matches(r)]
    return recs[-limit:], complete


def events_after(store: TwinStore, flt: EventFilter, after_id: int, limit: int,
                 scan: int = SCAN_LIMIT) -> tuple[list[dict[str, Any]], int, bool]:
    """Up to ``limit`` events matching ``flt`` with an id above ``after_id``, oldest first; the
    ``after_id`` of the next page; and whether more may follow at once (False: the store had
    nothing further when asked).

    The next cursor is the last id *looked at*, matching or not (at most ``scan`` are looked
    at per call), so paging never skips and never repeats, even when few events match.
    """
    out: list[dict[str, Any]] = []
    cursor = after_id
    budget = max(scan, limit)
    while budget > 0:
        page = store.events(flt.device, min(PAGE_LIMIT, budget), after_id=cursor,
                            audit=flt.audit)
        budget -= len(page)
        for row in page:
            cursor = row["id"]
            rec = event(row)
            if flt.matches(rec):
                out.append(rec)
                if len(out) >= limit:
                    return out, cursor, True
        if len(page) < PAGE_LIMIT:
            return out, cursor, False
    return out, cursor, True


def newest_ids(store: TwinStore) -> tuple[int, int]:
    """The ids of the newest stored reading and event (0 when there is none)."""
    r = store.readings(None, 1)
    e = store.events(None, 1)
    return (r[-1]["id"] if r else 0), (e[-1]["id"] if e else 0)
