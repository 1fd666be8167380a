"""``twinlink send --serial`` and ``twinlink monitor --jsonl`` run as real subprocesses on ptys."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time

import pytest
from conftest import CLI, cli_env

from twinlink.ingest import SerialReceiver
from twinlink.monitor import Monitor
from twinlink.testing import VirtualCable
from twinlink.transport import framing
from twinlink.transport.serial import SerialLink
from twinlink.twin import Reading

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs POSIX ptys")


def test_send_serial_cli_delivers_stdin_readings(rig):
    bundle = rig.provision("shell-sensor")
    results = []
    lines = [json.dumps({"temp": 20 + i / 10, "door": "open" if i % 2 else "shut"})
             for i in range(25)]
    with VirtualCable() as cable, rig.twin() as twin:
        rx = SerialReceiver(cable.b, twin, on_result=results.append)
        try:
            out = subprocess.run(
                [*CLI, "send", "--device", str(bundle), "--state", str(rig.root / "state"),
                 "--serial", cable.a, "--timeout", "5"],
                input="\n".join([*lines[:10], "not json", "", *lines[10:]]) + "\n",
                capture_output=True, text=True, env=cli_env(), timeout=60)
            assert rx.wait_for(25, 10), rx.counts
        finally:
            rx.close()
    assert out.returncode == 1, out.stderr  # one bad line skipped: documented exit 1
    assert "line 11 skipped" in out.stderr and "sent 25 readings" in out.stderr
    assert all(isinstance(r, Reading) and r.device == "shell-sensor" for r in results)
    assert [r.payload for r in results] == [json.loads(x) for x in lines]


def test_send_serial_cli_missing_port_is_exit_5(rig, tmp_path):
    bundle = rig.provision("lonely")
    out = subprocess.run([*CLI, "send", "--device", str(bundle), "--state", str(tmp_path / "s"),
                          "--serial", str(tmp_path / "ttyNONE")],
                         input='{"t": 1}\n', capture_output=True, text=True, env=cli_env(),
                         timeout=30)
    assert out.returncode == 5
    assert out.stderr.startswith("twinlink: cannot open serial port")
    assert "Traceback" not in out.stderr


def _wait_ready(proc: subprocess.Popen, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    seen = []
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stderr], [], [], 0.2)
        if r:
            line = proc.stderr.readline()
            seen.append(line)
            if line.startswith("monitor: listening"):
                return line
            if not line and proc.poll() is not None:
                break
    proc.kill()
    raise AssertionError(f"monitor did not start: {''.join(seen)}")


def test_monitor_jsonl_shows_readings_refusals_and_line_errors(rig):
    dev = rig.device("bench")
    with VirtualCable() as cable:
        proc = subprocess.Popen(
            [*CLI, "monitor", cable.b, "--db", str(rig.db), "--twin-key", str(rig.twin_key_path),
             "--jsonl", "--count", "6", "--duration", "30"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
        try:
            _wait_ready(proc)
            link = SerialLink(cable.a)
            f1 = dev.seal({"temp": 21.5})
            link.send(f1)
            link.send(dev.seal({"temp": 21.6}))
            link.send(f1)  # replay
            bad = bytearray(dev.seal({"temp": 99.0}))
            bad[-3] ^= 0x10
            link.send(bytes(bad))  # tampered: intact CRC, bad signature
            time.sleep(0.3)
            rec = bytearray(framing.wire(dev.seal({"temp": 1.0}), flush_prefix=True))
            rec[len(rec) // 2] = rec[len(rec) // 2] ^ 0x04 or 0x01
            cable.inject(bytes(rec))  # line noise
            time.sleep(0.3)
            link.send(dev.seal({"temp": 21.9}))  # seq jumps over the damaged one: a gap
            out, err = proc.communicate(timeout=30)
            link.close()
        finally:
            if proc.poll() is None:
                proc.kill()
            dev.close()
    assert proc.returncode == 0, err
    objs = [json.loads(x) for x in out.splitlines()]
    assert [o.get("error", "ok") for o in objs] == ["ok", "ok", "replay", "bad_signature", "line",
                                                    "ok"]
    assert objs[0]["device"] == "bench" and objs[0]["payload"] == {"temp": 21.5}
    assert objs[1]["seq"] == objs[0]["seq"] + 1
    assert objs[4]["ok"] is False and objs[4]["detail"]
    assert objs[5]["payload"] == {"temp": 21.9}
    assert "accepted=3 line_errors=1 refused=bad_signature=1,replay=1" in err
    assert "gaps=2" in err  # the tampered and the noise-damaged seqs never arrived


def test_monitor_plain_summary_when_not_a_terminal(rig):
    rig.provision("quiet")  # creates the twin database
    with VirtualCable() as cable:
        proc = subprocess.Popen(
            [*CLI, "monitor", cable.b, "--db", str(rig.db), "--twin-key", str(rig.twin_key_path),
             "--duration", "1.5", "--interval", "0.5"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
        _wait_ready(proc)
        cable.inject(b"\x00garbage\x00")
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) >= 2 and "\x1b[" not in out  # periodic plain lines, no terminal codes
    assert "line_errors=1" in lines[-1]


def test_monitor_counts_gaps_and_renders_a_table():
    from twinlink.errors import LineError, Replay

    m = Monitor()
    for seq in (1, 2, 5, 4, 6):
        m.record(Reading("pump", b"\x01", seq, {"t": seq}))
    m.record(LineError("CRC mismatch"))
    m.record(Replay("seq 2 already accepted"))
    snap = m.snapshot()
    assert snap["devices"]["pump"]["gaps"] == 1  # 3 never came; 4 arrived late
    assert snap["devices"]["pump"]["last_seq"] == 6
    assert snap["line_errors"] == 1 and snap["refused"] == {"replay": 1}
    table = m.table("/dev/ttyUSB0")
    assert "pump" in table and '{"t":6}' in table and "replay 1" in table
