"""A sender's outbox and acknowledgement series on ``twinlink bridge --metrics``: a real
mosquitto, a real ``twinlink serve``, a sensor on a real pty; forged and replayed acks published
by a raw client; a frame the twin refuses for good (too old) lands in the dead letters.
``promtool check metrics`` accepts the scrape."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from conftest import CLI, cli_env
from mosquitto import (
    MOSQUITTO,
    AckCapture,
    Broker,
    free_port,
    publish,
    raw_client,
    start_serve,
    stored_count,
    wait_until,
)
from test_bridge import _pty
from test_metrics_live import _scrape

from twinlink import keys

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

pytestmark = [pytest.mark.mqtt,
              pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed"),
              pytest.mark.skipif(os.name != "posix", reason="needs POSIX ptys")]


def _value(text: str, series: str) -> float:
    """The series' value; a series missing from the scrape fails (test_metrics_live's reads
    it as 0)."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no series {series} in the scrape")


def test_bridge_exposes_outbox_dead_letters_and_acks_by_result(rig, tmp_path) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    bundle = rig.provision("gateway")
    kid = keys.Bundle.load(bundle).kid.hex()
    master, port = _pty()
    mport = free_port()
    (tmp_path / "b.toml").write_text(
        "[gateway]\n"
        f"device = {json.dumps(str(bundle))}\n"
        f"state = {json.dumps(str(rig.root / 'state'))}\n"
        f"[output]\nurl = {json.dumps(broker.url)}\nreconnect_max = 0.5\n"
        f"[[sensor]]\nname = \"boiler-1\"\nport = {json.dumps(port)}\n"
        'columns = ["temp", "pressure", "flow", "status"]\nstrings = ["status"]\n')
    serve = start_serve(broker.url, rig.db, rig.twin_key_path)
    raw = raw_client(broker.port)
    capture = AckCapture(raw)
    proc = subprocess.Popen([*CLI, "bridge", "--config", str(tmp_path / "b.toml"),
                             "--metrics", f"127.0.0.1:{mport}", "--duration", "300"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=cli_env())
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        while line.startswith("twinlink: metrics on"):
            line = proc.stderr.readline()
        assert line.startswith("bridge: 1 sensor(s)"), line
        os.write(master, b"".join(b"61.%d,1.8,12,OK\n" % i for i in range(5)))
        wait_until(lambda: stored_count(rig.db) == 5, 60, what="5 readings stored")
        wait_until(lambda: _value(_scrape(mport), "twinlink_outbox_frames_released_total") == 5,
                   30, what="the bridge to release 5 frames")
        wait_until(lambda: len(capture.got) >= 1, 10, what="an ack on the wire")
        text = _scrape(mport)
        assert _value(text, "twinlink_outbox_frames") == 0
        assert _value(text, "twinlink_outbox_oldest_age_seconds") == 0
        assert _value(text, "twinlink_outbox_frames_sent_total") >= 5
        assert _value(text, 'twinlink_acks_received_total{result="accepted"}') >= 1
        assert _value(text, 'twinlink_acks_received_total{result="forged"}') == 0
        assert _value(text, "twinlink_outbox_dead_letters") == 0
        stale = _value(text, 'twinlink_acks_received_total{result="stale"}')

        # A forged ack and a replayed genuine one: counted, nothing released.
        publish(raw, f"twinlink/{kid}/a", b"\xd0\x83forged-ack")
        publish(raw, f"twinlink/{kid}/a", capture.got[0])
        wait_until(lambda: _value(_scrape(mport), 'twinlink_acks_received_total{result="forged"}')
                   == 1, 30, what="the forged ack to be counted")
        wait_until(lambda: _value(_scrape(mport), 'twinlink_acks_received_total{result="stale"}')
                   == stale + 1, 30, what="the replayed ack to be counted stale")

        # The twin refuses the gateway's next frame for good (an operator moved its window
        # far ahead: too_old, authenticated, NACKed): it goes to the dead letters.
        with rig.twin() as twin:
            twin.store.reanchor("gateway", 1 << 30, why="test")
        os.write(master, b"70.0,1.8,12,OK\n")
        wait_until(lambda: _value(_scrape(mport), "twinlink_outbox_dead_letters") == 1, 60,
                   what="a dead letter")
        text = _scrape(mport)
        assert _value(text, "twinlink_outbox_frames_refused_total") == 1
        assert _value(text, "twinlink_outbox_frames_released_total") == 5
        assert _value(text, 'twinlink_acks_received_total{result="forged"}') == 1
        assert _value(text, "twinlink_outbox_frames") == 0
        assert "twinlink_build_info{" in text and "twinlink_outbox_frames_resent_total" in text
        if os.path.exists(PROMTOOL):
            chk = subprocess.run([PROMTOOL, "check", "metrics"], input=text, text=True,
                                 capture_output=True, timeout=60)
            assert chk.returncode == 0, chk.stdout + chk.stderr
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        os.close(master)
        raw.loop_stop()
        serve.terminate()
        broker.kill()


def test_outbox_depth_and_age_while_the_twin_is_away(tmp_path) -> None:
    """No broker at all: queued frames show as depth and a growing oldest age."""
    from twinlink import Device, metrics
    from twinlink.mqtt_link import MqttLink

    tk = keys.TwinKey.generate()
    keys.write_public(tmp_path / "twin.pub", tk.public_pem())
    from twinlink.provision import provision

    provision("pump", tmp_path / "twin.pub", tmp_path / "keys")
    m = metrics.Metrics()  # a registry of its own; the sender series come from live deliveries
    bundle = keys.Bundle.load(tmp_path / "keys" / "pump.device")
    link = MqttLink(f"mqtt://127.0.0.1:{free_port()}", bundle=bundle,
                    outbox=tmp_path / "pump.outbox")
    try:
        with Device(bundle, tmp_path / "state", link=link) as dev:
            for i in range(7):
                dev.send({"i": i})
            text = m.render().decode()
            assert _value(text, "twinlink_outbox_frames") == 7
            wait_until(lambda: _value(m.render().decode(),
                                      "twinlink_outbox_oldest_age_seconds") > 0, 10,
                       what="a positive oldest age")
    finally:
        link.close(timeout=0.1)
    # A closed sender is no longer counted.
    assert _value(m.render().decode(), "twinlink_outbox_frames") == 0
