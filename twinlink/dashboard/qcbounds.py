"""Per-device, per-series QC bounds (gross range and suspect span) as the dashboard sets them.

The bounds live in the store's detection configuration (``TwinStore.qc_config``, the
:class:`~twinlink.detect.DetectConfig` document ``twinlink twin qc`` edits), under
``series.<device>.<series>``. Only the four bound keys are touched here; any other setting of a
series (spike threshold, tests on/off) is kept. Running ingests re-read the configuration on
their sweep (``Twin.sweep``, at most 5 s later), so no restart is needed.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, Optional

from ..detect import DetectConfig
from ..detect.config import DetectConfigError
from ..errors import TwinlinkError
from ..naming import printable
from ..store import TwinStore

#: The bound keys an admin may set (gross range: fail outside; suspect span: suspect outside).
BOUND_KEYS = ("min", "max", "suspect_min", "suspect_max")
#: Series one request (and one device's bounds, in all) may name.
MAX_SERIES = 256
#: Longest series name accepted (SenML names are device-supplied; 1 KiB covers any real one).
MAX_NAME = 1024
#: Largest magnitude of a bound (the detection configuration's own limit).
MAX_ABS = 1e300
MAX_REASON = 200


class BoundsError(TwinlinkError, ValueError):
    """A request to set QC bounds is malformed (the dashboard answers 400)."""

    reason = "qc_bounds"


def _shown(name: str) -> str:
    text = printable(name)
    return repr(text if len(text) <= 40 else text[:40] + "…")


def _bound(series: str, key: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BoundsError(f"series {_shown(series)}: {key} must be a number or null")
    if isinstance(value, float) and not math.isfinite(value):
        raise BoundsError(f"series {_shown(series)}: {key} must be finite")
    if abs(value) > MAX_ABS:  # exact for ints too: a huge JSON integer is no float
        raise BoundsError(f"series {_shown(series)}: {key} is out of range (|x| <= 1e300)")
    return float(value)


def _check_span(series: str, bounds: Mapping[str, Optional[float]]) -> None:
    for lo, hi in (("min", "max"), ("suspect_min", "suspect_max")):
        a, b = bounds.get(lo), bounds.get(hi)
        if a is not None and b is not None and a > b:
            raise BoundsError(f"series {_shown(series)}: {lo} {a:g} is above {hi} {b:g}")


def parse(body: Any) -> tuple[dict[str, Optional[dict[str, float]]], str]:
    """Check a request body ``{"series": {NAME: {min, max, suspect_min, suspect_max} | null},
    "reason": "…"}``; return the bounds per series (None: clear that series' bounds) and the
    reason. Raises :class:`BoundsError` naming the first problem."""
    if not isinstance(body, Mapping):
        raise BoundsError("the body must be a JSON object")
    unknown = sorted(set(body) - {"series", "reason"})
    if unknown:
        raise BoundsError(f"unknown key {_shown(str(unknown[0]))}: give series (and reason)")
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise BoundsError(f"reason must be a string of at most {MAX_REASON} characters")
    series = body.get("series")
    if not isinstance(series, Mapping) or not series:
        raise BoundsError("series must be an object: {series name: {min, max, suspect_min, "
                          "suspect_max}}")
    if len(series) > MAX_SERIES:
        raise BoundsError(f"too many series: at most {MAX_SERIES} in one request")
    out: dict[str, Optional[dict[str, float]]] = {}
    for name, table in series.items():
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
            raise BoundsError(f"a series name must be 1 to {MAX_NAME} characters")
        if table is None:
            out[name] = None
            continue
        if not isinstance(table, Mapping):
            raise BoundsError(f"series {_shown(name)}: give an object of bounds or null")
        bad = sorted(set(table) - set(BOUND_KEYS))
        if bad:
            raise BoundsError(f"series {_shown(name)}: unknown key {_shown(str(bad[0]))} "
                              f"(bounds are {', '.join(BOUND_KEYS)})")
        given = {k: _bound(name, k, table[k]) for k in BOUND_KEYS if k in table}
        _check_span(name, given)
        kept = {k: v for k, v in given.items() if v is not None}
        out[name] = kept or None
    return out, reason.strip()


def apply(config: Mapping[str, Any], device: str,
          changes: Mapping[str, Optional[dict[str, float]]],
          units: Mapping[str, Optional[str]]) -> DetectConfig:
    """``config`` (a stored DetectConfig document) with the bounds of ``device``'s series
    replaced by ``changes``; other settings are kept. ``units`` (series -> SenML unit, from the
    twin state) lets the effective bounds be checked too: a ``min`` alone may not lie above the
    unit's default ``max``. Raises :class:`BoundsError`."""
    new = copy.deepcopy(dict(config))
    all_series = new.setdefault("series", {})
    table = all_series.setdefault(device, {})
    for name, bounds in changes.items():
        entry = {k: v for k, v in table.get(name, {}).items() if k not in BOUND_KEYS}
        entry.update(bounds or {})
        if entry:
            table[name] = entry
        else:
            table.pop(name, None)
    if len(table) > MAX_SERIES:
        raise BoundsError(f"a device may have settings for at most {MAX_SERIES} series")
    if not table:
        del all_series[device]
    if not all_series:
        del new["series"]
    try:
        result = DetectConfig.from_json(new)
        for name in changes:
            p = result.series_params(device, name, units.get(name))
            _check_span(name, {"min": p.min, "max": p.max, "suspect_min": p.suspect_min,
                               "suspect_max": p.suspect_max})
    except DetectConfigError as exc:
        raise BoundsError(str(exc)) from None
    return result


def _finite(v: Optional[float]) -> Optional[float]:
    return v if v is not None and math.isfinite(v) else None


def view(store: TwinStore, device: str) -> dict[str, Any]:
    """The QC bounds of one device: per series (every series it has reported or that has
    bounds set) its unit, the bounds set for it here (``set``) and the bounds the detectors
    apply (``effective``: set, else ``[series."*"]``, device, defaults, unit). Raises
    UnknownDevice."""
    units = {n: s.get("unit") for n, s in store.status(device)["state"].items()}
    config = DetectConfig.from_json(store.qc_config())
    configured = config.series.get(device, {})
    series = {}
    for name in sorted(set(units) | set(configured)):
        p = config.series_params(device, name, units.get(name))
        series[name] = {
            "unit": units.get(name),
            "set": {k: v for k, v in configured.get(name, {}).items() if k in BOUND_KEYS},
            "effective": {"min": _finite(p.min), "max": _finite(p.max),
                          "suspect_min": _finite(p.suspect_min),
                          "suspect_max": _finite(p.suspect_max)}}
    return {"device": device, "series": series}


def set_bounds(store: TwinStore, device: str, changes: Mapping[str, Optional[dict[str, float]]],
               why: str) -> dict[str, Any]:
    """Store ``changes`` (from :func:`parse`) for ``device`` with an audit event
    (``device.qc_configured`` naming the device, detail ``why``); return :func:`view` after.

    Read, change and write are not one transaction: a ``twin qc`` run at the same instant may
    be overwritten (the dashboard's own admin actions run one at a time). Raises BoundsError,
    UnknownDevice."""
    units = {n: s.get("unit") for n, s in store.status(device)["state"].items()}
    config = apply(store.qc_config(), device, changes, units)
    store.set_qc_config(config.to_json(), why=why, device=device)
    return view(store, device)


def describe(changes: Mapping[str, Any]) -> str:
    """The series of a change, for an audit event's detail (a few names, escaped)."""
    names = [printable(n)[:40] for n in list(changes)[:5]]
    more = len(changes) - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")
