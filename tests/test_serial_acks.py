"""End-to-end acks over a serial line (a real pty null-modem cable): the twin's receiver writes
acks and NACKs back on the same port; the device's SerialAckLink keeps frames in its durable
outbox until they are named stored (or refused, to the dead letters)."""

from __future__ import annotations

import os
from pathlib import Path

import cbor2
import pytest
from mosquitto import twin_rig, wait_until

from twinlink import Device, Reading, Twin, transport
from twinlink.frame import parse
from twinlink.ingest import SerialReceiver
from twinlink.serial_link import SerialAckLink
from twinlink.testing import VirtualCable

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs POSIX ptys")


def test_acks_and_nacks_over_a_serial_cable(tmp_path: Path, backend_name: str) -> None:
    rig = twin_rig(tmp_path)
    dev = Device.load(rig.bundle("pump"), rig.state)
    with VirtualCable() as cable, Twin(rig.db, rig.twin_key) as twin:
        rx = SerialReceiver(cable.b, twin, acks=True)
        link = transport.open(cable.a, device=dev, acks=True, timeout=10)
        assert isinstance(link, SerialAckLink)
        dev.link = link
        try:
            for i in range(40):
                dev.send({"i": i})
            bad = dev.seal_raw(cbor2.dumps([{0: "temp"}]))  # the twin's bad_payload
            link.send(bad)
            dev.send({"i": 40})
            assert link.flush(20) == 0
            assert (link.stats.released, link.stats.refused) == (41, 1)
            (letter,) = link.outbox.dead_letters()
            assert (letter.seq, letter.reason) == (parse(bad).seq, "bad_payload")
            assert rx.acks_sent >= 1 and link.stats.forged_acks == 0
        finally:
            dev.close()  # closes the link; its outbox stays on disk
            rx.close()
    assert twin_count(rig) == 41


def twin_count(rig) -> int:
    from mosquitto import stored_count
    return stored_count(rig.db)


def test_a_receiver_without_acks_leaves_frames_queued_until_one_with_acks(tmp_path: Path) -> None:
    """The first receiver stores but does not answer; the device resends after resend_after,
    the second receiver finds the copies stored (same digests) and acknowledges them."""
    rig = twin_rig(tmp_path)
    dev = Device.load(rig.bundle("pump"), rig.state)
    with VirtualCable() as cable, Twin(rig.db, rig.twin_key) as twin:
        got: list[object] = []
        rx = SerialReceiver(cable.b, twin, on_result=got.append)  # no acks
        link = SerialAckLink(cable.a, bundle=dev.bundle, outbox=tmp_path / "o.outbox",
                             resend_after=0.3, timeout=10)
        try:
            frames = dev.seal_many([{"i": i} for i in range(5)])
            link.send_many(frames)
            wait_until(lambda: sum(isinstance(r, Reading) for r in got) == 5, 10,
                       what="five stored")
            assert link.pending() == 5
            rx.close()
            rx = SerialReceiver(cable.b, twin, acks=True)
            assert link.flush(20) == 0 and link.stats.released == 5
            assert rx.counts["replay"] >= 5  # what it saw were copies, re-acknowledged
        finally:
            link.close()
            rx.close()
            dev.close()
    assert twin_count(rig) == 5


def test_a_lite_bundle_cannot_have_serial_acks(tmp_path: Path) -> None:
    from twinlink.provision import provision

    rig = twin_rig(tmp_path)
    provision("tiny", rig.root / "twin.pub", rig.root / "keys", kid=b"\x07", lite=True)
    dev = Device.load(rig.bundle("tiny"), rig.state)
    try:
        with pytest.raises(ValueError, match="lite"):
            SerialAckLink("loop://", bundle=dev.bundle, outbox=tmp_path / "o.outbox")
    finally:
        dev.close()


def test_send_and_serve_with_acks_on_the_command_line(tmp_path: Path) -> None:
    """``serve --serial --acks`` and ``send --serial --acks`` as real processes on a pty cable:
    send exits 0 only once the twin acknowledged every reading, and says 'stored'."""
    import json
    import subprocess

    from mosquitto import CLI, Proc, env

    rig = twin_rig(tmp_path)
    with VirtualCable() as cable:
        serve = Proc(["serve", "--serial", cable.b, "--acks", "--db", str(rig.db), "--twin-key",
                      str(rig.twin_key), "--count", "12"])
        try:
            wait_until(lambda: "serving" in serve.stderr(), 30, what="serve to start")
            lines = "".join(json.dumps({"i": i}) + "\n" for i in range(12))
            out = subprocess.run(
                [*CLI, "send", "--device", str(rig.bundle("pump")), "--state", str(rig.state),
                 "--serial", cable.a, "--acks", "--timeout", "30", "--json"],
                input=lines, capture_output=True, text=True, env=env(), timeout=120)
            assert serve.wait(60) == 0, serve.stderr()
        finally:
            serve.kill()
    assert out.returncode == 0, out.stderr
    assert "stored 12, pending 0" in out.stderr
    assert json.loads(out.stdout) == {"stored": 12, "refused": 0, "pending": 0, "skipped": 0}
    assert "12 stored" in serve.stderr() and "acks written" in serve.stderr()
    assert twin_count(rig) == 12
