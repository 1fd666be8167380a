"""SIGKILL at random points of stage -> verify -> persist -> install, 30 rounds, real processes.

A worker process stages images chunk by chunk, runs verify_and_record with an installer that
copies the image into place (temp file, fsync, rename), and reports each step on stdout. The
test kills it with SIGKILL after a random number of steps (it keeps running while the test
reads, so kills land anywhere, including inside the record write), then checks:

- the install record is readable (never torn) and its seq never decreases;
- a record that says "installed" has exactly its image in place (a half-written image is never
  reported installed), and the installed file is always some whole image;
- delivering the recorded manifest again completes the install (or is a no-op).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from update_crash_worker import IMAGE_SIZE, PER_WORKER, STEPS_PER_UPDATE, stage_and_verify
from update_kit import Kit, image_bytes, make_kit

HERE = Path(__file__).resolve().parent
ROUNDS = 30

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")


def _check(kit: Kit, floor: int) -> int:
    rec = kit.record()  # raises if the record were torn
    seq = -1 if rec is None else rec.seq
    assert seq >= floor, f"recorded seq went down: {floor} -> {seq}"
    installed = kit.root / "installed.bin"
    if installed.exists():
        data = installed.read_bytes()
        whole = [s for s in range(1, max(seq, 0) + 2) if data == image_bytes(s, IMAGE_SIZE)]
        assert whole, "the installed file is not a whole image"
    if rec is not None and rec.installed:
        assert hashlib.sha256(installed.read_bytes()).digest() == rec.digest, \
            "record says installed, but the image in place is not the recorded one"
    return seq


def test_sigkill_during_verify_and_persist(tmp_path: Path):
    kit = make_kit(tmp_path / "dev")
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    floor, next_seq, kills = -1, 1, 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent)]))
    for rnd in range(ROUNDS):
        kill_after = rng.randint(1, STEPS_PER_UPDATE * PER_WORKER)
        code = (f"from update_crash_worker import worker; "
                f"worker({str(kit.root)!r}, {kit.seed.hex()!r}, {next_seq}, {PER_WORKER})")
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, text=True)
        assert proc.stdout is not None
        seen = 0
        for _ in proc.stdout:
            seen += 1
            if seen == kill_after:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                break
        proc.stdout.close()
        rc = proc.wait(timeout=60)
        err = proc.stderr.read() if proc.stderr else ""
        assert rc in (0, -signal.SIGKILL), f"round {rnd} (rng {seed}): worker failed\n{err}"
        floor = _check(kit, floor)
        # Redelivery of the recorded update completes it; then the next round goes on.
        if floor >= 1:
            res = stage_and_verify(kit, floor, False)
            assert res.status in ("installed", "already_installed"), res
            floor = _check(kit, floor)
            rec = kit.record()
            assert rec is not None and rec.installed and rec.seq == floor
        next_seq = floor + 1 if floor >= 1 else 1
    assert kills >= ROUNDS // 2, f"only {kills} rounds were killed (rng {seed})"
    assert floor >= 1
