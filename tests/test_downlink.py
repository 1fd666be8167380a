"""Downlink frames (twinlink.downlink): desired state and commands from the twin to a device,
without a broker: real keys, a real twin's contexts, the device's real persisted state file.

Every refusal must change nothing on the device: no handler call, no state file change."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mosquitto import twin_rig

from twinlink import Device, Twin, downlink, errors
from twinlink.downlink import (
    Command,
    Desired,
    DownlinkExpired,
    DownlinkReplay,
    DownlinkTooLarge,
    encode_command,
    encode_desired,
    next_piv,
    seal_downlink,
)


@pytest.fixture
def pair(tmp_path: Path):
    rig = twin_rig(tmp_path, ("pump", "valve"))
    twin = Twin(rig.db, rig.twin_key)
    dev = Device.load(rig.bundle("pump"), rig.state)
    twin.open(dev.seal({"boot": 1}))  # the twin adopts the device's (fresh) context
    yield twin, dev, rig
    dev.close()
    twin.close()


def _seal(twin: Twin, dev: Device, piv: int, plaintext: bytes, kid: bytes | None = None) -> bytes:
    kid = dev.kid if kid is None else kid
    ctx = twin.ack_context(kid, b"", twin.store.device(kid).id_context)
    return seal_downlink(ctx, kid, piv, plaintext, twin.store.device(kid).id_context)


class Recorder:
    def __init__(self, dev: Device) -> None:
        self.desired: list[dict] = []
        self.calls: list[object] = []
        self.events: list[tuple[str, str]] = []
        dev.on_event = lambda k, d: self.events.append((k, d))
        dev.on_desired(self._desired)
        dev.on_command("reboot", self._reboot)

    def _desired(self, values: dict):
        self.desired.append(values)
        if values.get("interval", 1) < 0:
            return {"interval": "out of range"}
        return None

    def _reboot(self, args: object):
        self.calls.append(args)
        return {"uptime": 0}


def _state(dev: Device) -> bytes:
    p = dev.state_path.with_suffix(".downlink")
    return p.read_bytes() if p.exists() else b""


def test_desired_round_trip_and_report(pair) -> None:
    twin, dev, _ = pair
    rec = Recorder(dev)
    v = next_piv(None)
    reports = dev.handle_downlink(_seal(twin, dev, v, encode_desired(v, {"interval": 5})))
    assert rec.desired == [{"interval": 5}]
    assert reports == {"tl:desired": v}
    # Out-of-range value: rejected key reported, applied version moves on.
    v2 = v + 10
    reports = dev.handle_downlink(_seal(twin, dev, v2, encode_desired(v2, {"interval": -1})))
    assert reports == {"tl:desired": v2, "tl:rejected:interval": "out of range"}


def test_command_round_trip_unknown_method_and_resend(pair) -> None:
    twin, dev, _ = pair
    rec = Recorder(dev)
    dl = time.time() + 60
    r = dev.handle_downlink(_seal(twin, dev, 100, encode_command(7, "reboot", {"now": True},
                                                                 int(dl))))
    assert rec.calls == [{"now": True}]
    assert r == {"tl:cmd:7": "ok", "tl:cmd:7:result": '{"uptime":0}'}
    # The same command resent under a new PIV: answered again, never run twice.
    r = dev.handle_downlink(_seal(twin, dev, 101, encode_command(7, "reboot", {"now": True},
                                                                 int(dl))))
    assert rec.calls == [{"now": True}] and r == {"tl:cmd:7": "ok"}
    r = dev.handle_downlink(_seal(twin, dev, 102, encode_command(8, "format", None, int(dl))))
    assert r == {"tl:cmd:8": "error: unknown method format"}
    assert ("downlink.rejected", "command 8: unknown method format") in rec.events


def _refused(dev: Device, rec: Recorder, frame: bytes, exc: type, event: str) -> None:
    before = _state(dev)
    n = (len(rec.desired), len(rec.calls))
    with pytest.raises(exc):
        dev.handle_downlink(frame)
    assert (len(rec.desired), len(rec.calls)) == n, "a refused frame ran a handler"
    if exc is not DownlinkExpired:
        assert _state(dev) == before, "a refused frame changed the device's state"
    assert rec.events and rec.events[-1][0] == event


def test_forged_frame_is_refused(pair) -> None:
    twin, dev, _ = pair
    rec = Recorder(dev)
    good = _seal(twin, dev, 5, encode_desired(5, {"interval": 9}))
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x01
        _refused(dev, rec, bytes(bad), errors.TwinlinkError, "downlink.forged")
    # A broker-side attacker knows everything but the key: a frame under a key of its own.
    from twinlink.oscore import derive_context

    fake = derive_context(os.urandom(32), b"", b"", dev.id_context)
    _refused(dev, rec, seal_downlink(fake, dev.kid, 6, encode_desired(6, {"interval": 1}),
                                     dev.id_context), errors.DecryptionFailed, "downlink.forged")


def test_frame_for_another_device_is_refused(pair) -> None:
    twin, dev, rig = pair
    valve = Device.load(rig.bundle("valve"), rig.state)
    try:
        twin.open(valve.seal({"boot": 1}))
        rec = Recorder(dev)
        other = _seal(twin, valve, 5, encode_desired(5, {"interval": 9}))
        _refused(dev, rec, other, errors.DecryptionFailed, "downlink.forged")
        # Re-addressed: the valve's frame with the pump's kid context still fails (AAD, key).
        assert valve.handle_downlink(other) == {"tl:desired": 5}
    finally:
        valve.close()


def test_replay_and_reorder_below_window(pair) -> None:
    twin, dev, _ = pair
    rec = Recorder(dev)
    dl = int(time.time()) + 60
    first = _seal(twin, dev, 1000, encode_command(1, "reboot", None, dl))
    dev.handle_downlink(first)
    _refused(dev, rec, first, DownlinkReplay, "downlink.replay")
    dev.handle_downlink(_seal(twin, dev, 1000 + downlink.WINDOW, encode_command(2, "reboot",
                                                                                None, dl)))
    # Never seen, but below the window now: refused, not run.
    _refused(dev, rec, _seal(twin, dev, 1000, encode_command(3, "reboot", None, dl)),
             DownlinkReplay, "downlink.replay")
    # Inside the window and unseen: accepted.
    dev.handle_downlink(_seal(twin, dev, 1000 + 1, encode_command(4, "reboot", None, dl)))
    assert len(rec.calls) == 3


def test_replay_window_survives_restart(pair) -> None:
    twin, dev, rig = pair
    rec = Recorder(dev)
    frame = _seal(twin, dev, 77, encode_command(1, "reboot", None, int(time.time()) + 60))
    dev.handle_downlink(frame)
    dev.close()
    dev2 = Device.load(rig.bundle("pump"), rig.state)
    try:
        rec2 = Recorder(dev2)
        _refused(dev2, rec2, frame, DownlinkReplay, "downlink.replay")
        assert rec.calls == [None] and rec2.calls == []
    finally:
        dev2.close()


def test_expired_command_is_not_run(pair) -> None:
    twin, dev, _ = pair
    rec = Recorder(dev)
    frame = _seal(twin, dev, 9, encode_command(3, "reboot", None, int(time.time()) - 1))
    _refused(dev, rec, frame, DownlinkExpired, "downlink.expired")
    assert dev._downlink.state.s.reports == {"tl:cmd:3": "error: expired"}


def test_stale_desired_version_is_ignored(pair) -> None:
    twin, dev, _ = pair
    rec = Recorder(dev)
    dev.handle_downlink(_seal(twin, dev, 20, encode_desired(20, {"interval": 2})))
    r = dev.handle_downlink(_seal(twin, dev, 21, encode_desired(19, {"interval": 99})))
    assert rec.desired == [{"interval": 2}] and r == {"tl:desired": 20}


def test_oversize_is_refused_on_both_sides(pair) -> None:
    twin, dev, _ = pair
    rec = Recorder(dev)
    with pytest.raises(DownlinkTooLarge):
        encode_desired(1, {f"k{i}": "x" * 60 for i in range(40)})
    # A device that accepts less than the protocol allows rejects and reports it.
    dev._downlink.max_plaintext = 64
    r = dev.handle_downlink(_seal(twin, dev, 30, encode_desired(30, {"note": "y" * 80})))
    assert r == {"tl:desired": 30, "tl:rejected": "too_large"} and rec.desired == []
    r = dev.handle_downlink(_seal(twin, dev, 31, encode_command(5, "reboot", "z" * 80,
                                                                int(time.time()) + 60)))
    assert r == {"tl:cmd:5": "error: too_large"} and rec.calls == []


def test_parse_is_strict() -> None:
    ok = bytes.fromhex("d08344a1011818a2044006410100000000000000000000000000000000")
    with pytest.raises(errors.MalformedFrame):  # ciphertext shorter than the tag
        downlink.parse_downlink(ok)
    for bad in (b"", b"\xd0", b"\xd0\x83\x44\xa1\x01\x18\x18\xa2\x04\x41\x01\x06\x41\x01\x50"
                + bytes(16), os.urandom(9000)):
        with pytest.raises(errors.MalformedFrame):
            downlink.parse_downlink(bad)


def test_plaintext_decoding_is_strict() -> None:
    assert downlink.decode(encode_desired(3, {"a": 1})) == Desired(3, {"a": 1})
    assert downlink.decode(encode_command(1, "m", [1], 5)) == Command(1, "m", [1], 5)
    import cbor2

    for obj in ({1: "desired", 2: 1, 3: {}}, {1: "desired", 2: -1, 3: {"a": 1}},
                {1: "command", 2: 1, 3: "m", 4: None}, {1: "nope"}, [1, 2],
                {1: "desired", 2: 1, 3: {"bad key!": 1}}, {1: "command", 2: 1, 3: "x" * 65,
                                                          4: None, 5: 1}):
        with pytest.raises(errors.MalformedPayload):
            downlink.decode(cbor2.dumps(obj))


def test_next_piv_has_a_clock_floor() -> None:
    now = downlink.EPOCH_2025 + 1000.0
    assert next_piv(None, now) == 1_000_000
    assert next_piv(5_000_000, now) == 5_000_001  # never goes back
    assert next_piv(3, now) == 1_000_000  # a restored (older) counter jumps to the clock


_CRASH = r"""
import os, sys, time
from twinlink import Device
dev = Device.load(sys.argv[1], sys.argv[2])
def reboot(args):
    open(sys.argv[3], "a").write("ran\n")
    os.kill(os.getpid(), 9)  # SIGKILL between running the command and recording its outcome
dev.on_command("reboot", reboot)
dev.handle_downlink(bytes.fromhex(sys.argv[4]))
"""


def test_sigkill_while_running_a_command_never_runs_it_twice(pair, tmp_path: Path) -> None:
    twin, dev, rig = pair
    dev.close()
    marker = tmp_path / "ran"
    frame = _seal(twin, dev, 500, encode_command(9, "reboot", None, int(time.time()) + 60))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    p = subprocess.run([sys.executable, "-c", _CRASH, str(rig.bundle("pump")), str(rig.state),
                        str(marker), frame.hex()], env=env, timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert marker.read_text() == "ran\n"
    dev2 = Device.load(rig.bundle("pump"), rig.state)
    try:
        ran = []
        dev2.on_command("reboot", lambda a: ran.append(a))
        # The same frame again (a broker redelivery): a replay. The twin's resend (new PIV):
        # answered from the record, not run.
        with pytest.raises(DownlinkReplay):
            dev2.handle_downlink(frame)
        r = dev2.handle_downlink(_seal(twin, dev2, 501, encode_command(
            9, "reboot", None, int(time.time()) + 60)))
        assert ran == [] and r == {"tl:cmd:9": "error: interrupted"}
    finally:
        dev2.close()


_CRASH_DESIRED = r"""
import os, sys
from twinlink import Device
dev = Device.load(sys.argv[1], sys.argv[2])
def apply(values):
    if values.get("interval") == 7:
        os.kill(os.getpid(), 9)  # SIGKILL after persisting the version, while applying it
dev.on_desired(apply)
dev.handle_downlink(bytes.fromhex(sys.argv[3]))
"""


def test_sigkill_while_applying_desired_state_reapplies_it_at_start(pair) -> None:
    twin, dev, rig = pair
    dev.close()
    frame = _seal(twin, dev, 600, encode_desired(600, {"interval": 7}))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    p = subprocess.run([sys.executable, "-c", _CRASH_DESIRED, str(rig.bundle("pump")),
                        str(rig.state), frame.hex()], env=env, timeout=60)
    assert p.returncode == -signal.SIGKILL
    dev2 = Device.load(rig.bundle("pump"), rig.state)
    try:
        seen: list[dict] = []
        dev2.on_desired(seen.append)  # desired state is a state: applied again at start
        assert seen == [{"interval": 7}]
        assert dev2._downlink.state.s.reports == {"tl:desired": 600}
    finally:
        dev2.close()


def test_reports_are_batched_and_results_bounded(pair) -> None:
    twin, dev, _ = pair
    sent: list[bytes] = []

    class Link:
        def send(self, frame: bytes) -> None:
            sent.append(frame)

    dev.link = Link()
    dev.on_command("big", lambda a: "x" * 1000)
    dev.on_command("ok", lambda a: None)
    dl = int(time.time()) + 60
    r = dev.handle_downlink(_seal(twin, dev, 10, encode_command(1, "big", None, dl)))
    assert r == {"tl:cmd:1": "error: result of 1000 characters exceeds 256"}
    for i in range(2, 80):  # many answers waiting: no reading may grow past its limits
        dev._downlink.handle(_seal(twin, dev, 10 + i, encode_command(i, "ok", None, dl)))
    n = len(dev._downlink.state.s.reports)
    assert n > downlink.REPORTS_PER_READING
    while dev._downlink.state.s.reports:
        dev.send({"temp": 1.0})
    got: set[str] = set()
    for f in sent:
        payload = twin.open(f).payload
        assert len(payload) <= downlink.REPORTS_PER_READING + 1
        got |= {k for k in payload if k.startswith("tl:cmd:")}
    assert got == {f"tl:cmd:{i}" for i in range(1, 80)}
