"""Desired state and commands over a serial line (a real pty null-modem cable): the twin's
serial receiver (with acks) writes downlink frames back on the port it heard the device on;
the device's SerialAckLink tells them from acks and dispatches them."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from mosquitto import twin_rig, wait_until

from twinlink import Device, Twin, transport
from twinlink.ingest import SerialReceiver
from twinlink.testing import VirtualCable

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs POSIX ptys")


def test_desired_and_command_over_a_serial_cable(tmp_path: Path) -> None:
    rig = twin_rig(tmp_path)
    dev = Device.load(rig.bundle("pump"), rig.state)
    with VirtualCable() as cable, Twin(rig.db, rig.twin_key) as twin:
        rx = SerialReceiver(cable.b, twin, acks=True)
        dev.link = transport.open(cable.a, device=dev, acks=True, timeout=10)
        applied: list[dict] = []
        changed = threading.Event()
        try:
            dev.on_desired(lambda v: (applied.append(v), changed.set()) and None)
            dev.on_command("add", lambda a: a["x"] + a["y"])
            dev.send({"boot": 1})  # heard on this port: reachable here
            assert dev.link.flush(20) == 0
            twin.store.set_desired("pump", {"interval": 15})
            wait_until(lambda: applied == [{"interval": 15}], 30, what="desired over serial")
            wait_until(lambda: twin.store.desired_view("pump")[0]["status"] == "in sync", 30,
                       what="the report to come back")
            cid = twin.store.queue_command("pump", "add", {"x": 1, "y": 2}, int(time.time()) + 30)
            wait_until(lambda: twin.store.command(cid)["status"] == "ok", 30,
                       what="the command result")
            assert twin.store.command(cid)["result"] == 3
            assert dev.link.stats.forged_acks == 0  # downlink frames were never taken for acks
        finally:
            dev.close()
            rx.close()
