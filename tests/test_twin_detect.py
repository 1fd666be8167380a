"""The twin flags authentic lies: detectors run in the ingest, flags are stored with readings,
detections go through the event catalogue, liveness comes from sweeps (issue: detection)."""

from __future__ import annotations

import json
import subprocess

from conftest import CLI, cli_env

import twinlink
from twinlink.detect import FAIL, NOT_EVALUATED, PASS


def _feed(twin: twinlink.Twin, dev: twinlink.Device, values: list[float], name: str = "temp"
          ) -> list[twinlink.Reading]:
    out = []
    for v in values:
        r = twin.open(dev.seal({name: v}, time=False))
        out.append(r)
    return out


def test_out_of_range_reading_is_stored_flagged_with_one_event(rig, backend_name):
    dev, twin = rig.device("boiler"), rig.twin()
    twin.store.set_qc_config({"series": {"boiler": {"temp": {"min": 0.0, "max": 120.0}}}})
    twin.close()
    twin = rig.twin()  # a twin started after the change reads it at once
    try:
        normal = _feed(twin, dev, [20.0 + i * 0.1 for i in range(5)])
        assert {r.flags["temp"] for r in normal} <= {PASS, NOT_EVALUATED}
        bad = _feed(twin, dev, [999.0, 998.0])  # signed by the device, and false
        assert bad[0].flags == {"temp": FAIL} and bad[1].flags == {"temp": FAIL}
        rows = twin.store.readings("boiler")
        assert rows[-1]["flags"] == {"temp": FAIL} and "gross_range" in rows[-1]["qc_tests"]["temp"]
        detections = [e for e in twin.store.events("boiler") if e["type"].startswith("value.")]
        # raised on entering the failed state, not for every bad reading
        assert [e["type"] for e in detections] == ["value.out_of_range"]
        assert detections[0]["outcome"] == "detected" and detections[0]["seq"] == bad[0].seq
        _feed(twin, dev, [21.0, 21.1, 21.2, 21.1, 21.0])  # back to normal for a while
        types = [e["type"] for e in twin.store.events("boiler") if e["type"].startswith("value.")]
        assert types == ["value.out_of_range", "value.out_of_range.cleared"]
        assert twin.store.count_readings("boiler") == 12  # flagged readings are stored
        assert twin.store.status("boiler")["refused"] == 0  # a detection is no refusal
    finally:
        twin.close()
        dev.close()


def test_sweep_raises_silence_and_persists_the_qc_view(rig, backend_name):
    dev, twin = rig.device("pump"), rig.twin()
    twin.store.set_qc_config({"device": {"pump": {"interval": 1.0}}})
    twin.close()
    twin = rig.twin()
    try:
        last = _feed(twin, dev, [1.0, 2.0, 3.0])[-1]
        assert twin.sweep() == []  # just arrived: not silent
        import time

        stored = twin.sweep(now=time.time() + 3.5)  # 3 intervals and a bit later
        assert [e.reason for e in stored] == ["device.silent"]
        assert [e["type"] for e in twin.store.events("pump") if e["type"] == "device.silent"]
        assert twin.sweep(now=time.time() + 4.0) == []  # raised once
        twin.flush_detections()
        qc = twin.store.status("pump")["qc"]
        assert "device.silent" in qc["open"] and "temp" in qc["series"]
        _feed(twin, dev, [4.0])
        types = [e["type"] for e in twin.store.events("pump")]
        assert types[-1] == "device.back_online"
        assert last.seq == 2
    finally:
        twin.close()
        dev.close()


def test_detection_off_and_dry_run_leave_no_trace(rig, backend_name):
    dev = rig.device("valve")
    with twinlink.Twin(rig.db, rig.twin_key_path, detect=False) as twin:
        r = twin.open(dev.seal({"temp": 5000.0}, time=False))
        assert r.flags is None and twin.store.readings("valve")[0]["flags"] is None
    with rig.twin() as twin:
        checked = twin.check(dev.seal({"temp": 6000.0}, time=False))
        assert checked.flags is None  # a dry run teaches the detectors nothing
        assert twin.detector is not None and twin.detector.state("valve") == {}
    dev.close()


def test_learned_baselines_survive_a_restart(rig, backend_name):
    dev = rig.device("meter")
    with rig.twin() as twin:
        _feed(twin, dev, [10.0 + (i % 3) for i in range(12)])
        before = twin.detector.state("meter")
    with rig.twin() as twin:  # close() persisted them
        after = twin.detector.state("meter")
    assert after["series"]["temp"]["readings"] == before["series"]["temp"]["readings"] == 12
    dev.close()


def test_twin_qc_and_show_on_the_command_line(rig):
    rig.provision("boiler")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args, "--db", str(rig.db)], capture_output=True,
                              text=True, env=cli_env(), timeout=120, check=True)

    run("twin", "qc", "boiler", "--series", "temp", "--max", "100", "--disable", "spike")
    shown = json.loads(run("twin", "qc", "--json").stdout)
    assert shown["series"]["boiler"]["temp"] == {"max": 100.0, "disable": ["spike"]}
    bad = subprocess.run([*CLI, "twin", "qc", "boiler", "--flat-count", "0", "--db",
                          str(rig.db)], capture_output=True, text=True, env=cli_env(),
                         timeout=120)
    assert bad.returncode != 0 and "flat_count" in bad.stderr and "Traceback" not in bad.stderr
    audit = json.loads(run("twin", "events", "--json").stdout.splitlines()[-1])
    assert audit["type"] == "device.qc_configured"
    dev = rig.device("boiler")
    with rig.twin() as twin:
        _feed(twin, dev, [20.0, 500.0])
    dev.close()
    show = run("twin", "show", "boiler").stdout
    assert "open detections: value.out_of_range temp" in show
    readings = [json.loads(x) for x in run("twin", "readings", "boiler", "--format",
                                           "jsonl").stdout.splitlines()]
    assert readings[-1]["flags"] == {"temp": FAIL}
