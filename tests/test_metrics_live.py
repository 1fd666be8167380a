"""A running ingest exposes its Prometheus series (--metrics), and promtool accepts the scrape."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request

import pytest
from mosquitto import Proc, free_port, wait_until

from twinlink.testing import VirtualCable
from twinlink.transport.serial import SerialLink


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def _value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def test_serve_serial_exposes_frames_readings_events_and_devices(rig):
    dev = rig.device("pump")
    rig.provision("valve")
    port = free_port()
    try:
        with VirtualCable() as cable:
            serve = Proc(["serve", "--serial", cable.b, "--db", str(rig.db), "--twin-key",
                          str(rig.twin_key_path), "--metrics", f"127.0.0.1:{port}"])
            wait_until(lambda: "serving" in serve.stderr() or serve.p.poll() is not None, 20,
                       what="serve to start")
            link = SerialLink(cable.a)
            try:
                frames = [dev.seal({"temp": 20.0 + i}) for i in range(5)]
                for f in frames:
                    link.send(f)
                link.send(frames[0])  # a replay
                wait_until(lambda: _value(_scrape(port), 'twinlink_frames_total{result="replay"}')
                           == 1, 20, what="the replay to be counted")
                # devices by state come from the once-a-second sweep
                wait_until(lambda: _value(_scrape(port), 'twinlink_devices{state="active"}')
                           == 2, 20, what="devices by state")
                text = _scrape(port)
            finally:
                link.close()
                serve.p.terminate()
                serve.wait(30)
    finally:
        dev.close()
    assert _value(text, 'twinlink_frames_total{result="stored"}') == 5
    assert _value(text, "twinlink_readings_stored_total") == 5
    assert _value(text, 'twinlink_events_total{type="frame.replay"}') == 1
    assert 'twinlink_device_last_seen_timestamp_seconds{device="pump"}' in text
    assert "twinlink_ingest_latency_seconds_bucket" in text
    assert 'twinlink_build_info{backend=' in text
    if shutil.which("promtool") is None:
        pytest.skip("promtool (Debian's prometheus package) is not installed")
    check = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                           capture_output=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
