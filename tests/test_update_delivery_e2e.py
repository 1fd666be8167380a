"""Firmware update delivery end to end (docs/PROTOCOL.md §21): ``twinlink twin update`` and the
real ``twinlink serve`` over a real mosquitto, a device process killed with SIGKILL mid-transfer
that resumes from its staged offset, and the same transfer over a pty serial cable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from mosquitto import (
    broker_factory,  # noqa: F401 - fixture
    env,
    start_serve,
    wait_until,
)
from update_delivery_kit import Installer, update_rig

from twinlink import Device, Twin, keys, transport, update
from twinlink.downlink import UPDATE_CHUNK
from twinlink.ingest import SerialReceiver
from twinlink.mqtt_link import for_device
from twinlink.store import SQLiteStore
from twinlink.store.downlink import UPDATE_WINDOW
from twinlink.testing import VirtualCable

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "twinlink"]


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + list(args), env=env(), capture_output=True, text=True,
                          timeout=timeout)


def _view(db: Path, name: str = "pump") -> dict:
    s = SQLiteStore(str(db), readonly=True)
    try:
        return s.update_view(name) or {}
    finally:
        s.close()


def test_twin_update_over_mqtt(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    ur = update_rig(tmp_path)
    rig = ur.rig
    broker = broker_factory()
    serve = start_serve(broker.url, rig.db, rig.twin_key)
    dev = Device.load(rig.bundle("pump"), rig.state)
    dev.link = for_device(dev, broker.url)
    inst = Installer(tmp_path / "installed.bin")
    try:
        dev.send({"boot": 1})
        dev.on_update(inst)
        assert dev.link.downlink_subscribed.wait(20), dev.link.last_error
        manifest, image = ur.files("pump", 12, 40_000)
        p = _cli("twin", "update", "pump", str(manifest), str(image), "--db", str(rig.db),
                 "--json", "--timeout", "90")
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        assert (out["status"], out["seq"], out["staged"]) == ("applied", 12, 40_000)
        assert inst.calls == [12] and inst.out.read_bytes() == image.read_bytes()
        show = json.loads(_cli("twin", "show", "pump", "--db", str(rig.db), "--json").stdout)
        assert show["update"]["status"] == "applied"
        text = _cli("twin", "show", "pump", "--db", str(rig.db)).stdout
        assert "update:" in text and "seq 12" in text and "applied" in text

        # A manifest signed by a stranger's key: exit 1 with the device's reason; nothing
        # changed on the device, no chunk sent.
        before = ur.snapshot()
        img = ur.image(13, 40_000)
        forged = tmp_path / "forged.manifest"
        forged.write_bytes(ur.manifest(13, img, seed=b"\x01" * 32))
        (tmp_path / "fw-13.bin").write_bytes(img)
        p = _cli("twin", "update", "pump", str(forged), str(tmp_path / "fw-13.bin"),
                 "--db", str(rig.db), "--timeout", "90")
        assert p.returncode == 1 and "untrusted_key" in p.stderr, p.stderr
        assert ur.snapshot() == before and inst.calls == [12]
        assert _view(rig.db)["sent"] == 0
        s = SQLiteStore(str(rig.db), readonly=True)
        try:
            types = [e["type"] for e in s.events("pump") if e["type"].startswith("update.")]
        finally:
            s.close()
        assert types == ["update.offered", "update.applied", "update.offered",
                         "update.rejected"]
        # An image that is not the manifest's: refused by the CLI, nothing offered.
        p = _cli("twin", "update", "pump", str(manifest), str(tmp_path / "fw-13.bin"),
                 "--db", str(rig.db))
        assert p.returncode == 1 and "nothing offered" in p.stderr
    finally:
        dev.close()
        serve.terminate()


class Worker:
    """tests/update_delivery_worker.py as a subprocess; collects its stdout lines."""

    def __init__(self, ur, url: str, out: Path) -> None:
        self.p = subprocess.Popen(
            [sys.executable, str(HERE / "update_delivery_worker.py"), str(ur.bundle("pump")),
             str(ur.rig.state), url, str(out)], env=env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.err: list[str] = []
        threading.Thread(target=self._read, args=(self.p.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._read, args=(self.p.stderr, self.err), daemon=True).start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.strip())

    def line(self, prefix: str) -> str:
        wait_until(lambda: any(x.startswith(prefix) for x in self.lines)
                   or self.p.poll() is not None, 60, what=f"worker to print {prefix!r}")
        found = [x for x in self.lines if x.startswith(prefix)]
        assert found, "".join(self.err)
        return found[0]


def test_resume_after_sigkill_of_the_device_process(tmp_path: Path,
                                                    broker_factory) -> None:  # noqa: F811
    """The device process dies (SIGKILL) mid-transfer; restarted, it re-hashes what it staged
    and reports it, and the twin sends only the rest."""
    ur = update_rig(tmp_path)
    rig = ur.rig
    broker = broker_factory()
    serve = start_serve(broker.url, rig.db, rig.twin_key)
    out = tmp_path / "installed.bin"
    size = 256 * 1024
    w = Worker(ur, broker.url, out)
    try:
        assert w.line("staged") == "staged 0"
        w.line("ready")
        assert _view(rig.db) == {}  # nothing offered yet
        img = ur.image(21, size)
        with Twin(rig.db, rig.twin_key) as twin:
            twin.store.offer_update("pump", ur.manifest(21, img), img)
        wait_until(lambda: _view(rig.db)["staged"] >= 3 * UPDATE_WINDOW * UPDATE_CHUNK, 60,
                   step=0.005, what="part of the image staged")
        # Freeze the twin (our own serve process) so the kill lands mid-transfer whatever the
        # machine's speed: the device can only get the window already in flight.
        os.kill(serve.p.pid, signal.SIGSTOP)
        try:
            os.kill(w.p.pid, signal.SIGKILL)
            w.p.wait(10)
        finally:
            os.kill(serve.p.pid, signal.SIGCONT)
        wait_until(lambda: _view(rig.db)["staged"] > 0, 10)
        at_kill = _view(rig.db)
        assert at_kill["status"] == "staging" and at_kill["staged"] < size, at_kill
        assert not out.exists()

        w = Worker(ur, broker.url, out)
        staged = int(w.line("staged").split()[1])
        assert staged >= at_kill["staged"] > 0  # resumed from disk, not from 0
        w.line("installed")
        wait_until(lambda: _view(rig.db)["status"] == "applied", 60, what="applied")
        assert out.read_bytes() == img
        rec = update.RecordStore(rig.state, keys.Bundle.load(rig.bundle("pump"))).load()
        assert rec is not None and (rec.seq, rec.installed) == (21, True)
        after = _view(rig.db)["sent"] - at_kill["sent"]
        # After the restart the twin sent what was missing (plus at most a window that was in
        # flight to the dead process or resent after a stall), never the whole image again.
        assert size - staged <= after <= size - staged + 2 * UPDATE_WINDOW * UPDATE_CHUNK
        assert after < size
    finally:
        if w.p.poll() is None:
            w.p.terminate()
            w.p.wait(10)
        serve.terminate()


def test_transfer_survives_a_broker_restart(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    """mosquitto is SIGKILLed and restarted mid-transfer (no persistence of in-flight chunks):
    device and twin reconnect, and the twin resends from the device's staged offset."""
    ur = update_rig(tmp_path)
    rig = ur.rig
    broker = broker_factory()
    serve = start_serve(broker.url, rig.db, rig.twin_key)
    dev = Device.load(rig.bundle("pump"), rig.state)
    dev.link = for_device(dev, broker.url)
    inst = Installer(tmp_path / "installed.bin")
    size = 256 * 1024
    try:
        dev.send({"boot": 1})
        dev.on_update(inst)
        assert dev.link.downlink_subscribed.wait(20), dev.link.last_error
        img = ur.image(30, size)
        with Twin(rig.db, rig.twin_key) as twin:
            twin.store.offer_update("pump", ur.manifest(30, img), img)
        wait_until(lambda: _view(rig.db)["staged"] >= 3 * UPDATE_WINDOW * UPDATE_CHUNK, 60,
                   step=0.005, what="part of the image staged")
        os.kill(serve.p.pid, signal.SIGSTOP)  # hold the twin so the restart lands mid-transfer
        try:
            broker.restart(kill=True)
        finally:
            os.kill(serve.p.pid, signal.SIGCONT)
        assert _view(rig.db)["status"] == "staging"
        wait_until(lambda: _view(rig.db)["status"] in ("applied", "rejected"), 90,
                   what="the update after the broker restart")
        view = _view(rig.db)
        assert view["status"] == "applied" and inst.calls == [30]
        assert inst.out.read_bytes() == img
        # What was lost in the restart is resent from the staged offset: at most a window or
        # two again, never the image.
        assert size <= view["sent"] <= size + 2 * UPDATE_WINDOW * UPDATE_CHUNK
    finally:
        dev.close()
        serve.terminate()


@pytest.mark.skipif(os.name != "posix", reason="needs POSIX ptys")
def test_update_over_a_pty_serial_cable(tmp_path: Path) -> None:
    ur = update_rig(tmp_path)
    rig = ur.rig
    dev = Device.load(rig.bundle("pump"), rig.state)
    inst = Installer(tmp_path / "installed.bin")
    with VirtualCable() as cable, Twin(rig.db, rig.twin_key) as twin:
        rx = SerialReceiver(cable.b, twin, acks=True)
        dev.link = transport.open(cable.a, device=dev, acks=True, timeout=10)
        try:
            dev.on_update(inst)
            dev.send({"boot": 1})  # heard on this port: reachable here
            assert dev.link.flush(20) == 0
            img = ur.image(3, 30_000)
            twin.store.offer_update("pump", ur.manifest(3, img), img)
            wait_until(lambda: (twin.store.update_view("pump") or {}).get("status")
                       in ("applied", "rejected"), 90, what="the update over serial")
            view = twin.store.update_view("pump") or {}
            assert (view["status"], view["staged"]) == ("applied", 30_000), view
            assert inst.calls == [3] and inst.out.read_bytes() == img
        finally:
            dev.close()
            rx.close()
