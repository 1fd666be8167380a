"""SIGKILL a sealing process at random moments, many times: no sequence number (nonce) reused."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from twinlink import frame

CHILD = textwrap.dedent("""
    import sys
    import twinlink
    dev = twinlink.Device.load(sys.argv[1], sys.argv[2], chunk=int(sys.argv[3]))
    out = sys.stdout
    i = 0
    while True:
        f = dev.seal({"i": i}) if i % 5 else dev.seal_many([{"i": i}, {"i": i + 1}])[1]
        out.write(f.hex() + "\\n")
        out.flush()
        i += 1
""")


@pytest.mark.slow
def test_sigkill_never_reuses_a_sequence_number(rig):
    bundle = rig.provision("crashy")
    state = rig.root / "state"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    frames: list[bytes] = []
    kills = 40
    for _ in range(kills):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(bundle), str(state), "4"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert child.stdout is not None
        # Wait for the first frame so the kill lands while sealing, not while importing.
        first = child.stdout.readline()
        assert first, child.stderr.read().decode() if child.stderr else ""
        time.sleep(rng.uniform(0.0, 0.05))
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()
        child.wait(10)
        assert child.returncode == -signal.SIGKILL
        for line in (first + rest).splitlines():
            if len(line) % 2 == 0 and line:
                try:
                    frames.append(bytes.fromhex(line.decode()))
                except ValueError:
                    pass  # a line torn by the kill
    seqs = [frame.parse(f).seq for f in frames]
    assert len(seqs) > kills * 2
    assert len(seqs) == len(set(seqs)), "a sequence number was used twice"
    # The twin agrees: frames arrive in sealing order, so every one is fresh and stored once.
    twin = rig.twin()
    for at in range(0, len(frames), 500):
        refused = [r for r in twin.open_many(frames[at : at + 500]) if isinstance(r, Exception)]
        assert refused == []
    assert twin.store.count_readings("crashy") == len(frames)
