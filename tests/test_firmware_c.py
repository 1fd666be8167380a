"""The c_sensor firmware example: built with make, run as a real process on a real pty.

Frames go through a VirtualCable into a SerialReceiver and the Python twin; restarts and a
SIGKILL mid-run must never reuse a sequence number; the firmware's own objects must not
reference the heap allocator.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from twinlink.ingest import SerialReceiver
from twinlink.testing import VirtualCable
from twinlink.twin import Reading

ROOT = Path(__file__).resolve().parents[1]
FW = ROOT / "firmware_examples" / "c_sensor"
BIN = FW / "build" / "c_sensor"
FW_OBJECTS = ["main", "config", "seq", "senml", "hal_posix"]

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs POSIX ptys")


def _have_sodium() -> bool:
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        return False
    probe = subprocess.run([cc, "-E", "-x", "c", "-"], input="#include <sodium.h>\n",
                           capture_output=True, text=True, timeout=30)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def firmware() -> Path:
    if not _have_sodium():
        pytest.skip("no C compiler or libsodium headers (apt-get install -y libsodium-dev)")
    res = subprocess.run(["make", "-C", str(FW)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return BIN


@pytest.fixture
def config(rig) -> Path:
    bundle = rig.provision("sensor", chunk=16)  # small K: kills land across boundaries
    out = rig.root / "sensor.cfg"
    subprocess.run([sys.executable, str(FW / "mkconfig.py"), str(bundle), str(out)],
                   env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True, timeout=60)
    assert out.stat().st_mode & 0o077 == 0
    return out


def test_no_heap_in_the_firmware_objects(firmware: Path):
    for name in FW_OBJECTS:
        undefined = subprocess.run(["nm", "-u", str(FW / "build" / f"{name}.o")],
                                   capture_output=True, text=True, check=True).stdout.split()
        heap = {"malloc", "calloc", "realloc", "free", "aligned_alloc", "posix_memalign"}
        assert not heap & set(undefined), f"{name}.o references {heap & set(undefined)}"


def test_frames_over_a_pty_are_accepted(firmware: Path, rig, config: Path):
    got: list[object] = []
    with VirtualCable() as cable, rig.twin() as twin:
        with SerialReceiver(cable.b, twin, on_result=got.append) as rx:
            proc = subprocess.run([str(firmware), cable.a, str(config),
                                   str(rig.root / "fwstate"), "20", "0"], timeout=60)
            assert proc.returncode == 0
            assert rx.wait_for(20, 10), rx.counts
    assert all(isinstance(r, Reading) for r in got), got
    assert [r.seq for r in got] == list(range(20))  # type: ignore[union-attr]
    assert {r.provenance for r in got} == {"signed"}  # type: ignore[union-attr]
    assert [r.payload["temp"] for r in got[:8]] == [20 + 0.25 * i for i in range(8)]  # type: ignore[union-attr]
    assert all(abs(r.time - time.time()) < 120 for r in got)  # type: ignore[union-attr]


def test_restart_and_sigkill_never_reuse_a_sequence_number(firmware: Path, rig, config: Path):
    state = rig.root / "fwstate"
    got: list[object] = []
    with VirtualCable() as cable, rig.twin() as twin:
        with SerialReceiver(cable.b, twin, on_result=got.append) as rx:
            runs = []
            # A clean run, then two runs SIGKILLed while sealing every 2 ms, then a clean one.
            for kill_after in (None, 0.4, 0.3, None):
                before = rx.total
                if kill_after is None:
                    p = subprocess.run([str(firmware), cable.a, str(config), str(state), "7",
                                        "0"], timeout=60)
                    assert p.returncode == 0
                else:
                    proc = subprocess.Popen([str(firmware), cable.a, str(config), str(state),
                                             "0", "2"])
                    time.sleep(kill_after)
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(10)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:  # let the cable drain
                    n = rx.total
                    time.sleep(0.2)
                    if rx.total == n and n > before:
                        break
                runs.append(got[before:rx.total])
    for run in runs:
        assert run and all(isinstance(r, Reading) for r in run), run
    seqs = [[r.seq for r in run] for run in runs]  # type: ignore[union-attr]
    flat = [s for run in seqs for s in run]
    assert len(flat) == len(set(flat)), "a sequence number was reused"
    for earlier, later in zip(seqs, seqs[1:]):
        assert min(later) > max(earlier)
    assert seqs[0] == list(range(7))


def test_bench_reports_rate_and_stack(firmware: Path, config: Path):
    out = subprocess.run([str(firmware), "--bench", str(config), "500"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    figures = json.loads(out)
    assert figures["frames"] == 500 and figures["frames_per_s"] > 0
    assert 0 < figures["seal_stack_bytes"] < 64 * 1024
