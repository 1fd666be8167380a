"""The serial link on real pty pairs: delivery, noise, timeouts, exclusivity, unplug/replug.

Every wait is bounded; a hang fails the test instead of stalling the run.
"""

from __future__ import annotations

import os
import random
import select
import socket
import threading
import time
import tty
from pathlib import Path

import pytest

from twinlink import backends
from twinlink.errors import FrameTooLarge, LineError, TransportError
from twinlink.ingest import SerialReceiver
from twinlink.testing import VirtualCable
from twinlink.transport import framing
from twinlink.transport.serial import SerialLink
from twinlink.twin import Reading

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs POSIX ptys")


def _until(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return bool(pred())


def test_device_send_over_serial_link_is_stored_by_the_twin(rig):
    results = []
    with VirtualCable() as cable, rig.twin() as twin:
        rx = SerialReceiver(cable.b, twin, on_result=results.append)
        dev = rig.device("pump", link=SerialLink(cable.a))
        try:
            for i in range(20):
                dev.send({"temp": 20.0 + i, "n": i})
            assert rx.wait_for(20, 10)
        finally:
            dev.close()
            rx.close()
        assert all(isinstance(r, Reading) for r in results)
        assert [r.seq for r in results] == sorted(r.seq for r in results)
        assert results[-1].payload == {"temp": 39.0, "n": 19}
        assert twin.store.count_readings("pump") == 20
        assert twin.store.readings("pump", 1)[0]["payload"] == {"temp": 39.0, "n": 19}


def test_receiver_separates_line_errors_from_security_refusals(rig):
    results = []
    with VirtualCable() as cable, rig.twin() as twin:
        rx = SerialReceiver(cable.b, twin, on_result=results.append)
        tx = SerialLink(cable.a)
        dev = rig.device("pump")
        try:
            f1 = dev.seal({"temp": 1.0})
            tx.send(f1)
            tx.send(f1)  # replay
            forged = bytearray(dev.seal({"temp": 2.0}))
            forged[-1] ^= 1  # CRC recomputed by the link: reaches the twin, fails the signature
            tx.send(bytes(forged))
            assert rx.wait_for(3, 10)
            rec = bytearray(framing.wire(dev.seal({"temp": 3.0}), flush_prefix=True))
            rec[10] = rec[10] ^ 0x20 or 0x01
            cable.inject(bytes(rec))
            assert rx.wait_for(4, 10)
        finally:
            tx.close()
            rx.close()
            dev.close()
    kinds = [r.reason if not isinstance(r, Reading) else "ok" for r in results]
    assert kinds == ["ok", "replay", "bad_signature", "line"]
    assert isinstance(results[3], LineError)
    assert rx.counts == {"ok": 1, "replay": 1, "bad_signature": 1, "line": 1}


def test_loop_url_carries_frames():
    got: list[bytes] = []
    with SerialLink("loop://", on_frame=got.append) as link:
        for i in range(50):
            link.send(b"frame %d" % i)
        assert _until(lambda: len(got) == 50, 5)
    assert got == [b"frame %d" % i for i in range(50)]


def test_socket_url_carries_frames():
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(5)
    port = srv.getsockname()[1]
    got: list[bytes] = []
    holder: dict[str, socket.socket] = {}

    def accept():
        conn, _ = srv.accept()
        holder["c"] = conn
        dec = framing.Decoder()
        conn.settimeout(5)
        while len(got) < 10:
            data = conn.recv(4096)
            if not data:
                return
            got.extend(x for x in dec.feed(data) if isinstance(x, bytes))

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    with SerialLink(f"socket://127.0.0.1:{port}") as link:
        for i in range(10):
            link.send(b"sock %d" % i)
        t.join(5)
    srv.close()
    holder["c"].close()
    assert got == [b"sock %d" % i for i in range(10)]


def test_missing_port_fails_with_transport_error(tmp_path):
    with pytest.raises(TransportError, match="cannot open serial port"):
        SerialLink(str(tmp_path / "ttyNOPE"))


def test_device_path_is_opened_exclusively():
    with VirtualCable() as cable, SerialLink(cable.a):
        with pytest.raises(TransportError, match=r"exclusive|lock"):
            SerialLink(cable.a)


def test_write_that_cannot_complete_times_out():
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    try:
        link = SerialLink(path, write_timeout=0.2)
        with pytest.raises(TransportError, match="did not complete"):
            for _ in range(10_000):  # nobody reads the master: the pty buffer fills up
                link.send(bytes(range(1, 250)) * 4)
        assert link.stats["write_timeouts"] == 1
        link.close()
    finally:
        os.close(master)
        os.close(slave)


def test_oversized_frame_refused_before_the_wire():
    with SerialLink("loop://", max_frame=100) as link:
        with pytest.raises(FrameTooLarge):
            link.send(bytes(101))
        assert link.stats["sent"] == 0


def test_queue_policy_when_the_port_is_down(tmp_path):
    gone = str(tmp_path / "ttyGONE")
    link = SerialLink(gone, require_open=False, queue_size=3, max_backoff=0.05)
    try:
        assert not link.connected
        for i in range(3):
            link.send(b"q%d" % i)
        assert link.pending == 3
        with pytest.raises(TransportError, match="queue of 3 frames is full"):
            link.send(b"q3")
        assert link.pending == 3
    finally:
        assert link.close() == 3  # abandoned frames are reported
    with pytest.raises(TransportError, match="closed"):
        link.send(b"late")
    drop = SerialLink(gone, require_open=False, queue_size=2, overflow="drop_oldest")
    for i in range(5):
        drop.send(b"d%d" % i)
    assert drop.pending == 2 and drop.stats["dropped"] == 3
    assert list(drop._queue) == [framing.wire(b"d3", True), framing.wire(b"d4", True)]
    drop.close()


# -- noise ------------------------------------------------------------------------------------

class NoisyLine:
    """A record-aware tamper hook for VirtualCable: damages some records, keeps the tally.

    Each output starts with 0x00, so a record cut in half is ended by the next one. Faults:
    bit flip (never producing 0x00), a dropped byte, a garbage burst *between* records (the
    frame after it is intact), a record cut in half.
    """

    def __init__(self, seed: int, total: int, p: float = 0.2) -> None:
        self.rng = random.Random(seed)
        self.total, self.p = total, p
        self.buf = b""
        self.n = 0
        self.intact: list[int] = []
        self.line_errors = 0
        self.faults: dict[str, int] = {"flip": 0, "drop": 0, "garbage": 0, "cut": 0}

    def _garbage(self) -> bytes:
        while True:
            g = self.rng.randbytes(self.rng.randrange(1, 300))
            segs = [s for s in g.split(b"\x00") if s]
            if not segs:
                continue
            try:
                for s in segs:
                    framing.decode_record(s)
            except LineError:
                pass
            else:
                continue  # astronomically unlikely: a segment that is a valid record
            if any(len(s) > 0 and self._valid(s) for s in segs):
                continue
            self.line_errors += len(segs)
            return g

    @staticmethod
    def _valid(seg: bytes) -> bool:
        try:
            framing.decode_record(seg)
            return True
        except LineError:
            return False

    def __call__(self, data: bytes, direction: str) -> bytes:
        if direction != "ab":
            return data
        parts = (self.buf + data).split(b"\x00")
        self.buf = parts.pop()
        out = bytearray()
        for rec in parts:
            if not rec:
                continue
            seq = backends.current().parse(framing.decode_record(rec)).seq
            self.n += 1
            fault = None
            if self.n < self.total and self.rng.random() < self.p:
                fault = self.rng.choice(list(self.faults))
                self.faults[fault] += 1
            body = bytearray(rec)
            out += b"\x00"
            if fault == "garbage":
                out += self._garbage() + b"\x00"
                fault = None
            if fault is None:
                self.intact.append(seq)
                out += body + b"\x00"
                continue
            self.line_errors += 1
            i = self.rng.randrange(len(body))
            if fault == "flip":
                bits = [b for b in range(8) if body[i] ^ (1 << b)]
                body[i] ^= 1 << self.rng.choice(bits)
                out += body + b"\x00"
            elif fault == "drop":
                del body[i]
                out += body + b"\x00"
            else:  # cut: half a record, ended by the next record's leading 0x00
                out += body[: len(body) // 2]
        return bytes(out)


def test_thousands_of_frames_through_a_noisy_line(rig):
    total = 3000
    noise = NoisyLine(seed=4, total=total)
    results = []
    with VirtualCable(tamper=noise) as cable, rig.twin() as twin:
        rx = SerialReceiver(cable.b, twin, on_result=results.append)
        tx = SerialLink(cable.a)
        dev = rig.device("noisy")
        try:
            sent = []
            for start in range(0, total, 500):
                frames = dev.seal_many([{"i": start + k, "v": (start + k) * 0.5}
                                        for k in range(500)])
                for f in frames:
                    tx.send(f)
                    sent.append(f)
            # One more frame, past the noisy stretch: results arrive in wire order, so once it
            # is in, everything sent before it has been counted, and nothing can come later.
            tx.send(dev.seal({"i": total, "last": True}))
            assert _until(lambda: noise.n == total + 1, 30), f"forwarded {noise.n}/{total + 1}"
            expected = len(noise.intact) + noise.line_errors
            assert rx.wait_for(expected, 30), (rx.counts, expected)
            assert isinstance(results[-1], Reading) and results[-1].payload["last"] is True
        finally:
            tx.close()
            rx.close()
            dev.close()
        assert all(v > 30 for v in noise.faults.values()), noise.faults
        assert rx.counts == {"ok": len(noise.intact), "line": noise.line_errors}
        accepted = [r.seq for r in results if isinstance(r, Reading)]
        assert len(accepted) == len(set(accepted))  # exactly once
        assert sorted(accepted) == sorted(noise.intact)  # every intact frame, nothing else
        assert twin.store.count_readings("noisy") == len(noise.intact)
        # no damaged frame reached the twin's checks (missing frames may be *detected* as a
        # sequence gap, but nothing is refused)
        assert [e for e in twin.store.events("noisy", audit=False)
                if e["outcome"] == "blocked"] == []
        assert rx.link.stats["line_errors"] == noise.line_errors


# -- unplug / replug --------------------------------------------------------------------------

class PtyPeer:
    """The far end of a pty: reads the master, decodes frames; tolerates the slave not yet open."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        os.close(slave)
        self.frames: list[bytes] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        dec = framing.Decoder()
        while not self._stop.is_set():
            r, _, _ = select.select([self.master], [], [], 0.05)
            if not r:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO while no slave is open
                time.sleep(0.01)
                continue
            self.frames += [x for x in dec.feed(data) if isinstance(x, bytes)]

    def unplug(self) -> None:
        self._stop.set()
        self._t.join(2)
        os.close(self.master)


def test_unplug_and_replug_through_a_symlink_loses_no_queued_frame(tmp_path: Path):
    link_path = tmp_path / "ttyUSB-sensor"
    first = PtyPeer()
    os.symlink(first.path, link_path)
    states: list[str] = []
    link = SerialLink(str(link_path), backoff=0.02, max_backoff=0.2, on_state=states.append)
    second = None
    try:
        for i in range(10):
            link.send(b"before %d" % i)
        assert _until(lambda: len(first.frames) == 10, 5)
        # Unplug as udev does it: the by-id symlink goes first, then the device node. (Closing
        # only the pty would leave a dangling /dev/pts/N that another process may get next.)
        os.unlink(link_path)
        first.unplug()
        assert _until(lambda: not link.connected, 5), "link did not notice the unplug"
        for i in range(25):  # sent while unplugged: queued in order
            link.send(b"during %d" % i)
        assert link.pending == 25
        assert _until(lambda: "cannot open serial port" in link.last_error, 5), link.last_error
        second = PtyPeer()
        tmp = tmp_path / "ttyUSB-sensor.new"
        os.symlink(second.path, tmp)
        os.replace(tmp, link_path)  # the device node comes back at the same name
        assert link.wait_connected(5), f"no reconnect: {link.last_error}"
        assert link.flush(5)
        for i in range(5):
            link.send(b"after %d" % i)
        want = [b"during %d" % i for i in range(25)] + [b"after %d" % i for i in range(5)]
        assert _until(lambda: len(second.frames) >= 30, 5), second.frames
        assert second.frames == want
        assert first.frames == [b"before %d" % i for i in range(10)]
        assert link.stats["reconnects"] == 1
        assert states[0] == "connected" and states[1].startswith("disconnected")
        assert states[-1] == "connected"
    finally:
        assert link.close() == 0
        if second is not None:
            second.unplug()


def test_a_failing_twin_does_not_kill_the_reader(caplog):
    class FlakyTwin:
        calls = 0

        def open_many(self, frames, source=""):
            FlakyTwin.calls += 1
            if FlakyTwin.calls == 1:
                raise RuntimeError("database is on fire")
            return [Reading("d", b"\x01", i, f) for i, f in enumerate(frames)]

    got = []
    rx = SerialReceiver("loop://", FlakyTwin(), on_result=got.append)
    try:
        rx.link.send(b"lost")
        assert _until(lambda: FlakyTwin.calls == 1, 5)
        rx.link.send(b"kept")
        assert rx.wait_for(1, 5)
    finally:
        rx.close()
    assert [r.payload for r in got] == [b"kept"]
    assert "were not delivered" in caplog.text
