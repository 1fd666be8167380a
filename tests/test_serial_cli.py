"""``twinlink send --serial`` and ``twinlink monitor --jsonl`` run as real subprocesses on ptys."""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading

from conftest import CLI, cli_env

from twinlink.errors import LineError, Replay
from twinlink.ingest import SerialReceiver
from twinlink.monitor import Monitor
from twinlink.testing import VirtualCable
from twinlink.transport import framing
from twinlink.transport.serial import SerialLink
from twinlink.twin import Reading


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


class Lines:
    """Every line a child writes to one of its pipes, collected by a thread as it arrives, so a
    test can wait for the Nth line (a fact) instead of sleeping."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self.lines.append("")  # EOF
            self._cond.notify_all()

    def wait(self, pred, timeout: float = 60) -> list[str]:
        """Block until ``pred(lines)`` holds; fail with what was seen if it never does."""
        with self._cond:
            ok = self._cond.wait_for(lambda: pred(self.lines) or self.lines[-1:] == [""],
                                     timeout)
            assert ok and pred(self.lines), "".join(self.lines)
            return list(self.lines)

    def text(self) -> str:
        self._thread.join(60)
        return "".join(self.lines)


def _start_monitor(rig, port: str, *args: str, **kw) -> tuple[subprocess.Popen, Lines, Lines]:
    proc = subprocess.Popen(
        [*CLI, "monitor", port, "--db", str(rig.db), "--twin-key", str(rig.twin_key_path), *args],
        stdout=kw.pop("stdout", subprocess.PIPE), stderr=subprocess.PIPE, text=True,
        env=cli_env())
    out = Lines(proc.stdout) if proc.stdout is not None else None
    err = Lines(proc.stderr)
    err.wait(lambda ls: any(x.startswith("monitor: listening") for x in ls))
    return proc, out, err


def test_monitor_jsonl_shows_readings_refusals_and_line_errors(rig):
    dev = rig.device("bench")
    with VirtualCable() as cable:
        proc, out, err = _start_monitor(rig, cable.b, "--jsonl", "--count", "6",
                                        "--duration", "120")
        try:
            with SerialLink(cable.a) as link:
                f1 = dev.seal({"temp": 21.5})
                link.send(f1)
                link.send(dev.seal({"temp": 21.6}))
                link.send(f1)  # replay
                bad = bytearray(dev.seal({"temp": 99.0}))
                bad[-3] ^= 0x10
                link.send(bytes(bad))  # tampered: intact CRC, bad signature
                out.wait(lambda ls: len(ls) >= 4)  # the four above, in order, before the noise
                rec = bytearray(framing.wire(dev.seal({"temp": 1.0}), flush_prefix=True))
                rec[len(rec) // 2] = rec[len(rec) // 2] ^ 0x04 or 0x01
                cable.inject(bytes(rec))  # line noise
                out.wait(lambda ls: len(ls) >= 5)
                link.send(dev.seal({"temp": 21.9}))  # seq jumps over the damaged one: a gap
                assert proc.wait(120) == 0, err.text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            dev.close()
    objs = [json.loads(x) for x in out.text().splitlines()]
    assert [o.get("error", "ok") for o in objs] == ["ok", "ok", "replay", "bad_signature", "line",
                                                    "ok"]
    assert objs[0]["device"] == "bench" and objs[0]["payload"] == {"temp": 21.5}
    assert objs[1]["seq"] == objs[0]["seq"] + 1
    assert objs[4]["ok"] is False and objs[4]["detail"]
    assert objs[5]["payload"] == {"temp": 21.9}
    summary = err.text()
    assert "accepted=3 line_errors=1 refused=bad_signature=1,replay=1" in summary
    assert "gaps=2" in summary  # the tampered and the noise-damaged seqs never arrived


def test_monitor_plain_summary_when_not_a_terminal(rig):
    rig.provision("quiet")  # creates the twin database
    with VirtualCable() as cable:
        proc, out, err = _start_monitor(rig, cable.b, "--interval", "0.2", "--count", "1",
                                        "--duration", "120")
        try:
            out.wait(lambda ls: len(ls) >= 1)  # a periodic line before anything arrived
            cable.inject(b"\x00garbage\x00")
            assert proc.wait(120) == 0, err.text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = out.text()
    lines = text.splitlines()
    assert len(lines) >= 2 and "\x1b[" not in text  # periodic plain lines, no terminal codes
    assert "line_errors=0" in lines[0] and "line_errors=1" in lines[-1]


HOSTILE = {
    "raw": b"\x00\x01\xfe\xff",
    "title": "\x1b]0;pwned\x07",  # OSC: would retitle the operator's terminal
    "wipe": "\x1b[2J\x1b[H\x9b31m",  # CSI (7-bit and 8-bit C1): would clear and recolour it
    "bidi": "abc\u202edef",
    "big": b"\xab" * 600,  # wider than any terminal
    "long": "x" * 1000,
}


def test_monitor_table_renders_every_value_type_terminal_safe():
    import cbor2

    m = Monitor()
    payloads = [
        {"nan": float("nan"), **HOSTILE},
        {"nested": {"a": [1, {"b": [b"\x01", None, True, -1.5e300]}], "t": cbor2.CBORTag(1, 0)}},
        [{"n": "x", "v": 1}],  # a raw SenML-like list
        b"\x1b[31m",
        "plain \x1b[5m string",
        10 ** 400,
        float("-inf"),
    ]
    names = ["hostile", "nested", "list", "bytes", "str", "int", "inf", "evil\x1b[2Jname"]
    for seq, (name, payload) in enumerate(zip(names, [*payloads, {"t": 1}])):
        m.record(Reading(name, b"\x01", seq, payload))
    m.record(Replay("seq 2 already accepted"))
    for width in (40, 100, 300):
        table = m.table("/dev/tty\x1b[2J", width)
        for ch in table:  # only printable characters and newlines reach the terminal
            assert ch == "\n" or ch.isprintable(), (repr(ch), table)
        assert all(len(line) <= max(width, 80) for line in table.splitlines()[2:-3]), table
        assert "evil\\x1b[2Jname"[:16] in table
    table = m.table("", 300)
    assert "h'0001feff'" in table and "…'(600 bytes)" in table  # bytes as hex, length kept
    assert '"title":"\\x1b]0;pwned\\x07"' in table and "\\x9b31m" in table
    assert "\\u202e" in table and "NaN" in table and "-Infinity" in table
    assert "h'01'" in table and "1(0)" in table  # nested bytes; a CBOR tag in diagnostic form
    assert '[{"n":"x","v":1}]' in table and "<1329-bit integer>" in table
    json.dumps(m.snapshot())  # the snapshot stays JSON-friendly (bytes as hex there)
    assert "\x1b" not in m.summary_line() and "evil\\x1b[2Jname" in m.summary_line()


def test_monitor_live_table_on_a_terminal_with_hostile_values(rig):
    """``twinlink monitor`` on a real terminal (a pty), fed a reading with bytes and escape
    sequences: it renders them (bytes used to crash it) and lets none through raw."""
    import tty

    dev = rig.device("hostile")
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        with VirtualCable() as cable:
            proc, _, err = _start_monitor(rig, cable.b, "--count", "1", "--duration", "120",
                                          stdout=slave)
            os.close(slave)
            slave = -1
            try:
                with SerialLink(cable.a) as link:
                    link.send(dev.seal(HOSTILE))
                assert proc.wait(120) == 0, err.text()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        screen = b""
        while select.select([master], [], [], 0)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child side is closed and drained
                break
            if not chunk:
                break
            screen += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
        dev.close()
    text = screen.decode("utf-8", "replace")
    own = text.replace("\x1b[H\x1b[J", "")  # the monitor's own clear-screen is fine
    assert "hostile" in own and "h'0001feff'" in own, text
    assert "\x1b" not in own and "\x9b" not in own and "\x07" not in own, repr(text)
    assert '"title":"\\x1b]0;pwned' in own  # escaped, and cut to the terminal's width


def test_monitor_counts_gaps_and_renders_a_table():
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
