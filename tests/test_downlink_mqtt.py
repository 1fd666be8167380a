"""Desired state and commands end to end over a real mosquitto: the real ``twinlink serve`` and
``twinlink twin set / command / show`` processes, a device on an MqttLink, and an attacker who
holds only broker access."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

from conftest import CLI
from mosquitto import (
    broker_factory,  # noqa: F401 - fixture
    env,
    publish,
    raw_client,
    start_serve,
    twin_rig,
    wait_until,
)

from twinlink import Device, Twin, downlink
from twinlink.mqtt_link import for_device
from twinlink.oscore import derive_context


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + list(args), env=env(), capture_output=True, text=True,
                          timeout=timeout)


def _show(db: Path, name: str) -> dict:
    p = _cli("twin", "show", name, "--db", str(db), "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


class App:
    """A device application: applies desired state, answers commands, counts what it saw."""

    def __init__(self, dev: Device) -> None:
        self.applied: list[dict] = []
        self.events: list[tuple[str, str]] = []
        self.changed = threading.Event()
        dev.on_event = lambda k, d: (self.events.append((k, d)), self.changed.set())
        dev.on_desired(self.apply)
        dev.on_command("add", lambda a: a["x"] + a["y"])
        dev.on_command("fail", self.fail)

    def apply(self, values: dict):
        self.applied.append(values)
        self.changed.set()
        if not 1 <= values.get("interval", 1) <= 3600:
            return {"interval": "out of range 1..3600"}
        return None

    @staticmethod
    def fail(args: object):
        raise downlink.Rejected("relay is locked")


def test_set_command_show_over_mqtt(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    rig = twin_rig(tmp_path, window=64)
    broker = broker_factory()
    serve = start_serve(broker.url, rig.db, rig.twin_key)
    dev = Device.load(rig.bundle("pump"), rig.state)
    dev.link = for_device(dev, broker.url)
    try:
        app = App(dev)
        dev.send({"boot": 1})  # the twin learns the device's context
        wait_until(lambda: _show(rig.db, "pump")["accepted"] >= 1, 30, what="first reading")

        p = _cli("twin", "set", "pump", "interval=30", "mode=eco", "--db", str(rig.db))
        assert p.returncode == 0, p.stderr
        wait_until(lambda: app.applied == [{"interval": 30, "mode": "eco"}], 30,
                   what="the desired state to reach the device")

        def statuses() -> dict:
            return {r["key"]: r["status"] for r in _show(rig.db, "pump")["desired"]}
        wait_until(lambda: statuses() == {"interval": "in sync", "mode": "in sync"}, 30,
                   what="twin show to say in sync")
        text = _cli("twin", "show", "pump", "--db", str(rig.db)).stdout
        assert "interval" in text and "in sync" in text

        # An out-of-range value: rejected by the device, shown as rejected.
        assert _cli("twin", "set", "pump", "interval=0", "--db", str(rig.db)).returncode == 0
        wait_until(lambda: statuses()["interval"].startswith("rejected"), 30,
                   what="the rejection to be reported")
        assert statuses() == {"interval": "rejected: out of range 1..3600", "mode": "in sync"}

        p = _cli("twin", "command", "pump", "add", '{"x": 2, "y": 40}', "--db", str(rig.db))
        assert (p.returncode, p.stdout.strip()) == (0, "42"), p.stderr
        p = _cli("twin", "command", "pump", "fail", "--db", str(rig.db))
        assert p.returncode == 1 and "relay is locked" in p.stderr
        p = _cli("twin", "command", "pump", "nope", "--db", str(rig.db))
        assert p.returncode == 1 and "unknown method nope" in p.stderr
        assert not [e for e in app.events if e[0] != "downlink.rejected"], app.events
    finally:
        dev.close()
        serve.terminate()


def test_command_without_a_device_exits_on_the_deadline(tmp_path: Path,
                                                        broker_factory) -> None:  # noqa: F811
    rig = twin_rig(tmp_path, window=64)
    p = _cli("twin", "command", "pump", "reboot", "--deadline", "0.5", "--db", str(rig.db))
    assert p.returncode == 6 and "no answer" in p.stderr


def test_broker_only_attacker_changes_nothing(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    """Someone with broker access publishes on the device's command topic: forged frames, a
    frame under a key of their own, a captured genuine frame replayed. Nothing is applied."""
    rig = twin_rig(tmp_path, window=64)
    broker = broker_factory()
    twin = Twin(rig.db, rig.twin_key)
    dev = Device.load(rig.bundle("pump"), rig.state)
    dev.link = for_device(dev, broker.url)
    raw = raw_client(broker.port)
    captured: list[bytes] = []
    got = threading.Event()

    def capture(client, userdata, msg) -> None:
        captured.append(bytes(msg.payload))
        got.set()
    raw.message_callback_add("twinlink/01/c", capture)
    raw.subscribe("twinlink/01/c", qos=1)
    try:
        app = App(dev)
        twin.open(dev.seal({"boot": 1}))
        assert dev.link.downlink_subscribed.wait(20), dev.link.last_error
        # A genuine frame, sealed by the twin, captured on the broker by the attacker.
        dev_rec = twin.store.device("pump")
        ctx = twin.ack_context(dev.kid, b"", dev_rec.id_context)
        v = downlink.next_piv(None)
        genuine = downlink.seal_downlink(ctx, dev.kid, v, downlink.encode_desired(
            v, {"interval": 10}), dev_rec.id_context)
        publish(raw, "twinlink/01/c", genuine)
        wait_until(lambda: app.applied == [{"interval": 10}], 30, what="genuine frame applied")
        assert got.wait(10) and captured == [genuine]
        n = len(app.events)
        # 1. the captured frame replayed; 2. forged: a bit flipped; 3. a key of the attacker's.
        flipped = bytearray(genuine)
        flipped[-1] ^= 1
        fake = derive_context(b"\x00" * 32, b"", b"", dev_rec.id_context)
        v2 = v + 1000
        own = downlink.seal_downlink(fake, dev.kid, v2, downlink.encode_desired(
            v2, {"interval": 1}), dev_rec.id_context)
        for payload in (genuine, bytes(flipped), own, b"\x00garbage"):
            publish(raw, "twinlink/01/c", payload)
        wait_until(lambda: len(app.events) >= n + 4, 30, what="four refusals")
        kinds = [k for k, _ in app.events[n:]]
        assert kinds == ["downlink.replay", "downlink.forged", "downlink.forged",
                         "downlink.forged"]
        assert app.applied == [{"interval": 10}]
        # A command the attacker makes up is refused as forged, never run.
        cmd = downlink.seal_downlink(fake, dev.kid, v2 + 1, downlink.encode_command(
            1, "add", {"x": 1, "y": 1}, int(time.time()) + 60), dev_rec.id_context)
        publish(raw, "twinlink/01/c", cmd)
        wait_until(lambda: len(app.events) >= n + 5, 30, what="forged command refused")
        assert app.events[-1][0] == "downlink.forged"
    finally:
        raw.loop_stop()
        dev.close()
        twin.close()


def test_raspberry_pi_example_changes_its_interval_live(tmp_path: Path,
                                                        broker_factory) -> None:  # noqa: F811
    """The Pi app samples every hour; ``twin set pi interval=0.05`` makes it sample every 50 ms
    at once (readings arrive), an out-of-range interval is rejected and reported."""
    import os
    import signal
    import sys

    from mosquitto import stored_count

    root = Path(__file__).resolve().parent.parent
    rig = twin_rig(tmp_path, ("pi",), window=64)
    broker = broker_factory()
    serve = start_serve(broker.url, rig.db, rig.twin_key)
    envp = {**os.environ, "PYTHONPATH": str(root)}
    app = subprocess.Popen(
        [sys.executable, str(root / "firmware_examples" / "raspberry_pi" / "twinlink_pi.py"),
         "--bundle", str(rig.bundle("pi")), "--state", str(rig.state), "--mqtt", broker.url,
         "--source", "simulated", "--interval", "3600"],
        env={k: v for k, v in envp.items() if not k.startswith("TL_")},
        stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: stored_count(rig.db) >= 1, 30, what="the first reading")
        assert _cli("twin", "set", "pi", "interval=0.05", "--db", str(rig.db)).returncode == 0
        # Only a live change of the interval can bring more readings within the wait.
        wait_until(lambda: stored_count(rig.db) >= 10, 60, what="readings at the new interval")
        wait_until(lambda: _show(rig.db, "pi")["desired"][0]["status"] == "in sync", 30,
                   what="the interval reported in sync")
        assert _cli("twin", "set", "pi", "interval=-1", "--db", str(rig.db)).returncode == 0
        wait_until(lambda: _show(rig.db, "pi")["desired"][0]["status"].startswith("rejected"),
                   30, what="the bad interval rejected")
        p = _cli("twin", "command", "pi", "ping", "--db", str(rig.db))
        assert (p.returncode, p.stdout.strip()) == (0, '"pong 0.05"'), p.stderr
    finally:
        app.send_signal(signal.SIGTERM)
        _, err = app.communicate(timeout=60)
        serve.terminate()
    assert "interval now 0.05 s (set by the twin)" in err, err
