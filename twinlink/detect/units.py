"""Per-unit defaults for value QC: physical bounds, a physical rate limit, whether drift applies.

Keys are SenML unit symbols (RFC 8428 §12.1 and the RFC 8798 secondary units). Bounds are the
*gross range* (QARTOD's sensor span): a value outside them cannot be a true reading of that
quantity, so it fails (flag 4) without any learned baseline. ``max_rate`` is the fastest a value
of that kind changes in ordinary physical settings (units per second); ``None`` means physics
gives no useful limit (power and current step when a load switches). ``drift`` says whether the
slow-drift test is on by default: it is for environmental sensors, whose known failure mode is
drift, and off for quantities whose level follows usage (power, counters). ``spike`` is off for
electrical loads: a kettle that runs for two minutes is one high sample on a meter read every
five, a genuine single-sample excursion that a spike test cannot tell from a glitch.

Any unit not listed, and a record without a unit, gets :data:`GENERIC`: finite and within the
64-bit range SenML integers may take.
"""

from __future__ import annotations

from typing import NamedTuple, Optional


class UnitDefaults(NamedTuple):
    """Default QC parameters for one SenML unit."""

    min: float
    max: float
    max_rate: Optional[float] = None  # units per second
    drift: bool = False
    spike: bool = True


#: Beyond this magnitude no SenML number is a meaningful measurement (2**64, the integer range).
ABS_MAX = 18446744073709551616.0

GENERIC = UnitDefaults(-ABS_MAX, ABS_MAX)

_INF = ABS_MAX

UNITS: dict[str, UnitDefaults] = {
    # temperature: absolute zero up to what a thermocouple in a furnace reads
    "Cel": UnitDefaults(-273.15, 10000.0, 0.5, True),
    "K": UnitDefaults(0.0, 10273.15, 0.5, True),
    # humidity and ratios
    "%RH": UnitDefaults(0.0, 100.0, 1.0, True),
    "%": UnitDefaults(0.0, 100.0),  # a percentage of something: 0..100
    "%EL": UnitDefaults(0.0, 100.0, 1.0),  # battery level
    "/": UnitDefaults(0.0, 1.0),
    # pressure: a vacuum cannot go below 0; 10 GPa bounds any industrial process
    "Pa": UnitDefaults(0.0, 1e10, 2000.0, True),
    "hPa": UnitDefaults(0.0, 1e8, 20.0, True),
    "kPa": UnitDefaults(0.0, 1e7, 2.0, True),
    "bar": UnitDefaults(0.0, 1e5, 0.02, True),
    # electricity: signed where the quantity can reverse (current, voltage, power export)
    "V": UnitDefaults(-1e6, 1e6),
    "mV": UnitDefaults(-1e9, 1e9),
    "A": UnitDefaults(-1e6, 1e6, spike=False),
    "mA": UnitDefaults(-1e9, 1e9, spike=False),
    "W": UnitDefaults(-1e10, 1e10, spike=False),
    "kW": UnitDefaults(-1e7, 1e7, spike=False),
    "mW": UnitDefaults(-1e13, 1e13, spike=False),
    "VA": UnitDefaults(0.0, 1e10, spike=False),
    "var": UnitDefaults(-1e10, 1e10, spike=False),
    "Wh": UnitDefaults(0.0, _INF),
    "kWh": UnitDefaults(0.0, _INF),
    "J": UnitDefaults(0.0, _INF),
    "Ah": UnitDefaults(-1e9, 1e9),
    "Ohm": UnitDefaults(0.0, _INF),
    "Hz": UnitDefaults(0.0, 1e12),
    "MHz": UnitDefaults(0.0, 1e6),
    # length, mass, speed, light, sound, gas
    "m": UnitDefaults(-1e8, 1e8),
    "kg": UnitDefaults(0.0, 1e9),
    "g": UnitDefaults(0.0, 1e12),
    "m/s": UnitDefaults(-3e8, 3e8),
    "m/s2": UnitDefaults(-1e6, 1e6),
    "lx": UnitDefaults(0.0, 2e5, None, True),  # direct sunlight is about 1.2e5 lx
    "dB": UnitDefaults(-200.0, 300.0),
    "dBm": UnitDefaults(-200.0, 100.0),
    "ppm": UnitDefaults(0.0, 1e6, 100.0, True),
    "ppb": UnitDefaults(0.0, 1e9, 1e5, True),
    "pH": UnitDefaults(-2.0, 16.0, 0.1, True),
    "ug/m3": UnitDefaults(0.0, 1e7, None, True),
    # positions
    "lat": UnitDefaults(-90.0, 90.0),
    "lon": UnitDefaults(-180.0, 180.0),
    "rad": UnitDefaults(-1e6, 1e6),
    # counts and data
    "count": UnitDefaults(0.0, _INF),
    "B": UnitDefaults(0.0, _INF),
    "bit": UnitDefaults(0.0, _INF),
    "bit/s": UnitDefaults(0.0, 1e13),
    "B/s": UnitDefaults(0.0, 1e12),
    "1/s": UnitDefaults(0.0, 1e12),
    "beat/min": UnitDefaults(0.0, 400.0),
    "s": UnitDefaults(-_INF, _INF),
    "ms": UnitDefaults(-_INF, _INF),
}


def defaults_for(unit: str | None) -> UnitDefaults:
    """The defaults of a SenML unit; :data:`GENERIC` for an unknown unit or none."""
    if unit is None:
        return GENERIC
    return UNITS.get(unit, GENERIC)
