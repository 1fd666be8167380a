"""Detection configuration: built-in defaults, per-unit bounds, per-device and per-series overrides.

A :class:`DetectConfig` is plain data: :meth:`DetectConfig.to_json` gives a JSON-friendly dict
(what the twin store keeps) and :meth:`DetectConfig.from_json` / :func:`load_toml` read it back.
The format is documented in ``docs/DETECTION.md``. Resolution order for one series, later wins::

    built-in  <  unit defaults (units.py)  <  [units."U"]  <  [defaults]  <  [device."D"]
              <  [series."*"."N"]  <  [series."D"."N"]

Every value is checked when the config is built; a bad one raises :class:`DetectConfigError`
naming the key, never later on the ingest path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import TwinlinkError
from .units import defaults_for

VALUE_TESTS = ("gross_range", "spike", "rate_of_change", "flat_line", "drift")
STREAM_TESTS = ("silence", "seq_gap", "seq_jump", "delayed", "clock_skew", "rate")
ALL_TESTS = VALUE_TESTS + STREAM_TESTS

#: Series-level keys and their built-in defaults (None: taken from the unit, or learned).
SERIES_DEFAULTS: dict[str, Any] = {
    "min": None,            # gross range, fail (flag 4) outside; default: the unit's bounds
    "max": None,
    "suspect_min": None,    # operator span, suspect (flag 3) outside; default: none
    "suspect_max": None,
    "max_rate": None,       # units per second, suspect above; default: the unit's, else none
    "spike_k": 8.0,         # spike threshold in robust sigmas of the first differences
    "flat_count": 10,       # a run of identical readings this long (at least) is suspect
    "flat_eps": 0.0,        # "identical" means within this
    "drift_k": 4.5,         # drift threshold in learned sigmas of the smoothed residual
    "baseline": 16,         # readings before the learned tests are evaluated (flag 2 before)
}

#: Device-level keys and their built-in defaults.
DEVICE_DEFAULTS: dict[str, Any] = {
    "interval": None,       # expected seconds between frames; default: learned
    "silent_factor": 3.0,   # device.silent after this many intervals without a frame
    "jump": 4096,           # a sequence advance beyond this (and beyond elapsed time) is a jump
    "delay": 30.0,          # stream.delayed: SenML time this many seconds later than usual
    "skew": 30.0,           # device.clock_skew: time this far in the future, or going back
    "rate_factor": 4.0,     # device.rate_anomaly: frames this many times faster than usual
    "size_factor": 2.0,     # ... or frames this many times larger than the largest usual one
    "hold_down": 60.0,      # seconds over which repeated gap/jump events are counted as one
    "max_series": 256,      # distinct series per device; more raise detect.series_cap once
}

_INT_KEYS = {"flat_count", "baseline", "jump", "max_series"}
_NON_NEGATIVE = {"flat_eps", "max_rate", "interval", "delay", "skew", "hold_down"}
_POSITIVE = {"spike_k", "drift_k", "silent_factor", "rate_factor", "size_factor", "flat_count",
             "baseline", "jump", "max_series", "interval"}
_SWITCHES = ("enable", "disable")


class DetectConfigError(TwinlinkError, ValueError):
    """A detection configuration value is missing, of the wrong type or out of range."""

    reason = "config"


def _check_number(key: str, value: Any, where: str) -> Any:
    if value is None and key in ("min", "max", "suspect_min", "suspect_max", "max_rate",
                                 "interval"):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DetectConfigError(f"{where}: {key} must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise DetectConfigError(f"{where}: {key} must be finite")
    if abs(value) > 1e300:  # before int()/float(): a huge JSON integer overflows a float
        raise DetectConfigError(f"{where}: {key} is out of range")
    if key in _INT_KEYS:
        if value != int(value):
            raise DetectConfigError(f"{where}: {key} must be a whole number")
        value = int(value)
    else:
        value = float(value)
    if key in _POSITIVE and value <= 0:
        raise DetectConfigError(f"{where}: {key} must be positive")
    if key in _NON_NEGATIVE and value < 0:
        raise DetectConfigError(f"{where}: {key} must not be negative")
    return value


def _check_table(table: Any, allowed: Mapping[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(table, Mapping):
        raise DetectConfigError(f"{where} must be a table")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key in _SWITCHES:
            if not isinstance(value, (list, tuple)) or not all(
                    isinstance(v, str) and v in ALL_TESTS for v in value):
                raise DetectConfigError(
                    f"{where}: {key} must be a list of test names from {', '.join(ALL_TESTS)}")
            out[key] = sorted(set(value))
        elif key in allowed:
            out[key] = _check_number(key, value, where)
        else:
            raise DetectConfigError(f"{where}: unknown key {key!r}")
    lo, hi = out.get("min"), out.get("max")
    if lo is not None and hi is not None and lo > hi:
        raise DetectConfigError(f"{where}: min is above max")
    return out


_SERIES_OR_DEVICE = {**SERIES_DEFAULTS, **DEVICE_DEFAULTS}


@dataclass(frozen=True)
class SeriesParams:
    """The resolved parameters of one series (computed once, when the series is first seen)."""

    min: float
    max: float
    suspect_min: Optional[float]
    suspect_max: Optional[float]
    max_rate: Optional[float]
    spike_k: float
    flat_count: int
    flat_eps: float
    drift_k: float
    baseline: int
    tests: frozenset[str]


@dataclass(frozen=True)
class DeviceParams:
    """The resolved parameters of one device."""

    interval: Optional[float]
    silent_factor: float
    jump: int
    delay: float
    skew: float
    rate_factor: float
    size_factor: float
    hold_down: float
    max_series: int
    tests: frozenset[str]


def _apply_switches(tests: set[str], table: Mapping[str, Any]) -> None:
    tests.difference_update(table.get("disable", ()))
    tests.update(table.get("enable", ()))


@dataclass
class DetectConfig:
    """Detection settings; the empty config means "built-in defaults everywhere".

    ``defaults`` holds any series or device key; ``units`` maps a SenML unit to series keys;
    ``device`` maps a device name to series or device keys; ``series`` maps a device name (or
    ``"*"``, every device) to ``{series name: series keys}``. Raises :class:`DetectConfigError`
    on construction if anything is invalid.
    """

    defaults: dict[str, Any] = field(default_factory=dict)
    units: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: dict[str, dict[str, Any]] = field(default_factory=dict)
    series: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.defaults = _check_table(self.defaults, _SERIES_OR_DEVICE, "[defaults]")
        self.units = {str(u): _check_table(t, SERIES_DEFAULTS, f"[units.{u!r}]")
                      for u, t in _mapping(self.units, "[units]").items()}
        self.device = {str(d): _check_table(t, _SERIES_OR_DEVICE, f"[device.{d!r}]")
                       for d, t in _mapping(self.device, "[device]").items()}
        self.series = {
            str(d): {str(n): _check_table(t, SERIES_DEFAULTS, f"[series.{d!r}.{n!r}]")
                     for n, t in _mapping(names, f"[series.{d!r}]").items()}
            for d, names in _mapping(self.series, "[series]").items()}

    # -- resolution -------------------------------------------------------------------------

    def series_params(self, device: str, name: str, unit: str | None) -> SeriesParams:
        """The effective parameters of one series."""
        ud = defaults_for(unit)
        p: dict[str, Any] = dict(SERIES_DEFAULTS)
        p.update(min=ud.min, max=ud.max, max_rate=ud.max_rate)
        tests = set(VALUE_TESTS)
        if not ud.drift:
            tests.discard("drift")
        if not ud.spike:
            tests.discard("spike")
        layers = [self.units.get(unit, {}) if unit is not None else {}, self.defaults,
                  self.device.get(device, {}), self.series.get("*", {}).get(name, {}),
                  self.series.get(device, {}).get(name, {})]
        for layer in layers:
            for key, value in layer.items():
                if key in SERIES_DEFAULTS:
                    p[key] = value
            _apply_switches(tests, layer)
        if p["min"] is None:
            p["min"] = ud.min
        if p["max"] is None:
            p["max"] = ud.max
        return SeriesParams(tests=frozenset(tests), **p)

    def device_params(self, device: str) -> DeviceParams:
        """The effective parameters of one device."""
        p: dict[str, Any] = dict(DEVICE_DEFAULTS)
        tests = set(STREAM_TESTS)
        for layer in (self.defaults, self.device.get(device, {})):
            for key, value in layer.items():
                if key in DEVICE_DEFAULTS:
                    p[key] = value
            _apply_switches(tests, layer)
        return DeviceParams(tests=frozenset(tests), **p)

    # -- serialisation ----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict; :meth:`from_json` of it gives an equal config."""
        out: dict[str, Any] = {}
        if self.defaults:
            out["defaults"] = dict(self.defaults)
        if self.units:
            out["units"] = {u: dict(t) for u, t in self.units.items()}
        if self.device:
            out["device"] = {d: dict(t) for d, t in self.device.items()}
        if self.series:
            out["series"] = {d: {n: dict(t) for n, t in names.items()}
                             for d, names in self.series.items()}
        return out

    @classmethod
    def from_json(cls, obj: Any) -> DetectConfig:
        """Build a config from :meth:`to_json` output or parsed TOML; raise
        :class:`DetectConfigError` on unknown sections or bad values."""
        obj = _mapping(obj, "config")
        unknown = set(obj) - {"defaults", "units", "device", "series"}
        if unknown:
            raise DetectConfigError(f"unknown section(s): {', '.join(sorted(map(str, unknown)))}")
        return cls(defaults=dict(obj.get("defaults", {})), units=dict(obj.get("units", {})),
                   device=dict(obj.get("device", {})), series=dict(obj.get("series", {})))


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise DetectConfigError(f"{where} must be a table")
    return dict(value)


def loads_toml(text: str) -> DetectConfig:
    """Parse a detection config from TOML text; raise :class:`DetectConfigError`."""
    try:
        import tomllib  # type: ignore[import-not-found]
    except ImportError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DetectConfigError(f"not valid TOML: {exc}") from None
    return DetectConfig.from_json(data)


def load_toml(path: str | os.PathLike[str]) -> DetectConfig:
    """Read a detection config TOML file; raise :class:`DetectConfigError` (also for an
    unreadable file)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise DetectConfigError(f"cannot read {os.fspath(path)}: {exc.__class__.__name__}") \
            from None
    return loads_toml(text)
