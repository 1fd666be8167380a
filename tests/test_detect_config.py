"""Detection configuration (resolution order, JSON, TOML, validation) and persisted state."""

from __future__ import annotations

import json

import pytest

from tests.detect_helpers import Feed
from twinlink.detect import (
    EVENT_TYPES,
    FAIL,
    PASS,
    DetectConfig,
    DetectConfigError,
    Detector,
    load_toml,
    loads_toml,
)
from twinlink.errors import TwinlinkError

TOML = """
[defaults]
spike_k = 10
max_series = 64

[units."Cel"]
min = -40
max = 125

[device."pump-17"]
interval = 30
disable = ["clock_skew", "drift"]

[series."*".temp]
max = 90

[series."pump-17".temp]
max = 60
flat_count = 20
"""


def test_defaults_need_no_configuration():
    cfg = DetectConfig()
    p = cfg.series_params("d", "temp", "Cel")
    assert (p.min, p.max, p.max_rate, p.spike_k) == (-273.15, 10000.0, 0.5, 8.0)
    assert p.tests == {"gross_range", "spike", "rate_of_change", "flat_line", "drift"}
    w = cfg.series_params("d", "power", "W")
    assert "spike" not in w.tests and "drift" not in w.tests and w.max_rate is None
    d = cfg.device_params("d")
    assert d.interval is None and d.silent_factor == 3.0 and d.max_series == 256


def test_resolution_order_later_wins():
    cfg = loads_toml(TOML)
    p = cfg.series_params("pump-17", "temp", "Cel")
    assert (p.min, p.max, p.flat_count, p.spike_k) == (-40.0, 60.0, 20, 10.0)
    assert "drift" not in p.tests
    other = cfg.series_params("pump-18", "temp", "Cel")
    assert (other.min, other.max, other.flat_count) == (-40.0, 90.0, 10)
    assert "drift" in other.tests
    d = cfg.device_params("pump-17")
    assert d.interval == 30.0 and "clock_skew" not in d.tests and d.max_series == 64


def test_json_round_trip_and_toml_file(tmp_path):
    cfg = loads_toml(TOML)
    again = DetectConfig.from_json(json.loads(json.dumps(cfg.to_json())))
    assert again == cfg
    path = tmp_path / "qc.toml"
    path.write_text(TOML)
    assert load_toml(path) == cfg
    assert DetectConfig().to_json() == {}


@pytest.mark.parametrize("text,fragment", [
    ("[defaults]\nspike_k = -1", "spike_k must be positive"),
    ("[defaults]\nspike_k = 'high'", "spike_k must be a number"),
    ("[defaults]\nbogus = 1", "unknown key 'bogus'"),
    ("[bogus]\nx = 1", "unknown section"),
    ("[device.d]\ndisable = ['telepathy']", "list of test names"),
    ("[series.d.t]\nmin = 5\nmax = 1", "min is above max"),
    ("[series.d.t]\ninterval = 5", "unknown key 'interval'"),
    ("[defaults]\nmax_series = 2.5", "whole number"),
    ("[defaults]\nspike_k = nan", "finite"),
    ("not toml [", "not valid TOML"),
])
def test_bad_configuration_is_a_typed_error_naming_the_key(text, fragment):
    with pytest.raises(DetectConfigError, match=fragment) as info:
        loads_toml(text)
    assert isinstance(info.value, TwinlinkError) and info.value.reason == "config"


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(DetectConfigError, match="cannot read"):
        load_toml(tmp_path / "missing.toml")


def test_configured_bounds_apply_and_configure_keeps_learned_state():
    f = Feed()
    f.run(40)
    assert f.temp(70.0).flags != [FAIL]  # a jump (a spike candidate), not out of range
    f.det.configure(DetectConfig(series={"dev": {"temp": {"max": 50}}}))
    assert f.temp(70.0).tests == [("gross_range",)]
    assert f.det.state("dev")["series"]["temp"]["baseline"] is True  # still learned


def test_a_test_switched_off_is_not_evaluated():
    cfg = DetectConfig(series={"dev": {"temp": {"disable": ["gross_range"]}}})
    f = Feed(Detector(cfg))
    f.run(20)
    v = f.temp(-500.0)
    assert v.flags != [FAIL] and "gross_range" not in v.tests[0]


def test_every_event_type_has_a_severity_and_a_meaning():
    for kind, (severity, meaning) in EVENT_TYPES.items():
        assert 0 <= severity <= 10 and meaning and kind.count(".") >= 1


def test_exported_state_survives_a_restart_and_keeps_detecting():
    f = Feed()
    f.run(200)
    saved = json.loads(json.dumps(f.det.export_state()))  # through real JSON
    fresh = Detector()
    assert fresh.import_state(saved) == 1
    g = Feed(fresh)
    g.t, g.seq, g.rnd = f.t, f.seq, f.rnd
    v = g.temp()
    assert v.flags == [PASS]  # the baseline came along: no "not evaluated" warm-up
    g.temp(g.normal() + 2.0)
    g.temp()
    assert "value.spike" in g.types()
    assert fresh.state("dev")["stream"]["interval"] == pytest.approx(60.0, rel=0.01)


@pytest.mark.parametrize("damage", [
    lambda s: s["devices"]["dev"]["series"]["temp"].update(m="nan"),
    lambda s: s["devices"]["dev"]["series"]["temp"].update(dq=[1.0] * 10_000),
    lambda s: s["devices"]["dev"]["series"]["temp"].update(clim=[1.0]),
    lambda s: s["devices"]["dev"]["stream"].update(last_seq="12"),
    lambda s: s["devices"]["dev"]["series"]["temp"].update(active={"evil": [1, 1]}),
    lambda s: s["devices"]["dev"].update(series=[]),
])
def test_damaged_state_is_dropped_per_device_not_raised(damage):
    f = Feed()
    f.run(50)
    saved = json.loads(json.dumps(f.det.export_state()))
    damage(saved)
    fresh = Detector()
    assert fresh.import_state(saved) == 0
    assert fresh.state("dev") == {}
    assert fresh.import_state({"version": 99}) == 0
    assert fresh.import_state("garbage") == 0
